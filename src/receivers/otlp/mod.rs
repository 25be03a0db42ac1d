//! `otlp`: OTLP over gRPC (traces, metrics and logs services; gzip and zstd) and over
//! HTTP (`/v1/traces|metrics|logs`, protobuf or JSON bodies, gzip and zstd).
//!
//! Protobuf requests are validated by the wire scanner and passed on still encoded;
//! JSON requests are decoded. A full pipeline is answered with a retryable status
//! (gRPC `UNAVAILABLE`, HTTP 503 + `Retry-After`) so SDKs retry rather than lose data.
//! Rejected requests are counted by reason and logged, at most once per reason per 10 s.
//! Work that takes milliseconds on a big request (inflating, validating, decoding JSON)
//! runs on the blocking pool, so one bulk upload cannot stall every other connection.

mod grpc;
mod http;

use crate::component::{BuildContext, BuildError, ReceiverConfig};
use crate::component::{ComponentId, Kind, Signal};
use crate::component::{Outputs, Receiver, Running};
use crate::config::{component_config, ConfigError, HumanDuration, HumanSize, Secret, Source};
use crate::net::listener::{ConnectionsConfig, Listener, ListenerStats};
use crate::net::tls::{Reload, ServerTls, ServerTlsConfig, ServerTlsFiles};
use crate::otlp::log_limit::LogLimiter;
use crate::pipeline::{Ack, Batch, Delivery, Payload, Refused};
use crate::service::health::ComponentHealth;
use futures_util::future::BoxFuture;
use prometheus_client::metrics::counter::Counter;
use serde::Deserialize;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpReceiverConfig {
    /// gRPC listen address, or "off".
    pub grpc: String,
    /// HTTP listen address, or "off".
    pub http: String,
    /// Largest request accepted, after decompression.
    pub max_request_size: HumanSize,
    /// How long a request waits for room in a full pipeline before it is refused.
    pub pushback_wait: HumanDuration,
    /// When the client gets its answer: `none` (once the pipelines took the data),
    /// `queued` (once every exporter holds it durably: on disk for a disk queue,
    /// delivered for a memory queue) or `delivered` (once every exporter delivered it).
    /// A request an exporter gave up on is answered UNAVAILABLE / 503 so the client
    /// retries. `true` means `delivered`, `false` means `none`.
    pub wait_for_delivery: WaitFor,
    /// If set, clients must send `Authorization: Bearer <token>`. Take it from the
    /// environment: `auth_token = "${OTLP_TOKEN}"`.
    pub auth_token: Option<Secret>,
    /// TLS on both listeners (`[receivers.otlp.tls]`); with `client_ca_file`, mutual TLS.
    pub tls: Option<ServerTlsConfig>,
    /// Connection limits and timeouts of each listener.
    pub connections: ConnectionsConfig,
}

impl Default for OtlpReceiverConfig {
    fn default() -> Self {
        OtlpReceiverConfig {
            grpc: "127.0.0.1:4317".into(),
            http: "127.0.0.1:4318".into(),
            max_request_size: HumanSize::mib(4),
            pushback_wait: HumanDuration::from_millis(500),
            wait_for_delivery: WaitFor::None,
            auth_token: None,
            tls: None,
            connections: ConnectionsConfig::default(),
        }
    }
}

#[derive(Debug, Clone)]
struct Checked {
    grpc: Option<SocketAddr>,
    http: Option<SocketAddr>,
    max_request_size: usize,
    pushback_wait: Duration,
    wait_for_delivery: WaitFor,
    auth_token: Option<Secret>,
    tls: Option<ServerTlsFiles>,
    connections: ConnectionsConfig,
}

