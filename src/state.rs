//! State on disk for components that need it (checkpoints, breach state).
//!
//! Each component gets its own directory under the service's `data_dir`. Writes go to a
//! temporary file of their own that is synced and renamed over the old one, so a crash
//! leaves either the old state or the new, never a torn file, and two writers never
//! share a temporary file. The async methods run the file system calls on the blocking
//! pool, so a component never stalls an async worker thread with an fsync.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

/// Makes every temporary file name unique within the process (the pid covers the rest).
static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

impl StateDir {
    /// `<data_dir>/<kind>/<encoded id>`; created on first write. The id is
    /// percent-encoded (`/` → `%2F`, `%` → `%25`, a leading `.` → `%2E`), so distinct ids
    /// (`a/b`, `a_b`) always get distinct directories and none escapes `data_dir`.
    pub fn new(data_dir: &Path, kind: &str, id: &str) -> StateDir {
        StateDir {
            dir: data_dir.join(kind).join(encode(id)),
        }
    }

    /// A directory chosen by the user (`state_dir = "data/risk"`), used as it is.
    pub fn at(dir: PathBuf) -> StateDir {
        StateDir { dir }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Replaces `name` atomically with `bytes`, off the async workers.
    pub async fn write(&self, name: &str, bytes: Vec<u8>) -> std::io::Result<()> {
        let (dir, name) = (self.clone(), name.to_owned());
        blocking(move || dir.write_blocking(&name, &bytes)).await
    }

    /// The contents of `name`, or `None` if it was never written, off the async workers.
    pub async fn read(&self, name: &str) -> std::io::Result<Option<Vec<u8>>> {
        let (dir, name) = (self.clone(), name.to_owned());
        blocking(move || dir.read_blocking(&name)).await
    }

    /// [`StateDir::write`] for threads that may block (start-up, the blocking pool).
    pub fn write_blocking(&self, name: &str, bytes: &[u8]) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let target = self.dir.join(name);
        let seq = TEMP_SEQ.fetch_add(1, Ordering::Relaxed);
        let tmp = self
            .dir
            .join(format!(".{name}.{}.{seq}.tmp", std::process::id()));
        let written = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &target)
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written?;
        // Make the rename itself durable.
        if let Ok(d) = std::fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// [`StateDir::read`] for threads that may block.
    pub fn read_blocking(&self, name: &str) -> std::io::Result<Option<Vec<u8>>> {
        match std::fs::read(self.dir.join(name)) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(format!("state I/O task failed: {e}"))))
}

/// Percent-encodes everything but ASCII letters, digits, `-`, `_` and a non-leading `.`.
fn encode(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for (i, b) in id.bytes().enumerate() {
        let plain = b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || (b == b'.' && i > 0);
        if plain {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writes_replace_atomically() {
        let tmp = tempfile::tempdir().unwrap();
        let s = StateDir::new(tmp.path(), "receiver", "logtail/app");
        assert_eq!(s.read("offsets.json").await.unwrap(), None);
        s.write("offsets.json", b"{\"a\":1}".to_vec())
            .await
            .unwrap();
        s.write("offsets.json", b"{\"a\":2}".to_vec())
            .await
            .unwrap();
        assert_eq!(s.read("offsets.json").await.unwrap().unwrap(), b"{\"a\":2}");
        assert!(s.path().ends_with("receiver/logtail%2Fapp"));
        let names: Vec<_> = std::fs::read_dir(s.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "no temporary file left behind: {names:?}");
    }

    #[test]
    fn distinct_ids_never_share_a_directory() {
        let ids = [
            "a/b", "a_b", "a%2Fb", "a%b", "a.b", ".", "..", ".x", "%2Ex", "a/..",
        ];
        let tmp = tempfile::tempdir().unwrap();
        let dirs: std::collections::BTreeSet<PathBuf> = ids
            .iter()
            .map(|id| StateDir::new(tmp.path(), "processor", id).path().to_owned())
            .collect();
        assert_eq!(dirs.len(), ids.len(), "{dirs:?}");
        for d in &dirs {
            assert_eq!(d.parent().unwrap(), tmp.path().join("processor"), "{d:?}");
        }
    }

    #[test]
    fn concurrent_writers_never_share_a_temporary_file() {
        let tmp = tempfile::tempdir().unwrap();
        let s = StateDir::new(tmp.path(), "processor", "risk");
        let payloads: Vec<Vec<u8>> = (0..8u8).map(|i| vec![i; 64 * 1024]).collect();
        std::thread::scope(|scope| {
            for p in &payloads {
                let s = s.clone();
                scope.spawn(move || {
                    for _ in 0..20 {
                        s.write_blocking("state.bin", p).unwrap();
                    }
                });
            }
        });
        // Whatever write won, the file is one writer's bytes, whole.
        let got = s.read_blocking("state.bin").unwrap().unwrap();
        assert!(payloads.contains(&got), "torn or mixed state file");
        let names: Vec<_> = std::fs::read_dir(s.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "no temporary file left behind: {names:?}");
    }
}
