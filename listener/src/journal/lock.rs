//! One listener per journal file.
//!
//! Why: two listeners started on the same SQLite journal (a second service, a copy started by
//! hand) would both subscribe with the same client id, kick each other off the broker, and send
//! every pending alert twice. So the listener holds an exclusive lock on `<journal>.lock` for
//! as long as it runs, and a second one refuses to start, naming the first.
//!
//! Promises: the lock is the operating system's (released when the process ends, however it
//! ends: a crash or a kill leaves no stale lock); the holder is described in `<journal>.owner`
//! (process id, host, start time) so the refusal can say who holds it. The command-line tools
//! (`history`, `preview`, …) do not take the lock: they may read while the listener runs.

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// Held while the listener runs; dropping it releases the lock.
#[derive(Debug)]
pub struct InstanceLock {
    _file: File,
    owner: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "the journal {journal} is in use by another listener ({holder}): stop that one first, or give this one its own Butler.qlikCloudListener.journal.path"
    )]
    Held { journal: String, holder: String },
    #[error("cannot lock the journal {journal} ({lock}): {source}")]
    Io {
        journal: String,
        lock: String,
        source: std::io::Error,
    },
}

fn side_file(journal: &Path, suffix: &str) -> PathBuf {
    let mut name = journal.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

impl InstanceLock {
    /// Takes the lock for `journal` (creating its folder and the lock file), or says who holds
    /// it.
    pub fn acquire(journal: &Path) -> Result<InstanceLock, LockError> {
        let lock_path = side_file(journal, ".lock");
        let owner = side_file(journal, ".owner");
        let io = |source| LockError::Io {
            journal: journal.display().to_string(),
            lock: lock_path.display().to_string(),
            source,
        };
        if let Some(dir) = journal.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&owner)
                    .ok()
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| "a process that did not say who it is".into());
                return Err(LockError::Held {
                    journal: journal.display().to_string(),
                    holder,
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        let host = hostname::get()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "this host".into());
        let since = super::now_rfc3339();
        let said = format!(
            "process {} on {host}, started {since}\n",
            std::process::id()
        );
        // Only informative: a listener that cannot write it still runs.
        let _ = File::create(&owner).and_then(|mut f| f.write_all(said.as_bytes()));
        Ok(InstanceLock { _file: file, owner })
    }
}

impl Drop for InstanceLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.owner);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_and_told_who_holds_it() {
        let dir = tempfile::tempdir().unwrap();
        let journal = dir.path().join("sub/journal.sqlite");
        let first = InstanceLock::acquire(&journal).unwrap();
        let err = InstanceLock::acquire(&journal).unwrap_err().to_string();
        assert!(
            err.contains("in use by another listener (process ")
                && err.contains(&std::process::id().to_string()),
            "{err}"
        );
        assert!(err.contains("journal.path"), "{err}");
        drop(first);
        InstanceLock::acquire(&journal).expect("free again once the first is gone");
    }
}