pub fn parse(src: &Source, id: &ComponentId) -> Result<Arc<dyn ReceiverConfig>, ConfigError> {
    let c: OtlpReceiverConfig = component_config(src, Kind::Receiver, id)?;
    let addr = |key: &str, v: &str| -> Result<Option<SocketAddr>, ConfigError> {
        if v.is_empty() || v == "off" {
            return Ok(None);
        }
        v.parse().map(Some).map_err(|e| {
            src.component_error(Kind::Receiver, id, &[key], format!("invalid listen address {v:?}: {e} (write HOST:PORT, e.g. \"127.0.0.1:4317\", or \"off\")"),
            )
        })
    };
    let checked = Checked {
        grpc: addr("grpc", &c.grpc)?,
        http: addr("http", &c.http)?,
        max_request_size: c.max_request_size.bytes(),
        pushback_wait: c.pushback_wait.get(),
        wait_for_delivery: c.wait_for_delivery,
        auth_token: c.auth_token.filter(|t| !t.is_empty()),
        tls: match &c.tls {
            Some(t) => Some(t.check(|p| src.resolve_path(p)).map_err(|e| {
                src.component_error(Kind::Receiver, id, &["tls", e.key], e.message)
            })?),
            None => None,
        },
        connections: c.connections.clone(),
    };
    if let Err((key, m)) = checked.connections.validate() {
        return Err(src.component_error(Kind::Receiver, id, &["connections", key], m));
    }
    if checked.grpc.is_none() && checked.http.is_none() {
        return Err(src.component_error(
            Kind::Receiver,
            id,
            &[],
            "both grpc and http are off: enable at least one".into(),
        ));
    }
    if checked.max_request_size < 1024 {
        return Err(src.component_error(
            Kind::Receiver,
            id,
            &["max_request_size"],
            "max_request_size must be at least 1KiB".into(),
        ));
    }
    Ok(Arc::new(checked))
}

impl ReceiverConfig for Checked {
    fn signals(&self) -> Vec<Signal> {
        Signal::ALL.to_vec()
    }

    fn build(&self, ctx: &BuildContext) -> Result<Box<dyn Receiver>, BuildError> {
        Ok(Box::new(OtlpReceiver {
            cfg: self.clone(),
            id: ctx.id.clone(),
            health: ctx.health.clone(),
        }))
    }
}

struct OtlpReceiver {
    cfg: Checked,
    id: ComponentId,
    health: Arc<ComponentHealth>,
}

/// `wait_for_delivery`: when a client is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitFor {
    None,
    Queued,
    Delivered,
}

