//! The journal: every event the listener received, in an embedded SQLite database.
//!
//! Why: the listener acknowledges an MQTT message only once the event is recorded here, so a
//! crash between receipt and notification loses nothing, and duplicate deliveries (QoS 1
//! redeliveries, Qlik resends) are recognised by event id. Pending work is found here again
//! after a restart.
//!
//! Promises: `record` (and `record_all`, for the messages that arrived together) is one
//! transaction, durable when it returns (WAL, `synchronous=FULL`: on disk even if the machine
//! loses power); an event id is accepted once (a refused message — bad signature, unknown
//! tenant — is kept for the record but does not claim the id); all calls run off the async runtime's worker
//! threads, in order, on the journal's own thread; calls that queue up while it is busy are
//! committed together (each in its own savepoint: all or nothing), and each returns only once
//! its batch is committed.
//!
//! The other writes (enrichment, states, deliveries, rate limits) commit with
//! `synchronous=NORMAL`: they survive a crash or kill of the listener, and are flushed at the
//! next `record` or checkpoint. A power loss can undo the last of them: the event is then
//! handled again and an alert sent just before may be sent twice (at-least-once, as after a
//! crash during a request). This keeps one fsync per batch of received events instead of six
//! per event (measured: the end-to-end rate was bound by the journal's fsyncs).

mod lock;

pub use lock::{InstanceLock, LockError};
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;
use time::OffsetDateTime;

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal {path}: {source}")]
    Open {
        path: String,
        source: rusqlite::Error,
    },
    #[error("journal: {0}")]
    Sql(#[from] rusqlite::Error),
    /// The journal's thread could not be started, or has stopped.
    #[error("journal: {0}")]
    Thread(String),
    #[error("journal: commit failed: {0}")]
    Commit(String),
    /// The file was written by a newer version of the listener, whose schema this one does
    /// not know: writing it could lose what the newer version keeps.
    #[error("journal {path} was written by a newer qlik-listener (journal schema {found}; this version knows up to {known}): run the newer version, or give this one another Butler.qlikCloudListener.journal.path")]
    Newer {
        path: String,
        found: i64,
        known: i64,
    },
    /// A bug: a journal call panicked (its writes were undone).
    #[error("journal: the call failed unexpectedly (a bug; its writes were undone)")]
    Panicked,
}

/// What the listener does with an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// A reload failure of a configured tenant, not yet fully handled.
    Pending,
    /// Handled (enriched; alerts are the notification stage's).
    Done,
    /// Recorded only: not a failure, nothing to do.
    Recorded,
    /// From a tenant that is not configured.
    Skipped,
    /// Its signature did not verify (`requireSignature`).
    Rejected,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Done => "done",
            State::Recorded => "recorded",
            State::Skipped => "skipped",
            State::Rejected => "rejected",
        }
    }

    fn parse(s: &str) -> Option<State> {
        Some(match s {
            "pending" => State::Pending,
            "done" => State::Done,
            "recorded" => State::Recorded,
            "skipped" => State::Skipped,
            "rejected" => State::Rejected,
            _ => return None,
        })
    }
}

/// A state column read back: an unknown value (a newer version's, or a hand edit) is an error
/// naming it, not silently taken for another state.
fn state_column<T>(
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

/// An event as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub id: String,
    pub event_type: String,
    pub tenant_id: String,
    pub app_id: Option<String>,
    pub reload_id: Option<String>,
    pub reload_status: Option<String>,
    pub topic: String,
    /// Unix time in milliseconds.
    pub received_at: i64,
    pub body: Vec<u8>,
    pub state: State,
    pub note: Option<String>,
    /// The template data, once enriched (JSON).
    pub enrichment: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    New,
    Duplicate,
}

