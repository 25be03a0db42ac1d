//! The configuration loader and validation (`Source::from_text` then
//! `Config::from_source` with the built-in components, as `tradewatch validate` does):
//! never a panic, and every error located: a line and column inside the text whenever
//! the text is not blank.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tradewatch::config::{Config, ConfigErrors, Source};

fn env(name: &str) -> Option<String> {
    match name {
        "PORT" => Some("4318".into()),
        "TOKEN" => Some("s3cr3t".into()),
        "EMPTY" => Some(String::new()),
        _ => None,
    }
}

fn located(text: &str, errors: &ConfigErrors) {
    if text.trim().is_empty() {
        return;
    }
    let lines = text.split('\n').count();
    for e in &errors.0 {
        assert!(
            e.line >= 1 && e.line <= lines && e.column >= 1,
            "error not located in the text ({lines} lines): {e:?}"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let src = match Source::from_text("fuzz/config.toml".into(), text, &env) {
        Ok(src) => src,
        Err(errors) => return located(text, &errors),
    };
    if let Err(errors) = Config::from_source(&src, &tradewatch::registry::builtin()) {
        located(text, &errors);
    }
});
