//! Configuration: TOML with `${VAR}` expansion, checked before anything starts.
//!
//! Every error names the file, the line and the key, so `tradewatch validate` can point
//! a user at the exact place to fix. Loading happens in two passes over the same text:
//! a generic pass that reads the shape (component names, pipelines, the service
//! section) with spans, then one typed pass per component, which deserializes just that
//! component's table with `deny_unknown_fields` so its own mistakes carry their spans too.
//! `${VAR}` is expanded in string values as both passes read them (see `expand`), never
//! in the text, so the environment cannot change the file's shape.

mod expand;
mod secret;
mod units;

pub use secret::Secret;
pub use units::{HumanDuration, HumanSize};

use crate::component::{
    ComponentId, ExporterConfig, Kind, ParseFn, PipelineId, ProcessorConfig, ReceiverConfig,
    Reference, Registry, Signal,
};
use expand::{Expand, Piece, Vars};
use serde::de::{self, DeserializeOwned, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use toml::de::{DeTable, DeValue};
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
        // Line 0: the error is about the file as a whole (it cannot be read).
        if self.line == 0 {
            write!(f, "{}: ", self.file)?;
        } else {
            write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        }
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

/// The configuration as written, with the environment it is expanded with and what is
/// needed to locate spans.
pub struct Source {
    pub file: String,
    /// The text as written; `${VAR}` is expanded inside string values as they are read.
    pub text: String,
    vars: Vars,
    /// The folder of the config file: relative paths written in it are taken from there.
    base_dir: PathBuf,
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

    /// Reads every `${VAR}` / `${VAR:-default}` written in a string value from `env`
    /// (`$${` stands for a literal `${`), and reports references that are malformed or
    /// unset without a default. Nothing is spliced into the text: values are expanded as
    /// they are deserialized, so an environment value can never change the file's shape.
    /// Comments and keys are never expanded. `file`'s folder is where relative paths start.
    pub fn from_text(
        file: String,
        raw: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Source, ConfigErrors> {
        let base_dir = Path::new(&file)
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let mut src = Source {
            file,
            text: raw.to_owned(),
            vars: Vars::new(),
            base_dir,
        };
        // A file that does not parse gets its syntax error from `Config::from_source`.
        let Ok(doc) = DeTable::parse(raw) else {
            return Ok(src);
        };
        let mut errors = Vec::new();
        src.read_vars(doc.get_ref(), &mut Vec::new(), env, &mut errors);
        if errors.is_empty() {
            Ok(src)
        } else {
            errors.sort_by_key(|e| (e.line, e.column));
            Err(ConfigErrors(errors))
        }
    }

    fn read_vars(
        &mut self,
        table: &DeTable<'_>,
        path: &mut Vec<String>,
        env: &dyn Fn(&str) -> Option<String>,
        errors: &mut Vec<ConfigError>,
    ) {
        for (k, v) in table.iter() {
            path.push(self.text[k.span()].to_owned());
            self.read_value_vars(v, path, env, errors);
            path.pop();
        }
    }

    fn read_value_vars(
        &mut self,
        v: &Spanned<DeValue<'_>>,
        path: &mut Vec<String>,
        env: &dyn Fn(&str) -> Option<String>,
        errors: &mut Vec<ConfigError>,
    ) {
        match v.get_ref() {
            DeValue::String(s) => match expand::pieces(s) {
                Ok(pieces) => {
                    for p in pieces {
                        let Piece::Var { name, default } = p else {
                            continue;
                        };
                        self.vars
                            .entry(name.to_owned())
                            .or_insert_with(|| env(name));
                        if let Err(m) = expand::lookup(&self.vars, name, default) {
                            let at = format!("${{{name}");
                            errors.push(self.value_error(v.span(), &at, path, m));
                        }
                    }
                }
                Err(m) => errors.push(self.value_error(v.span(), "${", path, m)),
            },
            DeValue::Table(t) => self.read_vars(t, path, env, errors),
            DeValue::Array(a) => {
                for e in a.iter() {
                    self.read_value_vars(e, path, env, errors);
                }
            }
            _ => {}
        }
    }

    /// An error about the string value at `span`, placed at `at` within it when written.
    fn value_error(
        &self,
        span: Range<usize>,
        at: &str,
        path: &[String],
        message: String,
    ) -> ConfigError {
        let offset = span.start + self.text[span].find(at).unwrap_or(0);
        self.located(Some(offset..offset), path.join("."), message)
    }

    /// `path` as written in the file, taken from the file's folder when it is relative
    /// (as Prometheus does), so a config behaves the same from any working directory.
    pub fn resolve_path(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_owned()
        } else {
            self.base_dir.join(path)
        }
    }

    fn line_col(&self, offset: usize) -> (usize, usize) {
        line_col(&self.text, offset)
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
    /// span plus the key written on its line (`path` is the fallback when neither exists),
    /// or deeper: the innermost key whose value holds the span (inside an inline table, or
    /// on the line of a multi-line array element, which holds no key).
    pub fn error_at(&self, span: Option<Range<usize>>, path: &str, message: String) -> ConfigError {
        let key = match &span {
            Some(span) => {
                let index = self.line_col(span.start).0 - 1;
                let on_line = key_at_line(&self.text, index);
                let key = match self.written_key_at(span.start) {
                    Some(k) if on_line.is_empty() || k.starts_with(&format!("{on_line}.")) => k,
                    _ => on_line,
                };
                let key = if key.is_empty() { path.to_owned() } else { key };
                name_unknown_field(key, &message)
            }
            None => path.to_owned(),
        };
        self.located(span, key, message)
    }

    /// The dotted key, as written, of the innermost entry whose key or value holds `offset`.
    fn written_key_at(&self, offset: usize) -> Option<String> {
        fn walk(text: &str, table: &DeTable<'_>, offset: usize, path: &mut Vec<String>) -> bool {
            for (k, v) in table.iter() {
                path.push(text[k.span()].to_owned());
                let deeper = match v.get_ref() {
                    DeValue::Table(t) => walk(text, t, offset, path),
                    DeValue::Array(a) => a.iter().any(|e| match e.get_ref() {
                        DeValue::Table(t) => walk(text, t, offset, path),
                        _ => false,
                    }),
                    _ => false,
                };
                if deeper || k.span().contains(&offset) || v.span().contains(&offset) {
                    return true;
                }
                path.pop();
            }
            false
        }
        let doc = DeTable::parse(&self.text).ok()?;
        let mut path = Vec::new();
        walk(&self.text, doc.get_ref(), offset, &mut path).then(|| path.join("."))
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
        let root = DeTable::parse(&self.text).ok()?;
        let mut table = root.get_ref();
        let mut found = None;
        for (i, seg) in segments.iter().enumerate() {
            let (k, v) = table.iter().find(|(k, _)| k.get_ref().as_ref() == *seg)?;
            found = Some(k.span());
            if i + 1 < segments.len() {
                match v.get_ref() {
                    DeValue::Table(t) => table = t,
                    _ => return None,
                }
            }
        }
        found
    }

    /// Whether the value at `segments` is written, as a table.
    fn is_table(&self, segments: &[&str]) -> bool {
        let Ok(root) = DeTable::parse(&self.text) else {
            return false;
        };
        let mut table = root.get_ref();
        for seg in segments {
            match table.iter().find(|(k, _)| k.get_ref().as_ref() == *seg) {
                Some((_, v)) => match v.get_ref() {
                    DeValue::Table(t) => table = t,
                    _ => return false,
                },
                None => return false,
            }
        }
        true
    }

    /// An error about `key`, placed at the first `at` written inside `span` (a key of an
    /// inline table or of one table in an array of tables), else at the span's start.
    pub fn error_in_span(
        &self,
        span: Range<usize>,
        at: &str,
        key: String,
        message: String,
    ) -> ConfigError {
        // The span of a table in an array of tables may cover its header only: look on
        // to the next header.
        let body = self.text.get(span.start..).unwrap_or_default();
        let first_line = body.find('\n').map_or(body.len(), |i| i + 1);
        let end = body[first_line..]
            .find("\n[")
            .map_or(body.len(), |i| first_line + i + 1)
            .max(span.end - span.start);
        let offset = span.start
            + body
                .get(..end.min(body.len()))
                .and_then(|t| t.find(at))
                .map_or(0, |i| i + usize::from(at.starts_with('\n')));
        self.located(Some(offset..offset), key, message)
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
            let span = e.span().unwrap_or(0..0);
            // Inside the component, the table the field is missing from (one table of an
            // array of tables, such as a rule) names it better than the component.
            let table = self
                .written_key_at(span.start)
                .filter(|k| !path.is_empty() && k.starts_with(path) && k.len() > path.len())
                .unwrap_or_else(|| path.to_owned());
            let key = if table.is_empty() {
                field.to_owned()
            } else {
                format!("{table}.{field}")
            };
            return self.error_span_key(span, key, format!("{message}: add it"));
        }
        self.error_at(e.span(), path, message)
    }

    /// A copy with the entry of the table at `table` (the root when empty) that holds the
    /// error's position blanked out (offsets and lines unchanged), so parsing it again
    /// finds the next mistake; `None` when the error is not inside one of its entries.
    fn without_entry_at(&self, table: &[&str], e: &ConfigError) -> Option<Source> {
        let offset = offset_of(&self.text, e.line, e.column)?;
        let doc = DeTable::parse(&self.text).ok()?;
        let mut t = doc.get_ref();
        for seg in table {
            let (_, v) = t.iter().find(|(k, _)| k.get_ref().as_ref() == *seg)?;
            // The entries of an inline table share a line: there is no one to cut out.
            if self.text[v.span()].starts_with('{') {
                return None;
            }
            t = v.get_ref().as_table()?;
        }
        let ranges = entry_ranges_at(&self.text, t, offset)?;
        let mut bytes = self.text.clone().into_bytes();
        for r in ranges {
            for b in &mut bytes[r] {
                if *b != b'\n' {
                    *b = b' ';
                }
            }
        }
        let text = String::from_utf8(bytes).ok()?;
        DeTable::parse(&text).ok()?;
        Some(Source {
            file: self.file.clone(),
            text,
            vars: self.vars.clone(),
            base_dir: self.base_dir.clone(),
        })
    }
}

/// 1-based line and byte column of `offset`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map(|p| offset - p).unwrap_or(offset + 1);
    (line, col)
}

