//! CloudWatch Logs as a destination: events cut into `PutLogEvents` batches within the
//! API's limits ([`batches`]), and the client that sends them, creating the log group and
//! stream when they are missing.
//!
//! A batch holds at most 10,000 events and 1,048,576 bytes (each event's UTF-8 bytes plus
//! 26), its events in time order and spanning at most 24 hours. Events CloudWatch Logs
//! rejects for their age (`rejectedLogEventsInfo`: too old, too new, expired) are counted,
//! not retried: sending them again cannot help.

use super::emf::Event;

/// PutLogEvents: at most 10,000 events per call.
pub const MAX_BATCH_EVENTS: usize = 10_000;
/// PutLogEvents: at most 1,048,576 bytes per call, counting 26 bytes per event.
pub const MAX_BATCH_BYTES: usize = 1_048_576;
/// PutLogEvents: what each event adds to the batch size besides its message.
pub const EVENT_OVERHEAD: usize = 26;
/// PutLogEvents: the events of one call span at most 24 hours.
pub const MAX_BATCH_SPAN_MS: i64 = 24 * 3600 * 1000;

/// Checks a log group and stream name as CloudWatch Logs defines them.
pub fn check_names(group: &str, stream: &str) -> Result<(), (&'static str, String)> {
    let group_ok = (1..=512).contains(&group.len())
        && group
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-/.#".contains(c));
    if !group_ok {
        return Err((
            "log_group",
            format!(
                "log_group {group:?} must be 1 to 512 characters of letters, digits and _ - / . #"
            ),
        ));
    }
    let stream_ok = (1..=512).contains(&stream.len()) && !stream.contains([':', '*']);
    if !stream_ok {
        return Err((
            "log_stream",
            format!("log_stream {stream:?} must be 1 to 512 characters without ':' or '*'"),
        ));
    }
    Ok(())
}

/// Cuts `events` (sorted here by time, stably) into batches within PutLogEvents' limits.
/// Returns index ranges into the sorted order and the sorted events.
pub fn batches(events: &[Event]) -> (Vec<&Event>, Vec<std::ops::Range<usize>>) {
    let mut sorted: Vec<&Event> = events.iter().collect();
    sorted.sort_by_key(|e| e.time_ms);
    let mut out = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (i, e) in sorted.iter().enumerate() {
        let size = e.json.len() + EVENT_OVERHEAD;
        let full = i - start >= MAX_BATCH_EVENTS
            || bytes + size > MAX_BATCH_BYTES
            || (i > start && e.time_ms - sorted[start].time_ms > MAX_BATCH_SPAN_MS);
        if full && i > start {
            out.push(start..i);
            start = i;
            bytes = 0;
        }
        bytes += size;
    }
    if start < sorted.len() {
        out.push(start..sorted.len());
    }
    (sorted, out)
}

#[cfg(feature = "aws")]
pub use client::{LogsClient, LogsTarget};

#[cfg(feature = "aws")]
mod client {
    use super::super::AwsTarget;
    use super::*;
    use crate::component::ExportError;
    use crate::service::health::ComponentHealth;
    use aws_sdk_cloudwatchlogs::error::{ProvideErrorMetadata, SdkError};
    use aws_sdk_cloudwatchlogs::types::InputLogEvent;
    use prometheus_client::metrics::counter::Counter;
    use std::time::Duration;
    use tokio::sync::OnceCell;

    pub struct LogsTarget {
        pub aws: AwsTarget,
        pub log_group: String,
        pub log_stream: String,
        pub timeout: Duration,
        /// Send `x-amzn-logs-format: json/emf` (the events are EMF).
        pub emf_header: bool,
    }

    pub struct LogsClient {
        target: LogsTarget,
        client: OnceCell<aws_sdk_cloudwatchlogs::Client>,
        /// The group and stream exist (made or found).
        ready: std::sync::atomic::AtomicBool,
        rejected: Counter,
        requests: Counter,
    }

    impl LogsClient {
        pub fn new(target: LogsTarget, h: &ComponentHealth) -> LogsClient {
            LogsClient {
                target,
                client: OnceCell::new(),
                ready: std::sync::atomic::AtomicBool::new(false),
                rejected: h.counter(
                    "rejected_log_events",
                    "Events CloudWatch Logs rejected as too old, too new or past retention.",
                    &[],
                ),
                requests: h.counter("put_log_events_requests", "PutLogEvents calls made.", &[]),
            }
        }

