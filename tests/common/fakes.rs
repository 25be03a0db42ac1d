//! Loopback fakes of the alert channels' peers (Slack incoming webhooks, the Telegram
//! Bot API, a generic webhook), for end-to-end tests. Each is a small HTTP/1.1 server on
//! std threads that records what it received, with the arrival time, and can be told to
//! answer requests with a rate-limit error the way the real service does.

use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// One HTTP request as a fake read it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// When the whole request had arrived.
    pub at: Instant,
}

impl Request {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// What a fake answers.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn new(status: u16, body: impl Into<String>) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    pub fn header(mut self, k: &str, v: &str) -> Reply {
        self.headers.push((k.into(), v.into()));
        self
    }
}

/// A request as recorded, with the status it was answered.
#[derive(Debug, Clone)]
pub struct Received {
    pub request: Request,
    pub status: u16,
}

type Handler = Arc<dyn Fn(&Request, usize) -> Reply + Send + Sync>;

/// The HTTP server under every fake: answers each request with `handler(request, n)`
/// (`n` counts requests from 0) and records it.
pub struct HttpFake {
    port: u16,
    received: Arc<Mutex<Vec<Received>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl HttpFake {
    pub fn start(handler: impl Fn(&Request, usize) -> Reply + Send + Sync + 'static) -> HttpFake {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback fake");
        listener.set_nonblocking(true).expect("non-blocking");
        let port = listener.local_addr().expect("local addr").port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let handler: Handler = Arc::new(handler);
        let thread = {
            let (received, stop) = (received.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Acquire) {
                    match listener.accept() {
                        Ok((sock, _)) => {
                            let (received, handler, stop) =
                                (received.clone(), handler.clone(), stop.clone());
                            std::thread::spawn(move || serve(sock, &handler, &received, &stop));
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(5))
                        }
                        Err(e) => panic!("fake accept: {e}"),
                    }
                }
            })
        };
        HttpFake {
            port,
            received,
            stop,
            thread: Some(thread),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every request received, answered or refused, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

impl Drop for HttpFake {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Serves one connection: requests one after the other (keep-alive) until the client
/// closes it.
fn serve(sock: TcpStream, handler: &Handler, received: &Mutex<Vec<Received>>, stop: &AtomicBool) {
    let _ = sock.set_read_timeout(Some(Duration::from_millis(200)));
    let mut writer = match sock.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let mut reader = BufReader::new(sock);
    loop {
        let request = match read_request(&mut reader, stop) {
            Some(r) => r,
            None => return,
        };
        // Numbered and recorded under one lock, so numbers follow arrival order.
        let reply = {
            let mut got = received.lock().unwrap();
            let reply = handler(&request, got.len());
            got.push(Received {
                request,
                status: reply.status,
            });
            reply
        };
        let mut head = format!(
            "HTTP/1.1 {} X\r\ncontent-length: {}\r\n",
            reply.status,
            reply.body.len()
        );
        if !reply
            .headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        {
            head.push_str("content-type: application/json\r\n");
        }
        for (k, v) in &reply.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        if writer.write_all(head.as_bytes()).is_err()
            || writer.write_all(reply.body.as_bytes()).is_err()
        {
            return;
        }
    }
}

fn read_request(reader: &mut BufReader<TcpStream>, stop: &AtomicBool) -> Option<Request> {
    let mut line = String::new();
    // Wait for the request line, waking up to notice a stop.
    loop {
        match reader.read_line(&mut line) {
            Ok(0) => return None,
            Ok(_) => break,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if stop.load(Ordering::Acquire) {
                    return None;
                }
            }
            Err(_) => return None,
        }
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let path = parts.next()?.to_owned();
    let mut headers = Vec::new();
    let mut length = 0usize;
    loop {
        let mut h = String::new();
        read_line_patiently(reader, &mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_owned());
        if k == "content-length" {
            length = v.parse().ok()?;
        }
        headers.push((k, v));
    }
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked {
        // Chunks until the empty one; the body as one piece.
        let mut body = Vec::new();
        loop {
            let mut size = String::new();
            read_line_patiently(reader, &mut size)?;
            let size = usize::from_str_radix(size.trim().split(';').next()?, 16).ok()?;
            let mut chunk = read_exactly(reader, size + 2)?;
            chunk.truncate(size);
            body.extend_from_slice(&chunk);
            if size == 0 {
                break;
            }
        }
        body
    } else {
        read_exactly(reader, length)?
    };
    Some(Request {
        method,
        path,
        headers,
        body,
        at: Instant::now(),
    })
}

fn read_exactly(reader: &mut BufReader<TcpStream>, length: usize) -> Option<Vec<u8>> {
    let mut body = vec![0; length];
    let mut filled = 0;
    while filled < length {
        match reader.read(&mut body[filled..]) {
            Ok(0) => return None,
            Ok(n) => filled += n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return None,
        }
    }
    Some(body)
}

fn read_line_patiently(reader: &mut BufReader<TcpStream>, line: &mut String) -> Option<()> {
    loop {
        match reader.read_line(line) {
            Ok(0) => return None,
            Ok(_) => return Some(()),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return None,
        }
    }
}

/// Which requests (numbered from 0) are refused with a rate-limit answer, and the wait
/// in seconds the answer asks for.
#[derive(Default)]
struct RateLimits {
    refuse: BTreeSet<usize>,
    wait_secs: u64,
}

impl RateLimits {
    fn refuses(&self, n: usize) -> Option<u64> {
        self.refuse.contains(&n).then_some(self.wait_secs)
    }
}

/// Requests `from..from+n` are refused.
fn plan(limits: &Mutex<RateLimits>, from: usize, n: usize, wait_secs: u64) {
    let mut l = limits.lock().unwrap();
    l.refuse.extend(from..from + n);
    l.wait_secs = wait_secs;
}

// ---------------------------------------------------------------------------------------

/// A Slack incoming webhook: takes JSON bodies with `text` or `blocks`, answers `ok`,
/// or `429` with `Retry-After` when told to.
pub struct SlackFake {
    http: HttpFake,
    limits: Arc<Mutex<RateLimits>>,
    /// The webhook's secret path.
    pub path: String,
}

impl SlackFake {
    pub fn start() -> SlackFake {
        SlackFake::with_path("/services/T0FAKE/B0FAKE/s3cretWebhookPath")
    }

    pub fn with_path(path: &str) -> SlackFake {
        let limits = Arc::new(Mutex::new(RateLimits::default()));
        let want = path.to_owned();
        let http = {
            let limits = limits.clone();
            HttpFake::start(move |r, n| {
                if r.method != "POST" || r.path != want {
                    return Reply::new(404, "no_service");
                }
                let body = r.json();
                if body.get("text").is_none() && body.get("blocks").is_none() {
                    return Reply::new(400, "invalid_payload");
                }
                if let Some(secs) = limits.lock().unwrap().refuses(n) {
                    return Reply::new(429, "rate_limited")
                        .header("Retry-After", &secs.to_string());
                }
                Reply::new(200, "ok")
            })
        };
        SlackFake {
            http,
            limits,
            path: path.to_owned(),
        }
    }

    /// The webhook URL (its path is the secret).
    pub fn url(&self) -> String {
        format!("{}{}", self.http.base_url(), self.path)
    }

    /// The next `n` requests are answered `429` with `Retry-After: wait_secs`.
    pub fn rate_limit_next(&self, n: usize, wait_secs: u64) {
        let from = self.http.received().len();
        plan(&self.limits, from, n, wait_secs);
    }

    /// Requests `from..from+n` (numbered from 0 since the start) are answered `429`.
    pub fn rate_limit_requests(&self, from: usize, n: usize, wait_secs: u64) {
        plan(&self.limits, from, n, wait_secs);
    }

    /// Every request, accepted or not, with its arrival time and answer.
    pub fn received(&self) -> Vec<Received> {
        self.http.received()
    }

    /// The bodies of the messages accepted, in order.
    pub fn messages(&self) -> Vec<Value> {
        self.received()
            .into_iter()
            .filter(|r| r.status == 200)
            .map(|r| r.request.json())
            .collect()
    }
}

/// One `sendMessage` the Telegram fake accepted.
#[derive(Debug, Clone)]
pub struct TelegramMessage {
    pub chat_id: Value,
    pub text: String,
    pub parse_mode: Option<String>,
    pub disable_notification: Option<bool>,
    pub at: Instant,
}

/// The Telegram Bot API's `sendMessage`: checks the path and the token, refuses text
/// over 4096 characters with 400 as Telegram does, and answers `429` with
/// `parameters.retry_after` when told to.
pub struct TelegramFake {
    http: HttpFake,
    limits: Arc<Mutex<RateLimits>>,
    pub token: String,
}

impl TelegramFake {
    pub fn start() -> TelegramFake {
        TelegramFake::with_token("123456789:AAFakeS3cretBotToken_xyz")
    }

    pub fn with_token(token: &str) -> TelegramFake {
        let limits = Arc::new(Mutex::new(RateLimits::default()));
        let want = format!("/bot{token}/sendMessage");
        let http = {
            let limits = limits.clone();
            HttpFake::start(move |r, n| {
                let error = |code: u16, description: &str| {
                    Reply::new(
                        code,
                        json!({"ok": false, "error_code": code, "description": description})
                            .to_string(),
                    )
                };
                if !(r.path.starts_with("/bot") && r.path.ends_with("/sendMessage")) {
                    return error(404, "Not Found");
                }
                if r.path != want {
                    return error(401, "Unauthorized");
                }
                let body = r.json();
                let text = body["text"].as_str().unwrap_or_default();
                if body.get("chat_id").is_none() || text.is_empty() {
                    return error(400, "Bad Request: message text is empty");
                }
                if text.chars().count() > 4096 {
                    return error(400, "Bad Request: message is too long");
                }
                if let Some(secs) = limits.lock().unwrap().refuses(n) {
                    return Reply::new(
                        429,
                        json!({
                            "ok": false,
                            "error_code": 429,
                            "description": format!("Too Many Requests: retry after {secs}"),
                            "parameters": {"retry_after": secs},
                        })
                        .to_string(),
                    );
                }
                Reply::new(
                    200,
                    json!({"ok": true, "result": {"message_id": n, "text": text}}).to_string(),
                )
            })
        };
        TelegramFake {
            http,
            limits,
            token: token.to_owned(),
        }
    }

    /// The `api_url` to configure.
    pub fn url(&self) -> String {
        self.http.base_url()
    }

    /// The next `n` requests are answered `429` with `parameters.retry_after = wait_secs`.
    pub fn rate_limit_next(&self, n: usize, wait_secs: u64) {
        let from = self.http.received().len();
        plan(&self.limits, from, n, wait_secs);
    }

    /// Requests `from..from+n` (numbered from 0 since the start) are answered `429`.
    pub fn rate_limit_requests(&self, from: usize, n: usize, wait_secs: u64) {
        plan(&self.limits, from, n, wait_secs);
    }

    pub fn received(&self) -> Vec<Received> {
        self.http.received()
    }

    /// The messages accepted, in order.
    pub fn messages(&self) -> Vec<TelegramMessage> {
        self.received()
            .into_iter()
            .filter(|r| r.status == 200)
            .map(|r| {
                let b = r.request.json();
                TelegramMessage {
                    chat_id: b["chat_id"].clone(),
                    text: b["text"].as_str().unwrap_or_default().to_owned(),
                    parse_mode: b["parse_mode"].as_str().map(str::to_owned),
                    disable_notification: b["disable_notification"].as_bool(),
                    at: r.request.at,
                }
            })
            .collect()
    }
}

/// A webhook receiver (Alertmanager's webhook_configs, a chat-ops bot): records every
/// JSON body and answers 200.
pub struct WebhookFake {
    http: HttpFake,
    limits: Arc<Mutex<RateLimits>>,
}

impl WebhookFake {
    pub fn start() -> WebhookFake {
        let limits = Arc::new(Mutex::new(RateLimits::default()));
        let http = {
            let limits = limits.clone();
            HttpFake::start(move |_, n| match limits.lock().unwrap().refuses(n) {
                Some(secs) => Reply::new(429, "slow down").header("Retry-After", &secs.to_string()),
                None => Reply::new(200, "{}"),
            })
        };
        WebhookFake { http, limits }
    }

    pub fn url(&self) -> String {
        format!("{}/hook", self.http.base_url())
    }

    pub fn rate_limit_next(&self, n: usize, wait_secs: u64) {
        let from = self.http.received().len();
        plan(&self.limits, from, n, wait_secs);
    }

    pub fn received(&self) -> Vec<Received> {
        self.http.received()
    }

    /// The bodies accepted, in order.
    pub fn messages(&self) -> Vec<Value> {
        self.received()
            .into_iter()
            .filter(|r| r.status == 200)
            .map(|r| r.request.json())
            .collect()
    }
}
