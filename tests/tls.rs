//! TLS and mutual TLS on the OTLP receiver, exporter and their connections, with
//! certificates generated here (rcgen), never committed:
//! - the Python OpenTelemetry SDK sends over gRPC and HTTP with TLS and with mutual TLS;
//! - clients without a trusted certificate, and plaintext, are refused and counted;
//! - tradewatch → tradewatch over mutual TLS, exactly, through a 10 s outage;
//! - the server certificate is rotated on disk without cutting open connections, and a
//!   corrupt replacement is refused and reported;
//! - expired certificates, wrong host names and mismatched keys are clear errors;
//! - thousands of connections that never finish a header are closed, the cap holds and a
//!   well-behaved client is served throughout.

mod common;

use common::{eventually, eventually_eq, read_jsonl, spans_in, Collector};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------
// Certificates

struct Ca {
    params: CertificateParams,
    key: KeyPair,
    pem: String,
}

struct Leaf {
    cert_pem: String,
    key_pem: String,
    der: Vec<u8>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("CA key");
        let pem = params.self_signed(&key).expect("self-sign the CA").pem();
        Ca { params, key, pem }
    }

    /// A certificate for `names` (DNS names or IP addresses), usable by servers and clients.
    fn leaf(&self, names: &[&str]) -> Leaf {
        self.leaf_with(names, |_| {})
    }

    fn leaf_with(&self, names: &[&str], edit: impl FnOnce(&mut CertificateParams)) -> Leaf {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).expect("leaf params");
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().cloned().unwrap_or_default(),
        );
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        edit(&mut params);
        let key = KeyPair::generate().expect("leaf key");
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).expect("sign the leaf");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }
}

/// Writes `text` to `dir/name` (atomically: a rename, as cert-manager and certbot do).
fn put(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).expect("write a TLS file");
    std::fs::rename(&tmp, &path).expect("rename a TLS file");
    path
}

/// The CA, a server certificate for localhost and 127.0.0.1, and a client certificate,
/// written into `dir`.
struct Pki {
    ca: Ca,
    server: Leaf,
    client: Leaf,
    ca_file: PathBuf,
    cert_file: PathBuf,
    key_file: PathBuf,
    client_cert_file: PathBuf,
    client_key_file: PathBuf,
}

impl Pki {
    fn new(dir: &Path) -> Pki {
        let ca = Ca::new("tradewatch test CA");
        let server = ca.leaf(&["localhost", "127.0.0.1"]);
        let client = ca.leaf(&["client.test"]);
        Pki {
            ca_file: put(dir, "ca.pem", &ca.pem),
            cert_file: put(dir, "server.pem", &server.cert_pem),
            key_file: put(dir, "server-key.pem", &server.key_pem),
            client_cert_file: put(dir, "client.pem", &client.cert_pem),
            client_key_file: put(dir, "client-key.pem", &client.key_pem),
            ca,
            server,
            client,
        }
    }
}

fn path_str(p: &Path) -> String {
    p.display().to_string()
}

// ---------------------------------------------------------------------------------------
// A blocking TLS client (rustls), for handshakes and HTTP/1.1 requests

fn client_config(ca_pem: &str, identity: Option<&Leaf>) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.expect("CA pem")).expect("add root");
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots);
    let mut config = match identity {
        Some(id) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from(id.der.clone())],
                PrivateKeyDer::from_pem_slice(id.key_pem.as_bytes()).expect("client key"),
            )
            .expect("client auth"),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// Connects and completes the handshake (as far as the client can tell: with TLS 1.3 a
/// refused client certificate shows on the first read).
fn tls_connect(port: u16, config: &Arc<rustls::ClientConfig>) -> std::io::Result<Tls> {
    let tcp = TcpStream::connect(("127.0.0.1", port))?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let mut conn = rustls::ClientConnection::new(config.clone(), name)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let mut tcp = tcp;
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp)?;
    }
    Ok(rustls::StreamOwned::new(conn, tcp))
}

fn peer_cert(s: &Tls) -> Vec<u8> {
    s.conn.peer_certificates().expect("peer certificates")[0].to_vec()
}

/// One HTTP/1.1 POST on a kept-alive connection; the status code.
fn request(s: &mut impl ReadWrite, path: &str, body: &[u8]) -> std::io::Result<u16> {
    exchange(s, "POST", path, body).map(|(code, _)| code)
}

