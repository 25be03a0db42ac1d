//! Configuration: TOML with `${VAR}` expansion, checked before anything starts.
//!
//! Every error names the file, the line and the key, so `tradewatch validate` can point
//! a user at the exact place to fix. Loading happens in two passes over the same text:
//! a generic pass that reads the shape (component names, pipelines, the service
//! section) with spans, then one typed pass per component, which deserializes just that
//! component's table with `deny_unknown_fields` so its own mistakes carry their spans too.

mod secret;
mod units;

pub use secret::Secret;
pub use units::{HumanDuration, HumanSize};

use crate::component::{
    ComponentId, ExporterConfig, Kind, ParseFn, PipelineId, ProcessorConfig, ReceiverConfig,
    Registry, Signal,
};
use serde::de::{self, DeserializeOwned, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use toml::Spanned;

/// One configuration mistake, located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    /// Dotted TOML path of the offending key, e.g. `exporters."otlp/jaeger".endpoint`.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

/// All the mistakes found in one file (validation goes on past the first one).
#[derive(Debug, Clone)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> Self {
        ConfigErrors(vec![e])
    }
}

/// The configuration text after `${VAR}` expansion, with what is needed to locate spans.
pub struct Source {
    pub file: String,
    pub text: String,
}

impl Source {
    pub fn load(path: &Path) -> Result<Source, ConfigErrors> {
        let file = path.display().to_string();
        let raw = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            line: 0,
            column: 0,
            key: String::new(),
            message: format!("cannot read the configuration file: {e}"),
        })?;
        Source::from_text(file, &raw, &|k| std::env::var(k).ok())
    }

    /// Expands `${VAR}` / `${VAR:-default}` line by line (so lines keep their numbers);
    /// `$${` stands for a literal `${`. Whole-line comments are left alone.
    pub fn from_text(
        file: String,
        raw: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Source, ConfigErrors> {
        let mut text = String::with_capacity(raw.len());
        let mut errors = Vec::new();
        for (n, line) in raw.split_inclusive('\n').enumerate() {
            if line.trim_start().starts_with('#') {
                text.push_str(line);
                continue;
            }
            match expand_line(line, env) {
                Ok(l) => text.push_str(&l),
                Err((col, message)) => {
                    errors.push(ConfigError {
                        file: file.clone(),
                        line: n + 1,
                        column: col + 1,
                        key: key_at_line(raw, n),
                        message,
                    });
                    text.push_str(line);
                }
            }
        }
        if errors.is_empty() {
            Ok(Source { file, text })
        } else {
            Err(ConfigErrors(errors))
        }
    }

    fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let col = before.rfind('\n').map(|p| offset - p).unwrap_or(offset + 1);
        (line, col)
    }

    /// An error at `span` (line and column 0 when the file does not say where) about `key`.
    fn located(&self, span: Option<Range<usize>>, key: String, message: String) -> ConfigError {
        let (line, column) = span.map(|s| self.line_col(s.start)).unwrap_or((0, 0));
        ConfigError {
            file: self.file.clone(),
            line,
            column,
            key,
            message,
        }
    }

    /// An error at `span`. The key is read off the file: the table header above the
    /// span plus the key written on its line (`path` is the fallback when neither exists).
    pub fn error_at(&self, span: Option<Range<usize>>, path: &str, message: String) -> ConfigError {
        let key = match &span {
            Some(span) => {
                let key = key_at_line(&self.text, self.line_col(span.start).0 - 1);
                let key = if key.is_empty() { path.to_owned() } else { key };
                name_unknown_field(key, &message)
            }
            None => path.to_owned(),
        };
        self.located(span, key, message)
    }

    /// An error about the key at `segments` (e.g. `["exporters", "otlp/jaeger", "endpoint"]`),
    /// located at that key, or at its nearest written ancestor when the key was defaulted.
    pub fn error_at_key(&self, segments: &[&str], message: String) -> ConfigError {
        let key = segments
            .iter()
            .map(|s| quote_key(s))
            .collect::<Vec<_>>()
            .join(".");
        let span = (1..=segments.len())
            .rev()
            .find_map(|n| self.locate(&segments[..n]));
        self.located(span, key, message)
    }

    /// An error about `keys` inside the table of component `id` (or about the table itself
    /// when `keys` is empty).
    pub fn component_error(
        &self,
        kind: Kind,
        id: &ComponentId,
        keys: &[&str],
        message: String,
    ) -> ConfigError {
        let mut segments = vec![kind.table(), id.as_str()];
        segments.extend_from_slice(keys);
        self.error_at_key(&segments, message)
    }

    /// The span of the key at `segments`, if it is written in the file.
    fn locate(&self, segments: &[&str]) -> Option<Range<usize>> {
        let root = toml::de::DeTable::parse(&self.text).ok()?;
        let mut table = root.get_ref();
        let mut found = None;
        for (i, seg) in segments.iter().enumerate() {
            let (k, v) = table.iter().find(|(k, _)| k.get_ref().as_ref() == *seg)?;
            found = Some(k.span());
            if i + 1 < segments.len() {
                match v.get_ref() {
                    toml::de::DeValue::Table(t) => table = t,
                    _ => return None,
                }
            }
        }
        found
    }

    /// An error at `span` about exactly `key`.
    pub fn error_span_key(&self, span: Range<usize>, key: String, message: String) -> ConfigError {
        self.located(Some(span), key, message)
    }

    fn toml_error(&self, e: toml::de::Error, path: &str) -> ConfigError {
        let message = e.message().trim().to_owned();
        // serde names a missing field only in the message; make it the key.
        if let Some(field) = message
            .strip_prefix("missing field `")
            .and_then(|m| m.strip_suffix('`'))
        {
            let key = if path.is_empty() {
                field.to_owned()
            } else {
                format!("{path}.{field}")
            };
            let span = e.span().unwrap_or(0..0);
            return self.error_span_key(span, key, format!("{message}: add it"));
        }
        self.error_at(e.span(), path, message)
    }
}

