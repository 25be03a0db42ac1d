//! moto's server (a local AWS: SNS, SQS, CloudWatch, CloudWatch Logs) for end-to-end
//! tests, and a few boto3 calls against it, run with the test Python
//! (`TRADEWATCH_PYTHON`, which has `moto[server]` and `boto3`).
//!
//! ```ignore
//! let moto = Moto::start();
//! let (topic_arn, queue_url) = moto.sns_topic_with_queue("alerts");
//! // ... point the collector's `sns` exporter at moto.url() with moto.env() ...
//! let envelopes = moto.receive_all(&queue_url); // SNS envelopes: Subject, Message, MessageAttributes
//! ```
//!
//! Credentials are moto's `testing`/`testing`, region `us-east-1`, account `123456789012`.

use super::{free_port, http_get, python};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ACCESS_KEY_ID: &str = "testing";
pub const SECRET_ACCESS_KEY: &str = "testing";
pub const REGION: &str = "us-east-1";
pub const ACCOUNT: &str = "123456789012";

/// A running `moto.server` on a loopback port; killed when dropped.
pub struct Moto {
    pub port: u16,
    child: Option<Child>,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Moto {
    /// Starts moto on a free port and waits (up to 30 s) until it answers.
    pub fn start() -> Moto {
        Moto::start_on(free_port())
    }

    /// Starts moto on `port` (a port reserved earlier, e.g. one the collector was
    /// already pointed at while moto was down).
    pub fn start_on(port: u16) -> Moto {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("moto.log");
        let out = std::fs::File::create(&log).expect("moto log file");
        let child = Command::new(python())
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log file"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {} -m moto.server: {e}. Install moto with `pip install 'moto[server]'` in the test venv",
                    python().display()
                )
            });
        let mut moto = Moto {
            port,
            child: Some(child),
            log,
            _dir: dir,
        };
        moto.wait_ready();
        moto
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "moto.server exited during start-up ({status}) on port {}:\n{}",
                    self.port,
                    self.logs()
                );
            }
            if matches!(http_get(addr, "/moto-api/data.json"), Ok((200, _))) {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "moto.server did not answer on 127.0.0.1:{} within 30 s:\n{}",
                    self.port,
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `http://127.0.0.1:PORT`: the `endpoint_url` for every service.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The environment an AWS client (the collector) needs to reach moto.
    pub fn env() -> Vec<(&'static str, &'static str)> {
        vec![
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID),
            ("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY),
            ("AWS_DEFAULT_REGION", REGION),
            ("AWS_REGION", REGION),
            // Nothing from the developer's own AWS set-up.
            ("AWS_CONFIG_FILE", "/nonexistent"),
            ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ]
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops the server now (a peer outage); its state is gone.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Runs `script` with boto3 against this server; `args` are `sys.argv[1:]`. The
    /// script's stdout, parsed as JSON, is the result.
    pub fn boto3(&self, script: &str, args: &[&str]) -> serde_json::Value {
        let prelude = format!(
            "import sys, json, boto3\n\
             def client(service):\n    return boto3.client(service, endpoint_url={url:?}, region_name={REGION:?}, \
             aws_access_key_id={ACCESS_KEY_ID:?}, aws_secret_access_key={SECRET_ACCESS_KEY:?})\n",
            url = self.url()
        );
        let out = Command::new(python())
            .arg("-c")
            .arg(format!("{prelude}{script}"))
            .args(args)
            .env_remove("AWS_PROFILE")
            .stdin(Stdio::null())
            .output()
            .expect("run boto3 script");
        assert!(
            out.status.success(),
            "boto3 script failed ({}):\n{}\n--- script ---\n{script}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "boto3 script printed no JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// A standard SNS topic `name` with a standard SQS queue subscribed to it (not raw
    /// delivery: each queue message is the SNS envelope). Returns (topic ARN, queue URL).
    pub fn sns_topic_with_queue(&self, name: &str) -> (String, String) {
        self.topic_with_queue(name, false)
    }

    /// A FIFO topic `NAME.fifo` (no content-based deduplication: publishers must send
    /// a `MessageDeduplicationId`) with a FIFO queue `NAME.fifo` subscribed.
    pub fn sns_fifo_topic_with_queue(&self, name: &str) -> (String, String) {
        self.topic_with_queue(name, true)
    }

    fn topic_with_queue(&self, name: &str, fifo: bool) -> (String, String) {
        let v = self.boto3(
            r#"
name, fifo = sys.argv[1], sys.argv[2] == "fifo"
sns, sqs = client("sns"), client("sqs")
if fifo:
    topic = sns.create_topic(Name=name + ".fifo", Attributes={"FifoTopic": "true", "ContentBasedDeduplication": "false"})
    queue = sqs.create_queue(QueueName=name + ".fifo", Attributes={"FifoQueue": "true", "ContentBasedDeduplication": "false"})
else:
    topic = sns.create_topic(Name=name)
    queue = sqs.create_queue(QueueName=name)
queue_url = queue["QueueUrl"]
queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
sns.subscribe(TopicArn=topic["TopicArn"], Protocol="sqs", Endpoint=queue_arn, Attributes={"RawMessageDelivery": "false"})
print(json.dumps({"topic_arn": topic["TopicArn"], "queue_url": queue_url}))
"#,
            &[name, if fifo { "fifo" } else { "standard" }],
        );
        (
            v["topic_arn"].as_str().expect("topic_arn").to_string(),
            v["queue_url"].as_str().expect("queue_url").to_string(),
        )
    }

    /// Every message now in the queue, received and deleted, in order: the parsed SNS
    /// envelopes (`Subject`, `Message`, `MessageAttributes` {name: {Type, Value}},
    /// `TopicArn`, ...), each with the SQS system attributes added as `SqsAttributes`
    /// (`MessageGroupId`, `MessageDeduplicationId` on FIFO queues).
    pub fn receive_all(&self, queue_url: &str) -> Vec<serde_json::Value> {
        let v = self.boto3(
            r#"
sqs = client("sqs")
out = []
while True:
    r = sqs.receive_message(QueueUrl=sys.argv[1], MaxNumberOfMessages=10, WaitTimeSeconds=0,
                            AttributeNames=["All"], MessageAttributeNames=["All"])
    msgs = r.get("Messages", [])
    if not msgs:
        break
    for m in msgs:
        env = json.loads(m["Body"])
        env["SqsAttributes"] = m.get("Attributes", {})
        out.append(env)
        sqs.delete_message(QueueUrl=sys.argv[1], ReceiptHandle=m["ReceiptHandle"])
print(json.dumps(out))
"#,
            &[queue_url],
        );
        v.as_array().expect("a JSON array").clone()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
    }
}
