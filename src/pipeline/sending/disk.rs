//! `sending_queue.storage = "disk"`: the exporter's queue is a write-ahead log
//! ([`crate::pipeline::disk_log`]) instead of memory.
//!
//! Two tasks share the log. The writer takes batches from the pipelines, appends them
//! (as many as are waiting, in one blocking call: a group commit), syncs them as
//! `fsync` says, and only then registers them for sending: their memory is released,
//! acknowledgements made by [`Ack::new_queued`] are settled (the receiver may answer its
//! client), and other acknowledgements wait for delivery. The sending loop reads the
//! oldest pending batch back from disk, sends it as a memory queue would, and marks it
//! done when it was delivered or given up on (counted); a segment whose batches are all
//! done is deleted.
//!
//! Past `max_size` the writer stops taking batches, the pipelines wait, and the
//! receivers push back; `/status` says why. At the shutdown deadline nothing on disk is
//! dropped: what was not delivered is sent first at the next start. Batches that were in
//! flight at a crash are sent again (counted in `replayed_items`): at least once, with
//! duplicates bounded by `num_consumers`.

use super::{
    next_turn, send_one, sender, Counters, Destination, ExportItem, ExporterHandle, Fsync, Outcome,
};
use super::{SendingSettings, State};
use crate::component::Exporter;
use crate::pipeline::ack::{delivered_all, Ack};
use crate::pipeline::disk_log::{AppendError, DiskLog, Entry, ReadError};
use crate::pipeline::Payload;
use crate::service::health::ComponentHealth;
use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{mpsc, Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Batches appended in one group commit at most.
const GROUP: usize = 256;

struct Shared {
    log: Mutex<DiskLog>,
    state: Mutex<Pending>,
    /// A batch was registered, or the writer finished.
    ready: Notify,
    /// A segment was deleted: the log has room again.
    space: Notify,
    disk: DiskCounters,
    /// Why the writer is not taking batches (full, or writes failing), for `/status`.
    blocked: Mutex<Option<String>>,
}

#[derive(Default)]
struct Pending {
    entries: VecDeque<Entry>,
    /// Acknowledgements that wait for delivery, by sequence number.
    acks: HashMap<u64, Vec<Ack>>,
    writer_done: bool,
}

#[derive(Clone)]
struct DiskCounters {
    bytes: Gauge,
    corrupt: Counter,
    torn: Counter,
    replayed: Counter,
    write_errors: Counter,
}

impl Shared {
    fn log(&self) -> MutexGuard<'_, DiskLog> {
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn pending(&self) -> MutexGuard<'_, Pending> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The oldest pending batch; `None` once the writer finished and all were taken.
    async fn next(&self) -> Option<Entry> {
        loop {
            let ready = self.ready.notified();
            tokio::pin!(ready);
            ready.as_mut().enable();
            {
                let mut p = self.pending();
                if let Some(e) = p.entries.pop_front() {
                    return Some(e);
                }
                if p.writer_done {
                    return None;
                }
            }
            ready.await;
        }
    }

    /// Marks a batch done (delivered or given up on).
    ///
    /// On the async worker, like the read in the sending loop: a 16-byte write to the
    /// page cache costs less than handing it to the blocking pool (measured: with the
    /// thread hand-offs, futex wake-ups were a third of the disk queue's CPU). The lock
    /// is held by the writer for one record's append at most.
    fn done(&self, e: Entry) {
        let freed = {
            let mut log = self.log();
            let r = log.mark_done(&e);
            self.disk.bytes.set(log.live_bytes() as i64);
            r
        };
        match freed {
            Ok(true) => self.space.notify_waiters(),
            Ok(false) => {}
            Err(err) => {
                // The batch may be sent again after a restart; never lost.
                self.disk.write_errors.inc();
                tracing::warn!(seq = e.seq, error = %err, "could not mark a disk queue batch done");
            }
        }
    }
}

/// Opens the exporter's log in `dir`, reports what the last run left (sent first), and
/// starts the writer and the sending loop. Fails when the log cannot be opened.
pub async fn spawn_disk(
    exporter: Arc<dyn Exporter>,
    settings: &SendingSettings,
    dir: PathBuf,
    health: Arc<ComponentHealth>,
    hard_stop: CancellationToken,
) -> Result<(ExporterHandle, tokio::task::JoinHandle<()>), String> {
    let q = settings.queue.clone();
    let open_dir = dir.clone();
    let (log, rec) = tokio::task::spawn_blocking(move || {
        DiskLog::open(&open_dir, q.segment_size.0, q.max_size.0)
    })
    .await
    .map_err(|e| format!("opening the disk queue failed: {e}"))?
    .map_err(|e| format!("cannot open the disk queue in {}: {e}", dir.display()))?;

    let counters = Counters::new(&health, settings.queue.queue_size);
    let disk = DiskCounters {
        bytes: health.gauge(
            "queue_bytes",
            "Bytes of batches waiting in the disk queue (or in flight)",
            &[],
        ),
        corrupt: health.counter(
            "queue_corrupt_records",
            "Disk queue records skipped because their checksum failed (their data is lost)",
            &[],
        ),
        torn: health.counter(
            "queue_torn_records",
            "Incomplete records found at the end of the disk queue at start (writes cut short by a crash, never acknowledged)",
            &[],
        ),
        replayed: health.counter(
            "replayed_items",
            "Items sent again after a restart because they were in flight at the crash (possible duplicates)",
            &[],
        ),
        write_errors: health.counter(
            "queue_write_errors",
            "Disk queue writes that failed (retried; receivers push back meanwhile)",
            &[],
        ),
    };
    health
        .gauge("queue_max_bytes", "The disk queue's max_size", &[])
        .set(i64::try_from(settings.queue.max_size.0).unwrap_or(i64::MAX));
    disk.bytes.set(log.live_bytes() as i64);
    disk.corrupt.inc_by(rec.corrupt_records);
    disk.torn.inc_by(rec.torn_records);
    health.set_state(State::Ok);
    for p in &rec.problems {
        tracing::warn!(exporter = %health.id, "disk queue: {p}");
    }
    if !rec.problems.is_empty() {
        health.report_error(
            State::Degraded,
            format!(
                "disk queue at start: {} (everything else is sent)",
                rec.problems.join("; ")
            ),
        );
    }
    disk.replayed.inc_by(rec.replayed_items);
    if !rec.pending.is_empty() {
        let items: u64 = rec.pending.iter().map(|e| e.items).sum();
        tracing::info!(
            exporter = %health.id,
            batches = rec.pending.len(),
            items,
            possibly_sent_before = rec.replayed,
            "disk queue: sending what the previous run left first"
        );
    }
    counters.queue_size.set(rec.pending.len() as i64);

    let max_size = settings.queue.max_size.0;
    let shared = Arc::new(Shared {
        log: Mutex::new(log),
        state: Mutex::new(Pending {
            entries: rec.pending.into(),
            ..Pending::default()
        }),
        ready: Notify::new(),
        space: Notify::new(),
        disk,
        blocked: Mutex::new(None),
    });
    {
        // Weak: `/status` outlives the exporter, and must not keep its log (and lock) open.
        let shared = Arc::downgrade(&shared);
        health.set_detail_with(move || {
            let Some(shared) = shared.upgrade() else {
                return "disk queue closed".to_string();
            };
            let n = shared.pending().entries.len();
            let used = shared.disk.bytes.get().max(0) as u64;
            let blocked = shared
                .blocked
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            match blocked {
                Some(why) => format!("{why} ({n} batches waiting)"),
                None => format!(
                    "disk queue: {n} batches waiting, {} of {}",
                    bytesize::ByteSize(used),
                    bytesize::ByteSize(max_size)
                ),
            }
        });
    }

    let (tx, rx) = mpsc::channel(settings.queue.queue_size.max(1));
    let handle = ExporterHandle {
        to: Destination::Disk(tx),
        counters: counters.clone(),
    };
    let writer = tokio::spawn(write_loop(
        rx,
        shared.clone(),
        settings.queue.fsync,
        settings.queue.fsync_interval.get(),
        counters.clone(),
        health.clone(),
        hard_stop.clone(),
    ));
    let service = sender(exporter.clone(), settings, &counters, &health);
    let limit = Arc::new(Semaphore::new(settings.queue.num_consumers));
    let task = tokio::spawn(async move {
        let in_flight = TaskTracker::new();
        loop {
            let Some((permit, entry)) = next_turn(&limit, &hard_stop, shared.next()).await else {
                break;
            };
            counters.queue_size.dec();
            // One record from the page cache (or the disk, after a restart), read here
            // rather than on the blocking pool: see `Shared::done`.
            let read = {
                let mut log = shared.log();
                let r = log.read(&entry);
                if r.is_ok() {
                    // Without this mark a crash during the send would go unnoticed as
                    // a possible duplicate; it is not worth failing the send over.
                    let _ = log.mark_started(entry.seq);
                }
                r
            };
            let acks = shared.pending().acks.remove(&entry.seq).unwrap_or_default();
            let bytes: Bytes = match read {
                Ok(b) => b,
                Err(e) => {
                    let why = match e {
                        ReadError::Corrupt(m) => {
                            shared.disk.corrupt.inc();
                            m
                        }
                        ReadError::Io(e) => format!("reading the disk queue failed: {e}"),
                    };
                    counters.of(entry.signal).failed.inc_by(entry.items);
                    health.report_error(
                        State::Degraded,
                        format!("lost {} {}: {why}", entry.items, entry.signal.item_name()),
                    );
                    tracing::error!(exporter = %health.id, seq = entry.seq, "disk queue: {why}; batch lost");
                    drop(acks);
                    shared.done(entry);
                    continue;
                }
            };
            let payload = Arc::new(Payload::Encoded {
                signal: entry.signal,
                bytes,
                items: entry.items,
            });
            let svc = service.clone();
            let counters = counters.clone();
            let health = health.clone();
            let hard_stop = hard_stop.clone();
            let shared = shared.clone();
            in_flight.spawn(async move {
                match send_one(svc, payload, &counters, &health, &hard_stop).await {
                    Outcome::Delivered => {
                        delivered_all(acks);
                        shared.done(entry);
                    }
                    Outcome::Failed => {
                        drop(acks);
                        shared.done(entry);
                    }
                    // Stays on disk for the next start; a waiting client is told to retry.
                    Outcome::Abandoned => drop(acks),
                }
                drop(permit);
            });
        }
        in_flight.close();
        in_flight.wait().await;
        let _ = writer.await;
        let left = shared.pending().entries.len();
        if left > 0 {
            tracing::info!(exporter = %health.id, batches = left, "disk queue: undelivered batches stay on disk for the next start");
        }
        let synced = tokio::task::spawn_blocking(move || shared.log().sync())
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
        if let Err(e) = synced {
            tracing::warn!(error = %e, "disk queue: final sync failed");
        }
        exporter.shutdown().await;
        health.set_state(State::Stopped);
    });
    Ok((handle, task))
}

/// Takes batches from the pipelines and appends them; see the module documentation.
async fn write_loop(
    mut rx: mpsc::Receiver<ExportItem>,
    shared: Arc<Shared>,
    fsync: Fsync,
    interval: Duration,
    counters: Counters,
    health: Arc<ComponentHealth>,
    hard_stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut unsynced = false;
    'outer: loop {
        let first = tokio::select! {
            item = rx.recv() => match item {
                Some(i) => i,
                None => break,
            },
            _ = tick.tick(), if fsync == Fsync::Interval && unsynced => {
                let me = shared.clone();
                if let Ok(Err(e)) = tokio::task::spawn_blocking(move || me.log().sync()).await {
                    shared.disk.write_errors.inc();
                    tracing::warn!(error = %e, "disk queue: periodic fsync failed");
                }
                unsynced = false;
                continue;
            }
        };
        let mut group = VecDeque::with_capacity(GROUP);
        group.push_back(first);
        while group.len() < GROUP {
            match rx.try_recv() {
                Ok(i) => group.push_back(i),
                Err(_) => break,
            }
        }
        // Encoded once per group, not again when a full queue makes it wait and retry
        // (a decoded payload's encoding is real work); `Bytes` clones are shallow.
        let mut records: VecDeque<(crate::component::Signal, u64, Bytes)> = group
            .iter()
            .map(|i| (i.payload.signal(), i.payload.items(), i.payload.to_bytes()))
            .collect();
        while !group.is_empty() {
            let me = shared.clone();
            let batch: Vec<_> = records.iter().cloned().collect();
            let appended = tokio::task::spawn_blocking(move || {
                let mut entries = Vec::with_capacity(batch.len());
                let mut err = None;
                // The lock is taken per record, so the sending loop (which reads and
                // marks on the async workers) waits for one append at most.
                for (signal, items, bytes) in &batch {
                    let mut log = me.log();
                    match log.append(*signal, *items, bytes) {
                        Ok(e) => entries.push(e),
                        Err(e) => {
                            err = Some(e);
                            break;
                        }
                    }
                    me.disk.bytes.set(log.live_bytes() as i64);
                }
                let mut durable = fsync == Fsync::Interval || entries.is_empty();
                if !durable {
                    // Synced outside the lock, so the sending loop is not held up.
                    match me
                        .log()
                        .sync_handle()
                        .map(|h| h.and_then(|f| f.sync_data()))
                    {
                        Some(Err(e)) => err = Some(AppendError::Io(e)),
                        _ => durable = true,
                    }
                }
                (entries, durable, err)
            })
            .await;
            let (entries, durable, err) = appended.unwrap_or_else(|e| {
                let e = AppendError::Io(std::io::Error::other(e.to_string()));
                (Vec::new(), false, Some(e))
            });
            if !entries.is_empty() {
                if fsync == Fsync::Interval {
                    unsynced = true;
                }
                let mut p = shared.pending();
                for e in entries {
                    let item = group.pop_front().expect("one item per entry");
                    records.pop_front();
                    // The payload and its memory lease go now: the data is in the log.
                    // Only a durable write settles the acknowledgements of waiters
                    // content with "queued"; otherwise they wait for delivery.
                    let kept: Vec<Ack> = if durable {
                        item.acks
                            .into_iter()
                            .filter_map(Ack::settle_if_queued)
                            .collect()
                    } else {
                        item.acks
                    };
                    if !kept.is_empty() {
                        p.acks.insert(e.seq, kept);
                    }
                    p.entries.push_back(e);
                    counters.queue_size.inc();
                }
                drop(p);
                shared.ready.notify_one();
            }
            let was_blocked = shared
                .blocked
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_some();
            let Some(err) = err else {
                if was_blocked {
                    *shared.blocked.lock().unwrap_or_else(|e| e.into_inner()) = None;
                    health.report_ok();
                }
                continue;
            };
            // Full or failing: hold what is left (its memory stays reserved, so the
            // receivers push back) until a segment is freed, or retry after a second.
            if matches!(err, AppendError::Io(_)) {
                shared.disk.write_errors.inc();
            }
            if !was_blocked {
                tracing::warn!(exporter = %health.id, "{err}");
            }
            *shared.blocked.lock().unwrap_or_else(|e| e.into_inner()) = Some(err.to_string());
            health.report_error(State::Degraded, err.to_string());
            let space = shared.space.notified();
            tokio::select! {
                _ = space => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = hard_stop.cancelled() => {
                    for item in group.drain(..) {
                        counters.drop_item(item, "shutdown deadline reached before the disk queue had room");
                    }
                    break 'outer;
                }
            }
        }
    }
    // Whatever arrives after the deadline is refused by the closed channel.
    rx.close();
    while let Ok(item) = rx.try_recv() {
        counters.drop_item(
            item,
            "shutdown deadline reached before the disk queue had room",
        );
    }
    shared.pending().writer_done = true;
    shared.ready.notify_one();
}
