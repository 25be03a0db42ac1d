//! `docs/reference.md` lists every key the configuration takes, and only those.
//!
//! The keys are not copied into this test: they are discovered from the code at test
//! time. Every table tradewatch reads refuses a key it does not know, and the refusal
//! names the keys it does know (serde's `deny_unknown_fields`, or a component's own
//! check). So the test writes an unknown key into each table and loads the file through
//! the real loader (`Config::from_source` with `registry::builtin()`), and reads the
//! known keys off the error. Each known key is then probed as a table, an array of tables
//! and a map of tables, which finds every nested table, and its keys, the same way.
//!
//! The reference names each table in a heading, as TOML writes it (`[exporters.otlp]`,
//! `[[processors.risk.rules]]`, `[processors.risk.bots.<name>]`); a heading may name
//! several tables, and `*` stands for any one component type (`[exporters.*.sending_queue]`).
//! A table's documented keys are the first cells of the rows under every heading that
//! names it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use tradewatch::component::Kind;
use tradewatch::config::{Config, Source};
use tradewatch::registry::builtin;

/// A key no table takes.
const PROBE: &str = "zz_not_a_key";

/// The key the core reads from every component's table (not the component's own struct).
const CORE_KEY: &str = "critical";

const REFERENCE: &str = "docs/reference.md";

const KINDS: [Kind; 3] = [Kind::Receiver, Kind::Processor, Kind::Exporter];

/// How a nested table is written under its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// `key = { … }`, `[parent.key]`
    Table,
    /// `key = [{ … }]`, `[[parent.key]]`
    Array,
    /// `key = { NAME = { … } }`, `[parent.key.NAME]`
    Map,
}

