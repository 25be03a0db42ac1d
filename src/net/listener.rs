//! One accept loop for every HTTP listener (OTLP/gRPC, OTLP/HTTP, the service endpoint):
//! TLS (optional), a cap on concurrent connections, and timeouts, so a port exposed to a
//! network survives clients that open connections and never finish a request.
//!
//! - Past `max_connections` a new connection is closed at once and counted (`refused`).
//! - A connection must complete its TLS handshake and send its first request within
//!   `header_read_timeout`; on HTTP/1 every later request's header too (hyper's timer).
//! - A connection with no request in flight for `idle_timeout` is closed gracefully
//!   (HTTP/2: GOAWAY, then the open streams finish).
//! - HTTP/2 keepalive pings every `keepalive_interval`; no answer within
//!   `keepalive_timeout` closes the connection.
//! - `max_connection_age` (off by default) closes connections gracefully once that old, so
//!   long-lived gRPC clients spread over new gateway instances; streams in flight get
//!   `max_connection_age_grace` to finish.

use super::tls::ServerTls;
use crate::config::HumanDuration;
use crate::otlp::log_limit::LogLimiter;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use serde::Deserialize;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// `[receivers.otlp.connections]`: the same settings apply to each listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConnectionsConfig {
    /// Concurrent connections per listener; more are refused (closed at once, counted).
    pub max_connections: usize,
    /// Time for a new connection to finish its TLS handshake and send its first request
    /// header, and on HTTP/1 for every later request header.
    pub header_read_timeout: HumanDuration,
    /// A connection with nothing in flight this long is closed. "0s": never.
    pub idle_timeout: HumanDuration,
    /// HTTP/2 (gRPC) keepalive pings; "0s" turns them off.
    pub keepalive_interval: HumanDuration,
    /// A ping not answered within this closes the connection.
    pub keepalive_timeout: HumanDuration,
    /// Connections older than this are closed gracefully ("0s": never), so clients
    /// reconnect and spread over a gateway's instances.
    pub max_connection_age: HumanDuration,
    /// After a graceful close begins (age, idle, shutdown), requests in flight get this
    /// long to finish before the connection is dropped.
    pub max_connection_age_grace: HumanDuration,
}

impl Default for ConnectionsConfig {
    fn default() -> Self {
        ConnectionsConfig {
            max_connections: 4096,
            header_read_timeout: HumanDuration::from_secs(10),
            idle_timeout: HumanDuration::from_secs(300),
            keepalive_interval: HumanDuration::from_secs(30),
            keepalive_timeout: HumanDuration::from_secs(20),
            max_connection_age: HumanDuration::from_secs(0),
            max_connection_age_grace: HumanDuration::from_secs(30),
        }
    }
}

impl ConnectionsConfig {
    /// A key and message for the first setting that cannot work.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.max_connections == 0 {
            return Err(("max_connections", "must be at least 1".into()));
        }
        if self.header_read_timeout.get().is_zero() {
            return Err((
                "header_read_timeout",
                "must be more than 0s: without it a client that never finishes its header holds a connection forever".into(),
            ));
        }
        Ok(())
    }
}

/// Connection counts of one listener, registered by its owner (labelled by listener).
pub struct ListenerStats {
    pub open: Gauge,
    pub refused: Counter,
    pub handshake_failures: Counter,
    /// Closed for not sending a request in time, or idle.
    pub timed_out: Counter,
}

impl ListenerStats {
    /// Counts not registered anywhere (tests, or a listener nobody reports on).
    pub fn unregistered() -> ListenerStats {
        ListenerStats {
            open: Gauge::default(),
            refused: Counter::default(),
            handshake_failures: Counter::default(),
            timed_out: Counter::default(),
        }
    }
}

pub struct Listener {
    /// How logs name it, e.g. `OTLP/gRPC`.
    pub name: &'static str,
    pub tcp: TcpListener,
    pub tls: Option<Arc<ServerTls>>,
    pub limits: ConnectionsConfig,
    pub stats: Arc<ListenerStats>,
    /// Serve HTTP/2 only (gRPC): HTTP/1 requests are not answered.
    pub http2_only: bool,
}