fn expand_line(
    line: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, (usize, String)> {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    let mut offset = 0;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos..];
        if let Some(literal) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = literal;
            offset += pos + 3;
            continue;
        }
        if !after.starts_with("${") {
            out.push('$');
            rest = &after[1..];
            offset += pos + 1;
            continue;
        }
        let Some(end) = after.find('}') else {
            return Err((
                offset + pos,
                "unterminated ${...}: add the closing '}'".into(),
            ));
        };
        let inner = &after[2..end];
        let (name, default) = match inner.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (inner, None),
        };
        let valid = !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !name.starts_with(|c: char| c.is_ascii_digit());
        if !valid {
            return Err((
                offset + pos,
                format!("invalid environment variable name {name:?} in ${{{inner}}}"),
            ));
        }
        match (env(name), default) {
            (Some(v), _) if !(v.is_empty() && default.is_some()) => out.push_str(&v),
            (_, Some(d)) => out.push_str(d),
            (_, None) => {
                return Err((
                    offset + pos,
                    format!("environment variable {name} is not set (write ${{{name}:-default}} to give a default)"),
                ))
            }
        }
        rest = &after[end + 1..];
        offset += pos + end + 1;
    }
    out.push_str(rest);
    Ok(out)
}

/// The key written at the start of a `key = value` line, or "" for other lines.
fn line_key(line: &str) -> String {
    let t = line.trim_start();
    if t.starts_with('[') || t.starts_with('#') {
        return String::new();
    }
    match t.split_once('=') {
        Some((k, _)) => k.trim().to_owned(),
        None => String::new(),
    }
}

/// For serde's "unknown field `x`": the key read off the line may name a table below the
/// unknown field (`[extensions.zpages]` for field `extensions`) or above it (an inline
/// table): make the key end at the unknown field.
fn name_unknown_field(key: String, message: &str) -> String {
    let Some(field) = message
        .strip_prefix("unknown field `")
        .and_then(|m| m.split('`').next())
    else {
        return key;
    };
    let segments: Vec<&str> = key.split('.').map(str::trim).collect();
    match segments.iter().position(|s| s.trim_matches('"') == field) {
        Some(i) => segments[..=i].join("."),
        None if key.is_empty() => field.to_owned(),
        None => format!("{key}.{field}"),
    }
}