/// One HTTP/1.1 request on a kept-alive connection; the status code and body.
fn exchange(
    s: &mut impl ReadWrite,
    method: &str,
    path: &str,
    body: &[u8],
) -> std::io::Result<(u16, String)> {
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    s.flush()?;
    // Read the head, then exactly Content-Length bytes of body.
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed before a response",
            ));
        }
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).to_string();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {head:?}")))?;
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body)?;
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

const EMPTY_TRACES: &[u8] = br#"{"resourceSpans":[]}"#;

// ---------------------------------------------------------------------------------------
// Collectors

fn tls_table(p: &Pki, mtls: bool, extra: &str) -> String {
    let mut t = format!(
        "[receivers.otlp.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        path_str(&p.cert_file),
        path_str(&p.key_file)
    );
    if mtls {
        t.push_str(&format!("client_ca_file = \"{}\"\n", path_str(&p.ca_file)));
    }
    t.push_str(extra);
    t
}

fn receiver_config(grpc: u16, http: u16, service: u16, tls: &str, connections: &str) -> String {
    let mut c = format!(
        r#"
[receivers.otlp]
grpc = "127.0.0.1:{grpc}"
http = "127.0.0.1:{http}"

{tls}

{connections}

[processors.batch]
send_batch_size = 100
timeout = "100ms"

[exporters.file]
path = "out/telemetry.jsonl"

[service]
http = "127.0.0.1:{service}"
"#
    );
    for signal in ["traces", "metrics", "logs"] {
        c.push_str(&format!(
            "\n[service.pipelines.{signal}]\nreceivers = [\"otlp\"]\nprocessors = [\"batch\"]\nexporters = [\"file\"]\n"
        ));
    }
    c
}

struct Ports {
    grpc: u16,
    http: u16,
    service: u16,
}

impl Ports {
    fn new() -> Ports {
        Ports {
            grpc: common::free_port(),
            http: common::free_port(),
            service: common::free_port(),
        }
    }
}