/// Serves `app` on every accepted connection until `shutdown`, then closes connections
/// gracefully and waits for them (each at most `max_connection_age_grace`).
pub async fn serve(l: Listener, app: axum::Router, shutdown: CancellationToken) {
    let Listener {
        name,
        tcp,
        tls,
        limits,
        stats,
        http2_only,
    } = l;
    let limits = Arc::new(limits);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout.get())
        .keep_alive(true);
    let keepalive = limits.keepalive_interval.get();
    builder
        .http2()
        .timer(TokioTimer::new())
        .adaptive_window(true)
        .initial_connection_window_size(4 * 1024 * 1024)
        .initial_stream_window_size(1024 * 1024)
        .keep_alive_interval((!keepalive.is_zero()).then_some(keepalive))
        .keep_alive_timeout(limits.keepalive_timeout.get());
    if http2_only {
        builder = builder.http2_only();
    }
    let permits = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let tracker = TaskTracker::new();
    let log = Arc::new(LogLimiter::new(Duration::from_secs(10)));
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = tcp.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors (or a connection reset before accept): wait a
                // little rather than spin; connections closing free descriptors.
                if let Some(suppressed) = log.allow("accept") {
                    tracing::warn!(listener = name, error = %e, suppressed, "accepting a connection failed");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            stats.refused.inc();
            if let Some(suppressed) = log.allow("refused") {
                tracing::warn!(
                    listener = name,
                    %peer,
                    max_connections = limits.max_connections,
                    suppressed,
                    "connection refused: max_connections reached"
                );
            }
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let builder = builder.clone();
        let app = app.clone();
        let tls = tls.clone();
        let limits = limits.clone();
        let stats = stats.clone();
        let log = log.clone();
        let shutdown = shutdown.clone();
        stats.open.inc();
        tracker.spawn(async move {
            let started = Instant::now();
            let first_deadline = started + limits.header_read_timeout.get();
            match tls {
                None => {
                    connection(stream, builder, app, &limits, &stats, started, shutdown).await
                }
                Some(tls) => {
                    let acceptor = tokio_rustls::TlsAcceptor::from(tls.config());
                    let handshake = tokio::time::timeout_at(
                        first_deadline.into(),
                        acceptor.accept(stream),
                    );
                    let shaken = tokio::select! {
                        r = handshake => Some(r),
                        _ = shutdown.cancelled() => None,
                    };
                    match shaken {
                        Some(Ok(Ok(stream))) => {
                            connection(stream, builder, app, &limits, &stats, started, shutdown)
                                .await
                        }
                        Some(Ok(Err(e))) => {
                            stats.handshake_failures.inc();
                            if let Some(suppressed) = log.allow("handshake") {
                                tracing::warn!(listener = name, %peer, error = %e, suppressed, "TLS handshake failed");
                            }
                        }
                        Some(Err(_)) => {
                            stats.handshake_failures.inc();
                            stats.timed_out.inc();
                        }
                        None => {}
                    }
                }
            }
            stats.open.dec();
            drop(permit);
        });
    }
    tracker.close();
    tracker.wait().await;
}

/// What the connection's task reads to decide whether it is idle.
#[derive(Default)]
struct Activity {
    in_flight: AtomicUsize,
    requests: AtomicU64,
    /// When the last request finished, in ms since the connection started.
    last_done_ms: AtomicU64,
}

struct InFlight(Arc<Activity>, Instant);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0
            .last_done_ms
            .store(self.1.elapsed().as_millis() as u64, Ordering::Relaxed);
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn connection<IO>(
    io: IO,
    builder: auto::Builder<TokioExecutor>,
    app: axum::Router,
    limits: &ConnectionsConfig,
    stats: &ListenerStats,
    started: Instant,
    shutdown: CancellationToken,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use tower::ServiceExt;
    let activity = Arc::new(Activity::default());
    let seen = activity.clone();
    let service = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
        seen.requests.fetch_add(1, Ordering::Relaxed);
        seen.in_flight.fetch_add(1, Ordering::Relaxed);
        let guard = InFlight(seen.clone(), started);
        let app = app.clone();
        async move {
            let resp = app.oneshot(req).await;
            drop(guard);
            resp
        }
    });
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let header_timeout = limits.header_read_timeout.get();
    let idle = limits.idle_timeout.get();
    let max_age = limits.max_connection_age.get();
    let grace = limits.max_connection_age_grace.get();
    // Set once a graceful close began: the connection is dropped at this instant.
    let mut closing: Option<Instant> = None;
    loop {
        let now = Instant::now();
        let wake = match closing {
            Some(deadline) => deadline,
            None => next_check(&activity, started, now, header_timeout, idle, max_age),
        };
        tokio::select! {
            _ = conn.as_mut() => {
                // hyper's own header timer may have closed it first.
                if activity.requests.load(Ordering::Relaxed) == 0
                    && started.elapsed() >= header_timeout
                {
                    stats.timed_out.inc();
                }
                return;
            }
            _ = shutdown.cancelled(), if closing.is_none() => {
                conn.as_mut().graceful_shutdown();
                closing = Some(Instant::now() + grace);
            }
            _ = tokio::time::sleep_until(wake.into()) => {
                let now = Instant::now();
                if closing.is_some_and(|d| now >= d) {
                    return;
                }
                if closing.is_some() {
                    continue;
                }
                if activity.requests.load(Ordering::Relaxed) == 0 && now >= started + header_timeout {
                    // Never sent a whole request header: nothing to finish, drop it.
                    stats.timed_out.inc();
                    return;
                }
                let in_flight = activity.in_flight.load(Ordering::Relaxed);
                let last = started + Duration::from_millis(activity.last_done_ms.load(Ordering::Relaxed));
                let idle_for = now.saturating_duration_since(last);
                if !idle.is_zero() && in_flight == 0 && idle_for >= idle {
                    stats.timed_out.inc();
                    conn.as_mut().graceful_shutdown();
                    closing = Some(now + grace);
                } else if !max_age.is_zero() && now >= started + max_age {
                    conn.as_mut().graceful_shutdown();
                    closing = Some(now + grace);
                }
            }
        }
    }
}

/// When the connection's task should next look at it.
fn next_check(
    activity: &Activity,
    started: Instant,
    now: Instant,
    header_timeout: Duration,
    idle: Duration,
    max_age: Duration,
) -> Instant {
    let mut wake = now + Duration::from_secs(3600);
    if activity.requests.load(Ordering::Relaxed) == 0 {
        wake = wake.min(started + header_timeout);
    }
    if !idle.is_zero() {
        let last = started + Duration::from_millis(activity.last_done_ms.load(Ordering::Relaxed));
        // Busy connections are looked at again one idle period from now.
        wake = wake.min((last + idle).max(now + idle.min(Duration::from_secs(1))));
    }
    if !max_age.is_zero() {
        wake = wake.min(started + max_age);
    }
    wake.max(now + Duration::from_millis(10))
}
