//! State on disk for components that need it (checkpoints, breach state).
//!
//! Each component gets its own directory under the service's `data_dir`. Writes go to a
//! temporary file that is synced and renamed over the old one, so a crash leaves either
//! the old state or the new, never a torn file.

use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    /// `<data_dir>/<kind>/<id with '/' as '_'>`; created on first write.
    pub fn new(data_dir: &Path, kind: &str, id: &str) -> StateDir {
        let safe: String = id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        StateDir {
            dir: data_dir.join(kind).join(safe),
        }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Replaces `name` atomically with `bytes`.
    pub fn write_atomic(&self, name: &str, bytes: &[u8]) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let target = self.dir.join(name);
        let tmp = self.dir.join(format!(".{name}.tmp"));
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &target)?;
        // Make the rename itself durable.
        if let Ok(d) = std::fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// The contents of `name`, or `None` if it was never written.
    pub fn read(&self, name: &str) -> std::io::Result<Option<Vec<u8>>> {
        match std::fs::read(self.dir.join(name)) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_replace_atomically() {
        let tmp = tempfile::tempdir().unwrap();
        let s = StateDir::new(tmp.path(), "receiver", "logtail/app");
        assert_eq!(s.read("offsets.json").unwrap(), None);
        s.write_atomic("offsets.json", b"{\"a\":1}").unwrap();
        s.write_atomic("offsets.json", b"{\"a\":2}").unwrap();
        assert_eq!(s.read("offsets.json").unwrap().unwrap(), b"{\"a\":2}");
        assert!(s.path().ends_with("receiver/logtail_app"));
        let names: Vec<_> = std::fs::read_dir(s.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "no temporary file left behind: {names:?}");
    }
}
