//! `alerts`: the internal source through which components raise alerts.
//!
//! Alerts are OTLP log records with `event.name = "alert"` and well-known attributes
//! (`alert.name`, `alert.state`, `alert.severity`, `alert.fingerprint`, ...). Processors
//! and receivers emit them through the [`AlertSink`] in their build context; the
//! `alerts` receiver puts them into the logs pipelines that list it, where the alert
//! exporters (and any other logs exporter) deliver them like any record.

use crate::component::{
    BuildContext, BuildError, ComponentId, Kind, Outputs, Receiver, ReceiverConfig, Running, Signal,
};
use crate::config::{component_config, ConfigError, Source};
use crate::pipeline::alerts::{alerts_request, Alert};
use crate::pipeline::{Batch, Consumer, Payload};
use futures_util::future::BoxFuture;
use serde::Deserialize;
use std::sync::Arc;
use tokio::sync::mpsc;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {}

pub fn parse(src: &Source, id: &ComponentId) -> Result<Arc<dyn ReceiverConfig>, ConfigError> {
    let c: AlertsConfig = component_config(src, Kind::Receiver, id)?;
    Ok(Arc::new(c))
}

impl ReceiverConfig for AlertsConfig {
    fn signals(&self) -> Vec<Signal> {
        vec![Signal::Logs]
    }

    fn build(&self, ctx: &BuildContext) -> Result<Box<dyn Receiver>, BuildError> {
        let rx = ctx.alert_queue.lock().ok().and_then(|mut g| g.take());
        let Some(rx) = rx else {
            return Err(BuildError::new(
                &ctx.id,
                "only one alerts receiver may be declared",
            ));
        };
        Ok(Box::new(AlertsReceiver {
            id: ctx.id.clone(),
            rx,
        }))
    }
}

struct AlertsReceiver {
    id: ComponentId,
    rx: mpsc::Receiver<Alert>,
}

impl Receiver for AlertsReceiver {
    fn start(
        self: Box<Self>,
        outputs: Outputs,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> BoxFuture<'static, Result<Running, BuildError>> {
        let AlertsReceiver { id, mut rx } = *self;
        Box::pin(async move {
            let Some(consumer) = outputs.get(Signal::Logs).cloned() else {
                return Err(BuildError::new(
                    &id,
                    "no logs pipeline takes alerts from this receiver",
                ));
            };
            let run: Running = Box::pin(async move {
                // Serves until shutdown begins, then delivers what was already raised
                // and stops, whoever still holds an AlertSink: waiting for every sink to
                // drop could wait for ever (a processor holding one lives until its
                // pipeline drains, which waits for this receiver). Alerts raised later
                // are logged and counted by the sink.
                loop {
                    let alert = tokio::select! {
                        biased;
                        a = rx.recv() => match a {
                            Some(a) => a,
                            // No sink left: nothing more can come before shutdown.
                            None => {
                                shutdown.cancelled().await;
                                break;
                            }
                        },
                        _ = shutdown.cancelled() => break,
                    };
                    // Alerts raised together (one evaluation's breaches) travel as one
                    // batch, so a channel that must mind its rate limit (Slack: one
                    // message a second) can send them as one message.
                    let mut group = vec![alert];
                    while group.len() < MAX_GROUP {
                        match rx.try_recv() {
                            Ok(a) => group.push(a),
                            Err(_) => break,
                        }
                    }
                    deliver(&consumer, group).await;
                }
                rx.close();
                let mut rest = Vec::new();
                while let Ok(alert) = rx.try_recv() {
                    rest.push(alert);
                    if rest.len() == MAX_GROUP {
                        deliver(&consumer, std::mem::take(&mut rest)).await;
                    }
                }
                if !rest.is_empty() {
                    deliver(&consumer, rest).await;
                }
            });
            Ok(run)
        })
    }
}

/// At most this many alerts travel in one batch.
const MAX_GROUP: usize = 100;