fn offset_of(text: &str, line: usize, column: usize) -> Option<usize> {
    let start = if line <= 1 {
        0
    } else {
        text.match_indices('\n').nth(line - 2)?.0 + 1
    };
    Some(start + column.checked_sub(1)?)
}

/// How an entry of a table is written.
enum Written<'a, 'i> {
    /// `key = value` on its own line(s), inline tables and arrays included.
    Line,
    /// `[header]` table.
    Header(&'a DeTable<'i>),
    /// A table made by dotted keys (`a.b = 1`) or implied by a deeper header.
    Dotted(&'a DeTable<'i>),
    /// `[[array]]` of tables.
    Tables(&'a toml::de::DeArray<'i>),
}

fn written<'a, 'i>(
    text: &str,
    k: &Spanned<toml::de::DeString<'i>>,
    v: &'a Spanned<DeValue<'i>>,
) -> Written<'a, 'i> {
    let starts = |span: Range<usize>, c: char| text[span].starts_with(c);
    match v.get_ref() {
        DeValue::Table(t) if v.span() == k.span() => Written::Dotted(t),
        DeValue::Table(t) if starts(v.span(), '[') => Written::Header(t),
        DeValue::Array(a)
            if a.iter()
                .next()
                .is_some_and(|e| e.get_ref().is_table() && starts(e.span(), '[')) =>
        {
            Written::Tables(a)
        }
        _ => Written::Line,
    }
}