        async fn client(&self) -> &aws_sdk_cloudwatchlogs::Client {
            self.client
                .get_or_init(|| async {
                    let sdk = self.target.aws.sdk_config(self.target.timeout).await;
                    aws_sdk_cloudwatchlogs::Client::new(&sdk)
                })
                .await
        }

        /// Makes the group and the stream, each unless it exists.
        async fn ensure(&self, c: &aws_sdk_cloudwatchlogs::Client) -> Result<(), ExportError> {
            let t = &self.target;
            match c
                .create_log_group()
                .log_group_name(&t.log_group)
                .send()
                .await
            {
                Ok(_) => {
                    tracing::info!(log_group = %t.log_group, "created the CloudWatch Logs group")
                }
                Err(e) if code(&e) == Some("ResourceAlreadyExistsException") => {}
                Err(e) => return Err(classify("CreateLogGroup", &e)),
            }
            match c
                .create_log_stream()
                .log_group_name(&t.log_group)
                .log_stream_name(&t.log_stream)
                .send()
                .await
            {
                Ok(_) => {}
                Err(e) if code(&e) == Some("ResourceAlreadyExistsException") => {}
                Err(e) => return Err(classify("CreateLogStream", &e)),
            }
            self.ready.store(true, std::sync::atomic::Ordering::Relaxed);
            Ok(())
        }

        /// Sends `events` (sorted by time) in batches, calling `delivered(n)` after each
        /// batch of `n`: a retry passes what is left, so nothing delivered is sent again.
        pub async fn put(
            &self,
            events: &[Event],
            mut delivered: impl FnMut(usize),
        ) -> Result<(), ExportError> {
            let c = self.client().await;
            if !self.ready.load(std::sync::atomic::Ordering::Relaxed) {
                self.ensure(c).await?;
            }
            let (sorted, ranges) = batches(events);
            for r in ranges {
                let batch: Vec<InputLogEvent> = sorted[r.clone()]
                    .iter()
                    .map(|e| {
                        InputLogEvent::builder()
                            .timestamp(e.time_ms)
                            .message(&e.json)
                            .build()
                            .map_err(|e| ExportError::permanent(format!("PutLogEvents: {e}")))
                    })
                    .collect::<Result<_, _>>()?;
                let mut tried_ensure = false;
                loop {
                    self.requests.inc();
                    let mut req = c
                        .put_log_events()
                        .log_group_name(&self.target.log_group)
                        .log_stream_name(&self.target.log_stream)
                        .set_log_events(Some(batch.clone()))
                        .customize();
                    if self.target.emf_header {
                        req = req.mutate_request(|r| {
                            r.headers_mut().insert("x-amzn-logs-format", "json/emf");
                        });
                    }
                    match req.send().await {
                        Ok(out) => {
                            if let Some(info) = out.rejected_log_events_info() {
                                let n = rejected_count(info, r.len());
                                self.rejected.inc_by(n as u64);
                                tracing::warn!(
                                    rejected = n,
                                    "CloudWatch Logs rejected events for their time"
                                );
                            }
                            break;
                        }
                        Err(e)
                            if code(&e) == Some("ResourceNotFoundException") && !tried_ensure =>
                        {
                            // The group or stream was deleted under us: make them again.
                            tried_ensure = true;
                            self.ensure(c).await?;
                        }
                        Err(e) => return Err(classify("PutLogEvents", &e)),
                    }
                }
                delivered(r.len());
            }
            Ok(())
        }
    }

    fn rejected_count(
        info: &aws_sdk_cloudwatchlogs::types::RejectedLogEventsInfo,
        len: usize,
    ) -> usize {
        // Indexes: events before `too_new_log_event_start_index` are fine up to it, those
        // up to `too_old_log_event_end_index` (exclusive) and `expired_log_event_end_index`
        // were rejected.
        let mut n = 0usize;
        if let Some(i) = info.too_new_log_event_start_index() {
            n += len.saturating_sub(i.max(0) as usize);
        }
        let old = info
            .too_old_log_event_end_index()
            .unwrap_or(0)
            .max(info.expired_log_event_end_index().unwrap_or(0));
        n + (old.max(0) as usize).min(len)
    }

    pub(crate) fn code<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> Option<&str> {
        match e {
            SdkError::ServiceError(se) => se.err().code(),
            _ => None,
        }
    }

    /// An AWS error as an export result: throttling, server errors, timeouts and
    /// connection failures are retried; refusals are permanent. Credentials never appear.
    fn classify<E>(
        op: &str,
        e: &SdkError<E, aws_sdk_cloudwatchlogs::config::http::HttpResponse>,
    ) -> ExportError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        super::super::classify_sdk(op, e)
    }
}
