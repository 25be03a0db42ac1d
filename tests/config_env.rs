//! `${VAR}` is expanded inside parsed string values: whatever an environment value holds
//! arrives unchanged in that one value and can create nothing; a whole `${VAR}` fills
//! typed fields. Also: the core's `critical` key, cross-references between components,
//! relative paths taken from the config's folder, and build errors named by their key.

mod common;

use common::{eventually, http_get, read_jsonl, spans_in, Collector};
use serde::Deserialize;
use std::cell::RefCell;
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tradewatch::component::{
    BuildContext, BuildError, ComponentId, ExporterConfig, Kind, Processor, ProcessorConfig,
    Reference, Registry, Signal,
};
use tradewatch::config::{
    component_config, Config, ConfigError, ConfigErrors, HumanDuration, Secret, Source,
};
use tradewatch::pipeline::sending::SendingSettings;

/// Every character that broke or rewrote the file when values were spliced into its text.
const NASTY: &[(&str, &str)] = &[
    ("double quote", "a\"b"),
    ("backslash", "a\\b\\\\"),
    ("single quote", "it's"),
    ("newline and a table", "x\"\n[exporters.nop]\n[service.pipelines.logs]\nreceivers = [\"otlp\"]\nexporters = [\"nop\"]\n#"),
    ("a reference", "${HOME} $${HOME} ${NOPE"),
    ("non-ASCII", "clé-€-🔑"),
    ("everything", "q\"b\\c'd ${TW_TOKEN} é\n[receivers.evil]\n"),
];

// ---------------------------------------------------------------------------------------
// A test-only exporter and processor, registered next to the built-in components.

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProbeConfig {
    token: Secret,
    #[serde(default)]
    count: usize,
    #[serde(default)]
    on: bool,
    #[serde(default)]
    wait: HumanDuration,
    #[serde(default)]
    tags: Vec<String>,
    /// Names another exporter, which must be a `file`.
    #[serde(default)]
    alerts_to: Option<String>,
}

thread_local! {
    /// What the probe exporter's parser was given, for the test on this thread to inspect.
    static PROBED: RefCell<Vec<ProbeConfig>> = const { RefCell::new(Vec::new()) };
}

impl ExporterConfig for ProbeConfig {
    fn signals(&self) -> Vec<Signal> {
        Signal::ALL.to_vec()
    }
    fn sending(&self) -> SendingSettings {
        SendingSettings::in_process(1, 1, Duration::from_secs(1))
    }
    fn references(&self) -> Vec<Reference> {
        self.alerts_to
            .iter()
            .map(|to| Reference::new(&["alerts_to"], Kind::Exporter, to).of_types(&["file"]))
            .collect()
    }
    fn build(
        &self,
        ctx: &BuildContext,
    ) -> Result<Arc<dyn tradewatch::component::Exporter>, BuildError> {
        Err(BuildError::new(&ctx.id, "test-only"))
    }
}

fn parse_probe(src: &Source, id: &ComponentId) -> Result<Arc<dyn ExporterConfig>, ConfigError> {
    let c: ProbeConfig = component_config(src, Kind::Exporter, id)?;
    PROBED.with(|p| p.borrow_mut().push(c.clone()));
    Ok(Arc::new(c))
}

/// A processor that names the receiver it controls, as the risk processor does.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RiskConfig {
    control: String,
}

impl ProcessorConfig for RiskConfig {
    fn references(&self) -> Vec<Reference> {
        vec![Reference::new(&["control"], Kind::Receiver, &self.control).of_types(&["otlp"])]
    }
    fn build(&self, _: Signal, ctx: &BuildContext) -> Result<Box<dyn Processor>, BuildError> {
        Err(BuildError::new(&ctx.id, "test-only"))
    }
}

fn parse_risk(src: &Source, id: &ComponentId) -> Result<Arc<dyn ProcessorConfig>, ConfigError> {
    let c: RiskConfig = component_config(src, Kind::Processor, id)?;
    Ok(Arc::new(c))
}

