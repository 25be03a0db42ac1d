//! OpenTelemetry → Prometheus names: metric and label name sanitising, unit suffixes.

/// A metric name: characters outside `[a-zA-Z0-9_:]` become `_`, runs of `_` collapse,
/// leading and trailing `_` go, and a leading digit gets a `_` before it.
pub fn metric_name(name: &str) -> String {
    sanitize(name, true)
}

/// A label name: as a metric name without `:`; a leading digit gets `key_` before it.
pub fn label_name(name: &str) -> String {
    let s = sanitize(name, false);
    if s.is_empty() {
        return "key_".into();
    }
    if s.as_bytes()[0].is_ascii_digit() {
        return format!("key_{s}");
    }
    s
}

fn sanitize(name: &str, colon: bool) -> String {
    let mut out = String::with_capacity(name.len());
    let mut underscore = false;
    for c in name.chars() {
        let ok = c.is_ascii_alphanumeric() || c == '_' || (colon && c == ':');
        let c = if ok { c } else { '_' };
        if c == '_' {
            if underscore {
                continue;
            }
            underscore = true;
        } else {
            underscore = false;
        }
        out.push(c);
    }
    let trimmed = out.trim_matches('_');
    let mut s = trimmed.to_owned();
    if s.as_bytes().first().is_some_and(|b| b.is_ascii_digit()) && colon {
        s.insert(0, '_');
    }
    s
}

/// The suffix for a UCUM unit, in base units (`ms` → `seconds`, `KiBy` → `bytes`, with
/// [`base_factor`] scaling the values): `s` → `seconds`, `By/s` → `bytes_per_second`, `%` →
/// `percent`; units in braces (annotations such as `{trade}`) and `1` give none (`1`
/// becomes `ratio` on gauges, which the caller decides); an unknown unit is used as
/// written, sanitised.
pub fn unit_suffix(unit: &str) -> Option<String> {
    let unit = unit.trim();
    if unit.is_empty() || unit == "1" {
        return None;
    }
    // Annotations are dropped: `{packets}`, `{USDT}`, and `{x}/s` keeps only the `/s`.
    let cleaned: String = {
        let mut out = String::new();
        let mut depth = 0;
        for c in unit.chars() {
            match c {
                '{' => depth += 1,
                '}' if depth > 0 => depth -= 1,
                c if depth == 0 => out.push(c),
                _ => {}
            }
        }
        out
    };
    let cleaned = cleaned.trim();
    if cleaned.is_empty() {
        return None;
    }
    let (main, per) = match cleaned.split_once('/') {
        Some((a, b)) => (a.trim(), Some(b.trim())),
        None => (cleaned, None),
    };
    let main_word = if main.is_empty() || main == "1" {
        None
    } else {
        Some(word(main))
    };
    let per_word = per.filter(|p| !p.is_empty()).map(per_word);
    let s = match (main_word, per_word) {
        (Some(m), Some(p)) => format!("{m}_per_{p}"),
        (Some(m), None) => m,
        (None, Some(p)) => format!("per_{p}"),
        (None, None) => return None,
    };
    let s = sanitize(&s, false);
    (!s.is_empty()).then_some(s)
}

/// Prometheus wants base units (promtool says so): times are seconds and sizes bytes.
/// The factor that turns a value in `unit` into its base unit, for the units that need it.
pub fn base_factor(unit: &str) -> f64 {
    match unit.trim() {
        "d" => 86_400.0,
        "h" => 3_600.0,
        "min" => 60.0,
        "ms" => 1e-3,
        "us" => 1e-6,
        "ns" => 1e-9,
        "KiBy" => 1024.0,
        "MiBy" => 1024.0 * 1024.0,
        "GiBy" => 1024.0 * 1024.0 * 1024.0,
        "TiBy" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        "KBy" => 1e3,
        "MBy" => 1e6,
        "GBy" => 1e9,
        "TBy" => 1e12,
        _ => 1.0,
    }
}

fn word(u: &str) -> String {
    match u {
        "d" | "h" | "min" | "s" | "ms" | "us" | "ns" => "seconds",
        "By" | "KiBy" | "MiBy" | "GiBy" | "TiBy" | "KBy" | "MBy" | "GBy" | "TBy" => "bytes",
        "m" => "meters",
        "V" => "volts",
        "A" => "amperes",
        "J" => "joules",
        "W" => "watts",
        "g" => "grams",
        "Cel" => "celsius",
        "Hz" => "hertz",
        "%" => "percent",
        other => other,
    }
    .to_owned()
}

fn per_word(u: &str) -> String {
    match u {
        "s" => "second",
        "m" => "minute",
        "h" => "hour",
        "d" => "day",
        "w" => "week",
        "mo" => "month",
        "y" => "year",
        other => other,
    }
    .to_owned()
}

/// `name` with `suffix` appended unless it already ends with it (`_pct` counts as
/// `_percent`: `ratio_to_percent` names its metrics so).
pub fn with_suffix(name: &str, suffix: &str) -> String {
    let already = name == suffix
        || name.ends_with(&format!("_{suffix}"))
        || (suffix == "percent" && name.ends_with("_pct"));
    if already {
        name.to_owned()
    } else {
        format!("{name}_{suffix}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(
            metric_name("(lambda).function.executions(#)"),
            "lambda_function_executions"
        );
        assert_eq!(
            metric_name("freqtrade.profit.total"),
            "freqtrade_profit_total"
        );
        assert_eq!(metric_name("http.server.duration"), "http_server_duration");
        assert_eq!(metric_name("9lives"), "_9lives");
        assert_eq!(metric_name("a::b"), "a::b");
        assert_eq!(label_name("service.name"), "service_name");
        assert_eq!(label_name("9x"), "key_9x");
        assert_eq!(label_name("a:b"), "a_b");
    }

    #[test]
    fn units() {
        for (u, want) in [
            ("s", Some("seconds")),
            ("ms", Some("seconds")),
            ("KiBy", Some("bytes")),
            ("By", Some("bytes")),
            ("By/s", Some("bytes_per_second")),
            ("1/s", Some("per_second")),
            ("%", Some("percent")),
            ("1", None),
            ("{packets}", None),
            ("{USDT}", None),
            ("{request}/s", Some("per_second")),
            ("", None),
            ("widgets", Some("widgets")),
        ] {
            assert_eq!(unit_suffix(u).as_deref(), want, "{u}");
        }
        assert_eq!(with_suffix("latency", "seconds"), "latency_seconds");
        assert_eq!(with_suffix("latency_seconds", "seconds"), "latency_seconds");
        assert_eq!(with_suffix("drawdown_pct", "percent"), "drawdown_pct");
        assert_eq!(base_factor("ms"), 1e-3);
        assert_eq!(base_factor("s"), 1.0);
    }
}
