//! The core stands alone: no core module imports a concrete component, and
//! `src/registry.rs` is the one file that names them all. A new component touches its own
//! folder and one line of the registry; this test keeps it that way.

use std::path::{Path, PathBuf};

/// Modules that make up the core.
const CORE: &[&str] = &[
    "src/component.rs",
    "src/config",
    "src/net",
    "src/otlp",
    "src/pipeline",
    "src/service",
    "src/state.rs",
];

/// Paths a core module must never mention.
const CONCRETE: &[&str] = &[
    "crate::receivers",
    "crate::processors",
    "crate::exporters",
    "crate::registry",
];

fn rust_files(p: &Path, out: &mut Vec<PathBuf>) {
    if p.is_dir() {
        for e in std::fs::read_dir(p).unwrap() {
            rust_files(&e.unwrap().path(), out);
        }
    } else if p.extension().is_some_and(|e| e == "rs") {
        out.push(p.to_owned());
    }
}

/// Code lines only: doc and plain comments may point at components by name.
fn code_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim_start().starts_with("//"))
}

#[test]
fn core_modules_import_no_concrete_component() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for c in CORE {
        rust_files(&root.join(c), &mut files);
    }
    assert!(
        files.len() > 10,
        "the core modules were not found: {files:?}"
    );
    let mut bad = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        for (n, line) in code_lines(&text) {
            if CONCRETE.iter().any(|c| line.contains(c)) {
                bad.push(format!("{}:{}: {}", f.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "core modules must reach components only through crate::component's traits:\n{}",
        bad.join("\n")
    );
}

#[test]
fn only_the_registry_names_every_component_parser() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    let mut naming = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let hits = code_lines(&text)
            .filter(|(_, l)| {
                [
                    "crate::receivers::",
                    "crate::processors::",
                    "crate::exporters::",
                ]
                .iter()
                .any(|k| l.contains(k) && l.contains("::parse"))
            })
            .count();
        if hits > 0 {
            naming.push(f.strip_prefix(root).unwrap().display().to_string());
        }
    }
    assert_eq!(naming, vec!["src/registry.rs".to_string()]);
}