fn registry() -> Registry {
    let mut r = tradewatch::registry::builtin();
    r.exporters.push(("probe", parse_probe));
    r.processors.push(("controller", parse_risk));
    r
}

fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigErrors> {
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let lookup = move |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let src = Source::from_text("/etc/tw/t.toml".into(), text, &lookup)?;
    Config::from_source(&src, &registry())
}

fn probed() -> Vec<ProbeConfig> {
    PROBED.with(|p| p.take())
}

const PROBE_CONFIG: &str = r#"[receivers.otlp]
grpc = "off"
http = "127.0.0.1:4318"
auth_token = "${TW_TOKEN}"

[exporters.probe]
token = "${TW_TOKEN}"
count = "${TW_COUNT:-5}"
on = "${TW_ON:-true}"
wait = "${TW_WAIT:-2s}"
tags = ["${TW_TOKEN}", "${TW_UNSET:-fallback}", "$${TW_TOKEN}"]

[service]
http = "off"

[service.pipelines.traces]
receivers = ["otlp"]
exporters = ["probe"]
"#;

#[test]
fn nasty_values_arrive_unchanged_and_create_nothing() {
    for (what, value) in NASTY {
        let cfg = load(PROBE_CONFIG, &[("TW_TOKEN", value)])
            .unwrap_or_else(|e| panic!("{what}: the config is refused:\n{e}"));
        let p = probed();
        assert_eq!(p.len(), 1, "{what}");
        assert_eq!(
            p[0].token.expose(),
            *value,
            "{what}: the value arrives unchanged"
        );
        assert_eq!(
            p[0].tags,
            [*value, "fallback", "${TW_TOKEN}"],
            "{what}: in an array too, and `$${{` stays a literal `${{`"
        );
        let ids = |m: Vec<&ComponentId>| m.iter().map(|i| i.to_string()).collect::<Vec<_>>();
        assert_eq!(ids(cfg.receivers.keys().collect()), ["otlp"], "{what}");
        assert!(cfg.processors.is_empty(), "{what}");
        assert_eq!(ids(cfg.exporters.keys().collect()), ["probe"], "{what}");
        assert_eq!(cfg.pipelines.len(), 1, "{what}: no pipeline added");
        // The OTLP receiver takes the same value as its token, and never prints it.
        let otlp: OtlpToken = component_config(
            &Source::from_text("t.toml".into(), PROBE_CONFIG, &|k| {
                (k == "TW_TOKEN").then(|| value.to_string())
            })
            .unwrap(),
            Kind::Receiver,
            &ComponentId::parse("otlp").unwrap(),
        )
        .unwrap();
        assert_eq!(otlp.auth_token.expose(), *value, "{what}");
        assert_eq!(format!("{:?}", p[0].token), "***");
    }
}

#[derive(Deserialize)]
struct OtlpToken {
    auth_token: Secret,
}

#[test]
fn a_whole_reference_fills_typed_fields() {
    load(PROBE_CONFIG, &[("TW_TOKEN", "t")]).unwrap();
    let p = probed().remove(0);
    assert_eq!(
        (p.count, p.on, p.wait.get()),
        (5, true, Duration::from_secs(2))
    );

    let env = [
        ("TW_TOKEN", "t"),
        ("TW_COUNT", "12"),
        ("TW_ON", "false"),
        ("TW_WAIT", "250ms"),
    ];
    load(PROBE_CONFIG, &env).unwrap();
    let p = probed().remove(0);
    assert_eq!(
        (p.count, p.on, p.wait.get()),
        (12, false, Duration::from_millis(250))
    );

    // A value that is not of the field's type: located, the variable named, the value not.
    let e = load(PROBE_CONFIG, &[("TW_TOKEN", "t"), ("TW_COUNT", "s3cr3t")])
        .expect_err("refused")
        .to_string();
    assert_eq!(
        e,
        "/etc/tw/t.toml:8:9: exporters.probe.count: the value of ${TW_COUNT} is not usize"
    );
    let e = load(PROBE_CONFIG, &[("TW_TOKEN", "t"), ("TW_ON", "yes")])
        .expect_err("refused")
        .to_string();
    assert!(
        e.starts_with(
            "/etc/tw/t.toml:9:6: exporters.probe.on: the value of ${TW_ON} is not a boolean"
        ),
        "{e}"
    );
    // Unset without a default: located at the reference.
    let e = load(PROBE_CONFIG, &[]).expect_err("refused");
    let lines: Vec<(usize, &str)> = e.0.iter().map(|e| (e.line, e.key.as_str())).collect();
    assert_eq!(
        lines,
        [
            (4, "receivers.otlp.auth_token"),
            (7, "exporters.probe.token"),
            (11, "exporters.probe.tags")
        ]
    );
}

