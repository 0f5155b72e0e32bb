//! The SQLite backend of the journal: one file, one connection on its own thread.
//!
//! Promises: `record` (and `record_all`, for the messages that arrived together) is one
//! transaction, durable when it returns (WAL, `synchronous=FULL`: on disk even if the machine
//! loses power); all calls run off the async runtime's worker threads, in order, on the
//! journal's own thread; calls that queue up while it is busy are committed together (each in
//! its own savepoint: all or nothing), and each returns only once its batch is committed.
//!
//! The other writes (enrichment, states, deliveries, rate limits) commit with
//! `synchronous=NORMAL`: they survive a crash or kill of the listener, and are flushed at the
//! next `record` or checkpoint. A power loss can undo the last of them: the event is then
//! handled again and an alert sent just before may be sent twice (at-least-once, as after a
//! crash during a request). This keeps one fsync per batch of received events instead of six
//! per event (measured: the end-to-end rate was bound by the journal's fsyncs).
//!
//! Layout: this file is the writer thread and its group commit; [`schema`] the tables and their
//! migrations; [`file`] watching and restoring the file; `events`, `deliveries` and `claims`
//! the queries, by table.

mod claims;
mod deliveries;
mod events;
mod export;
mod file;
mod schema;
#[cfg(test)]
mod tests;

use super::{DeliveryState, JournalError, State};
use file::file_identity;
use rusqlite::Connection;
use schema::open_connection;
use std::path::Path;

pub use schema::SCHEMA_VERSION;

/// A state column read back: an unknown value (a newer version's, or a hand edit) is an error
/// naming it, not silently taken for another state.
pub(super) fn state_column<T>(
    value: rusqlite::types::ValueRef<'_>,
    what: &str,
    parse: fn(&str) -> Option<T>,
) -> rusqlite::types::FromSqlResult<T> {
    let text = value.as_str()?;
    parse(text).ok_or_else(|| {
        rusqlite::types::FromSqlError::Other(format!("unknown {what} state {text:?}").into())
    })
}

impl rusqlite::types::FromSql for State {
    fn column_result(value: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        state_column(value, "event", State::parse)
    }
}

impl rusqlite::types::FromSql for DeliveryState {
    fn column_result(value: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        state_column(value, "delivery", DeliveryState::parse)
    }
}

/// The SQLite journal; clones share its one connection, which lives on its own thread.
#[derive(Clone)]
pub struct Sqlite {
    jobs: std::sync::mpsc::Sender<Job>,
    /// Why the last `record`/`record_all` failed, until one succeeds (for `/readyz`).
    record_failure: super::RecordFailure,
    path: std::path::PathBuf,
    /// The open file's identity (device, inode), to notice it deleted or replaced.
    identity: std::sync::Arc<std::sync::Mutex<Option<(u64, u64)>>>,
}

/// Work for the journal's thread: runs in a batch's transaction (in its own savepoint, so it is
/// all or nothing by itself) and returns what to do once the batch is committed.
struct Job {
    /// Must be on disk (fsynced) before its caller hears of it.
    durable: bool,
    /// Runs by itself, outside any transaction (restoring the file); answers on its own.
    alone: bool,
    run: Box<dyn FnOnce(&mut Connection) -> Finish + Send>,
}

/// Told whether the batch committed; answers the caller.
type Finish = Box<dyn FnOnce(Result<(), String>) + Send>;

/// Most calls committed together.
const MAX_JOBS: usize = 512;

impl Sqlite {
    /// Opens (or creates) the journal at `path`, creating its directory.
    pub async fn open(path: &Path) -> Result<Sqlite, JournalError> {
        let path = path.to_owned();
        let path_for_identity = path.clone();
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let (opened, open_result) = tokio::sync::oneshot::channel();
        // One thread owns the connection and runs the calls in order: SQLite serialises
        // writers anyway, and a burst of calls then costs no extra threads or lock contention.
        std::thread::Builder::new()
            .name("journal".into())
            .spawn(move || {
                let mut conn = match open_connection(&path) {
                    Ok(conn) => {
                        let _ = opened.send(Ok(()));
                        conn
                    }
                    Err(e) => {
                        let _ = opened.send(Err(e));
                        return;
                    }
                };
                // What queued up while the last batch ran is committed together (one WAL
                // write, one fsync at most, instead of one per call). Ends when every handle
                // is gone.
                let mut held: Option<Job> = None;
                loop {
                    let first = match held.take() {
                        Some(job) => job,
                        None => match queue.recv() {
                            Ok(job) => job,
                            Err(_) => break,
                        },
                    };
                    if first.alone {
                        let finish = (first.run)(&mut conn);
                        finish(Ok(()));
                        continue;
                    }
                    let mut batch = vec![first];
                    while batch.len() < MAX_JOBS {
                        match queue.try_recv() {
                            Ok(job) if job.alone => {
                                held = Some(job);
                                break;
                            }
                            Ok(job) => batch.push(job),
                            Err(_) => break,
                        }
                    }
                    run_batch(&mut conn, batch);
                }
            })
            .map_err(|e| JournalError::Thread(e.to_string()))?;
        open_result
            .await
            .map_err(|e| JournalError::Thread(e.to_string()))??;
        Ok(Sqlite {
            jobs,
            record_failure: Default::default(),
            identity: std::sync::Arc::new(std::sync::Mutex::new(file_identity(&path_for_identity))),
            path: path_for_identity,
        })
    }