/// The table that holds a probed one.
#[derive(Debug, Clone, Copy)]
enum Root {
    /// `[service]`
    Service,
    /// `[<kind table>.<type>]`
    Component(Kind, &'static str),
}

type KeyPath = [(String, Shape)];

/// A file that writes `entries` (`k = v`; several: comma-separated in a nested table,
/// one per line at the root) into the table at `path`
/// under `root`.
fn probe_text(root: Root, path: &KeyPath, entries: &str) -> String {
    fn value(path: &KeyPath, entries: &str) -> String {
        match path.split_first() {
            None => entries.to_owned(),
            Some(((key, shape), rest)) => {
                let inner = value(rest, entries);
                match shape {
                    Shape::Table => format!("{key} = {{ {inner} }}"),
                    Shape::Array => format!("{key} = [{{ {inner} }}]"),
                    Shape::Map => format!("{key} = {{ zz_name = {{ {inner} }} }}"),
                }
            }
        }
    }
    let line = value(path, entries);
    match root {
        Root::Service => format!("[service]\n{line}\n"),
        Root::Component(kind, ty) => format!(
            "[{}.{ty}]\n{line}\n\n[service]\nhttp = \"off\"\n",
            kind.table()
        ),
    }
}

/// Every error loading `text` gives, as `(key, message)`.
fn load_errors_at(text: &str) -> Vec<(String, String)> {
    let errors = match Source::from_text("reference.toml".into(), text, &|_| None) {
        Err(e) => e.0,
        Ok(src) => match Config::from_source(&src, &builtin()) {
            Ok(_) => Vec::new(),
            Err(e) => e.0,
        },
    };
    errors.into_iter().map(|e| (e.key, e.message)).collect()
}

/// Every error message loading `text` gives.
fn load_errors(text: &str) -> Vec<String> {
    load_errors_at(text).into_iter().map(|(_, m)| m).collect()
}

/// The names in a list as serde writes it (`` `a` ``, `` `a` or `b` ``,
/// `` one of `a`, `b`, `c` ``) or a component does (`a, b, c`).
fn name_list(list: &str) -> BTreeSet<String> {
    let list = list.strip_prefix("one of ").unwrap_or(list);
    list.split(", ")
        .flat_map(|k| k.split(" or "))
        .map(|k| k.trim_matches('`').to_owned())
        .filter(|k| !k.is_empty())
        .collect()
}

/// The keys a refusal of [`PROBE`] names as known, if `message` is one (an error that
/// names [`PROBE`] in another way is an `Err`).
fn known_from_refusal(message: &str) -> Option<Result<BTreeSet<String>, String>> {
    // An enum read from a table takes the key as its variant: not a table of keys.
    if !message.contains(PROBE) || message.starts_with(&format!("unknown variant `{PROBE}`")) {
        return None;
    }
    if let Some(rest) = message.strip_prefix(&format!("unknown field `{PROBE}`, ")) {
        if rest.starts_with("there are no fields") {
            return Some(Ok(BTreeSet::new()));
        }
        if let Some(list) = rest.strip_prefix("expected ") {
            return Some(Ok(name_list(list)));
        }
    }
    if let Some(rest) = message.strip_prefix(&format!("unknown key \"{PROBE}\" (known keys: ")) {
        return Some(Ok(name_list(rest.trim_end_matches(')'))));
    }
    Some(Err(message.to_owned()))
}

/// The keys the table at `path` knows, read off the error that refuses [`PROBE`] there;
/// `None` when nothing refuses it (the value at `path` is not a table of that shape).
fn known_keys(root: Root, path: &KeyPath) -> Option<BTreeSet<String>> {
    let text = probe_text(root, path, &format!("{PROBE} = 1"));
    let refusal = load_errors(&text)
        .iter()
        .find_map(|m| known_from_refusal(m))?;
    Some(refusal.unwrap_or_else(|m| {
        panic!("an error names {PROBE} but does not list the known keys: {m}\nin:\n{text}")
    }))
}

/// Whether the core takes [`CORE_KEY`] in the component's table: written before
/// [`PROBE`], it is not what gets refused.
fn takes_core_key(root: Root) -> bool {
    let text = probe_text(root, &[], &format!("{CORE_KEY} = false\n{PROBE} = 1"));
    let errors = load_errors(&text);
    errors.iter().any(|m| known_from_refusal(m).is_some())
        && !errors.iter().any(|m| m.contains(&format!("`{CORE_KEY}`")))
}

/// The heading name of a table: `[a.b]`, `[[a.b]]` for an array, `<name>` for map keys.
fn table_name(root: Root, path: &KeyPath) -> String {
    let mut name = match root {
        Root::Service => "service".to_owned(),
        Root::Component(kind, ty) => format!("{}.{ty}", kind.table()),
    };
    for (i, (key, shape)) in path.iter().enumerate() {
        name.push('.');
        name.push_str(key);
        match shape {
            Shape::Map => name.push_str(".<name>"),
            // An array of tables inside another table's path: one of its elements.
            Shape::Array if i + 1 < path.len() => name.push_str("[]"),
            _ => {}
        }
    }
    match path.last() {
        Some((_, Shape::Array)) => format!("[[{name}]]"),
        _ => format!("[{name}]"),
    }
}

/// One table the configuration reads.
struct CodeTable {
    root: Root,
    path: Vec<(String, Shape)>,
    keys: BTreeSet<String>,
}

/// Every table under `root`: the root table, then each nested one.
fn discover(root: Root, out: &mut BTreeMap<String, CodeTable>) {
    fn walk(root: Root, path: &mut Vec<(String, Shape)>, out: &mut BTreeMap<String, CodeTable>) {
        let name = table_name(root, path);
        let keys =
            known_keys(root, path).unwrap_or_else(|| panic!("{name} did not refuse {PROBE}"));
        // Deeper than any table tradewatch has: a loop, not a configuration.
        assert!(path.len() < 5, "tables nest too deep at {name}");
        out.insert(
            name,
            CodeTable {
                root,
                path: path.clone(),
                keys: keys.clone(),
            },
        );
        for key in keys {
            for shape in [Shape::Table, Shape::Array, Shape::Map] {
                path.push((key.clone(), shape));
                let nested = known_keys(root, path).is_some();
                if nested {
                    walk(root, path, out);
                }
                path.pop();
                if nested {
                    break;
                }
            }
        }
    }
    walk(root, &mut Vec::new(), out);
}

/// Every table the configuration reads, by heading name.
fn code_tables() -> BTreeMap<String, CodeTable> {
    let registry = builtin();
    let mut out = BTreeMap::new();
    discover(Root::Service, &mut out);
    for kind in KINDS {
        for ty in registry.known_types(kind) {
            let root = Root::Component(kind, ty);
            discover(root, &mut out);
            let name = table_name(root, &[]);
            assert!(takes_core_key(root), "{name} does not take `{CORE_KEY}`");
            out.get_mut(&name).unwrap().keys.insert(CORE_KEY.to_owned());
        }
    }
    out
}

/// The TOML value a default cell holds, when it is exactly one literal (`` `"30s"` ``,
/// `` `64` ``, `` `[]` ``), not prose.
fn literal(cell: &str) -> Option<&str> {
    let inner = cell.strip_prefix('`')?.strip_suffix('`')?;
    if inner.contains('`') {
        return None;
    }
    toml::from_str::<toml::Table>(&format!("v = {inner}")).ok()?;
    Some(inner)
}

/// Whether the table takes `value` for `key`: loading it beside [`PROBE`] gives the
/// refusal of [`PROBE`] and no error about `key` (the loader goes on past a bad value, so
/// both would show). A table read by a component's own key check before its types (the
/// CloudWatch exporters) stops at [`PROBE`] and passes.
fn takes_value(t: &CodeTable, key: &str, value: &str) -> bool {
    let sep = if t.path.is_empty() { "\n" } else { ", " };
    let text = probe_text(t.root, &t.path, &format!("{key} = {value}{sep}{PROBE} = 1"));
    let errors = load_errors_at(&text);
    let about_key = |k: &String| k.rsplit('.').next().map(|s| s.trim_matches('"')) == Some(key);
    errors
        .iter()
        .any(|(_, m)| matches!(known_from_refusal(m), Some(Ok(_))))
        && !errors.iter().any(|(k, _)| about_key(k))
}

/// The values of `key` in the table, when it is an enum: what refusing an unknown
/// value lists.
fn enum_values(t: &CodeTable, key: &str) -> Option<BTreeSet<String>> {
    let text = probe_text(t.root, &t.path, &format!("{key} = \"{PROBE}\""));
    let prefix = format!("unknown variant `{PROBE}`, expected ");
    load_errors(&text)
        .iter()
        .find_map(|m| m.strip_prefix(&prefix).map(name_list))
}

/// One heading of the reference and the rows of its tables.
#[derive(Debug)]
struct Section {
    /// The table names in the heading's code spans.
    names: Vec<String>,
    title: String,
    rows: Vec<Row>,
}

/// `| key | type | default | meaning |`
#[derive(Debug)]
struct Row {
    key: String,
    type_: String,
    default: String,
}

/// The code spans of a line of Markdown.
fn code_spans(line: &str) -> Vec<&str> {
    line.split('`').skip(1).step_by(2).collect()
}

fn reference() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(REFERENCE);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn sections(doc: &str) -> Vec<Section> {
    let mut out: Vec<Section> = Vec::new();
    let mut in_code_block = false;
    for (n, line) in doc.lines().enumerate() {
        if line.starts_with("```") {
            in_code_block = !in_code_block;
        }
        if in_code_block {
            continue;
        }
        if line.starts_with('#') {
            out.push(Section {
                names: code_spans(line)
                    .into_iter()
                    .filter(|s| s.starts_with('['))
                    .map(str::to_owned)
                    .collect(),
                title: line.trim_start_matches('#').trim().to_owned(),
                rows: Vec::new(),
            });
        } else if let Some(row) = line.strip_prefix('|') {
            let mut cells = row.split('|');
            let first = cells.next().unwrap_or_default();
            let Some(key) = code_spans(first).first().map(|k| k.to_string()) else {
                continue; // header or separator row
            };
            let type_ = cells.next().unwrap_or_default().trim().to_owned();
            let default = cells.next().unwrap_or_default().trim().to_owned();
            match out.last_mut() {
                Some(s) if !s.names.is_empty() => s.rows.push(Row {
                    key,
                    type_,
                    default,
                }),
                _ => panic!(
                    "{REFERENCE}:{}: a key row under a heading that names no table",
                    n + 1
                ),
            }
        }
    }
    out
}

/// `[a.*.c]` names `[a.b.c]`; brackets must agree (`[[…]]` is an array of tables).
fn names(pattern: &str, table: &str) -> bool {
    fn split(name: &str) -> (usize, Vec<&str>) {
        let depth = name.chars().take_while(|c| *c == '[').count();
        let inner = &name[depth..name.len().saturating_sub(depth).max(depth)];
        (depth, inner.split('.').collect())
    }
    let (pd, p) = split(pattern);
    let (td, t) = split(table);
    pd == td && p.len() == t.len() && p.iter().zip(&t).all(|(p, t)| *p == "*" || p == t)
}

/// GitHub's anchor for a heading: lowercase, punctuation but `-` and `_` dropped, spaces
/// become `-`.
fn anchor(title: &str) -> String {
    title
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

#[test]
fn the_reference_lists_every_key_the_code_takes_and_no_other() {
    let code = code_tables();
    // The discovery must have found what is known to be there, or it found nothing.
    for (table, key) in [
        ("[service]", "pipelines"),
        ("[service.pipelines.<name>]", "receivers"),
        ("[exporters.otlp]", "endpoint"),
        ("[exporters.otlp.sending_queue]", "storage"),
        ("[[processors.risk.rules]]", "for"),
        ("[processors.risk.bots.<name>]", "max_leverage"),
        ("[[exporters.cloudwatch_emf.metrics]]", "match"),
        ("[receivers.otlp]", CORE_KEY),
    ] {
        assert!(
            code.get(table).is_some_and(|t| t.keys.contains(key)),
            "the probe did not find `{key}` in {table}: {:#?}",
            code.keys().collect::<Vec<_>>()
        );
    }

    let doc = sections(&reference());
    let mut problems = Vec::new();
    for (table, t) in &code {
        let matching: Vec<&Section> = doc
            .iter()
            .filter(|s| s.names.iter().any(|n| names(n, table)))
            .collect();
        if matching.is_empty() {
            problems.push(format!(
                "{table} has no heading; it takes: {}",
                t.keys.iter().cloned().collect::<Vec<_>>().join(", ")
            ));
            continue;
        }
        let mut documented: BTreeMap<&str, &Row> = BTreeMap::new();
        for row in matching.iter().flat_map(|s| &s.rows) {
            if documented.insert(&row.key, row).is_some() {
                problems.push(format!(
                    "the reference lists `{}` twice for {table}",
                    row.key
                ));
            }
        }
        for k in &t.keys {
            if !documented.contains_key(k.as_str()) {
                problems.push(format!(
                    "{table} takes `{k}`, which the reference does not list"
                ));
            }
        }
        for (k, row) in &documented {
            if !t.keys.contains(*k) {
                problems.push(format!(
                    "the reference lists `{k}` for {table}, which refuses it"
                ));
                continue;
            }
            // A default written as a value is one the key takes.
            if let Some(v) = literal(&row.default) {
                if !takes_value(t, k, v) {
                    problems.push(format!("{table} `{k}` refuses its documented default {v}"));
                }
            }
            // An enum's values are all in its type column.
            for v in enum_values(t, k).unwrap_or_default() {
                if !row.type_.contains(&format!("`\"{v}\"`")) {
                    problems.push(format!(
                        "{table} `{k}` takes \"{v}\", which its type column does not list: {}",
                        row.type_
                    ));
                }
            }
        }
    }
    for s in &doc {
        for n in &s.names {
            if !code.keys().any(|t| names(n, t)) {
                problems.push(format!(
                    "the heading \"{}\" names {n}, a table the configuration does not read",
                    s.title
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{REFERENCE} is out of step with the code:\n{}",
        problems.join("\n")
    );
}

#[test]
fn every_component_type_has_its_own_heading_and_every_heading_is_a_component_type() {
    let registry = builtin();
    let doc = sections(&reference());
    let headed: BTreeSet<&str> = doc
        .iter()
        .flat_map(|s| &s.names)
        .map(String::as_str)
        .collect();
    let mut problems = Vec::new();
    for kind in KINDS {
        let registered = registry.known_types(kind);
        for ty in &registered {
            let name = format!("[{}.{ty}]", kind.table());
            if !headed.contains(name.as_str()) {
                problems.push(format!(
                    "{} type {ty:?} has no heading {name}",
                    kind.as_str()
                ));
            }
        }
        // `[exporters.X]` and everything under it: X must be registered.
        let prefix = format!("{}.", kind.table());
        for name in &headed {
            let inner = name.trim_start_matches('[');
            let Some(rest) = inner.strip_prefix(&prefix) else {
                continue;
            };
            let ty = rest.split(['.', ']']).next().unwrap_or_default();
            if ty != "*" && !registered.contains(&ty) {
                problems.push(format!(
                    "the heading {name} names {} type {ty:?}, which is not registered",
                    kind.as_str()
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn links_in_the_reference_lead_to_its_headings_and_the_readme_links_it() {
    let text = reference();
    let anchors: BTreeSet<String> = sections(&text).iter().map(|s| anchor(&s.title)).collect();
    let mut broken = Vec::new();
    for (n, line) in text.lines().enumerate() {
        for part in line.split("](#").skip(1) {
            let target = part.split(')').next().unwrap_or_default();
            if !anchors.contains(target) {
                broken.push(format!("{REFERENCE}:{}: #{target}", n + 1));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "links to no heading:\n{}",
        broken.join("\n")
    );

    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    assert!(
        readme.contains(&format!("]({REFERENCE})")),
        "README.md does not link {REFERENCE}"
    );
}