/// The path of a `[table]` or `[[array]]` header line, if `line` is one.
fn header_path(line: &str) -> Option<String> {
    let t = line.trim();
    let inner = t
        .strip_prefix("[[")
        .and_then(|r| r.split("]]").next())
        .or_else(|| t.strip_prefix('[').and_then(|r| r.split(']').next()))?;
    Some(inner.trim().to_owned())
}

/// The full dotted key of what is written on line `index` (0-based): the header above
/// it plus the line's own key.
fn key_at_line(text: &str, index: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let Some(line) = lines.get(index) else {
        return String::new();
    };
    if let Some(h) = header_path(line) {
        return h;
    }
    let leaf = line_key(line);
    let table = lines[..index]
        .iter()
        .rev()
        .find_map(|l| header_path(l))
        .unwrap_or_default();
    match (table.is_empty(), leaf.is_empty()) {
        (_, true) => table,
        (true, false) => leaf,
        (false, false) => format!("{table}.{leaf}"),
    }
}

/// Quotes a component or pipeline name for a TOML path when it needs it.
pub fn quote_key(name: &str) -> String {
    if name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        name.to_owned()
    } else {
        format!("\"{name}\"")
    }
}

// ---------------------------------------------------------------------------------------
// The generic pass

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDoc {
    #[serde(default)]
    receivers: BTreeMap<Spanned<String>, IgnoredAny>,
    #[serde(default)]
    processors: BTreeMap<Spanned<String>, IgnoredAny>,
    #[serde(default)]
    exporters: BTreeMap<Spanned<String>, IgnoredAny>,
    service: Spanned<RawService>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    #[serde(default = "default_service_http")]
    http: Option<Spanned<String>>,
    #[serde(default)]
    data_dir: Option<PathBuf>,
    #[serde(default = "default_shutdown_timeout")]
    shutdown_timeout: HumanDuration,
    /// Bytes of data held in pipelines and sending queues before receivers push back.
    #[serde(default = "default_memory_limit")]
    memory_limit: HumanSize,
    #[serde(default)]
    pipelines: BTreeMap<Spanned<String>, Spanned<RawPipeline>>,
}

fn default_service_http() -> Option<Spanned<String>> {
    Some(Spanned::new(0..0, "127.0.0.1:13133".to_owned()))
}

/// Sized for a small VM next to a bot; gateways raise it.
pub const DEFAULT_MEMORY_LIMIT: u64 = 512 * 1024 * 1024;

fn default_memory_limit() -> HumanSize {
    HumanSize(DEFAULT_MEMORY_LIMIT)
}

fn default_shutdown_timeout() -> HumanDuration {
    HumanDuration::from_secs(15)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPipeline {
    #[serde(default)]
    receivers: Vec<Spanned<String>>,
    #[serde(default)]
    processors: Vec<Spanned<String>>,
    #[serde(default)]
    exporters: Vec<Spanned<String>>,
    /// Batches the pipeline's input channel holds before receivers are pushed back.
    #[serde(default = "default_pipeline_capacity")]
    capacity: Spanned<usize>,
}

fn default_pipeline_capacity() -> Spanned<usize> {
    Spanned::new(0..0, 64)
}

// ---------------------------------------------------------------------------------------
// The checked configuration

#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// Where `/health`, `/status` and `/metrics` are served; `None` turns them off.
    pub http: Option<SocketAddr>,
    /// Root of the state components keep on disk (checkpoints, breach state).
    pub data_dir: PathBuf,
    /// How long shutdown may take to drain queues and flush before giving up.
    pub shutdown_timeout: std::time::Duration,
    /// Bytes held in pipelines and sending queues past which receivers push back.
    pub memory_limit: u64,
}

#[derive(Debug, Clone)]
pub struct PipelineConfig {
    pub id: PipelineId,
    pub receivers: Vec<ComponentId>,
    pub processors: Vec<ComponentId>,
    pub exporters: Vec<ComponentId>,
    pub capacity: usize,
}