impl<'de> Deserialize<'de> for WaitFor {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<WaitFor, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = WaitFor;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("\"none\", \"queued\" or \"delivered\" (or true / false)")
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<WaitFor, E> {
                Ok(if v { WaitFor::Delivered } else { WaitFor::None })
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<WaitFor, E> {
                match v {
                    "none" | "false" => Ok(WaitFor::None),
                    "queued" => Ok(WaitFor::Queued),
                    "delivered" | "true" => Ok(WaitFor::Delivered),
                    _ => Err(E::invalid_value(serde::de::Unexpected::Str(v), &self)),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// What both protocol front-ends share: where data goes and how it is counted.
pub(crate) struct Intake {
    outputs: Outputs,
    max_request_size: usize,
    wait_for_delivery: WaitFor,
    auth_token: Option<Secret>,
    /// Requests refused before reaching a pipeline, by reason.
    bad_requests: Counter,
    unauthorized: Counter,
    too_large: Counter,
    id: ComponentId,
    /// A warning per rejection reason at most every 10 s, so a broken client shows up in
    /// the log at the default level without flooding it.
    rejections_log: LogLimiter,
}

/// Why a request was not taken, mapped to a status by each protocol.
#[derive(Debug)]
pub(crate) enum Rejection {
    Invalid(String),
    TooLarge(String),
    Unauthenticated,
    NotConfigured(Signal),
    Refused(Refused),
    /// Accepted, but an exporter gave up on it (only with `wait_for_delivery`).
    NotDelivered,
}

impl Rejection {
    /// The gRPC code; the HTTP front-end maps it to its status.
    pub(crate) fn code(&self) -> tonic::Code {
        match self {
            Rejection::Invalid(_) => tonic::Code::InvalidArgument,
            Rejection::TooLarge(_) => tonic::Code::ResourceExhausted,
            Rejection::Unauthenticated => tonic::Code::Unauthenticated,
            Rejection::NotConfigured(_) => tonic::Code::Unimplemented,
            Rejection::Refused(_) | Rejection::NotDelivered => tonic::Code::Unavailable,
        }
    }

    /// What the client is told.
    pub(crate) fn into_message(self) -> String {
        match self {
            Rejection::Invalid(m) | Rejection::TooLarge(m) => m,
            other => other.message().into_owned(),
        }
    }

    /// The same, borrowed: for the log line of a rejection.
    pub(crate) fn message(&self) -> std::borrow::Cow<'_, str> {
        match self {
            Rejection::Invalid(m) | Rejection::TooLarge(m) => m.as_str().into(),
            Rejection::Unauthenticated => "missing or wrong bearer token".into(),
            Rejection::NotConfigured(s) => format!("this receiver feeds no {s} pipeline").into(),
            Rejection::Refused(Refused::Full) => "the pipeline is full; retry with backoff".into(),
            Rejection::Refused(Refused::ShuttingDown) => {
                "the collector is shutting down; retry elsewhere or later".into()
            }
            Rejection::NotDelivered => {
                "accepted, but an exporter gave up on delivering it; retry".into()
            }
        }
    }
}

impl Intake {
    pub(crate) fn authorized(&self, header: Option<&[u8]>) -> bool {
        let Some(token) = &self.auth_token else {
            return true;
        };
        let expected = format!("Bearer {}", token.expose());
        let got = header.unwrap_or_default();
        // Compare in constant time so the token cannot be guessed byte by byte.
        got.len() == expected.len()
            && got
                .iter()
                .zip(expected.as_bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }

    /// Counts a rejected request and warns about it (rate-limited). `via` names the
    /// protocol. The message never holds the token: an unauthorized request is told only
    /// that its token is missing or wrong.
    pub(crate) fn count(&self, via: &str, r: &Rejection) {
        let reason = match r {
            Rejection::Invalid(_) | Rejection::NotConfigured(_) => {
                self.bad_requests.inc();
                "bad request"
            }
            Rejection::TooLarge(_) => {
                self.too_large.inc();
                "too large"
            }
            Rejection::Unauthenticated => {
                self.unauthorized.inc();
                "unauthorized"
            }
            Rejection::Refused(_) | Rejection::NotDelivered => return,
        };
        if let Some(suppressed) = self.rejections_log.allow(reason) {
            let message = r.message();
            let message: String = message.chars().take(300).collect();
            tracing::warn!(
                receiver = %self.id,
                reason,
                suppressed,
                "rejected an {via} request ({reason}): {message}{}",
                if suppressed > 0 {
                    format!(" ({suppressed} more like it in the last 10s not logged)")
                } else {
                    String::new()
                }
            );
        }
    }

    /// Validates encoded protobuf and hands it to the pipelines.
    pub(crate) async fn accept_encoded(
        &self,
        signal: Signal,
        body: bytes::Bytes,
    ) -> Result<(), Rejection> {
        // Find the consumer first: a signal nobody takes is refused before any work.
        self.outputs
            .get(signal)
            .ok_or(Rejection::NotConfigured(signal))?;
        let len = body.len();
        let scan = move || {
            Payload::from_encoded(signal, body).map_err(|e| Rejection::Invalid(e.to_string()))
        };
        // Scanning runs at about 1 GB/s: past a few milliseconds' worth, off the workers.
        let payload = if len <= BLOCKING_SCAN_MIN {
            scan()?
        } else {
            tokio::task::spawn_blocking(scan)
                .await
                .map_err(|e| Rejection::Invalid(format!("validating failed: {e}")))??
        };
        self.accept_decoded(payload).await
    }

    /// Hands a payload to the pipelines and answers as `wait_for_delivery` says: at once,
    /// once every exporter holds it durably, or once every exporter delivered it.
    pub(crate) async fn accept_decoded(&self, payload: Payload) -> Result<(), Rejection> {
        let signal = payload.signal();
        let consumer = self
            .outputs
            .get(signal)
            .ok_or(Rejection::NotConfigured(signal))?;
        let (ack, waiter) = match self.wait_for_delivery {
            WaitFor::None => {
                return consumer
                    .consume(Batch::new(payload))
                    .await
                    .map_err(Rejection::Refused)
            }
            WaitFor::Queued => Ack::new_queued(),
            WaitFor::Delivered => Ack::new(),
        };
        consumer
            .consume(Batch::with_ack(payload, ack))
            .await
            .map_err(Rejection::Refused)?;
        match waiter.wait().await {
            Delivery::Delivered => Ok(()),
            Delivery::GaveUp => Err(Rejection::NotDelivered),
        }
    }
}

impl Receiver for OtlpReceiver {
    fn start(
        self: Box<Self>,
        outputs: Outputs,
        shutdown: CancellationToken,
    ) -> BoxFuture<'static, Result<Running, BuildError>> {
        Box::pin(async move {
            let OtlpReceiver { cfg, id, health } = *self;
            let mut outputs = outputs;
            for s in Signal::ALL {
                if let Some(c) = outputs.get(s).cloned() {
                    outputs.set(c.with_wait(cfg.pushback_wait));
                }
            }
            let intake = Arc::new(Intake {
                outputs,
                max_request_size: cfg.max_request_size,
                wait_for_delivery: cfg.wait_for_delivery,
                auth_token: cfg.auth_token.clone(),
                bad_requests: health.counter("bad_requests", "Requests rejected as malformed (bad protobuf or JSON, wrong content type, bad compression)", &[]),
                unauthorized: health.counter("unauthorized_requests", "Requests rejected for a missing or wrong bearer token", &[]),
                too_large: health.counter("too_large_requests", "Requests rejected for exceeding max_request_size", &[]),
                id: id.clone(),
                rejections_log: LogLimiter::new(Duration::from_secs(10)),
            });
            let tls = match &cfg.tls {
                Some(files) => {
                    let tls = ServerTls::load(files.clone()).map_err(|e| {
                        BuildError::at_key(
                            &id,
                            Kind::Receiver,
                            &format!("tls.{}", e.key),
                            e.message,
                        )
                    })?;
                    watch_tls(&tls, &id, &health, &shutdown);
                    Some(tls)
                }
                None => None,
            };
            let stats = |listener: &str| {
                let l = [("listener", listener)];
                Arc::new(ListenerStats {
                    open: health.gauge("open_connections", "Connections open now", &l),
                    refused: health.counter("refused_connections", "Connections closed at once because max_connections were open", &l),
                    handshake_failures: health.counter("tls_handshake_failures", "Connections whose TLS handshake failed (no or untrusted client certificate, plaintext, timeout)", &l),
                    timed_out: health.counter("timed_out_connections", "Connections closed for not sending a request header within header_read_timeout, or for being idle", &l),
                })
            };
            let mut servers: Vec<Running> = Vec::new();
            let mut shown: Vec<(&'static str, Arc<ListenerStats>)> = Vec::new();
            let scheme = if tls.is_some() { "TLS" } else { "plaintext" };
            if let Some(addr) = cfg.grpc {
                let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
                    BuildError::at_key(
                        &id,
                        Kind::Receiver,
                        "grpc",
                        format!("cannot listen for OTLP/gRPC on {addr}: {e}"),
                    )
                })?;
                tracing::info!(receiver = %id, %addr, scheme, "OTLP/gRPC listening");
                let stats = stats("grpc");
                shown.push(("grpc", stats.clone()));
                servers.push(grpc::serve(
                    Listener {
                        name: "OTLP/gRPC",
                        tcp: listener,
                        tls: tls.clone(),
                        limits: cfg.connections.clone(),
                        stats,
                        http2_only: true,
                    },
                    intake.clone(),
                    shutdown.clone(),
                ));
            }
            if let Some(addr) = cfg.http {
                let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
                    BuildError::at_key(
                        &id,
                        Kind::Receiver,
                        "http",
                        format!("cannot listen for OTLP/HTTP on {addr}: {e}"),
                    )
                })?;
                tracing::info!(receiver = %id, %addr, scheme, "OTLP/HTTP listening");
                let stats = stats("http");
                shown.push(("http", stats.clone()));
                servers.push(http::serve(
                    Listener {
                        name: "OTLP/HTTP",
                        tcp: listener,
                        tls: tls.clone(),
                        limits: cfg.connections.clone(),
                        stats,
                        http2_only: false,
                    },
                    intake.clone(),
                    shutdown.clone(),
                ));
            }
            let max = cfg.connections.max_connections;
            health.set_detail_with(move || {
                let mut parts: Vec<String> = shown
                    .iter()
                    .map(|(name, s)| {
                        format!("{name}: {} open connections (max {max})", s.open.get())
                    })
                    .collect();
                if let Some(tls) = &tls {
                    parts.push(tls.describe());
                }
                parts.join("; ")
            });
            drop(intake);
            let run: Running = Box::pin(async move {
                futures_util::future::join_all(servers).await;
            });
            Ok(run)
        })
    }
}