/// The text of a line entry: from the start of its (maybe dotted) key to its value's end.
fn line_range(
    text: &str,
    k: &Spanned<toml::de::DeString<'_>>,
    v: &Spanned<DeValue<'_>>,
) -> Range<usize> {
    let start = text[..k.span().start].rfind('\n').map_or(0, |p| p + 1);
    start..v.span().end
}

/// The ranges to blank to remove the entry of `table` holding `offset`: one line entry,
/// or a whole header table (header and everything in it) when `offset` is its header.
fn entry_ranges_at(text: &str, table: &DeTable<'_>, offset: usize) -> Option<Vec<Range<usize>>> {
    for (k, v) in table.iter() {
        match written(text, k, v) {
            Written::Line => {
                let r = line_range(text, k, v);
                if r.contains(&offset) {
                    return Some(vec![r]);
                }
            }
            Written::Header(t) => {
                if v.span().contains(&offset) {
                    return Some(all_ranges(text, k, v));
                }
                if let Some(r) = entry_ranges_at(text, t, offset) {
                    return Some(r);
                }
            }
            Written::Dotted(t) => {
                if let Some(r) = entry_ranges_at(text, t, offset) {
                    return Some(r);
                }
                if k.span().contains(&offset) {
                    return Some(all_ranges(text, k, v));
                }
            }
            Written::Tables(a) => {
                let inside = a.iter().any(|e| {
                    e.span().contains(&offset)
                        || e.get_ref()
                            .as_table()
                            .is_some_and(|t| entry_ranges_at(text, t, offset).is_some())
                });
                if inside {
                    return Some(all_ranges(text, k, v));
                }
            }
        }
    }
    None
}