pub struct Config {
    pub file: String,
    pub service: ServiceConfig,
    pub receivers: BTreeMap<ComponentId, Arc<dyn ReceiverConfig>>,
    pub processors: BTreeMap<ComponentId, Arc<dyn ProcessorConfig>>,
    pub exporters: BTreeMap<ComponentId, Arc<dyn ExporterConfig>>,
    pub pipelines: Vec<PipelineConfig>,
    /// `critical = true|false` as written in a component's table; see [`Config::is_critical`].
    pub critical: BTreeMap<(Kind, ComponentId), bool>,
}

impl Config {
    /// Whether a failure of this component makes the service UNHEALTHY (else DEGRADED):
    /// the component's `critical` key, else the component's own default (exporters may
    /// say), else true.
    pub fn is_critical(&self, kind: Kind, id: &ComponentId) -> bool {
        if let Some(c) = self.critical.get(&(kind, id.clone())) {
            return *c;
        }
        match kind {
            Kind::Exporter => self.exporters.get(id).is_none_or(|e| e.critical()),
            _ => true,
        }
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("file", &self.file)
            .field("service", &self.service)
            .field("receivers", &self.receivers.keys().collect::<Vec<_>>())
            .field("processors", &self.processors.keys().collect::<Vec<_>>())
            .field("exporters", &self.exporters.keys().collect::<Vec<_>>())
            .field("pipelines", &self.pipelines)
            .finish()
    }
}

impl Config {
    /// Reads and checks `path`, building components from `registry`
    /// (`crate::registry::builtin()` for the ones tradewatch ships).
    pub fn load(path: &Path, registry: &Registry) -> Result<Config, ConfigErrors> {
        Config::from_source(&Source::load(path)?, registry)
    }