/// Re-reads the certificate files every `reload_interval`: a good change is taken by new
/// handshakes, a bad one is refused (the old files stay in use), counted and shown in
/// `/status` as the receiver's last error, with the receiver degraded until fixed.
fn watch_tls(
    tls: &Arc<ServerTls>,
    id: &ComponentId,
    health: &Arc<ComponentHealth>,
    shutdown: &CancellationToken,
) {
    let reloads = health.counter("tls_reloads", "Times new certificate files were taken", &[]);
    let failures = health.counter(
        "tls_reload_failures",
        "Times changed certificate files were refused (the previous ones stay in use)",
        &[],
    );
    let (id, health) = (id.clone(), health.clone());
    tls.spawn_watch(shutdown.clone(), move |r| match r {
        Reload::Unchanged => {}
        Reload::Reloaded => {
            reloads.inc();
            tracing::info!(receiver = %id, "TLS certificate files changed: new connections use them");
            if health.state() == crate::service::health::State::Degraded {
                health.report_ok();
            }
        }
        Reload::Restored => {
            tracing::info!(receiver = %id, "TLS certificate files are back to the ones in use");
            if health.state() == crate::service::health::State::Degraded {
                health.report_ok();
            }
        }
        Reload::Refused(message) => {
            failures.inc();
            tracing::error!(receiver = %id, "{message}");
            health.report_error(crate::service::health::State::Degraded, message);
        }
    });
}