/// A handle on the journal; clones share its one connection, which lives on its own thread.
#[derive(Clone)]
pub struct Journal {
    jobs: std::sync::mpsc::Sender<Job>,
    /// Why the last `record`/`record_all` failed, until one succeeds (for `/readyz`).
    record_failure: std::sync::Arc<std::sync::Mutex<Option<String>>>,
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

/// Rows of events that were refused (not acted on). They do not claim their event id: a forged
/// or misrouted copy that arrives first must not make the genuine event a duplicate.
const REFUSED: &str = "('rejected', 'skipped')";

/// The journal's schema version (`PRAGMA user_version`). Raised with each change to the
/// tables; a file with a higher one is refused at start ([`JournalError::Newer`]).
/// 0: journals from before versions were kept (same tables as 1).
pub const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    id            TEXT NOT NULL,
    event_type    TEXT NOT NULL,
    tenant_id     TEXT NOT NULL,
    app_id        TEXT,
    reload_id     TEXT,
    reload_status TEXT,
    topic         TEXT NOT NULL,
    received_at   INTEGER NOT NULL,
    body          BLOB NOT NULL,
    state         TEXT NOT NULL,
    note          TEXT,
    enrichment    TEXT
);
-- An event id is accepted once; refused rows are kept once per (id, tenant, state) and
-- never stand in the way of the accepted one.
CREATE UNIQUE INDEX IF NOT EXISTS events_accepted ON events(id) WHERE state NOT IN ('rejected', 'skipped');
CREATE UNIQUE INDEX IF NOT EXISTS events_refused ON events(id, tenant_id, state) WHERE state IN ('rejected', 'skipped');
CREATE INDEX IF NOT EXISTS events_state ON events(state);
CREATE INDEX IF NOT EXISTS events_received ON events(received_at);
CREATE TABLE IF NOT EXISTS deliveries (
    event_id   TEXT NOT NULL,
    channel    TEXT NOT NULL,
    state      TEXT NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (event_id, channel)
);
CREATE INDEX IF NOT EXISTS events_reload ON events(tenant_id, reload_id);
-- One alert per reload: the event whose alert speaks for the reload (tenant + reload id).
CREATE TABLE IF NOT EXISTS reload_alerts (
    tenant_id  TEXT NOT NULL,
    reload_id  TEXT NOT NULL,
    event_id   TEXT NOT NULL,
    claimed_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, reload_id)
);
-- Reconciliation's watermark in versions before the sliding window (no longer read or written;
-- kept so that such journals still open the same way).
CREATE TABLE IF NOT EXISTS reconcile_marks (
    tenant_id TEXT PRIMARY KEY,
    until_ms  INTEGER NOT NULL
);
-- The webhook watchdog: per tenant, the webhook's last reported state.
CREATE TABLE IF NOT EXISTS watch_states (
    tenant_id TEXT PRIMARY KEY,
    state     TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS rate_limits (
    key          TEXT PRIMARY KEY,
    last_sent_at INTEGER NOT NULL
);
";

/// Where one alert channel stands for one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
    /// Not sent yet, or being retried.
    Pending,
    /// An attempt was under way; after a crash it is tried again (at-least-once).
    Sending,
    Sent,
    /// Given up after the configured time, or refused by the receiver.
    Failed,
    /// Deliberately not sent: rate limit, or the app lacks the alert tag.
    Suppressed,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Sending => "sending",
            DeliveryState::Sent => "sent",
            DeliveryState::Failed => "failed",
            DeliveryState::Suppressed => "suppressed",
        }
    }

    fn parse(s: &str) -> Option<DeliveryState> {
        Some(match s {
            "pending" => DeliveryState::Pending,
            "sending" => DeliveryState::Sending,
            "sent" => DeliveryState::Sent,
            "failed" => DeliveryState::Failed,
            "suppressed" => DeliveryState::Suppressed,
            _ => return None,
        })
    }

    /// Whether nothing more will be done.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            DeliveryState::Sent | DeliveryState::Failed | DeliveryState::Suppressed
        )
    }
}

/// One channel's delivery of one event, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub event_id: String,
    pub channel: String,
    pub state: DeliveryState,
    pub attempts: u32,
    pub last_error: Option<String>,
}