#[test]
fn critical_is_read_for_every_kind_and_hidden_from_the_component() {
    let text = PROBE_CONFIG
        .replace("grpc = \"off\"\n", "grpc = \"off\"\ncritical = \"${TW_CRIT:-false}\"\n")
        .replace("[exporters.probe]\n", "[exporters.probe]\ncritical = true\n")
        .replace(
            "[service]",
            "[processors.controller]\ncontrol = \"otlp\"\ncritical = false\n\n[exporters.file]\npath = \"o.jsonl\"\n\n[service]",
        )
        .replace("exporters = [\"probe\"]", "processors = [\"controller\"]\nexporters = [\"probe\", \"file\"]");
    let cfg = load(&text, &[("TW_TOKEN", "t")]).unwrap();
    let id = |s: &str| ComponentId::parse(s).unwrap();
    assert!(!cfg.is_critical(Kind::Receiver, &id("otlp")));
    assert!(!cfg.is_critical(Kind::Processor, &id("controller")));
    assert!(cfg.is_critical(Kind::Exporter, &id("probe")));
    // Not written: the component's default (the file exporter is not critical).
    assert!(!cfg.is_critical(Kind::Exporter, &id("file")));
    assert_eq!(cfg.critical.len(), 3);
    let cfg = load(&text, &[("TW_TOKEN", "t"), ("TW_CRIT", "true")]).unwrap();
    assert!(cfg.is_critical(Kind::Receiver, &id("otlp")));

    let e = load(
        &text.replace("critical = true", "critical = 1"),
        &[("TW_TOKEN", "t")],
    )
    .expect_err("refused");
    assert_eq!(e.0.len(), 1, "{e}");
    assert_eq!(
        (e.0[0].line, e.0[0].key.as_str()),
        (8, "exporters.probe.critical"),
        "{e}"
    );
    assert!(e.0[0].message.contains("expected a boolean"), "{e}");
}

#[test]
fn a_dangling_or_mistyped_reference_is_refused_with_file_line_and_key() {
    let text = PROBE_CONFIG
        .replace(
            "[service]",
            "[processors.controller]\ncontrol = \"otlp/main\"\n\n[exporters.file]\npath = \"o.jsonl\"\n\n[service]",
        )
        .replace("tags = [", "alerts_to = \"file\"\ntags = [")
        .replace("exporters = [\"probe\"]", "processors = [\"controller\"]\nexporters = [\"probe\", \"file\"]");
    let e = load(&text, &[("TW_TOKEN", "t")]).expect_err("refused");
    assert_eq!(e.0.len(), 1, "{e}");
    assert_eq!(
        e.to_string(),
        "/etc/tw/t.toml:15:1: processors.controller.control: receiver \"otlp/main\" is not declared: add a [receivers.\"otlp/main\"] table or fix the name"
    );
    // Declared, and of the right type: accepted.
    load(&text.replace("otlp/main", "otlp"), &[("TW_TOKEN", "t")]).unwrap();
    // Declared but of a type the key does not take.
    let e = load(
        &text
            .replace("otlp/main", "otlp")
            .replace("alerts_to = \"file\"", "alerts_to = \"probe\""),
        &[("TW_TOKEN", "t")],
    )
    .expect_err("refused");
    assert_eq!(
        e.to_string(),
        "/etc/tw/t.toml:11:1: exporters.probe.alerts_to: exporter \"probe\" is of type \"probe\", but this key takes only: file"
    );
}

