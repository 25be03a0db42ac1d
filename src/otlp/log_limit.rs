//! Rate-limited warnings: a client sending bad requests in a loop, or a downstream
//! rejecting part of every batch, must be visible in the log without flooding it.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// At most one line per reason per `interval`; the next line says how many were held back.
pub struct LogLimiter {
    interval: Duration,
    /// (reason, when its last line was written, lines held back since).
    slots: Mutex<Vec<(&'static str, Instant, u64)>>,
}

impl LogLimiter {
    pub fn new(interval: Duration) -> LogLimiter {
        LogLimiter {
            interval,
            slots: Mutex::new(Vec::new()),
        }
    }

    /// `Some(suppressed)` when a line for `reason` may be written now, with the number of
    /// lines held back since the previous one; `None` when this one is held back.
    pub fn allow(&self, reason: &'static str) -> Option<u64> {
        let now = Instant::now();
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        match slots.iter_mut().find(|(r, _, _)| *r == reason) {
            None => {
                slots.push((reason, now, 0));
                Some(0)
            }
            Some((_, last, held)) if now.duration_since(*last) >= self.interval => {
                *last = now;
                Some(std::mem::take(held))
            }
            Some((_, _, held)) => {
                *held += 1;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_reason_per_interval_then_the_count_held_back() {
        let l = LogLimiter::new(Duration::from_millis(200));
        assert_eq!(l.allow("bad"), Some(0));
        assert_eq!(l.allow("too_large"), Some(0));
        for _ in 0..5 {
            assert_eq!(l.allow("bad"), None);
        }
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(l.allow("bad"), Some(5));
        assert_eq!(l.allow("too_large"), Some(0));
    }
}
