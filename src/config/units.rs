//! Human-written durations (`"30s"`, `"5m"`) and sizes (`"4MiB"`).

use serde::{de, Deserialize, Deserializer};
use std::{fmt, time::Duration};

/// A duration written as a human string: `"200ms"`, `"30s"`, `"5m"`, `"1h 30m"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    pub const fn from_millis(ms: u64) -> Self {
        HumanDuration(Duration::from_millis(ms))
    }
    pub const fn from_secs(s: u64) -> Self {
        HumanDuration(Duration::from_secs(s))
    }
    pub fn get(self) -> Duration {
        self.0
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d).map_err(|_| {
            de::Error::custom(
                "invalid duration: write it as a string such as \"200ms\", \"30s\" or \"5m\"",
            )
        })?;
        humantime::parse_duration(s.trim())
            .map(HumanDuration)
            .map_err(|e| {
                de::Error::custom(format!(
                    "invalid duration {s:?}: {e} (examples: \"200ms\", \"30s\", \"5m\")"
                ))
            })
    }
}

/// A byte size written as a human string: `"512KiB"`, `"4MiB"`, `"1 MB"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct HumanSize(pub u64);

impl HumanSize {
    pub const fn mib(n: u64) -> Self {
        HumanSize(n * 1024 * 1024)
    }
    pub fn bytes(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }
}

impl fmt::Display for HumanSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", bytesize::ByteSize(self.0).display().iec())
    }
}

impl<'de> Deserialize<'de> for HumanSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d).map_err(|_| {
            de::Error::custom("invalid size: write it as a string such as \"4MiB\" or \"512KiB\"")
        })?;
        s.trim()
            .parse::<bytesize::ByteSize>()
            .map(|b| HumanSize(b.as_u64()))
            .map_err(|e| {
                de::Error::custom(format!(
                    "invalid size {s:?}: {e} (examples: \"4MiB\", \"512KiB\")"
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct T {
        d: HumanDuration,
        s: HumanSize,
    }

    #[test]
    fn parses_human_strings() {
        let t: T = toml::from_str("d = \"200ms\"\ns = \"4MiB\"").unwrap();
        assert_eq!(t.d.get(), Duration::from_millis(200));
        assert_eq!(t.s.0, 4 * 1024 * 1024);
        let err = toml::from_str::<T>("d = \"5x\"\ns = \"1KiB\"")
            .err()
            .unwrap();
        assert!(err.to_string().contains("invalid duration \"5x\""), "{err}");
        let err = toml::from_str::<T>("d = \"1s\"\ns = \"lots\"")
            .err()
            .unwrap();
        assert!(err.to_string().contains("invalid size \"lots\""), "{err}");
        assert!(toml::from_str::<T>("d = 5\ns = \"1KiB\"").is_err());
    }
}