    /// Runs `f` with the connection on the journal's thread; it has been committed when this
    /// returns (and fsynced, if `durable`).
    async fn run<T: Send + 'static>(
        &self,
        durable: bool,
        f: impl FnOnce(&mut Connection) -> Result<T, rusqlite::Error> + Send + 'static,
    ) -> Result<T, JournalError> {
        let (done, result) = tokio::sync::oneshot::channel();
        let job = Job {
            durable,
            alone: false,
            run: Box::new(move |conn| {
                let outcome = in_savepoint(conn, f);
                Box::new(move |committed: Result<(), String>| {
                    let answer = match committed {
                        Ok(()) => outcome,
                        Err(e) => Err(JournalError::Commit(e)),
                    };
                    let _ = done.send(answer);
                })
            }),
        };
        self.jobs
            .send(job)
            .map_err(|_| JournalError::Thread("the journal's thread has stopped".into()))?;
        result
            .await
            .map_err(|_| JournalError::Thread("the journal's thread has stopped".into()))?
    }

    /// [`Journal::run`], committed with `synchronous=NORMAL`.
    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, rusqlite::Error> + Send + 'static,
    ) -> Result<T, JournalError> {
        self.run(false, f).await
    }

    /// Whether the journal can be written now (takes and releases the write lock).
    pub async fn check_writable(&self) -> Result<(), JournalError> {
        // A write of what is already there: it needs the write lock and changes nothing. (The
        // batch it runs in also began with `BEGIN IMMEDIATE`; were that refused, this write
        // is what fails.)
        self.with(|c| {
            let version: i64 = c.query_row("PRAGMA user_version", [], |r| r.get(0))?;
            c.pragma_update(None, "user_version", version)
        })
        .await
    }

    /// Why events could not be recorded, while the last attempt failed.
    pub fn record_failure(&self) -> Option<String> {
        self.record_failure.get()
    }

    fn note_record(&self, error: Option<&JournalError>) {
        self.record_failure.note(error);
    }
}

/// Runs `f` in a savepoint: all of its writes, or none when it fails. A call that panics
/// fails like one that returns an error, so the journal's thread goes on serving the others.
fn in_savepoint<T>(
    c: &mut Connection,
    f: impl FnOnce(&mut Connection) -> Result<T, rusqlite::Error>,
) -> Result<T, JournalError> {
    c.prepare_cached("SAVEPOINT job")?.execute([])?;
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        f(c).map_err(JournalError::from)
    }))
    .unwrap_or(Err(JournalError::Panicked));
    match outcome {
        Ok(value) => {
            c.prepare_cached("RELEASE job")?.execute([])?;
            Ok(value)
        }
        Err(e) => {
            // Undoes this job's writes only; the error is what the caller hears.
            let _ = c.execute_batch("ROLLBACK TO job; RELEASE job");
            Err(e)
        }
    }
}

/// Runs a batch of jobs in one transaction and answers each once it is committed. When the
/// transaction cannot begin, each job runs in its own (its savepoint then commits it).
fn run_batch(c: &mut Connection, batch: Vec<Job>) {
    let durable = batch.iter().any(|j| j.durable);
    let sync = if durable { "FULL" } else { "NORMAL" };
    if let Err(e) = c.pragma_update(None, "synchronous", sync) {
        tracing::warn!(error = %e, "journal: cannot set synchronous");
    }
    let began = c.execute_batch("BEGIN IMMEDIATE").is_ok();
    let finishes: Vec<Finish> = batch.into_iter().map(|job| (job.run)(c)).collect();
    let committed = if began {
        c.execute_batch("COMMIT").map_err(|e| {
            let _ = c.execute_batch("ROLLBACK");
            e.to_string()
        })
    } else {
        Ok(())
    };
    for finish in finishes {
        finish(committed.clone());
    }
}