fn component(c: &Collector, kind: &str, id: &str) -> serde_json::Value {
    c.status()["components"]
        .as_array()
        .expect("components")
        .iter()
        .find(|x| x["kind"] == kind && x["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("no {kind} {id} in /status"))
}

fn receiver_metric(c: &Collector, name: &str, listener: &str) -> f64 {
    c.metric(&format!(
        "tradewatch_receiver_{name}{{receiver=\"otlp\",listener=\"{listener}\"}}"
    ))
}

// ---------------------------------------------------------------------------------------
// 1. The Python SDK over TLS and mutual TLS

fn run_sdk(protocol: &str, endpoint: &str, dir: &Path, env: &[(&str, &Path)]) -> serde_json::Value {
    let out = dir.join(format!("manifest-{protocol}.json"));
    let script = common::repo_root().join("tests/peers/otel_client.py");
    let mut cmd = Command::new(common::python());
    cmd.arg(&script)
        .args(["--protocol", protocol, "--endpoint", endpoint])
        .args(["--spans", "25", "--logs", "5", "--metrics"])
        .args(["--run-id", protocol, "--service-name"])
        .arg(format!("tls-{protocol}"))
        .arg("--out")
        .arg(&out);
    // requests (under the SDK's OTLP/HTTP exporter) lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE
    // override the CA the exporter was given: keep the machine's settings out.
    cmd.env_remove("REQUESTS_CA_BUNDLE")
        .env_remove("CURL_CA_BUNDLE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let result = cmd.output().expect("run the Python OpenTelemetry client");
    assert!(
        result.status.success(),
        "the SDK client ({protocol} {endpoint}) reported failed exports ({}):\nstdout: {}\nstderr: {}",
        result.status,
        String::from_utf8_lossy(&result.stdout),
        String::from_utf8_lossy(&result.stderr)
    );
    serde_json::from_slice(&std::fs::read(&out).expect("manifest written")).expect("manifest")
}

/// Span names (sorted) the file exporter wrote for `service`.
fn written_span_names(c: &Collector, service: &str) -> Vec<String> {
    let lines = read_jsonl(&c.path("out/telemetry.jsonl"));
    let mut names: Vec<String> = spans_in(&lines)
        .into_iter()
        .filter(|(res, _)| {
            common::attrs(&res["attributes"]).get("service.name")
                == Some(&serde_json::json!(service))
        })
        .map(|(_, s)| s["name"].as_str().unwrap_or_default().to_owned())
        .collect();
    names.sort();
    names
}

fn sdk_sends_everything(mtls: bool) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(tmp.path());
    let p = Ports::new();
    let c = Collector::start(
        &receiver_config(p.grpc, p.http, p.service, &tls_table(&pki, mtls, ""), ""),
        p.service,
    );
    let mut env: Vec<(&str, &Path)> = vec![("OTEL_EXPORTER_OTLP_CERTIFICATE", &pki.ca_file)];
    if mtls {
        env.push((
            "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
            &pki.client_cert_file,
        ));
        env.push(("OTEL_EXPORTER_OTLP_CLIENT_KEY", &pki.client_key_file));
    }
    for (protocol, port) in [("grpc", p.grpc), ("http", p.http)] {
        let manifest = run_sdk(
            protocol,
            &format!("https://localhost:{port}"),
            tmp.path(),
            &env,
        );
        let mut want: Vec<String> = manifest["spans"]
            .as_array()
            .expect("spans")
            .iter()
            .map(|s| s["name"].as_str().unwrap_or_default().to_owned())
            .collect();
        want.sort();
        assert_eq!(want.len(), 25);
        let service = format!("tls-{protocol}");
        eventually(
            Duration::from_secs(20),
            &format!("25 spans from the {protocol} SDK in the file"),
            || written_span_names(&c, &service).len() >= 25,
        );
        assert_eq!(written_span_names(&c, &service), want, "{protocol}");
        assert_eq!(
            receiver_metric(&c, "tls_handshake_failures_total", protocol),
            0.0
        );
    }
}

#[test]
fn python_sdk_sends_over_tls() {
    sdk_sends_everything(false);
}

#[test]
fn python_sdk_sends_over_mutual_tls() {
    sdk_sends_everything(true);
}

// ---------------------------------------------------------------------------------------
// 2. Refused at the handshake

#[test]
fn mtls_refuses_clients_without_a_trusted_certificate_and_plaintext() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(tmp.path());
    let p = Ports::new();
    let c = Collector::start(
        &receiver_config(p.grpc, p.http, p.service, &tls_table(&pki, true, ""), ""),
        p.service,
    );
    let failures = |c: &Collector| receiver_metric(c, "tls_handshake_failures_total", "http");

    // A client with a certificate from our CA is served.
    let good = client_config(&pki.ca.pem, Some(&pki.client));
    let mut s = tls_connect(p.http, &good).expect("mutual TLS handshake");
    assert_eq!(
        request(&mut s, "/v1/traces", EMPTY_TRACES).expect("request"),
        200
    );
    assert_eq!(failures(&c), 0.0);

    // No client certificate: refused (with TLS 1.3 the client learns on its first read).
    let anonymous = client_config(&pki.ca.pem, None);
    let refused = tls_connect(p.http, &anonymous)
        .and_then(|mut s| request(&mut s, "/v1/traces", EMPTY_TRACES));
    assert!(
        refused.is_err(),
        "a client without a certificate was served: {refused:?}"
    );
    eventually_eq(
        Duration::from_secs(10),
        "one handshake failure",
        1.0,
        || failures(&c),
    );

    // A certificate from another CA: refused.
    let other = Ca::new("somebody else's CA");
    let stranger = other.leaf(&["client.test"]);
    let foreign = client_config(&pki.ca.pem, Some(&stranger));
    let refused =
        tls_connect(p.http, &foreign).and_then(|mut s| request(&mut s, "/v1/traces", EMPTY_TRACES));
    assert!(
        refused.is_err(),
        "a foreign certificate was served: {refused:?}"
    );
    eventually_eq(
        Duration::from_secs(10),
        "two handshake failures",
        2.0,
        || failures(&c),
    );

    // The same on the gRPC listener.
    let refused = tls_connect(p.grpc, &anonymous).and_then(|mut s| request(&mut s, "/", b""));
    assert!(
        refused.is_err(),
        "gRPC listener served an anonymous client: {refused:?}"
    );
    eventually_eq(
        Duration::from_secs(10),
        "a gRPC handshake failure",
        1.0,
        || receiver_metric(&c, "tls_handshake_failures_total", "grpc"),
    );

    // Plaintext HTTP to the TLS port: no HTTP answer, the connection is closed, counted.
    let mut plain = TcpStream::connect(("127.0.0.1", p.http)).expect("connect");
    plain
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let answer = request(&mut plain, "/v1/traces", EMPTY_TRACES);
    assert!(answer.is_err(), "plaintext got an HTTP answer: {answer:?}");
    eventually_eq(
        Duration::from_secs(10),
        "three handshake failures",
        3.0,
        || failures(&c),
    );

    // The collector is still running and still serves a good client.
    let mut s = tls_connect(p.http, &good).expect("handshake after the refusals");
    assert_eq!(
        request(&mut s, "/v1/traces", EMPTY_TRACES).expect("request"),
        200
    );
    assert_eq!(c.status()["phase"], "running");
}

// ---------------------------------------------------------------------------------------
// 3. tradewatch A → tradewatch B over mutual TLS, through an outage of B

fn b_config(p: &Ports, pki: &Pki) -> String {
    receiver_config(p.grpc, p.http, p.service, &tls_table(pki, true, ""), "")
}

fn a_config(a: &Ports, b: &Ports, pki: &Pki, protocol: &str) -> String {
    let b_port = if protocol == "grpc" { b.grpc } else { b.http };
    format!(
        r#"
[receivers.otlp]
grpc = "127.0.0.1:{}"
http = "127.0.0.1:{}"

[exporters.otlp]
endpoint = "https://localhost:{b_port}"
protocol = "{protocol}"
timeout = "2s"

[exporters.otlp.tls]
ca_file = "{}"
cert_file = "{}"
key_file = "{}"

[exporters.otlp.retry_on_failure]
initial_interval = "100ms"
max_interval = "500ms"
max_elapsed_time = "5m"

[service]
http = "127.0.0.1:{}"

[service.pipelines.traces]
receivers = ["otlp"]
exporters = ["otlp"]
"#,
        a.grpc,
        a.http,
        path_str(&pki.ca_file),
        path_str(&pki.client_cert_file),
        path_str(&pki.client_key_file),
        a.service
    )
}

/// Posts OTLP/protobuf to a plaintext HTTP port; the status code.
fn post_plain(port: u16, body: &[u8]) -> u16 {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let head = format!(
        "POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).expect("write");
    s.write_all(body).expect("write");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

fn span_ids_written(c: &Collector) -> Vec<String> {
    let lines = read_jsonl(&c.path("out/telemetry.jsonl"));
    spans_in(&lines)
        .into_iter()
        .map(|(_, s)| s["spanId"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn relays_over_mtls_through_an_outage(protocol: &str) {
    use prost::Message;
    let tmp = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(tmp.path());
    let (a_ports, b_ports) = (Ports::new(), Ports::new());
    let mut b = Collector::start(&b_config(&b_ports, &pki), b_ports.service);
    let a = Collector::start(
        &a_config(&a_ports, &b_ports, &pki, protocol),
        a_ports.service,
    );
    let reqs: Vec<_> = (0..20)
        .map(|n| common::seq_request("relay", 7, n, 10))
        .collect();
    let mut want = common::span_ids(&reqs);
    want.sort();

    for r in &reqs[..10] {
        assert_eq!(post_plain(a_ports.http, &r.encode_to_vec()), 200);
    }
    eventually(Duration::from_secs(20), "100 spans at B", || {
        span_ids_written(&b).len() >= 100
    });

    // B goes away for 10 s; A keeps taking data and retries.
    b.terminate(Duration::from_secs(20));
    let down = Instant::now();
    for r in &reqs[10..] {
        assert_eq!(post_plain(a_ports.http, &r.encode_to_vec()), 200);
    }
    eventually(Duration::from_secs(20), "A to notice B is down", || {
        component(&a, "exporter", "otlp")["state"] != "ok"
    });
    while down.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
    }
    b.start_again(&[]);
    eventually(Duration::from_secs(30), "200 spans at B", || {
        span_ids_written(&b).len() >= 200
    });
    let mut got = span_ids_written(&b);
    got.sort();
    assert_eq!(got, want, "B holds every span exactly once");
    eventually(Duration::from_secs(10), "A's exporter ok again", || {
        component(&a, "exporter", "otlp")["state"] == "ok"
    });
    assert_eq!(
        b.metric(
            r#"tradewatch_receiver_tls_handshake_failures_total{receiver="otlp",listener="grpc"}"#
        ),
        0.0
    );
}

#[test]
fn grpc_relay_over_mutual_tls_survives_an_outage() {
    relays_over_mtls_through_an_outage("grpc");
}

#[test]
fn http_relay_over_mutual_tls_survives_an_outage() {
    relays_over_mtls_through_an_outage("http");
}

// ---------------------------------------------------------------------------------------
// 4. Rotation

#[test]
fn rotated_certificates_are_taken_by_new_connections_without_cutting_open_ones() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(tmp.path());
    let p = Ports::new();
    let c = Collector::start(
        &receiver_config(
            p.grpc,
            p.http,
            p.service,
            &tls_table(&pki, false, "reload_interval = \"200ms\"\n"),
            "",
        ),
        p.service,
    );
    let config = client_config(&pki.ca.pem, None);
    let mut open = tls_connect(p.http, &config).expect("handshake");
    assert_eq!(peer_cert(&open), pki.server.der);
    assert_eq!(
        request(&mut open, "/v1/traces", EMPTY_TRACES).expect("request"),
        200
    );
    // And an HTTP/2 connection (ALPN h2), as gRPC clients and the SDKs hold them.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut h2 = rt.block_on(H2::connect(p.http, &pki.ca.pem));
    assert_eq!(rt.block_on(h2.post()), 200);

    // Replaced on disk (key first, then certificate: a moment of mismatch is refused and
    // then taken once both are in).
    let next = pki.ca.leaf(&["localhost", "127.0.0.1"]);
    put(tmp.path(), "server-key.pem", &next.key_pem);
    put(tmp.path(), "server.pem", &next.cert_pem);
    eventually(
        Duration::from_secs(10),
        "a new connection to get the new certificate",
        || {
            tls_connect(p.http, &config)
                .map(|s| peer_cert(&s) == next.der)
                .unwrap_or(false)
        },
    );
    // The connections opened before still work, the HTTP/1.1 one with its old certificate.
    assert_eq!(
        rt.block_on(h2.post()),
        200,
        "the HTTP/2 connection after the rotation"
    );
    assert_eq!(
        request(&mut open, "/v1/traces", EMPTY_TRACES).expect("request on the open connection"),
        200
    );
    assert_eq!(peer_cert(&open), pki.server.der);
    // gRPC's listener shares the files.
    assert_eq!(
        peer_cert(&tls_connect(p.grpc, &config).expect("grpc handshake")),
        next.der
    );
    eventually(Duration::from_secs(5), "the reload counted", || {
        c.metric(r#"tradewatch_receiver_tls_reloads_total{receiver="otlp"}"#) >= 1.0
    });

    // A corrupt replacement is refused: the last good certificate stays, /status says why.
    put(
        tmp.path(),
        "server.pem",
        "-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n",
    );
    eventually(
        Duration::from_secs(10),
        "the corrupt file to be reported",
        || {
            let r = component(&c, "receiver", "otlp");
            r["state"] == "degraded"
                && r["last_error"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("refused") && m.contains("server.pem"))
        },
    );
    assert!(c.metric(r#"tradewatch_receiver_tls_reload_failures_total{receiver="otlp"}"#) >= 1.0);
    let s = tls_connect(p.http, &config).expect("handshake with the last good certificate");
    assert_eq!(peer_cert(&s), next.der);
    assert!(component(&c, "receiver", "otlp")["detail"]
        .as_str()
        .is_some_and(|d| d.contains("refused")));

    // Fixed: taken, and the receiver is ok again.
    let third = pki.ca.leaf(&["localhost", "127.0.0.1"]);
    put(tmp.path(), "server-key.pem", &third.key_pem);
    put(tmp.path(), "server.pem", &third.cert_pem);
    eventually(
        Duration::from_secs(10),
        "the fixed certificate to be taken",
        || {
            tls_connect(p.http, &config)
                .map(|s| peer_cert(&s) == third.der)
                .unwrap_or(false)
                && component(&c, "receiver", "otlp")["state"] == "ok"
        },
    );
    assert_eq!(
        request(&mut open, "/v1/traces", EMPTY_TRACES).expect("request"),
        200
    );
    assert_eq!(
        rt.block_on(h2.post()),
        200,
        "the HTTP/2 connection, two rotations later"
    );
}

/// One HTTP/2 connection over TLS (hyper's client), kept open across requests.
struct H2 {
    send: hyper::client::conn::http2::SendRequest<http_body_util::Full<bytes::Bytes>>,
}

impl H2 {
    async fn connect(port: u16, ca_pem: &str) -> H2 {
        let mut config = Arc::unwrap_or_clone(client_config(ca_pem, None));
        config.alpn_protocols = vec![b"h2".to_vec()];
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .expect("TLS handshake");
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let (send, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(tls),
        )
        .await
        .expect("HTTP/2 handshake");
        tokio::spawn(conn);
        H2 { send }
    }

    async fn post(&mut self) -> u16 {
        let req = http::Request::post("https://localhost/v1/traces")
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from_static(
                EMPTY_TRACES,
            )))
            .expect("request");
        self.send
            .send_request(req)
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    }
}

// ---------------------------------------------------------------------------------------
// 5. Clear errors

fn validate(config: &str, dir: &Path) -> (bool, String) {
    let path = dir.join("config.toml");
    std::fs::write(&path, config).expect("write config");
    let out = Command::new(env!("CARGO_BIN_EXE_tradewatch"))
        .args(["validate", "--config"])
        .arg(&path)
        .output()
        .expect("run validate");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout),
    )
}

#[test]
fn expired_certificates_wrong_names_and_mismatched_keys_are_clear_errors() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(tmp.path());
    let p = Ports::new();
    let line_of = |config: &str, needle: &str| {
        config
            .lines()
            .position(|l| l.contains(needle))
            .map(|i| i + 1)
            .expect("needle in config")
    };

    // A valid file validates.
    let good = receiver_config(p.grpc, p.http, p.service, &tls_table(&pki, true, ""), "");
    let (ok, out) = validate(&good, tmp.path());
    assert!(ok, "a valid TLS configuration was refused: {out}");

    // Expired.
    let expired = pki.ca.leaf_with(&["localhost"], |params| {
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    });
    put(tmp.path(), "expired.pem", &expired.cert_pem);
    put(tmp.path(), "expired-key.pem", &expired.key_pem);
    // Each refused with file:line:column: key: message.
    let refused = |config: &str, line_with: &str, key: &str, message: &str| {
        let (ok, out) = validate(config, tmp.path());
        let line = line_of(config, line_with);
        assert!(
            !ok && out.contains(&format!("config.toml:{line}:"))
                && out.contains(&format!("receivers.otlp.tls.{key}:"))
                && out.contains(message),
            "want line {line}, {key}, {message:?}; got: {out}"
        );
    };
    let config = good
        .replace("server.pem", "expired.pem")
        .replace("server-key.pem", "expired-key.pem");
    refused(&config, "expired.pem", "cert_file", "expired on 2021-01-01");
    // A key that belongs to another certificate.
    let config = good.replace("server-key.pem", "client-key.pem");
    refused(
        &config,
        "key_file",
        "key_file",
        "does not match the certificate",
    );
    // A missing file, and one that is not PEM.
    let config = good.replace("ca.pem", "nowhere.pem");
    refused(&config, "nowhere.pem", "client_ca_file", "cannot read");
    put(tmp.path(), "garbage.pem", "hello\n");
    let config = good.replace("server.pem", "garbage.pem");
    refused(&config, "garbage.pem", "cert_file", "holds no certificate");

    // The exporter: a server whose certificate names another host, then one whose
    // certificate expired (a plain rustls server here, since tradewatch refuses to serve
    // an expired certificate).
    let other_name = pki.ca.leaf(&["elsewhere.test"]);
    put(tmp.path(), "other.pem", &other_name.cert_pem);
    put(tmp.path(), "other-key.pem", &other_name.key_pem);
    let b = Ports::new();
    let _b = Collector::start(
        &receiver_config(
            b.grpc,
            b.http,
            b.service,
            &tls_table(&pki, false, "")
                .replace("server.pem", "other.pem")
                .replace("server-key.pem", "other-key.pem"),
            "",
        ),
        b.service,
    );
    let expired_server = ExpiredServer::start(&expired);
    for (port, want) in [
        (b.grpc, "not valid for name"),
        (expired_server.port, "expired"),
    ] {
        let a = Ports::new();
        let config = a_config(
            &a,
            &Ports {
                grpc: port,
                http: port,
                service: 0,
            },
            &pki,
            "grpc",
        );
        let a_collector = Collector::start(&config, a.service);
        use prost::Message;
        let req = common::seq_request("x", 1, 0, 1);
        assert_eq!(post_plain(a.http, &req.encode_to_vec()), 200);
        eventually(
            Duration::from_secs(20),
            &format!("the exporter to report {want:?}"),
            || {
                component(&a_collector, "exporter", "otlp")["last_error"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("TLS handshake") && m.contains(want))
            },
        );
    }
}

/// A TLS server presenting an expired certificate to whoever connects.
struct ExpiredServer {
    port: u16,
}

impl ExpiredServer {
    fn start(leaf: &Leaf) -> ExpiredServer {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let config = Arc::new(
            rustls::ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(leaf.der.clone())],
                PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).expect("key"),
            )
            .expect("server config"),
        );
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        std::thread::spawn(move || {
            for mut tcp in listener.incoming().flatten() {
                let Ok(mut conn) = rustls::ServerConnection::new(config.clone()) else {
                    continue;
                };
                let _ = tcp.set_read_timeout(Some(Duration::from_secs(5)));
                while conn.is_handshaking() {
                    if conn.complete_io(&mut tcp).is_err() {
                        break;
                    }
                }
            }
        });
        ExpiredServer { port }
    }
}