    pub fn from_source(src: &Source, registry: &Registry) -> Result<Config, ConfigErrors> {
        let raw: RawDoc = toml::from_str(&src.text).map_err(|e| src.toml_error(e, ""))?;
        let mut errors = Vec::new();
        let mut cfg = Config {
            file: src.file.clone(),
            service: ServiceConfig {
                http: None,
                data_dir: raw
                    .service
                    .get_ref()
                    .data_dir
                    .clone()
                    .unwrap_or_else(|| PathBuf::from("data")),
                shutdown_timeout: raw.service.get_ref().shutdown_timeout.get(),
                memory_limit: raw.service.get_ref().memory_limit.0,
            },
            critical: BTreeMap::new(),
            receivers: BTreeMap::new(),
            processors: BTreeMap::new(),
            exporters: BTreeMap::new(),
            pipelines: Vec::new(),
        };

        if let Some(http) = &raw.service.get_ref().http {
            match http.get_ref().parse::<SocketAddr>() {
                Ok(a) => cfg.service.http = Some(a),
                Err(_) if http.get_ref().is_empty() || http.get_ref() == "off" => {}
                Err(e) => errors.push(src.error_at(
                    Some(http.span()),
                    "service",
                    format!("invalid listen address {:?}: {e} (write HOST:PORT, e.g. \"127.0.0.1:13133\", or \"off\")", http.get_ref()),
                )),
            }
        }

        // Components: the type must exist, then its own table must deserialize.
        parse_components(
            src,
            &raw.receivers,
            Kind::Receiver,
            registry,
            Registry::receiver,
            &mut cfg.receivers,
            &mut errors,
        );
        parse_components(
            src,
            &raw.processors,
            Kind::Processor,
            registry,
            Registry::processor,
            &mut cfg.processors,
            &mut errors,
        );
        parse_components(
            src,
            &raw.exporters,
            Kind::Exporter,
            registry,
            Registry::exporter,
            &mut cfg.exporters,
            &mut errors,
        );

        // Pipelines: names, references, signals.
        let declared = |kind: Kind, table: &BTreeMap<Spanned<String>, IgnoredAny>, name: &str| {
            let _ = kind;
            table.keys().any(|k| k.get_ref() == name)
        };
        if raw.service.get_ref().pipelines.is_empty() {
            errors.push(src.error_span_key(
                raw.service.span(),
                "service.pipelines".into(),
                "no pipelines: declare at least one [service.pipelines.<traces|metrics|logs>] with receivers and exporters".into(),
            ));
        }
        for (name, pipe) in &raw.service.get_ref().pipelines {
            let path = format!("service.pipelines.{}", quote_key(name.get_ref()));
            let id = match PipelineId::parse(name.get_ref()) {
                Ok(id) => id,
                Err(m) => {
                    errors.push(src.error_at(Some(name.span()), &path, m));
                    continue;
                }
            };
            let p = pipe.get_ref();
            for (list, what) in [(&p.receivers, "receivers"), (&p.exporters, "exporters")] {
                if list.is_empty() {
                    errors.push(src.error_span_key(
                        pipe.span(),
                        format!("{path}.{what}"),
                        format!("pipeline {} has no {what}: list at least one", id.full),
                    ));
                }
            }
            if *p.capacity.get_ref() == 0 {
                let span = if p.capacity.span().is_empty() {
                    pipe.span()
                } else {
                    p.capacity.span()
                };
                errors.push(src.error_span_key(
                    span,
                    format!("{path}.capacity"),
                    "capacity must be at least 1".into(),
                ));
            }
            let mut resolve =
                |list: &Vec<Spanned<String>>,
                 kind: Kind,
                 table: &BTreeMap<Spanned<String>, IgnoredAny>| {
                    let mut out: Vec<ComponentId> = Vec::new();
                    for r in list {
                        let key = format!("{path}.{}", kind.table());
                        if !declared(kind, table, r.get_ref()) {
                            errors.push(src.error_span_key(r.span(), key.clone(),
                            format!(
                                "pipeline {} references {} {:?}, which is not declared: add a [{}.{}] table or fix the name",
                                id.full, kind.as_str(), r.get_ref(), kind.table(), quote_key(r.get_ref())
                            ),
                        ));
                            continue;
                        }
                        let Ok(cid) = ComponentId::parse(r.get_ref()) else {
                            continue;
                        };
                        if out.contains(&cid) {
                            errors.push(src.error_span_key(
                                r.span(),
                                key.clone(),
                                format!("{} {:?} is listed twice", kind.as_str(), r.get_ref()),
                            ));
                            continue;
                        }
                        // The component must take this pipeline's signal.
                        let signals: Option<Vec<Signal>> = match kind {
                            Kind::Receiver => cfg.receivers.get(&cid).map(|c| c.signals()),
                            Kind::Exporter => cfg.exporters.get(&cid).map(|c| c.signals()),
                            Kind::Processor => cfg.processors.get(&cid).map(|c| c.signals()),
                        };
                        if let Some(signals) = signals {
                            if !signals.contains(&id.signal) {
                                let took: Vec<&str> = signals.iter().map(|s| s.as_str()).collect();
                                errors.push(src.error_span_key(r.span(), key.clone(),
                                format!(
                                    "{} {:?} cannot take {} (it handles: {}), so pipeline {} cannot use it",
                                    kind.as_str(), r.get_ref(), id.signal, took.join(", "), id.full
                                ),
                            ));
                            }
                        }
                        out.push(cid);
                    }
                    out
                };
            let receivers = resolve(&p.receivers, Kind::Receiver, &raw.receivers);
            let processors = resolve(&p.processors, Kind::Processor, &raw.processors);
            let exporters = resolve(&p.exporters, Kind::Exporter, &raw.exporters);
            cfg.pipelines.push(PipelineConfig {
                id,
                receivers,
                processors,
                exporters,
                capacity: *p.capacity.get_ref(),
            });
        }

        // A declared component no pipeline uses is almost always a typo elsewhere.
        for (kind, table) in [
            (Kind::Receiver, &raw.receivers),
            (Kind::Processor, &raw.processors),
            (Kind::Exporter, &raw.exporters),
        ] {
            for name in table.keys() {
                let used = raw.service.get_ref().pipelines.values().any(|p| {
                    let p = p.get_ref();
                    let list = match kind {
                        Kind::Receiver => &p.receivers,
                        Kind::Processor => &p.processors,
                        Kind::Exporter => &p.exporters,
                    };
                    list.iter().any(|r| r.get_ref() == name.get_ref())
                });
                if !used {
                    tracing::warn!(
                        "{}: {}.{} is declared but no pipeline uses it",
                        src.file,
                        kind.table(),
                        quote_key(name.get_ref())
                    );
                }
            }
        }

        if errors.is_empty() {
            Ok(cfg)
        } else {
            errors.sort_by_key(|e| (e.line, e.column));
            Err(ConfigErrors(errors))
        }
    }
}