#[test]
fn relative_paths_start_at_the_config_folder() {
    let text = "[receivers.otlp]\n[exporters.file]\npath = \"out/t.jsonl\"\n[service]\ndata_dir = \"${TW_DATA:-state}\"\n[service.pipelines.traces]\nreceivers = [\"otlp\"]\nexporters = [\"file\"]\n";
    let cfg = load(text, &[]).unwrap();
    assert_eq!(cfg.service.data_dir, Path::new("/etc/tw/state"));
    let cfg = load(text, &[("TW_DATA", "/var/lib/tw")]).unwrap();
    assert_eq!(cfg.service.data_dir, Path::new("/var/lib/tw"));
    let cfg = load(&text.replace("data_dir = \"${TW_DATA:-state}\"\n", ""), &[]).unwrap();
    assert_eq!(cfg.service.data_dir, Path::new("/etc/tw/data"));
}

// ---------------------------------------------------------------------------------------
// The real binary

fn otlp_config(http: u16, service: u16, out: &str) -> String {
    format!(
        r#"[receivers.otlp]
grpc = "off"
http = "127.0.0.1:{http}"
auth_token = "${{TW_TOKEN}}"

[exporters.file]
path = "{out}"

[service]
http = "127.0.0.1:{service}"

[service.pipelines.traces]
receivers = ["otlp"]
exporters = ["file"]
"#
    )
}

const SPAN: &str = r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"0102030405060708090a0b0c0d0e0f10","spanId":"0102030405060708","name":"env","kind":1,"startTimeUnixNano":"1","endTimeUnixNano":"2"}]}]}]}"#;

/// POSTs one span with `Authorization: Bearer <token>` (raw bytes: non-ASCII allowed).
fn post_with_token(port: u16, token: &[u8]) -> u16 {
    let mut auth = b"Bearer ".to_vec();
    auth.extend_from_slice(token);
    let auth = reqwest::header::HeaderValue::from_bytes(&auth).expect("header-legal token");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        reqwest::Client::new()
            .post(format!("http://127.0.0.1:{port}/v1/traces"))
            .header("content-type", "application/json")
            .header("authorization", auth)
            .body(SPAN)
            .send()
            .await
            .expect("POST /v1/traces")
            .status()
            .as_u16()
    })
}

/// `/status` lists the configured components and none named in a value.
fn assert_created_nothing(c: &Collector) {
    let status = c.status();
    let ids: Vec<&str> = status["components"]
        .as_array()
        .expect("components")
        .iter()
        .map(|c| c["id"].as_str().unwrap_or_default())
        .collect();
    assert!(ids.contains(&"otlp") && ids.contains(&"file"), "{ids:?}");
    assert!(
        !ids.iter().any(|i| *i == "nop" || i.contains("evil")),
        "nothing created from the value: {ids:?}"
    );
}

#[test]
fn the_binary_accepts_the_literal_token_and_refuses_a_prefix() {
    // Everything a header can carry: quotes, backslash, `${...}`, a table header, non-ASCII.
    let token = "q\"b\\c'd ${TW_TOKEN} $${X} [exporters.nop] é€";
    let (http, service) = (common::free_port(), common::free_port());
    let mut c = Collector::start_with_env(
        &otlp_config(http, service, "out/t.jsonl"),
        service,
        &[("TW_TOKEN", token), ("TRADEWATCH_LOG", "debug")],
    );
    assert_eq!(post_with_token(http, token.as_bytes()), 200);
    let cut = &token.as_bytes()[..token.len() - "€".len()];
    assert_eq!(post_with_token(http, cut), 401, "a prefix is refused");
    assert_eq!(post_with_token(http, b"q\"b\\c'd"), 401);
    let out = c.path("out/t.jsonl");
    eventually(Duration::from_secs(10), "the span written", || {
        spans_in(&read_jsonl(&out)).len() == 1
    });
    assert_created_nothing(&c);
    assert!(c.terminate(Duration::from_secs(20)).success());
    assert!(!c.logs().contains(token), "the token is never logged");
}

