//! The journal's file while the listener runs: deleted (written again from the open
//! database), replaced or made read-only (reported).

use super::schema::open_connection;
use super::{Job, Sqlite};
use crate::journal::JournalError;
use rusqlite::Connection;
use std::path::Path;

impl Sqlite {
    /// What is wrong with the journal's file while the listener runs: deleted, replaced by
    /// another file, or made read-only (SQLite keeps using the file it has open, so writes go
    /// on, but a restart would lose the journal or fail). `None` when all is well.
    pub fn file_problem(&self) -> Option<String> {
        let path = self.path.display();
        let meta = match std::fs::metadata(&self.path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Some(format!("the journal file {path} was deleted"))
            }
            Err(e) => return Some(format!("the journal file {path}: {e}")),
        };
        let known = *self.identity.lock().unwrap_or_else(|p| p.into_inner());
        if known.is_some() && file_identity(&self.path) != known {
            return Some(format!(
                "the journal file {path} was replaced by another file"
            ));
        }
        if meta.permissions().readonly() {
            return Some(format!(
                "the journal file {path} is read-only: the listener could not start with it"
            ));
        }
        None
    }

    /// After the file was deleted: writes the open database to the path again and goes on
    /// with that file, so nothing recorded is lost. Returns how many events it holds.
    pub async fn restore_file(&self) -> Result<u64, JournalError> {
        let path = self.path.clone();
        let (done, result) = tokio::sync::oneshot::channel();
        let job = Job {
            durable: true,
            alone: true,
            run: Box::new(move |c| {
                let outcome = restore(c, &path);
                Box::new(move |_| {
                    let _ = done.send(outcome);
                })
            }),
        };
        self.jobs
            .send(job)
            .map_err(|_| JournalError::Thread("the journal's thread has stopped".into()))?;
        let events = result
            .await
            .map_err(|_| JournalError::Thread("the journal's thread has stopped".into()))??;
        *self.identity.lock().unwrap_or_else(|p| p.into_inner()) = file_identity(&self.path);
        Ok(events)
    }

    /// Watches the file every few seconds for as long as the listener runs: a deleted file is
    /// written again from the open database ([`Journal::restore_file`]); any other problem is
    /// logged when it appears and when it goes (and reported by `/readyz` meanwhile).
    pub async fn watch(self) {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(5));
        let mut logged: Option<String> = None;
        loop {
            every.tick().await;
            let problem = self.file_problem();
            if problem
                .as_deref()
                .is_some_and(|p| p.ends_with("was deleted"))
            {
                match self.restore_file().await {
                    Ok(events) => {
                        tracing::error!(path = %self.path.display(), events, "the journal file was deleted while the listener ran; written again from the open database, nothing lost");
                        logged = None;
                        continue;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "the journal file was deleted and cannot be written again")
                    }
                }
            }
            if problem != logged {
                match &problem {
                    Some(p) => tracing::error!("{p}"),
                    None => {
                        tracing::info!(path = %self.path.display(), "the journal file is fine again")
                    }
                }
                logged = problem;
            }
        }
    }
}

/// The file's (device, inode), where the platform has them.
pub(super) fn file_identity(path: &Path) -> Option<(u64, u64)> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt as _;
        std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

/// Copies the open database to `path` (which must not exist) and replaces the connection with
/// one on the copy.
fn restore(c: &mut Connection, path: &Path) -> Result<u64, JournalError> {
    let open_err = |source| JournalError::Open {
        path: path.display().to_string(),
        source,
    };
    // The deleted file's WAL and shared-memory files must not be taken for the new file's.
    for suffix in ["-wal", "-shm"] {
        let mut side = path.as_os_str().to_owned();
        side.push(suffix);
        let _ = std::fs::remove_file(side);
    }
    let target = path
        .to_str()
        .ok_or_else(|| open_err(rusqlite::Error::InvalidPath(path.to_owned())))?;
    // An empty file readable by its owner only, which VACUUM INTO fills.
    super::schema::private_file(path).map_err(|e| {
        open_err(rusqlite::Error::InvalidPath(
            format!("{}: {e}", path.display()).into(),
        ))
    })?;
    c.execute("VACUUM INTO ?1", [target]).map_err(open_err)?;
    *c = open_connection(path)?;
    let events: i64 = c
        .query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))
        .map_err(open_err)?;
    Ok(events as u64)
}