/// Encoded requests larger than this are validated on the blocking pool.
const BLOCKING_SCAN_MIN: usize = 4 * 1024 * 1024;

/// Bodies compressed larger than this are inflated on the blocking pool: inflating
/// 50 MB takes long enough to stall every other connection served by the same worker.
const INLINE_INFLATE_MAX: usize = 64 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Zstd,
}

/// Inflates `compressed`, never holding more than `limit` bytes of output: a zip bomb
/// is refused as too large once the limit is passed, without inflating the rest. Big
/// bodies are inflated off the async workers.
pub(crate) async fn inflate(
    compression: Compression,
    compressed: bytes::Bytes,
    limit: usize,
) -> Result<bytes::Bytes, InflateError> {
    if compressed.len() <= INLINE_INFLATE_MAX {
        return inflate_bounded(compression, &compressed, limit);
    }
    tokio::task::spawn_blocking(move || inflate_bounded(compression, &compressed, limit))
        .await
        .unwrap_or_else(|e| Err(InflateError::Invalid(format!("inflating failed: {e}"))))
}

#[derive(Debug)]
pub enum InflateError {
    /// The inflated body would be larger than the limit.
    TooLarge,
    Invalid(String),
}

/// [`inflate`] on the calling thread; public for the fuzz target (`fuzz/`), which checks
/// that no input panics or makes it hold more than `limit` bytes.
pub fn inflate_bounded(
    compression: Compression,
    compressed: &[u8],
    limit: usize,
) -> Result<bytes::Bytes, InflateError> {
    let invalid = |e: std::io::Error| InflateError::Invalid(e.to_string());
    match compression {
        Compression::Gzip => read_bounded(flate2::read::GzDecoder::new(compressed), limit),
        Compression::Zstd => {
            let mut d = zstd::stream::read::Decoder::with_buffer(compressed).map_err(invalid)?;
            d.window_log_max(zstd_window_log_max(limit))
                .map_err(invalid)?;
            read_bounded(d, limit)
        }
    }
}