/// Puts alerts into the logs pipelines as one batch, waiting for room: internal data has
/// no client to retry for it.
async fn deliver(consumer: &Consumer, alerts: Vec<Alert>) {
    let batch = Batch::new(Payload::Logs(alerts_request(&alerts)));
    if consumer.deliver(batch, None).await.is_err() {
        for alert in &alerts {
            tracing::error!(alert = %alert.name, summary = %alert.summary, "pipeline closed; alert logged here only");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::alerts::{kv_str, AlertSink, AlertState, Severity};
    use crate::pipeline::Consumer;
    use opentelemetry_proto::tonic::common::v1::any_value;
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, SeverityNumber};
    use prometheus_client::metrics::counter::Counter;
    use std::time::Duration;

    #[tokio::test]
    async fn alerts_enter_the_logs_pipeline_as_records() {
        let (sink, rx) = AlertSink::new(8, Counter::default());
        let (tx, mut pipeline) = mpsc::channel(8);
        let mut outputs = Outputs::default();
        outputs.set(Consumer::new(
            Signal::Logs,
            vec![tx],
            crate::pipeline::memory::MemoryBudget::unlimited(),
            Duration::from_millis(10),
            Counter::default(),
            Counter::default(),
        ));
        let receiver = Box::new(AlertsReceiver {
            id: ComponentId::parse("alerts").unwrap(),
            rx,
        });
        let shutdown = tokio_util::sync::CancellationToken::new();
        let run = receiver.start(outputs, shutdown.clone()).await.unwrap();
        let alert = |state| Alert {
            name: "MaxDrawdownExceeded".into(),
            state,
            severity: Severity::Critical,
            summary: "drawdown 12.3% > 10%".into(),
            fingerprint: String::new(),
            attributes: vec![kv_str("bot", "main")],
            trace_id: Some(vec![7; 16]),
            source: "risk".into(),
        };
        sink.emit(alert(AlertState::Firing));
        sink.emit(alert(AlertState::Resolved));
        let task = tokio::spawn(run);
        // Both were queued before the receiver looked: they travel as one batch.
        let first = pipeline.recv().await.expect("a batch");
        let Payload::Logs(req) = &first.payload else {
            panic!("alerts are logs")
        };
        assert_eq!(req.resource_logs[0].scope_logs[0].log_records.len(), 2);
        let mut records = req.resource_logs[0].scope_logs[0].log_records.clone();
        // Shutdown begins with the sink still held: what was raised is still delivered,
        // and the receiver stops all the same.
        shutdown.cancel();
        while let Some(b) = pipeline.recv().await {
            let Payload::Logs(req) = b.payload else {
                panic!("alerts are logs")
            };
            records.extend(req.resource_logs[0].scope_logs[0].log_records.clone());
        }
        task.await.unwrap();
        drop(sink);
        assert_eq!(records.len(), 2);
        let attr = |r: &LogRecord, k: &str| {
            r.attributes.iter().find(|kv| kv.key == k).and_then(|kv| {
                match &kv.value.as_ref()?.value {
                    Some(any_value::Value::StringValue(s)) => Some(s.clone()),
                    _ => None,
                }
            })
        };
        assert_eq!(attr(&records[0], "event.name").as_deref(), Some("alert"));
        assert_eq!(attr(&records[0], "alert.state").as_deref(), Some("firing"));
        assert_eq!(
            attr(&records[1], "alert.state").as_deref(),
            Some("resolved")
        );
        assert_eq!(
            attr(&records[0], "alert.severity").as_deref(),
            Some("critical")
        );
        assert_eq!(attr(&records[0], "bot").as_deref(), Some("main"));
        // One alert, one fingerprint, across its state changes.
        assert_eq!(
            attr(&records[0], "alert.fingerprint"),
            attr(&records[1], "alert.fingerprint")
        );
        assert_eq!(records[0].trace_id, vec![7; 16]);
        assert_eq!(records[0].severity_number, SeverityNumber::Error as i32);
    }
}