/// Every range that writes entry `k`.
fn all_ranges(
    text: &str,
    k: &Spanned<toml::de::DeString<'_>>,
    v: &Spanned<DeValue<'_>>,
) -> Vec<Range<usize>> {
    let children = |t: &DeTable<'_>| -> Vec<Range<usize>> {
        t.iter().flat_map(|(k, v)| all_ranges(text, k, v)).collect()
    };
    match written(text, k, v) {
        Written::Line => vec![line_range(text, k, v)],
        Written::Header(t) => {
            let mut r = vec![v.span()];
            r.extend(children(t));
            r
        }
        Written::Dotted(t) => children(t),
        Written::Tables(a) => a
            .iter()
            .flat_map(|e| {
                let mut r = vec![e.span()];
                if let Some(t) = e.get_ref().as_table() {
                    r.extend(children(t));
                }
                r
            })
            .collect(),
    }
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
    /// TLS for `/health`, `/status` and `/metrics`.
    #[serde(default)]
    tls: Option<crate::net::tls::ServerTlsConfig>,
    /// Enables `/ui`'s operator actions; a secret (`${VAR}`), empty = off.
    #[serde(default)]
    ui_token: Option<Secret>,
    /// tradewatch's own spans.
    #[serde(default)]
    telemetry: crate::service::self_trace::TelemetryConfig,
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
    /// TLS on the service endpoint (`[service.tls]`); plaintext when `None`.
    pub tls: Option<crate::net::tls::ServerTlsFiles>,
    /// Root of the state components keep on disk (checkpoints, breach state).
    pub data_dir: PathBuf,
    /// How long shutdown may take to drain queues and flush before giving up.
    pub shutdown_timeout: std::time::Duration,
    /// Bytes held in pipelines and sending queues past which receivers push back.
    pub memory_limit: u64,
    /// `/ui`'s operator actions are enabled by this token (`None` or empty: off).
    pub ui_token: Option<Secret>,
    /// `[service.telemetry]`: where tradewatch's own spans go.
    pub telemetry: crate::service::self_trace::TelemetryConfig,
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
    /// The components this configuration was read with: a reload reads the file again
    /// with the same ones.
    pub registry: Registry,
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
        let (raw, shape_errors) = read_shape(src)?;
        let mut errors = Vec::new();
        let mut cfg = Config {
            file: src.file.clone(),
            service: ServiceConfig {
                http: None,
                tls: None,
                data_dir: src.resolve_path(
                    raw.service
                        .get_ref()
                        .data_dir
                        .as_deref()
                        .unwrap_or(Path::new("data")),
                ),
                shutdown_timeout: raw.service.get_ref().shutdown_timeout.get(),
                memory_limit: raw.service.get_ref().memory_limit.0,
                ui_token: raw
                    .service
                    .get_ref()
                    .ui_token
                    .clone()
                    .filter(|t| !t.is_empty()),
                telemetry: raw.service.get_ref().telemetry.clone(),
            },
            critical: BTreeMap::new(),
            registry: registry.clone(),
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

        if let Some(tls) = &raw.service.get_ref().tls {
            match tls.check(|p| src.resolve_path(p)) {
                Ok(files) => cfg.service.tls = Some(files),
                Err(e) => errors.push(src.error_at_key(&["service", "tls", e.key], e.message)),
            }
        }

        if let Some(tls) = &mut cfg.service.telemetry.tls {
            for p in [&mut tls.ca_file, &mut tls.cert_file, &mut tls.key_file]
                .into_iter()
                .flatten()
            {
                *p = src.resolve_path(p);
            }
        }
        if let Err((key, message)) = cfg.service.telemetry.check() {
            let path: Vec<&str> = ["service", "telemetry"]
                .into_iter()
                .chain(key.split('.'))
                .collect();
            errors.push(src.error_at_key(&path, message));
        }

        // Components: the type must exist, then its own table must deserialize.
        let mut references: Vec<(Kind, ComponentId, Reference)> = Vec::new();
        parse_components(
            src,
            &raw.receivers,
            Kind::Receiver,
            registry,
            Registry::receiver,
            &mut cfg.receivers,
            &mut cfg.critical,
            &mut errors,
        );
        for (id, c) in &cfg.receivers {
            references.extend(
                c.references()
                    .into_iter()
                    .map(|r| (Kind::Receiver, id.clone(), r)),
            );
        }
        parse_components(
            src,
            &raw.processors,
            Kind::Processor,
            registry,
            Registry::processor,
            &mut cfg.processors,
            &mut cfg.critical,
            &mut errors,
        );
        for (id, c) in &cfg.processors {
            references.extend(
                c.references()
                    .into_iter()
                    .map(|r| (Kind::Processor, id.clone(), r)),
            );
        }
        parse_components(
            src,
            &raw.exporters,
            Kind::Exporter,
            registry,
            Registry::exporter,
            &mut cfg.exporters,
            &mut cfg.critical,
            &mut errors,
        );
        for (id, c) in &cfg.exporters {
            references.extend(
                c.references()
                    .into_iter()
                    .map(|r| (Kind::Exporter, id.clone(), r)),
            );
        }

        for (kind, id, r) in &references {
            let table = match r.kind {
                Kind::Receiver => &raw.receivers,
                Kind::Processor => &raw.processors,
                Kind::Exporter => &raw.exporters,
            };
            let keys: Vec<&str> = r.key.iter().map(String::as_str).collect();
            let message = if !table.keys().any(|k| k.get_ref() == &r.id) {
                format!(
                    "{} {:?} is not declared: add a [{}.{}] table or fix the name",
                    r.kind.as_str(),
                    r.id,
                    r.kind.table(),
                    quote_key(&r.id)
                )
            } else {
                let ty = r.id.split('/').next().unwrap_or_default();
                if r.types.is_empty() || r.types.contains(&ty) {
                    continue;
                }
                format!(
                    "{} {:?} is of type {ty:?}, but this key takes only: {}",
                    r.kind.as_str(),
                    r.id,
                    r.types.join(", ")
                )
            };
            errors.push(src.component_error(*kind, id, &keys, message));
        }

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

        // A key blanked out by the generic pass is reported once, not again as missing.
        errors.retain(|e| !shape_errors.iter().any(|s| s.key == e.key));
        errors.extend(shape_errors);
        if errors.is_empty() {
            Ok(cfg)
        } else {
            errors.sort_by_key(|e| (e.line, e.column));
            Err(ConfigErrors(errors))
        }
    }
}

