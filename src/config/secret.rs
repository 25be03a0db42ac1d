//! Secrets from the configuration (tokens, API keys, webhook URLs).
//!
//! A [`Secret`] prints as `***` in every `Debug` and `Display`, so a config dumped in a
//! log line or an error cannot leak it; code that needs the value says so with
//! [`Secret::expose`].

use serde::{Deserialize, Deserializer};
use std::fmt;

#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value itself: for building a request, never for printing.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_its_value() {
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct C {
            token: Secret,
        }
        let c: C = toml::from_str("token = \"hunter2\"").unwrap();
        assert_eq!(c.token.expose(), "hunter2");
        assert!(!format!("{c:?} {}", c.token).contains("hunter2"));
    }
}