impl Journal {
    /// Opens (or creates) the journal at `path`, creating its directory.
    pub async fn open(path: &Path) -> Result<Journal, JournalError> {
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
        Ok(Journal {
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

    /// Records an event unless its id is already known; durable (fsynced) when it returns.
    ///
    /// "Known" means: an accepted event (any state but rejected or skipped) with this id, or,
    /// for a refused one, a refused row with the same id, tenant and state. A refused row never
    /// makes a later accepted event with its id a duplicate.
    pub async fn record(&self, entry: Entry) -> Result<Recorded, JournalError> {
        let result = self.run(true, move |c| insert(c, &entry)).await;
        self.note_record(result.as_ref().err());
        result
    }

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

    /// Why events could not be recorded, while the last attempt failed.
    pub fn record_failure(&self) -> Option<String> {
        self.record_failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn note_record(&self, error: Option<&JournalError>) {
        *self
            .record_failure
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = error.map(ToString::to_string);
    }

    /// Records several events in one transaction (one fsync for all: group commit), each
    /// unless its id is already known; the results are in the order of `entries`. All or none
    /// are recorded.
    pub async fn record_all(
        &self,
        entries: std::sync::Arc<[Entry]>,
    ) -> Result<Vec<Recorded>, JournalError> {
        let result = self.run(true, move |c| insert_all(c, &entries)).await;
        self.note_record(result.as_ref().err());
        result
    }

    pub async fn get(&self, id: &str) -> Result<Option<Entry>, JournalError> {
        let id = id.to_owned();
        self.with(move |c| {
            // The accepted event if there is one, else the latest refused message.
            c.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM events WHERE id = ?1
                 ORDER BY state IN {REFUSED}, received_at DESC LIMIT 1"
            ))?
            .query_row([id], row)
            .optional()
        })
        .await
    }

    /// Events with work left, oldest first.
    pub async fn pending(&self) -> Result<Vec<Entry>, JournalError> {
        self.with(|c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {COLUMNS} FROM events WHERE state = 'pending' ORDER BY received_at"
            ))?;
            let rows = stmt.query_map([], row)?;
            rows.collect()
        })
        .await
    }

    /// How many events have work left (the backlog, for `/metrics`).
    pub async fn pending_count(&self) -> Result<u64, JournalError> {
        self.with(|c| {
            c.query_row(
                "SELECT COUNT(*) FROM events WHERE state = 'pending'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n.max(0) as u64)
        })
        .await
    }

    /// Events received since `since_ms` (unix ms), newest first, at most `limit`.
    pub async fn recent(&self, since_ms: i64, limit: u32) -> Result<Vec<Entry>, JournalError> {
        self.with(move |c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {COLUMNS} FROM events WHERE received_at >= ?1 ORDER BY received_at DESC LIMIT ?2"
            ))?;
            let rows = stmt.query_map(params![since_ms, limit], row)?;
            rows.collect()
        })
        .await
    }

    /// Stores the enrichment (template data) of an event.
    pub async fn set_enrichment(&self, id: &str, enrichment: String) -> Result<(), JournalError> {
        let id = id.to_owned();
        self.with(move |c| {
            c.prepare_cached(&format!(
                "UPDATE events SET enrichment = ?2 WHERE id = ?1 AND state NOT IN {REFUSED}"
            ))?
            .execute(params![id, enrichment])?;
            Ok(())
        })
        .await
    }

    pub async fn set_state(
        &self,
        id: &str,
        state: State,
        note: Option<String>,
    ) -> Result<(), JournalError> {
        let id = id.to_owned();
        self.with(move |c| {
            c.prepare_cached(&format!(
                "UPDATE events SET state = ?2, note = COALESCE(?3, note)
                 WHERE id = ?1 AND state NOT IN {REFUSED}"
            ))?
            .execute(params![id, state.as_str(), note])?;
            Ok(())
        })
        .await
    }

    /// The delivery of `event_id` on `channel`, if any was recorded.
    pub async fn delivery(
        &self,
        event_id: &str,
        channel: &str,
    ) -> Result<Option<Delivery>, JournalError> {
        let (event_id, channel) = (event_id.to_owned(), channel.to_owned());
        self.with(move |c| {
            c.prepare_cached(
                "SELECT event_id, channel, state, attempts, last_error FROM deliveries WHERE event_id = ?1 AND channel = ?2",
            )?
            .query_row(params![event_id, channel], delivery_row)
            .optional()
        })
        .await
    }

    /// Every delivery of `event_id`.
    pub async fn deliveries(&self, event_id: &str) -> Result<Vec<Delivery>, JournalError> {
        let event_id = event_id.to_owned();
        self.with(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT event_id, channel, state, attempts, last_error FROM deliveries WHERE event_id = ?1 ORDER BY channel",
            )?;
            let rows = stmt.query_map([event_id], delivery_row)?;
            rows.collect()
        })
        .await
    }

    pub async fn set_delivery(&self, d: Delivery) -> Result<(), JournalError> {
        self.with(move |c| upsert_delivery(c, &d)).await
    }

    /// Takes the rate-limit slot `key` if it was last taken more than `window_ms` ago (or
    /// never), and then records `delivery`, the one that takes it, in the same transaction: a
    /// restart finds the delivery that owns the slot rather than a slot taken for nothing.
    /// `false` means: suppress (nothing recorded). Atomic, and kept across restarts.
    pub async fn claim_rate_slot(
        &self,
        key: &str,
        window_ms: i64,
        delivery: Delivery,
    ) -> Result<bool, JournalError> {
        let key = key.to_owned();
        self.with(move |c| {
            let now = now_ms();
            let last: Option<i64> = c
                .query_row(
                    "SELECT last_sent_at FROM rate_limits WHERE key = ?1",
                    [&key],
                    |r| r.get(0),
                )
                .optional()?;
            let free = last.is_none_or(|t| now - t >= window_ms);
            if free {
                c.execute(
                    "INSERT INTO rate_limits (key, last_sent_at) VALUES (?1, ?2)
                     ON CONFLICT (key) DO UPDATE SET last_sent_at = excluded.last_sent_at",
                    params![key, now],
                )?;
                upsert_delivery(c, &delivery)?;
            }
            Ok(free)
        })
        .await
    }

    /// Makes `event_id` the event that alerts for the reload (`tenant_id`, `reload_id`), unless
    /// another event already is; returns the one that is. Atomic and kept across restarts, so a
    /// reload gets at most one alert whatever events arrive, in whatever order.
    pub async fn claim_reload(
        &self,
        tenant_id: &str,
        reload_id: &str,
        event_id: &str,
    ) -> Result<String, JournalError> {
        let (tenant_id, reload_id, event_id) = (
            tenant_id.to_owned(),
            reload_id.to_owned(),
            event_id.to_owned(),
        );
        self.with(move |c| {
            c.prepare_cached(
                "INSERT INTO reload_alerts (tenant_id, reload_id, event_id, claimed_at)
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT (tenant_id, reload_id) DO NOTHING",
            )?
            .execute(params![tenant_id, reload_id, event_id, now_ms()])?;
            c.prepare_cached(
                "SELECT event_id FROM reload_alerts WHERE tenant_id = ?1 AND reload_id = ?2",
            )?
            .query_row(params![tenant_id, reload_id], |r| r.get(0))
        })
        .await
    }

    /// The event that alerts for the reload, if one does.
    pub async fn reload_claim(
        &self,
        tenant_id: &str,
        reload_id: &str,
    ) -> Result<Option<String>, JournalError> {
        let (tenant_id, reload_id) = (tenant_id.to_owned(), reload_id.to_owned());
        self.with(move |c| {
            c.prepare_cached(
                "SELECT event_id FROM reload_alerts WHERE tenant_id = ?1 AND reload_id = ?2",
            )?
            .query_row(params![tenant_id, reload_id], |r| r.get(0))
            .optional()
        })
        .await
    }

    /// The accepted events of one reload, oldest first.
    pub async fn reload_events(
        &self,
        tenant_id: &str,
        reload_id: &str,
    ) -> Result<Vec<Entry>, JournalError> {
        let (tenant_id, reload_id) = (tenant_id.to_owned(), reload_id.to_owned());
        self.with(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM events WHERE tenant_id = ?1 AND reload_id = ?2
                 AND state NOT IN {REFUSED} ORDER BY received_at"
            ))?;
            let rows = stmt.query_map(params![tenant_id, reload_id], row)?;
            rows.collect()
        })
        .await
    }

    /// The tenant's webhook state the watchdog last reported.
    pub async fn watch_state(&self, tenant_id: &str) -> Result<Option<String>, JournalError> {
        let tenant_id = tenant_id.to_owned();
        self.with(move |c| {
            c.prepare_cached("SELECT state FROM watch_states WHERE tenant_id = ?1")?
                .query_row([tenant_id], |r| r.get(0))
                .optional()
        })
        .await
    }

    pub async fn set_watch_state(&self, tenant_id: &str, state: &str) -> Result<(), JournalError> {
        let (tenant_id, state) = (tenant_id.to_owned(), state.to_owned());
        self.with(move |c| {
            c.prepare_cached(
                "INSERT INTO watch_states (tenant_id, state) VALUES (?1, ?2)
                 ON CONFLICT (tenant_id) DO UPDATE SET state = excluded.state",
            )?
            .execute(params![tenant_id, state])?;
            Ok(())
        })
        .await
    }

    /// Whether the tenant has sent an (accepted) event of `event_type` on another topic than
    /// `except_topic` (the one reconciliation records its events under).
    pub async fn has_event_type(
        &self,
        tenant_id: &str,
        event_type: &str,
        except_topic: &str,
    ) -> Result<bool, JournalError> {
        let (tenant_id, event_type, except_topic) = (
            tenant_id.to_owned(),
            event_type.to_owned(),
            except_topic.to_owned(),
        );
        self.with(move |c| {
            c.prepare_cached(&format!(
                "SELECT EXISTS (SELECT 1 FROM events WHERE tenant_id = ?1 AND event_type = ?2
                 AND topic != ?3 AND state NOT IN {REFUSED})"
            ))?
            .query_row(params![tenant_id, event_type, except_topic], |r| r.get(0))
        })
        .await
    }

    /// Deletes events received before `before_ms` that have no work left; returns how many.
    pub async fn prune(&self, before_ms: i64) -> Result<usize, JournalError> {
        self.with(move |c| {
            let deleted = c.execute(
                "DELETE FROM events WHERE received_at < ?1 AND state != 'pending'",
                [before_ms],
            )?;
            c.execute(
                &format!(
                    "DELETE FROM deliveries WHERE event_id NOT IN
                       (SELECT id FROM events WHERE state NOT IN {REFUSED})"
                ),
                [],
            )?;
            c.execute(
                "DELETE FROM reload_alerts WHERE claimed_at < ?1",
                [before_ms],
            )?;
            Ok(deleted)
        })
        .await
    }
}