#[test]
fn a_newline_and_tables_in_a_value_create_nothing() {
    let token = NASTY[3].1;
    let (http, service) = (common::free_port(), common::free_port());
    let config = otlp_config(http, service, "out/t.jsonl");

    // `validate` counts what the file declares: the value added no exporter or pipeline.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, &config).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tradewatch"))
        .args(["validate", "--config"])
        .arg(&path)
        .env("TW_TOKEN", token)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.trim_end(),
        format!(
            "{}: valid (1 receivers, 0 processors, 1 exporters, 1 pipelines)",
            path.display()
        )
    );

    let mut c = Collector::start_with_env(&config, service, &[("TW_TOKEN", token)]);
    assert_created_nothing(&c);
    // The token is the whole value, not what precedes its newline.
    assert_eq!(post_with_token(http, b"x\""), 401);
    let (code, _) = http_get(c.service, "/health").unwrap();
    assert_eq!(code, 200);
    assert!(c.terminate(Duration::from_secs(20)).success());
}

#[test]
fn relative_paths_in_the_binary_start_at_the_config_folder() {
    let (http, service) = (common::free_port(), common::free_port());
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("conf")).unwrap();
    let path = dir.path().join("conf/config.toml");
    std::fs::write(&path, otlp_config(http, service, "out/t.jsonl")).unwrap();
    // The working directory is `dir`, one level above the config.
    let mut c = Collector::spawn(dir, path, service, &[("TW_TOKEN", "t")]);
    c.wait_healthy();
    assert_eq!(post_with_token(http, b"t"), 200);
    let out = c.path("conf/out/t.jsonl");
    eventually(
        Duration::from_secs(10),
        "the span next to the config",
        || spans_in(&read_jsonl(&out)).len() == 1,
    );
    assert!(
        !c.path("out").exists(),
        "nothing relative to the working directory"
    );
    assert!(c.terminate(Duration::from_secs(20)).success());
}

/// Runs `config` (written in a fresh folder that also holds `files`) and returns the
/// logs of the start-up failure it must end in.
fn failed_start(config: &str, service: u16, files: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    for f in files {
        std::fs::write(dir.path().join(f), "").unwrap();
    }
    let path = dir.path().join("config.toml");
    std::fs::write(&path, config).unwrap();
    let mut c = Collector::spawn(dir, path, service, &[]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = c.child.as_mut().unwrap().try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "still running, though it cannot start:\n{}",
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    c.child = None;
    assert!(!status.success(), "{}", c.logs());
    c.logs()
}

#[test]
fn a_port_in_use_is_named_by_its_config_key() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let service = common::free_port();
    let config = format!(
        "[receivers.otlp]\ngrpc = \"127.0.0.1:{port}\"\nhttp = \"off\"\n[exporters.nop]\n[service]\nhttp = \"127.0.0.1:{service}\"\n[service.pipelines.traces]\nreceivers = [\"otlp\"]\nexporters = [\"nop\"]\n"
    );
    let logs = failed_start(&config, service, &[]);
    assert!(
        logs.contains(&format!(
            "receivers.otlp.grpc: cannot listen for OTLP/gRPC on 127.0.0.1:{port}:"
        )),
        "{logs}"
    );
    drop(taken);
}

#[test]
fn a_file_that_cannot_be_created_is_named_by_its_config_key() {
    let service = common::free_port();
    let config = format!(
        "[receivers.otlp]\ngrpc = \"off\"\nhttp = \"127.0.0.1:{}\"\n[exporters.file]\npath = \"blocker/out.jsonl\"\n[service]\nhttp = \"127.0.0.1:{service}\"\n[service.pipelines.traces]\nreceivers = [\"otlp\"]\nexporters = [\"file\"]\n",
        common::free_port()
    );
    // `blocker` is a file, so no folder can be made there.
    let logs = failed_start(&config, service, &["blocker"]);
    assert!(
        logs.contains("exporters.file.path: cannot create "),
        "{logs}"
    );
}
