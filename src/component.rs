//! Component identity shared by configuration, the pipeline and self-telemetry.

use std::fmt;

/// The three OTLP signals. Alerts are log records, so they travel as `Logs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Signal {
    Traces,
    Metrics,
    Logs,
}

impl Signal {
    pub const ALL: [Signal; 3] = [Signal::Traces, Signal::Metrics, Signal::Logs];

    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Traces => "traces",
            Signal::Metrics => "metrics",
            Signal::Logs => "logs",
        }
    }

    pub fn parse(s: &str) -> Option<Signal> {
        match s {
            "traces" => Some(Signal::Traces),
            "metrics" => Some(Signal::Metrics),
            "logs" => Some(Signal::Logs),
            _ => None,
        }
    }

    /// What one item of this signal is called in counters and messages.
    pub fn item_name(self) -> &'static str {
        match self {
            Signal::Traces => "spans",
            Signal::Metrics => "metric_points",
            Signal::Logs => "log_records",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Receiver,
    Processor,
    Exporter,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Receiver => "receiver",
            Kind::Processor => "processor",
            Kind::Exporter => "exporter",
        }
    }

    /// The config table that declares components of this kind.
    pub fn table(self) -> &'static str {
        match self {
            Kind::Receiver => "receivers",
            Kind::Processor => "processors",
            Kind::Exporter => "exporters",
        }
    }
}

/// `TYPE` or `TYPE/NAME`, as written in the configuration (`otlp`, `otlp/jaeger`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ComponentId {
    full: String,
    type_len: usize,
}

impl ComponentId {
    pub fn parse(s: &str) -> Result<ComponentId, String> {
        let (ty, name) = match s.split_once('/') {
            Some((ty, name)) => (ty, Some(name)),
            None => (s, None),
        };
        let valid = |p: &str| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        };
        if !valid(ty) {
            return Err(format!(
                "invalid component id {s:?}: the type must be letters, digits, '_', '-' or '.'"
            ));
        }
        if let Some(name) = name {
            if name.is_empty() || name.contains('/') {
                return Err(format!(
                    "invalid component id {s:?}: write TYPE or TYPE/NAME with a non-empty NAME"
                ));
            }
        }
        Ok(ComponentId {
            full: s.to_owned(),
            type_len: ty.len(),
        })
    }

    pub fn type_name(&self) -> &str {
        &self.full[..self.type_len]
    }

    pub fn as_str(&self) -> &str {
        &self.full
    }
}

impl fmt::Display for ComponentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

/// `traces`, `metrics`, `logs`, or one of those with `/NAME`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PipelineId {
    pub signal: Signal,
    pub full: String,
}

impl PipelineId {
    pub fn parse(s: &str) -> Result<PipelineId, String> {
        let sig = s.split_once('/').map(|(a, _)| a).unwrap_or(s);
        let signal = Signal::parse(sig).ok_or_else(|| {
            format!("invalid pipeline name {s:?}: it must start with traces, metrics or logs (optionally /NAME)")
        })?;
        if s.ends_with('/') {
            return Err(format!("invalid pipeline name {s:?}: empty NAME after '/'"));
        }
        Ok(PipelineId {
            signal,
            full: s.to_owned(),
        })
    }
}

impl fmt::Display for PipelineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn component_ids() {
        let id = ComponentId::parse("otlp/jaeger").unwrap();
        assert_eq!(id.type_name(), "otlp");
        assert_eq!(id.as_str(), "otlp/jaeger");
        assert!(ComponentId::parse("otlp/").is_err());
        assert!(ComponentId::parse("").is_err());
        assert!(ComponentId::parse("a b").is_err());
        assert!(ComponentId::parse("x/y/z").is_err());
    }

    #[test]
    fn pipeline_ids() {
        assert_eq!(
            PipelineId::parse("logs/alerts").unwrap().signal,
            Signal::Logs
        );
        assert!(PipelineId::parse("spans").is_err());
        assert!(PipelineId::parse("logs/").is_err());
    }
}