// ---------------------------------------------------------------------------------------
// 6. Slow clients

fn raise_fd_limit(want: libc::rlim_t) {
    // SAFETY: getrlimit/setrlimit on a local struct.
    unsafe {
        let mut l = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 && l.rlim_cur < want {
            l.rlim_cur = want.min(l.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &l);
        }
    }
}

#[test]
fn slow_clients_are_timed_out_the_cap_holds_and_good_clients_are_served() {
    const SLOW: usize = 2_500;
    // The cap must fill while the first slow clients still wait for their timeout, even
    // on a loaded machine: 500 accepts within 10 s.
    const CAP: usize = 500;
    raise_fd_limit(16_384);
    let p = Ports::new();
    let c = Collector::start(
        &receiver_config(
            p.grpc,
            p.http,
            p.service,
            "",
            &format!(
                "[receivers.otlp.connections]\nmax_connections = {CAP}\nheader_read_timeout = \"10s\"\n"
            ),
        ),
        p.service,
    );
    let metric = |name: &str| receiver_metric(&c, name, "http");
    // A well-behaved client, connected before the flood, keeps its connection.
    let mut good = TcpStream::connect(("127.0.0.1", p.http)).expect("connect");
    good.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    assert_eq!(
        request(&mut good, "/v1/traces", EMPTY_TRACES).expect("request"),
        200
    );

    // The flood, from another thread: connections that send half a request header and
    // then nothing. Meanwhile the good client sends a request every 100 ms.
    let port = p.http;
    let flood = std::thread::spawn(move || {
        let mut slow = Vec::with_capacity(SLOW);
        for _ in 0..SLOW {
            let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect a slow client");
            let _ = s.write_all(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Le");
            slow.push(s);
        }
        slow
    });
    // Served throughout, and never more than the cap open.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut served = 0;
    let mut flood = Some(flood);
    let mut slow = Vec::new();
    loop {
        assert_eq!(
            request(&mut good, "/v1/traces", EMPTY_TRACES).expect("the good client's request"),
            200
        );
        served += 1;
        if flood.as_ref().is_some_and(|f| f.is_finished()) {
            slow = flood.take().expect("flood").join().expect("flood thread");
        }
        let open = metric("open_connections");
        assert!(open <= CAP as f64, "{open} connections open, cap {CAP}");
        let refused = metric("refused_connections_total");
        let timed_out = metric("timed_out_connections_total");
        if flood.is_none() && refused + timed_out >= SLOW as f64 {
            assert_eq!(refused + timed_out, SLOW as f64);
            assert!(refused >= 1.0, "the cap was never reached");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "slow clients not all closed within 120 s: refused {refused}, timed out {timed_out}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(served > 1);
    // Every slow client was closed (EOF or reset), none answered.
    for mut s in slow {
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut buf = [0u8; 64];
        match s.read(&mut buf) {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Ok(n) => {
                let text = String::from_utf8_lossy(&buf[..n]).to_string();
                // hyper may answer a timed-out header with 408 before closing.
                assert!(
                    text.starts_with("HTTP/1.1 408"),
                    "a slow client got {text:?}"
                );
            }
            Err(e) => panic!("a slow client's connection is still open: {e}"),
        }
    }
    eventually_eq(
        Duration::from_secs(10),
        "only the good client open",
        1.0,
        || metric("open_connections"),
    );
    // A new client is served.
    let mut fresh = TcpStream::connect(("127.0.0.1", p.http)).expect("connect");
    fresh
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    assert_eq!(
        request(&mut fresh, "/v1/traces", EMPTY_TRACES).expect("request"),
        200
    );
    assert!(component(&c, "receiver", "otlp")["detail"]
        .as_str()
        .is_some_and(|d| d.contains(&format!("http: 2 open connections (max {CAP})"))));
}

// ---------------------------------------------------------------------------------------
// [service.tls]

#[test]
fn the_service_endpoint_serves_https_when_configured() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(tmp.path());
    let p = Ports::new();
    let mut config = receiver_config(p.grpc, p.http, p.service, "", "");
    config.push_str(&format!(
        "\n[service.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        path_str(&pki.cert_file),
        path_str(&pki.key_file)
    ));
    let dir = tempfile::tempdir().expect("tempdir");
    let config_path = dir.path().join("config.toml");
    std::fs::write(&config_path, config).expect("write config");
    let _c = Collector::spawn(dir, config_path, p.service, &[]);
    let client = client_config(&pki.ca.pem, None);
    let service = std::net::SocketAddr::from(([127, 0, 0, 1], p.service));
    eventually(
        Duration::from_secs(30),
        "/health over HTTPS to say running",
        || {
            tls_connect(p.service, &client)
                .and_then(|mut s| exchange(&mut s, "GET", "/health", b""))
                .is_ok_and(|(code, body)| code == 200 && body.contains(r#""phase":"running""#))
        },
    );
    let mut s = tls_connect(p.service, &client).expect("handshake");
    let (code, body) = exchange(&mut s, "GET", "/status", b"").expect("GET /status");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains(r#""status":"HEALTHY""#), "{body}");
    // Plaintext gets no HTTP answer.
    let plain = common::http_get(service, "/health");
    assert!(
        !plain.as_ref().is_ok_and(|(code, _)| *code == 200),
        "plaintext /health answered: {plain:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Idle and aged connections

/// Polls until the server closes `s` (EOF or reset), sending a request every 200 ms when
/// `busy`; fails after `within`.
fn wait_closed(s: &mut TcpStream, busy: bool, within: Duration, what: &str) -> usize {
    let deadline = Instant::now() + within;
    let mut served = 0;
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    loop {
        if busy {
            match request(s, "/v1/traces", EMPTY_TRACES) {
                Ok(200) => served += 1,
                Ok(code) => panic!("{what}: HTTP {code}"),
                Err(_) => return served,
            }
            std::thread::sleep(Duration::from_millis(200));
        } else {
            let mut b = [0u8; 1];
            match s.read(&mut b) {
                Ok(0) => return served,
                Ok(_) => panic!("{what}: unexpected bytes"),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return served,
                Err(_) => {}
            }
        }
        assert!(
            Instant::now() < deadline,
            "{what}: still open after {within:?}"
        );
    }
}

#[test]
fn idle_and_old_connections_are_closed() {
    let p = Ports::new();
    let c = Collector::start(
        &receiver_config(
            p.grpc,
            p.http,
            p.service,
            "",
            "[receivers.otlp.connections]\nheader_read_timeout = \"30s\"\nidle_timeout = \"1s\"\nmax_connection_age = \"3s\"\nmax_connection_age_grace = \"1s\"\n",
        ),
        p.service,
    );
    // Idle: closed about a second after its last request, and counted.
    let mut idle = TcpStream::connect(("127.0.0.1", p.http)).expect("connect");
    idle.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    assert_eq!(
        request(&mut idle, "/v1/traces", EMPTY_TRACES).expect("request"),
        200
    );
    wait_closed(
        &mut idle,
        false,
        Duration::from_secs(10),
        "an idle connection",
    );
    eventually_eq(
        Duration::from_secs(5),
        "the idle close counted",
        1.0,
        || receiver_metric(&c, "timed_out_connections_total", "http"),
    );
    // Busy but old: closed once older than max_connection_age, between requests.
    let mut busy = TcpStream::connect(("127.0.0.1", p.http)).expect("connect");
    let started = Instant::now();
    let served = wait_closed(
        &mut busy,
        true,
        Duration::from_secs(15),
        "an old connection",
    );
    assert!(
        served >= 5,
        "only {served} requests served before the close"
    );
    assert!(started.elapsed() >= Duration::from_secs(3));
    // The close is graceful and not a timeout.
    assert_eq!(
        receiver_metric(&c, "timed_out_connections_total", "http"),
        1.0
    );
    eventually_eq(Duration::from_secs(5), "no connection open", 0.0, || {
        receiver_metric(&c, "open_connections", "http")
    });
}