/// Mistakes reported per table at most: each round of parsing blanks out one entry.
const MAX_ROUNDS: usize = 16;

/// The generic pass, with its mistakes. After each one, the entry holding it is blanked
/// out and the file read again, so one typo in `[service]` hides nothing else; only a
/// file whose shape cannot be read at all is refused at once.
fn read_shape(src: &Source) -> Result<(RawDoc, Vec<ConfigError>), ConfigErrors> {
    let mut found: Vec<ConfigError> = Vec::new();
    let mut blanked: Option<Source> = None;
    for _ in 0..MAX_ROUNDS {
        let current = blanked.as_ref().unwrap_or(src);
        let de = toml::Deserializer::parse(&current.text).map_err(|e| src.toml_error(e, ""))?;
        let e = match RawDoc::deserialize(Expand::new(de, &src.vars)) {
            Ok(raw) => return Ok((raw, found)),
            Err(e) => current.toml_error(e, ""),
        };
        // The same key again: no progress, or a required key that was blanked.
        if found.iter().any(|f| f.key == e.key) {
            break;
        }
        let next = current.without_entry_at(&[], &e);
        found.push(e);
        match next {
            Some(next) => blanked = Some(next),
            None => break,
        }
    }
    Err(ConfigErrors(found))
}

/// Parses every component declared in one kind's table with its type's parser, and its
/// `critical` key. A table with several mistakes reports each: after an error inside one
/// of its entries, that entry is blanked out and the table parsed again.
#[allow(clippy::too_many_arguments)]
fn parse_components<T: ?Sized>(
    src: &Source,
    table: &BTreeMap<Spanned<String>, IgnoredAny>,
    kind: Kind,
    registry: &Registry,
    lookup: fn(&Registry, &str) -> Option<ParseFn<T>>,
    out: &mut BTreeMap<ComponentId, Arc<T>>,
    critical: &mut BTreeMap<(Kind, ComponentId), bool>,
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
        match component_critical(src, kind, &id) {
            Ok(Some(c)) => {
                critical.insert((kind, id.clone()), c);
            }
            Ok(None) => {}
            Err(e) => errors.push(e),
        }
        let Some(parse) = lookup(registry, id.type_name()) else {
            errors.push(src.error_at(
                Some(name.span()),
                &path,
                unknown_type(registry, kind, id.type_name()),
            ));
            continue;
        };
        let mut found: Vec<ConfigError> = Vec::new();
        let mut blanked: Option<Source> = None;
        for _ in 0..MAX_ROUNDS {
            let current = blanked.as_ref().unwrap_or(src);
            let e = match parse(current, &id) {
                Ok(c) => {
                    if found.is_empty() {
                        out.insert(id.clone(), c);
                    }
                    break;
                }
                Err(e) => e,
            };
            // The same key again: no progress, or a required key that was blanked.
            if found.iter().any(|f| f.key == e.key) {
                break;
            }
            let next = current.without_entry_at(&[kind.table(), name.get_ref()], &e);
            found.push(e);
            // Blanking the only sub-table that declared the component leaves nothing to
            // parse (and nothing for an error to point at).
            match next {
                Some(next) if next.is_table(&[kind.table(), name.get_ref()]) => {
                    blanked = Some(next)
                }
                _ => break,
            }
        }
        errors.extend(found);
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
/// `${VAR}` is expanded in its string values; its `critical` key belongs to the core and
/// is left out, so `T` may deny unknown fields without declaring it.
pub fn component_config<T: DeserializeOwned>(
    src: &Source,
    kind: Kind,
    id: &ComponentId,
) -> Result<T, ConfigError> {
    pick(src, kind, id, Some(CRITICAL))
}

/// The key every component table may hold: whether its failure makes the service UNHEALTHY.
const CRITICAL: &str = "critical";

/// The component's `critical = true|false`, if written.
fn component_critical(
    src: &Source,
    kind: Kind,
    id: &ComponentId,
) -> Result<Option<bool>, ConfigError> {
    #[derive(Deserialize)]
    struct Critical {
        critical: Option<bool>,
    }
    // A component that is not a table is reported by its own parser.
    if !src.is_table(&[kind.table(), id.as_str()]) {
        return Ok(None);
    }
    pick::<Critical>(src, kind, id, None).map(|c| c.critical)
}

fn pick<T: DeserializeOwned>(
    src: &Source,
    kind: Kind,
    id: &ComponentId,
    skip: Option<&'static str>,
) -> Result<T, ConfigError> {
    let path = format!("{}.{}", kind.table(), quote_key(id.as_str()));
    let seed = Pick {
        path: [kind.table(), id.as_str()],
        depth: 0,
        vars: &src.vars,
        skip,
        _t: std::marker::PhantomData::<T>,
    };
    let de = toml::Deserializer::parse(&src.text).map_err(|e| src.toml_error(e, ""))?;
    match seed.deserialize(de) {
        Ok(Some(t)) => Ok(t),
        Ok(None) => Err(src.component_error(kind, id, &[], "component table not found".into())),
        Err(e) => Err(src.toml_error(e, &path)),
    }
}

/// Walks down `path` through nested tables, ignoring everything else, and deserializes `T`
/// there with `${VAR}` expansion, leaving out the key `skip`.
struct Pick<'a, T> {
    path: [&'a str; 2],
    depth: usize,
    vars: &'a Vars,
    skip: Option<&'static str>,
    _t: std::marker::PhantomData<T>,
}

impl<'de, T: DeserializeOwned> DeserializeSeed<'de> for Pick<'_, T> {
    type Value = Option<T>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Option<T>, D::Error> {
        if self.depth == self.path.len() {
            return T::deserialize(Expand {
                de: d,
                vars: self.vars,
                skip: self.skip,
            })
            .map(Some);
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
                    vars: self.vars,
                    skip: self.skip,
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
            "NASTY" => Some("a\"b\\c'd\n[exporters.x]\n${PORT} é".into()),
            "FLAG" => Some("false".into()),
            "WORD" => Some("many".into()),
            "PROTO" => Some("http".into()),
            _ => None,
        }
    }

    /// Reads the whole of `raw` as `T`, expanding as `Config` does.
    fn read<T: DeserializeOwned>(raw: &str) -> Result<T, String> {
        let src = Source::from_text("t.toml".into(), raw, &env).map_err(|e| e.to_string())?;
        let de = toml::Deserializer::parse(&src.text).map_err(|e| e.to_string())?;
        T::deserialize(Expand::new(de, &src.vars)).map_err(|e| src.toml_error(e, "").to_string())
    }

    #[derive(Deserialize, Debug, PartialEq)]
    struct Strings {
        a: String,
        b: String,
        c: String,
        d: String,
        e: Vec<String>,
        f: String,
    }

    #[test]
    fn expands_inside_string_values_only_and_takes_values_literally() {
        let s: Strings = read(concat!(
            "a = \"${PORT}\"\n",
            "b = \"${NOPE:-x} and ${EMPTY:-e}\"\n",
            "c = \"$${LIT} $5 $\"\n",
            "# d = \"${IGNORED}\"\n",
            "d = '${NASTY}'  # ${ALSO_IGNORED}\n",
            "e = [\"${PORT}\", '''${PORT:-1}x''']\n",
            "f = \"${EMPTY}\"\n",
        ))
        .unwrap();
        assert_eq!(
            s,
            Strings {
                a: "4317".into(),
                b: "x and e".into(),
                c: "${LIT} $5 $".into(),
                d: "a\"b\\c'd\n[exporters.x]\n${PORT} é".into(),
                e: vec!["4317".into(), "4317x".into()],
                f: String::new(),
            }
        );
        // Keys are never expanded.
        let m: BTreeMap<String, String> = read("\"${PORT}\" = \"v\"\n").unwrap();
        assert_eq!(m.keys().collect::<Vec<_>>(), ["${PORT}"]);
    }

    #[derive(Deserialize, Debug, PartialEq)]
    #[serde(rename_all = "lowercase")]
    enum Proto {
        Grpc,
        Http,
    }

    #[derive(Deserialize, Debug, PartialEq)]
    struct Typed {
        n: usize,
        i: i32,
        b: bool,
        x: f64,
        o: Option<u16>,
        d: HumanDuration,
        p: Proto,
        q: Proto,
        s: Spanned<String>,
    }

    #[test]
    fn a_whole_value_reference_fills_typed_fields() {
        let raw = concat!(
            "n = \"${PORT}\"\n",
            "i = \"${NOPE:--3}\"\n",
            "b = \"${FLAG:-true}\"\n",
            "x = \"${NOPE:-0.5}\"\n",
            "o = \"${NOPE:-7}\"\n",
            "d = \"${PORT}ms\"\n",
            "p = \"${PROTO}\"\n",
            "q = \"grpc\"\n",
            "s = \"${PORT}\"\n",
        );
        let t: Typed = read(raw).unwrap();
        assert_eq!((t.n, t.i, t.b, t.x, t.o), (4317, -3, false, 0.5, Some(7)));
        assert_eq!(t.d.get(), std::time::Duration::from_millis(4317));
        assert_eq!((t.p, t.q), (Proto::Http, Proto::Grpc));
        assert_eq!(t.s.get_ref(), "4317");
        assert_eq!(&raw[t.s.span()], "\"${PORT}\"");

        // Only a whole reference is parsed: text around it keeps the value a string.
        let e = read::<Typed>(&raw.replace("n = \"${PORT}\"", "n = \"${PORT}0\"")).unwrap_err();
        assert_eq!(
            e,
            "t.toml:1:5: n: expected usize, found text around ${PORT}: to fill this key from the environment, write the reference alone (\"${PORT}\")"
        );
        // Without a reference, serde says what it found.
        let e = read::<Typed>(&raw.replace("n = \"${PORT}\"", "n = \"4317\"")).unwrap_err();
        assert!(
            e.contains("n: invalid type: string \"4317\", expected usize"),
            "{e}"
        );
        // A whole reference whose value does not parse names the variable, not its value.
        let e = read::<Typed>(&raw.replace("n = \"${PORT}\"", "n = \"${WORD}\"")).unwrap_err();
        assert_eq!(e, "t.toml:1:5: n: the value of ${WORD} is not usize");
        let e = read::<Typed>(&raw.replace("${FLAG:-true}", "${WORD}")).unwrap_err();
        assert!(
            e.starts_with("t.toml:3:5: b: the value of ${WORD} is not a boolean"),
            "{e}"
        );
    }

    #[test]
    fn reference_errors_are_located() {
        let err = |raw: &str| {
            Source::from_text("t.toml".into(), raw, &env)
                .err()
                .unwrap()
                .to_string()
        };
        assert_eq!(
            err("x = 1\n[t]\nkey = \"a ${MISSING}\"\n"),
            "t.toml:3:10: t.key: environment variable MISSING is not set (write ${MISSING:-default} to give a default)"
        );
        let e = err("[t]\nk = [\n  \"${1X}\",\n]\n");
        assert!(
            e.starts_with("t.toml:3:4: t.k: invalid environment variable name \"1X\""),
            "{e}"
        );
        let e = err("k = \"${OPEN\"\n");
        assert!(e.starts_with("t.toml:1:6: k: unterminated ${...}"), "{e}");
        // Comments are not read.
        assert!(Source::from_text("t".into(), "# ${MISSING}\nk = 1 # ${MISSING}\n", &env).is_ok());
    }

    #[test]
    fn relative_paths_start_at_the_config_folder() {
        let s = Source::from_text("/etc/tw/config.toml".into(), "", &env).unwrap();
        assert_eq!(
            s.resolve_path(Path::new("out/a.jsonl")),
            Path::new("/etc/tw/out/a.jsonl")
        );
        assert_eq!(s.resolve_path(Path::new("/var/x")), Path::new("/var/x"));
        let s = Source::from_text("config.toml".into(), "", &env).unwrap();
        assert_eq!(s.resolve_path(Path::new("data")), Path::new("data"));
    }

    #[test]
    fn an_unreadable_file_is_named_without_a_position() {
        let e = Source::load(Path::new("/nonexistent/tw.toml"))
            .err()
            .unwrap();
        assert_eq!(
            e.to_string(),
            "/nonexistent/tw.toml: cannot read the configuration file: No such file or directory (os error 2)"
        );
    }
}