/// Parses every component declared in one kind's table with its type's parser.
fn parse_components<T: ?Sized>(
    src: &Source,
    table: &BTreeMap<Spanned<String>, IgnoredAny>,
    kind: Kind,
    registry: &Registry,
    lookup: fn(&Registry, &str) -> Option<ParseFn<T>>,
    out: &mut BTreeMap<ComponentId, Arc<T>>,
    errors: &mut Vec<ConfigError>,
) {
    for name in table.keys() {
        let path = format!("{}.{}", kind.table(), quote_key(name.get_ref()));
        let id = match ComponentId::parse(name.get_ref()) {
            Ok(id) => id,
            Err(m) => {
                errors.push(src.error_at(Some(name.span()), &path, m));
                continue;
            }
        };
        let Some(parse) = lookup(registry, id.type_name()) else {
            errors.push(src.error_at(
                Some(name.span()),
                &path,
                unknown_type(registry, kind, id.type_name()),
            ));
            continue;
        };
        match parse(src, &id) {
            Ok(c) => {
                out.insert(id, c);
            }
            Err(e) => errors.push(e),
        }
    }
}

fn unknown_type(registry: &Registry, kind: Kind, ty: &str) -> String {
    let known = registry.known_types(kind).join(", ");
    format!(
        "unknown {} type {ty:?} (known types: {known})",
        kind.as_str()
    )
}

// ---------------------------------------------------------------------------------------
// The typed pass: one component's table

/// Deserializes `[<kind table>.<id>]` as `T`, so that its errors carry spans into the file.
pub fn component_config<T: DeserializeOwned>(
    src: &Source,
    kind: Kind,
    id: &ComponentId,
) -> Result<T, ConfigError> {
    let path = format!("{}.{}", kind.table(), quote_key(id.as_str()));
    let seed = Pick {
        path: [kind.table(), id.as_str()],
        depth: 0,
        _t: std::marker::PhantomData::<T>,
    };
    let de = toml::Deserializer::parse(&src.text).map_err(|e| src.toml_error(e, ""))?;
    match seed.deserialize(de) {
        Ok(Some(t)) => Ok(t),
        Ok(None) => Err(src.component_error(kind, id, &[], "component table not found".into())),
        Err(e) => Err(src.toml_error(e, &path)),
    }
}

/// Walks down `path` through nested tables, ignoring everything else, and deserializes `T` there.
struct Pick<'a, T> {
    path: [&'a str; 2],
    depth: usize,
    _t: std::marker::PhantomData<T>,
}

impl<'de, T: DeserializeOwned> DeserializeSeed<'de> for Pick<'_, T> {
    type Value = Option<T>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Option<T>, D::Error> {
        if self.depth == self.path.len() {
            return T::deserialize(d).map(Some);
        }
        d.deserialize_map(self)
    }
}

impl<'de, T: DeserializeOwned> Visitor<'de> for Pick<'_, T> {
    type Value = Option<T>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a table")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<T>, A::Error> {
        let mut found = None;
        while let Some(key) = map.next_key::<String>()? {
            if found.is_none() && key == self.path[self.depth] {
                found = map.next_value_seed(Pick {
                    path: self.path,
                    depth: self.depth + 1,
                    _t: std::marker::PhantomData,
                })?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(k: &str) -> Option<String> {
        match k {
            "PORT" => Some("4317".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expands_environment() {
        let s = Source::from_text("t".into(), "a = \"${PORT}\"\nb = \"${NOPE:-x}\"\nc = \"$${LIT} $5\"\nd = \"${EMPTY:-e}\"\n# ${IGNORED}\n", &env).unwrap();
        assert_eq!(
            s.text,
            "a = \"4317\"\nb = \"x\"\nc = \"${LIT} $5\"\nd = \"e\"\n# ${IGNORED}\n"
        );
        let err = Source::from_text("t.toml".into(), "x = 1\nkey = \"${MISSING}\"\n", &env)
            .err()
            .unwrap();
        assert_eq!(err.0[0].line, 2);
        assert_eq!(err.0[0].key, "key");
        assert!(err.0[0].message.contains("MISSING"));
    }
}
