//! Writes the risk state off the pipeline's task: the latest snapshot wins, one file
//! write at a time, atomically (`StateDir`: temp file, fsync, rename).

use crate::service::health::ComponentHealth;
use crate::state::StateDir;
use prometheus_client::metrics::counter::Counter;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

pub const FILE: &str = "state.json";

#[derive(Default)]
struct Slot {
    /// The snapshot waiting to be written.
    next: Option<Vec<u8>>,
    /// A write is under way.
    busy: bool,
    closed: bool,
}

#[derive(Clone)]
pub struct Saver {
    inner: Arc<(Mutex<Slot>, Condvar)>,
}

impl Saver {
    pub fn start(dir: StateDir, health: Arc<ComponentHealth>, failures: Counter) -> Saver {
        let inner: Arc<(Mutex<Slot>, Condvar)> = Arc::default();
        let worker = inner.clone();
        let spawned = std::thread::Builder::new()
            .name("risk-state".into())
            .spawn(move || loop {
                let bytes = {
                    let (lock, cv) = &*worker;
                    let mut slot = lock.lock().unwrap_or_else(|e| e.into_inner());
                    loop {
                        if let Some(b) = slot.next.take() {
                            slot.busy = true;
                            break b;
                        }
                        if slot.closed {
                            return;
                        }
                        slot = cv.wait(slot).unwrap_or_else(|e| e.into_inner());
                    }
                };
                if let Err(e) = dir.write_blocking(FILE, &bytes) {
                    failures.inc();
                    let msg = format!(
                        "cannot write the risk state to {}: {e}",
                        dir.path().join(FILE).display()
                    );
                    tracing::error!("{msg}");
                    health.report_error(crate::service::health::State::Degraded, msg);
                }
                let (lock, cv) = &*worker;
                lock.lock().unwrap_or_else(|e| e.into_inner()).busy = false;
                cv.notify_all();
            });
        if let Err(e) = spawned {
            tracing::error!("cannot start the risk state writer: {e}");
        }
        Saver { inner }
    }

    /// Queues `bytes` as the next state to write (replacing one not yet written).
    pub fn save(&self, bytes: Vec<u8>) {
        let (lock, cv) = &*self.inner;
        lock.lock().unwrap_or_else(|e| e.into_inner()).next = Some(bytes);
        cv.notify_all();
    }

    /// Waits until everything queued is on disk, at most `timeout`.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let (lock, cv) = &*self.inner;
        let mut slot = lock.lock().unwrap_or_else(|e| e.into_inner());
        while slot.next.is_some() || slot.busy {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            slot = cv
                .wait_timeout(slot, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }
}

impl Drop for Saver {
    fn drop(&mut self) {
        // The last handle (the engine's) closes the worker once it has written.
        if Arc::strong_count(&self.inner) == 2 {
            let (lock, cv) = &*self.inner;
            lock.lock().unwrap_or_else(|e| e.into_inner()).closed = true;
            cv.notify_all();
        }
    }
}
