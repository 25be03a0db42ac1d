//! `log`: every alert as one `tracing` event on the collector's own log, at `error`
//! (critical), `warn` (warning) or `info` level. Never fails: the channel of last resort.

use super::alerting::{self, ChannelFilter, ChannelQueue, ChannelRetry, MinSeverity};
use crate::component::{BuildContext, BuildError, ExporterConfig};
use crate::component::{ComponentId, Kind, Signal};
use crate::component::{ExportError, Exporter};
use crate::config::{component_config, ConfigError, HumanDuration, Source};
use crate::pipeline::alerts::Severity;
use crate::pipeline::sending::SendingSettings;
use crate::pipeline::Payload;
use futures_util::future::BoxFuture;
use serde::Deserialize;
use std::sync::Arc;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    #[serde(default)]
    pub min_severity: MinSeverity,
    #[serde(default = "alerting::default_true")]
    pub send_resolved: bool,
    #[serde(default = "alerting::default_timeout")]
    pub timeout: HumanDuration,
    #[serde(default)]
    pub sending_queue: ChannelQueue,
    #[serde(default)]
    pub retry_on_failure: ChannelRetry,
}

pub fn parse(src: &Source, id: &ComponentId) -> Result<Arc<dyn ExporterConfig>, ConfigError> {
    let c: LogConfig = component_config(src, Kind::Exporter, id)?;
    if let Err((keys, m)) = c.sending().validate() {
        return Err(src.component_error(Kind::Exporter, id, keys, m));
    }
    Ok(Arc::new(c))
}

impl ExporterConfig for LogConfig {
    fn signals(&self) -> Vec<Signal> {
        vec![Signal::Logs]
    }

    fn sending(&self) -> SendingSettings {
        alerting::channel_sending(&self.sending_queue, &self.retry_on_failure, self.timeout)
    }

    fn critical(&self) -> bool {
        false
    }

    fn build(&self, ctx: &BuildContext) -> Result<Arc<dyn Exporter>, BuildError> {
        let filter = super::alerting::ChannelFilter {
            min_severity: self.min_severity,
            send_resolved: self.send_resolved,
        };
        Ok(super::alerting::reported(
            ctx,
            filter.clone(),
            Arc::new(LogExporter {
                id: ctx.id.to_string(),
                filter,
            }),
        ))
    }
}

struct LogExporter {
    id: String,
    filter: ChannelFilter,
}

impl Exporter for LogExporter {
    fn export(&self, payload: Arc<Payload>) -> BoxFuture<'static, Result<(), ExportError>> {
        // An undecodable payload has nothing to log as an alert; it is not an error here.
        let alerts = alerting::alerts_in(&payload).unwrap_or_default();
        for a in alerts.iter().filter(|a| self.filter.admits(a)) {
            let labels = a
                .labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",");
            let trace_id = a.trace_id.as_deref().unwrap_or("");
            macro_rules! event {
                ($level:ident) => {
                    tracing::$level!(
                        exporter = %self.id,
                        name = %a.name,
                        state = a.state_str(),
                        severity = a.severity.as_str(),
                        summary = %a.summary,
                        labels = %labels,
                        fingerprint = %a.fingerprint,
                        trace_id = %trace_id,
                        "alert"
                    )
                };
            }
            match (a.is_firing(), a.severity) {
                (true, Severity::Critical) => event!(error),
                (true, Severity::Warning) => event!(warn),
                _ => event!(info),
            }
        }
        Box::pin(async { Ok(()) })
    }
}