/// The file's (device, inode), where the platform has them.
fn file_identity(path: &Path) -> Option<(u64, u64)> {
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
    c.execute("VACUUM INTO ?1", [target]).map_err(open_err)?;
    *c = open_connection(path)?;
    let events: i64 = c
        .query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))
        .map_err(open_err)?;
    Ok(events as u64)
}

fn open_connection(path: &Path) -> Result<Connection, JournalError> {
    let open_err = |source| JournalError::Open {
        path: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| {
            open_err(rusqlite::Error::InvalidPath(
                format!("{}: {e}", dir.display()).into(),
            ))
        })?;
    }
    let conn = Connection::open(path).map_err(open_err)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(open_err)?;
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(open_err)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(open_err)?;
    let found: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(open_err)?;
    if found > SCHEMA_VERSION {
        return Err(JournalError::Newer {
            path: path.display().to_string(),
            found,
            known: SCHEMA_VERSION,
        });
    }
    migrate(&conn).map_err(open_err)?;
    conn.execute_batch(SCHEMA).map_err(open_err)?;
    if found < SCHEMA_VERSION {
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(open_err)?;
    }
    Ok(conn)
}

/// Journals written before refused rows stopped claiming event ids keyed `events` by id alone
/// (`id TEXT PRIMARY KEY`): their rows are moved to the current table, unchanged.
fn migrate(conn: &Connection) -> Result<(), rusqlite::Error> {
    let sql: Option<String> = conn
        .query_row(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'events'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    if !sql.is_some_and(|sql| sql.contains("PRIMARY KEY")) {
        return Ok(());
    }
    tracing::info!("journal: upgrading the events table (refused events no longer claim their id)");
    conn.execute_batch(&format!(
        "BEGIN IMMEDIATE;
         ALTER TABLE events RENAME TO events_before_upgrade;
         DROP INDEX IF EXISTS events_state;
         DROP INDEX IF EXISTS events_received;
         {SCHEMA}
         INSERT INTO events SELECT * FROM events_before_upgrade;
         DROP TABLE events_before_upgrade;
         COMMIT;"
    ))
}

fn upsert_delivery(c: &mut Connection, d: &Delivery) -> Result<(), rusqlite::Error> {
    c.prepare_cached(
        "INSERT INTO deliveries (event_id, channel, state, attempts, last_error, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (event_id, channel) DO UPDATE SET
           state = excluded.state, attempts = excluded.attempts,
           last_error = excluded.last_error, updated_at = excluded.updated_at",
    )?
    .execute(params![
        d.event_id,
        d.channel,
        d.state.as_str(),
        d.attempts,
        d.last_error,
        now_ms()
    ])?;
    Ok(())
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

fn insert_all(c: &mut Connection, entries: &[Entry]) -> Result<Vec<Recorded>, rusqlite::Error> {
    entries.iter().map(|entry| insert(c, entry)).collect()
}

/// Inserts an event unless its id is already known (the statement is prepared once).
fn insert(c: &mut Connection, entry: &Entry) -> Result<Recorded, rusqlite::Error> {
    let inserted = c
        .prepare_cached(
            // Only a uniqueness conflict (the id is known) is a duplicate; any other
            // constraint failure (a column this version does not fill) is an error, so the
            // message is held rather than acknowledged as "already recorded".
            "INSERT INTO events
             (id, event_type, tenant_id, app_id, reload_id, reload_status, topic, received_at, body, state, note)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
             ON CONFLICT DO NOTHING",
        )?
        .execute(params![
            entry.id,
            entry.event_type,
            entry.tenant_id,
            entry.app_id,
            entry.reload_id,
            entry.reload_status,
            entry.topic,
            entry.received_at,
            entry.body,
            entry.state.as_str(),
            entry.note,
        ])?;
    Ok(if inserted == 1 {
        Recorded::New
    } else {
        Recorded::Duplicate
    })
}

const COLUMNS: &str = "id, event_type, tenant_id, app_id, reload_id, reload_status, topic, received_at, body, state, note, enrichment";

fn row(r: &rusqlite::Row<'_>) -> Result<Entry, rusqlite::Error> {
    Ok(Entry {
        id: r.get(0)?,
        event_type: r.get(1)?,
        tenant_id: r.get(2)?,
        app_id: r.get(3)?,
        reload_id: r.get(4)?,
        reload_status: r.get(5)?,
        topic: r.get(6)?,
        received_at: r.get(7)?,
        body: r.get(8)?,
        state: r.get(9)?,
        note: r.get(10)?,
        enrichment: r.get(11)?,
    })
}

fn delivery_row(r: &rusqlite::Row<'_>) -> Result<Delivery, rusqlite::Error> {
    Ok(Delivery {
        event_id: r.get(0)?,
        channel: r.get(1)?,
        state: r.get(2)?,
        attempts: r.get(3)?,
        last_error: r.get(4)?,
    })
}

/// Now, in unix milliseconds.
pub fn now_ms() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, state: State, received_at: i64) -> Entry {
        Entry {
            id: id.into(),
            event_type: "com.qlik.v1.app.reload.finished".into(),
            tenant_id: "t".into(),
            app_id: Some("app".into()),
            reload_id: Some("r".into()),
            reload_status: Some("error".into()),
            topic: "qscloud/app/reload/t".into(),
            received_at,
            body: b"{}".to_vec(),
            state,
            note: None,
            enrichment: None,
        }
    }

    /// A state the code does not know (a newer version's, a hand edit) is an error, not taken
    /// for another state (before: an unknown event state read as `recorded`, an unknown
    /// delivery state as `pending`, so a delivery could be sent again).
    #[tokio::test]
    async fn an_unknown_state_is_an_error_not_another_state() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.sqlite");
        let j = Journal::open(&path).await.unwrap();
        j.record(entry("e1", State::Pending, 1)).await.unwrap();
        drop(j);
        let raw = rusqlite::Connection::open(&path).unwrap();
        raw.execute("UPDATE events SET state = 'archived' WHERE id = 'e1'", [])
            .unwrap();
        drop(raw);
        let j = Journal::open(&path).await.unwrap();
        let e = j.get("e1").await.unwrap_err().to_string();
        assert!(e.contains("unknown event state \"archived\""), "{e}");
    }

    /// Only a known id is a duplicate (before: `INSERT OR IGNORE` took any constraint failure,
    /// e.g. a column this version does not fill, for one, so every event was acknowledged as
    /// "already recorded" and never alerted).
    #[tokio::test]
    async fn only_a_known_id_is_a_duplicate_other_constraint_failures_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.sqlite");
        let j = Journal::open(&path).await.unwrap();
        assert_eq!(
            j.record(entry("e1", State::Pending, 1)).await.unwrap(),
            Recorded::New
        );
        assert_eq!(
            j.record(entry("e1", State::Pending, 2)).await.unwrap(),
            Recorded::Duplicate
        );
        drop(j);
        let raw = rusqlite::Connection::open(&path).unwrap();
        // A column a later version might add, which this one does not fill.
        raw.execute_batch(
            "CREATE TABLE events2 AS SELECT *, 'eu' AS region FROM events;
             DROP TABLE events;
             CREATE TABLE events (id TEXT NOT NULL, event_type TEXT NOT NULL, tenant_id TEXT NOT NULL,
               app_id TEXT, reload_id TEXT, reload_status TEXT, topic TEXT NOT NULL,
               received_at INTEGER NOT NULL, body BLOB NOT NULL, state TEXT NOT NULL, note TEXT,
               enrichment TEXT, region TEXT NOT NULL);
             INSERT INTO events SELECT * FROM events2; DROP TABLE events2;",
        )
        .unwrap();
        drop(raw);
        let j = Journal::open(&path).await.unwrap();
        let e = j
            .record(entry("e2", State::Pending, 3))
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("events.region"), "{e}");
        assert!(j.record_failure().is_some(), "said to /readyz");
    }

    #[tokio::test]
    async fn a_journal_from_a_newer_version_is_refused_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.sqlite");
        drop(Journal::open(&path).await.unwrap());
        let raw = rusqlite::Connection::open(&path).unwrap();
        let version: i64 = raw
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION, "a new journal says its version");
        raw.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        drop(raw);
        let e = Journal::open(&path).await.err().unwrap().to_string();
        assert!(
            e.contains("was written by a newer qlik-listener (journal schema 2; this version knows up to 1)"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn records_once_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/journal.sqlite");
        let j = Journal::open(&path).await.unwrap();
        assert_eq!(
            j.record(entry("e1", State::Pending, 1)).await.unwrap(),
            Recorded::New
        );
        assert_eq!(
            j.record(entry("e1", State::Pending, 2)).await.unwrap(),
            Recorded::Duplicate
        );
        assert_eq!(
            j.record(entry("e2", State::Recorded, 3)).await.unwrap(),
            Recorded::New
        );
        drop(j);
        let j = Journal::open(&path).await.unwrap();
        let pending = j.pending().await.unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0], entry("e1", State::Pending, 1));
        j.set_enrichment("e1", "{\"appName\":\"A\"}".into())
            .await
            .unwrap();
        j.set_state("e1", State::Done, None).await.unwrap();
        assert!(j.pending().await.unwrap().is_empty());
        let e1 = j.get("e1").await.unwrap().unwrap();
        assert_eq!(e1.state, State::Done);
        assert_eq!(e1.enrichment.as_deref(), Some("{\"appName\":\"A\"}"));
        assert_eq!(j.recent(0, 10).await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn calls_made_together_commit_together_and_a_failing_one_undoes_only_itself() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.sqlite");
        let j = Journal::open(&path).await.unwrap();
        let mut calls = Vec::new();
        for i in 0..300 {
            let j = j.clone();
            calls.push(tokio::spawn(async move {
                if i % 50 == 0 {
                    // Writes one row, then fails: that row must not stay.
                    let failed = j
                        .with(move |c| {
                            c.execute(
                                "INSERT INTO rate_limits (key, last_sent_at) VALUES (?1, 0)",
                                [format!("undone-{i}")],
                            )?;
                            c.execute("INSERT INTO no_such_table VALUES (1)", [])
                        })
                        .await;
                    assert!(failed.is_err());
                } else {
                    let e = entry(&format!("e{i}"), State::Pending, i);
                    assert_eq!(j.record(e).await.unwrap(), Recorded::New);
                }
            }));
        }
        for call in calls {
            call.await.unwrap();
        }
        drop(j);
        let j = Journal::open(&path).await.unwrap();
        assert_eq!(j.pending().await.unwrap().len(), 294);
        let undone: i64 = j
            .with(|c| c.query_row("SELECT COUNT(*) FROM rate_limits", [], |r| r.get(0)))
            .await
            .unwrap();
        assert_eq!(undone, 0);
    }

    #[tokio::test]
    async fn not_writable_while_another_writer_holds_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.sqlite");
        let j = Journal::open(&path).await.unwrap();
        j.check_writable().await.unwrap();
        let other = Connection::open(&path).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        // Waits out the busy timeout, then says so.
        let e = j.check_writable().await.unwrap_err();
        assert!(e.to_string().contains("locked"), "{e}");
        other.execute_batch("ROLLBACK").unwrap();
        j.check_writable().await.unwrap();
    }

    #[tokio::test]
    async fn prune_keeps_pending_work() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(&dir.path().join("j.sqlite")).await.unwrap();
        j.record(entry("old-done", State::Done, 10)).await.unwrap();
        j.record(entry("old-pending", State::Pending, 10))
            .await
            .unwrap();
        j.record(entry("new", State::Done, 1000)).await.unwrap();
        assert_eq!(j.prune(500).await.unwrap(), 1);
        assert!(j.get("old-done").await.unwrap().is_none());
        assert!(j.get("old-pending").await.unwrap().is_some());
        assert!(j.get("new").await.unwrap().is_some());
    }

    #[tokio::test]
    async fn refused_messages_do_not_claim_the_event_id() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(&dir.path().join("j.sqlite")).await.unwrap();
        let other_tenant = |mut e: Entry| {
            e.tenant_id = "unconfigured".into();
            e
        };
        // A forged copy and an unknown tenant's event first: recorded, once each.
        for first in [
            entry("e1", State::Rejected, 1),
            other_tenant(entry("e1", State::Skipped, 2)),
        ] {
            assert_eq!(j.record(first.clone()).await.unwrap(), Recorded::New);
            assert_eq!(j.record(first).await.unwrap(), Recorded::Duplicate);
        }
        assert_eq!(j.get("e1").await.unwrap().unwrap().state, State::Skipped);
        // The genuine event is new, and from then on the one `get` finds and updates.
        assert_eq!(
            j.record(entry("e1", State::Pending, 3)).await.unwrap(),
            Recorded::New
        );
        assert_eq!(
            j.record(entry("e1", State::Pending, 4)).await.unwrap(),
            Recorded::Duplicate
        );
        assert_eq!(
            j.record(entry("e1", State::Recorded, 5)).await.unwrap(),
            Recorded::Duplicate,
            "an accepted id is accepted once, whatever the state"
        );
        j.set_state("e1", State::Done, None).await.unwrap();
        assert_eq!(j.get("e1").await.unwrap().unwrap().state, State::Done);
        assert_eq!(j.recent(0, 10).await.unwrap().len(), 3);
        // Pruning the refused rows keeps the accepted event's deliveries.
        let d = Delivery {
            event_id: "e1".into(),
            channel: "teams".into(),
            state: DeliveryState::Sent,
            attempts: 1,
            last_error: None,
        };
        j.set_delivery(d.clone()).await.unwrap();
        assert_eq!(j.prune(3).await.unwrap(), 2);
        assert_eq!(j.deliveries("e1").await.unwrap(), vec![d]);
        assert_eq!(j.prune(10).await.unwrap(), 1);
        assert!(j.deliveries("e1").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_journal_keyed_by_id_alone_is_upgraded_with_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.sqlite");
        {
            // The table as earlier versions created it, with one rejected row.
            let c = Connection::open(&path).unwrap();
            c.execute_batch(
                "CREATE TABLE events (id TEXT PRIMARY KEY, event_type TEXT NOT NULL,
                   tenant_id TEXT NOT NULL, app_id TEXT, reload_id TEXT, reload_status TEXT,
                   topic TEXT NOT NULL, received_at INTEGER NOT NULL, body BLOB NOT NULL,
                   state TEXT NOT NULL, note TEXT, enrichment TEXT);
                 CREATE INDEX events_state ON events(state);
                 CREATE INDEX events_received ON events(received_at);
                 INSERT INTO events VALUES ('e1', 'com.qlik.v1.app.reload.finished', 't', 'app',
                   'r', 'error', 'qscloud/app/reload/t', 1, X'7B7D', 'rejected', 'signature', NULL);",
            )
            .unwrap();
        }
        let j = Journal::open(&path).await.unwrap();
        let mut rejected = entry("e1", State::Rejected, 1);
        rejected.note = Some("signature".into());
        assert_eq!(j.get("e1").await.unwrap(), Some(rejected));
        assert_eq!(
            j.record(entry("e1", State::Pending, 2)).await.unwrap(),
            Recorded::New
        );
        drop(j);
        // Opening again changes nothing.
        let j = Journal::open(&path).await.unwrap();
        assert_eq!(j.recent(0, 10).await.unwrap().len(), 2);
        assert_eq!(j.pending().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn deliveries_and_rate_slots() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(&dir.path().join("j.sqlite")).await.unwrap();
        assert_eq!(j.delivery("e1", "teams").await.unwrap(), None);
        let d = Delivery {
            event_id: "e1".into(),
            channel: "teams".into(),
            state: DeliveryState::Pending,
            attempts: 1,
            last_error: Some("HTTP 500".into()),
        };
        j.set_delivery(d.clone()).await.unwrap();
        j.set_delivery(Delivery {
            state: DeliveryState::Sent,
            attempts: 2,
            last_error: None,
            ..d.clone()
        })
        .await
        .unwrap();
        let got = j.delivery("e1", "teams").await.unwrap().unwrap();
        assert_eq!(
            (got.state, got.attempts, got.last_error),
            (DeliveryState::Sent, 2, None)
        );
        assert_eq!(j.deliveries("e1").await.unwrap().len(), 1);

        let pending = |event_id: &str| Delivery {
            event_id: event_id.into(),
            channel: "teams".into(),
            state: DeliveryState::Pending,
            attempts: 0,
            last_error: None,
        };
        for e in ["e2", "e3", "e4", "e5"] {
            j.record(entry(e, State::Pending, 5)).await.unwrap();
        }
        let claim = |key: &'static str, window, event_id| {
            let j = j.clone();
            let d = pending(event_id);
            async move { j.claim_rate_slot(key, window, d).await.unwrap() }
        };
        assert!(claim("teams:app1", 60_000, "e2").await);
        assert!(
            !claim("teams:app1", 60_000, "e3").await,
            "within the window"
        );
        assert!(claim("teams:app2", 60_000, "e4").await, "per app");
        assert!(claim("teams:app1", 0, "e5").await, "window passed");
        // The delivery that took a slot was recorded with it; a suppressed one was not.
        for (event_id, recorded) in [("e2", true), ("e3", false), ("e4", true), ("e5", true)] {
            assert_eq!(
                j.delivery(event_id, "teams").await.unwrap(),
                recorded.then(|| pending(event_id)),
                "{event_id}"
            );
        }
    }

    #[tokio::test]
    async fn a_call_that_panics_fails_alone() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(&dir.path().join("journal.sqlite"))
            .await
            .unwrap();
        let panicking = j.run(false, |c| -> Result<(), rusqlite::Error> {
            c.execute("UPDATE events SET note = 'half done'", [])?;
            panic!("a bug in a journal call")
        });
        let e = panicking.await.unwrap_err();
        assert!(matches!(e, JournalError::Panicked), "{e}");
        // The thread goes on: the next calls are served.
        assert_eq!(
            j.record(entry("e1", State::Pending, 1)).await.unwrap(),
            Recorded::New
        );
        assert_eq!(
            j.pending().await.unwrap(),
            vec![entry("e1", State::Pending, 1)]
        );
    }

    #[tokio::test]
    async fn unwritable_path_is_a_clear_error() {
        let e = Journal::open(Path::new("/proc/no/such/dir/journal.sqlite"))
            .await
            .err()
            .unwrap();
        assert!(
            e.to_string()
                .starts_with("journal /proc/no/such/dir/journal.sqlite"),
            "{e}"
        );
    }
}