/// zstd allocates the window a frame header asks for, up to 128 MiB by default, before
/// decoding anything: a 13-byte body reserved 128 MiB for a 4 KiB limit (found with the
/// inflate fuzz target under strace). A window larger than the limit is never needed to
/// produce at most `limit` bytes, but streaming encoders write windows of up to 8 MiB
/// whatever the body's size (zstd levels up to 19; klauspost/compress, used by the Go
/// collector, defaults to 8 MiB), so those stay accepted whatever the limit.
fn zstd_window_log_max(limit: usize) -> u32 {
    const EIGHT_MIB: u32 = 23;
    (usize::BITS - limit.saturating_sub(1).leading_zeros()).clamp(EIGHT_MIB, 31)
}

/// Reads all of `r` into a buffer whose capacity never exceeds `limit`, unlike
/// `read_to_end`, whose doubling could reserve up to twice the limit.
fn read_bounded(mut r: impl Read, limit: usize) -> Result<bytes::Bytes, InflateError> {
    let mut out: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = match r.read(&mut chunk) {
            Ok(0) => return Ok(out.into()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(InflateError::Invalid(e.to_string())),
        };
        if out.len() + n > limit {
            return Err(InflateError::TooLarge);
        }
        if out.capacity() - out.len() < n {
            let target = (out.capacity() * 2).max(out.len() + n).min(limit);
            out.reserve_exact(target - out.len());
        }
        out.extend_from_slice(&chunk[..n]);
    }
}

#[cfg(test)]
mod inflate_tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn inflates_up_to_the_limit_and_never_holds_more() {
        let data = vec![7u8; 300_000];
        let z = gzip(&data);
        assert_eq!(
            inflate_bounded(Compression::Gzip, &z, 300_000).unwrap(),
            data
        );
        let zs = zstd::encode_all(&data[..], 3).unwrap();
        assert_eq!(
            inflate_bounded(Compression::Zstd, &zs, 300_000).unwrap(),
            data
        );
        assert!(matches!(
            inflate_bounded(Compression::Gzip, &z, 299_999),
            Err(InflateError::TooLarge)
        ));
        // A 1 GiB bomb against a 1 MiB limit: refused after inflating about the limit.
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..1024 {
            e.write_all(&zeros).unwrap();
        }
        let bomb = e.finish().unwrap();
        assert!(matches!(
            inflate_bounded(Compression::Gzip, &bomb, 1 << 20),
            Err(InflateError::TooLarge)
        ));
        assert!(matches!(
            inflate_bounded(Compression::Gzip, &z[..z.len() / 2], 1 << 20),
            Err(InflateError::Invalid(_))
        ));
    }

    /// A zstd frame (no content size) asking for a 2^`log` byte window, holding "A".
    fn zstd_frame_with_window_log(log: u8) -> Vec<u8> {
        let exponent = log - 10;
        vec![
            0x28,
            0xb5,
            0x2f,
            0xfd,
            0x00,
            exponent << 3,
            0x09,
            0x00,
            0x00,
            b'A',
        ]
    }

    /// Found with the inflate fuzz target (under strace): 10 bytes made zstd reserve a
    /// 128 MiB window whatever the limit.
    #[test]
    fn zstd_windows_beyond_the_limit_and_8_mib_are_refused_before_allocating() {
        for limit in [4 * 1024, 4 * 1024 * 1024] {
            let huge = zstd_frame_with_window_log(27);
            assert!(matches!(
                inflate_bounded(Compression::Zstd, &huge, limit),
                Err(InflateError::Invalid(_))
            ));
            let usual = zstd_frame_with_window_log(23);
            assert_eq!(
                inflate_bounded(Compression::Zstd, &usual, limit).unwrap(),
                &b"A"[..]
            );
        }
        let big = zstd_frame_with_window_log(26);
        assert!(inflate_bounded(Compression::Zstd, &big, 64 << 20).is_ok());
        assert!(inflate_bounded(Compression::Zstd, &big, 32 << 20).is_err());
    }
}
