//! The journal: every event the listener received, its alert claims and deliveries.
//!
//! Why: the listener acknowledges an MQTT message only once the event is recorded here, so a
//! crash between receipt and notification loses nothing, and duplicate deliveries (QoS 1
//! redeliveries, Qlik resends) are recognised by event id. Pending work is found here again
//! after a restart.
//!
//! This module is the seam between the pipeline and where the journal is kept: [`Journal`] is a
//! handle whose operations say what they promise, and each dispatches to the backend it was
//! opened on. Today that is SQLite ([`sqlite`]: one file, one writer thread). The promises are
//! written so that a backend shared by several listeners fits: uniqueness and claims are
//! decided by the store (a unique key, an insert that does nothing on conflict), never by a
//! read followed by a write in the listener, so two writers cannot both win.
//!
//! What the operations promise:
//! - `record` / `record_all`: atomic (all of a batch or none) and durable when they return;
//!   idempotent by event id (an accepted id is recorded once; a refused message — bad
//!   signature, unknown tenant — is kept for the record but does not claim the id). Only a
//!   known id is a duplicate: any other failure is an error, so the message is held.
//! - `claim_reload`: atomic; the first event to claim a reload (tenant + reload id) holds it
//!   for good, and every caller is told who holds it.
//! - `claim_rate_slot`: atomic; the slot and the delivery that takes it are recorded together.
//! - `set_delivery`, `set_state`, `set_enrichment`, `set_watch_state`: last write wins (one
//!   listener acts on an event at a time).
//! - `prune`: deletes only events with no work left, and what hangs off them.
//!
//! With SQLite: one listener per journal ([`InstanceLock`]). With PostgreSQL ([`postgres`]):
//! two or three listeners share it; each pending event is leased to one of them
//! ([`Journal::take`]), singleton work runs on the holder of the role ([`Journal::role`]). The
//! command-line tools read and write either beside the running listeners.

mod lock;
pub mod postgres;
mod sqlite;

pub use lock::{InstanceLock, LockError};
pub use sqlite::SCHEMA_VERSION;
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
    /// The shared journal (PostgreSQL) refused or could not be reached.
    #[error("journal (PostgreSQL): {0}")]
    Postgres(String),
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

    pub(crate) fn parse(s: &str) -> Option<State> {
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

    pub(crate) fn parse(s: &str) -> Option<DeliveryState> {
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

/// Everything a journal holds, to move it from SQLite to a shared journal (`journal migrate`).
pub struct Contents {
    pub events: Vec<Entry>,
    /// With each delivery's last update (unix ms).
    pub deliveries: Vec<(Delivery, i64)>,
    /// (tenant id, reload id, event id, claimed at).
    pub reload_alerts: Vec<(String, String, String, i64)>,
    /// (tenant id, state).
    pub watch_states: Vec<(String, String)>,
    /// (key, last taken at).
    pub rate_limits: Vec<(String, i64)>,
}

/// A handle on the journal; clones share it.
#[derive(Clone)]
pub struct Journal {
    backend: Backend,
}

/// Where the journal is kept.
#[derive(Clone)]
enum Backend {
    Sqlite(sqlite::Sqlite),
    Postgres(Box<postgres::Postgres>),
}

/// Runs `$call` on the backend (`$b` names it).
macro_rules! on_backend {
    ($journal:expr, $b:ident => $call:expr) => {
        match &$journal.backend {
            Backend::Sqlite($b) => $call,
            Backend::Postgres($b) => $call,
        }
    };
}

impl Journal {
    /// Opens (or creates) the SQLite journal at `path`, creating its directory; refuses a file
    /// written by a newer version ([`JournalError::Newer`]).
    pub async fn open(path: &Path) -> Result<Journal, JournalError> {
        Ok(Journal {
            backend: Backend::Sqlite(sqlite::Sqlite::open(path).await?),
        })
    }

    /// Connects to the shared journal in PostgreSQL, creating or upgrading its schema; refuses
    /// a schema written by a newer version.
    pub async fn open_postgres(settings: &postgres::Settings) -> Result<Journal, JournalError> {
        Ok(Journal {
            backend: Backend::Postgres(Box::new(postgres::Postgres::open(settings).await?)),
        })
    }

    /// The shared journal, when it is one (PostgreSQL).
    pub fn shared(&self) -> Option<&postgres::Postgres> {
        match &self.backend {
            Backend::Sqlite(_) => None,
            Backend::Postgres(pg) => Some(pg),
        }
    }

    /// Takes (or keeps) the lease on a pending event for this instance: `true` when it may
    /// handle it now. Always `true` with SQLite (one listener per journal).
    pub async fn take(&self, event_id: &str) -> Result<bool, JournalError> {
        match &self.backend {
            Backend::Sqlite(_) => Ok(true),
            Backend::Postgres(pg) => pg.take(event_id).await,
        }
    }

    /// Whether this instance holds the singleton role (reconciliation, the webhook watchdog,
    /// pruning), as it changes: always with SQLite; with PostgreSQL, elected among the
    /// instances every `every`.
    pub fn role(&self, every: std::time::Duration) -> tokio::sync::watch::Receiver<bool> {
        match &self.backend {
            Backend::Sqlite(_) => tokio::sync::watch::channel(true).1,
            Backend::Postgres(pg) => {
                let (tx, rx) = tokio::sync::watch::channel(false);
                tokio::spawn(postgres::role::elect((**pg).clone(), tx, every));
                rx
            }
        }
    }

    /// Takes the slot `key` unless it was taken in the last `window_ms` (`true`: this call took
    /// it). Atomic across the listeners sharing the journal.
    pub async fn claim_slot(&self, key: &str, window_ms: i64) -> Result<bool, JournalError> {
        match &self.backend {
            Backend::Sqlite(_) => Ok(true),
            Backend::Postgres(pg) => pg.claim_slot(key, window_ms).await,
        }
    }

    /// Everything the journal holds (SQLite only: the source of `journal migrate`).
    pub async fn contents(&self) -> Result<Contents, JournalError> {
        match &self.backend {
            Backend::Sqlite(b) => b.contents().await,
            Backend::Postgres(_) => Err(JournalError::Postgres(
                "a shared journal is not migrated from (it is the target)".into(),
            )),
        }
    }

    /// Whether the journal can be written now.
    pub async fn check_writable(&self) -> Result<(), JournalError> {
        on_backend!(self, b => b.check_writable().await)
    }

    /// Records an event unless its id is already known; durable when it returns.
    ///
    /// "Known" means: an accepted event (any state but rejected or skipped) with this id, or,
    /// for a refused one, a refused row with the same id, tenant and state. A refused row never
    /// makes a later accepted event with its id a duplicate.
    pub async fn record(&self, entry: Entry) -> Result<Recorded, JournalError> {
        on_backend!(self, b => b.record(entry).await)
    }

    /// Records several events in one transaction, each unless its id is already known; the
    /// results are in the order of `entries`. All or none are recorded.
    pub async fn record_all(
        &self,
        entries: std::sync::Arc<[Entry]>,
    ) -> Result<Vec<Recorded>, JournalError> {
        on_backend!(self, b => b.record_all(entries).await)
    }

    /// Why events could not be recorded, while the last attempt failed (for `/readyz`).
    pub fn record_failure(&self) -> Option<String> {
        on_backend!(self, b => b.record_failure())
    }

    /// What is wrong with the journal's storage while the listener runs, if anything.
    pub fn file_problem(&self) -> Option<String> {
        on_backend!(self, b => b.file_problem())
    }

    /// Watches the storage for as long as the listener runs (repairing what it can).
    pub async fn watch(self) {
        on_backend!(self, b => b.clone().watch().await)
    }

    /// The accepted event with this id if there is one, else the latest refused message.
    pub async fn get(&self, id: &str) -> Result<Option<Entry>, JournalError> {
        on_backend!(self, b => b.get(id).await)
    }

    /// The ids of events that start with `prefix`, at most `limit`, in order (for `history
    /// resend` given a part of an id). Reads the whole table: for the command line only.
    pub async fn ids_starting_with(
        &self,
        prefix: &str,
        limit: u32,
    ) -> Result<Vec<String>, JournalError> {
        on_backend!(self, b => b.ids_starting_with(prefix, limit).await)
    }

    /// Events with work left, oldest first.
    pub async fn pending(&self) -> Result<Vec<Entry>, JournalError> {
        on_backend!(self, b => b.pending().await)
    }

    /// How many events have work left (the backlog, for `/metrics`).
    pub async fn pending_count(&self) -> Result<u64, JournalError> {
        on_backend!(self, b => b.pending_count().await)
    }

    /// Events received since `since_ms` (unix ms), newest first, at most `limit`.
    pub async fn recent(&self, since_ms: i64, limit: u32) -> Result<Vec<Entry>, JournalError> {
        on_backend!(self, b => b.recent(since_ms, limit).await)
    }

    /// Stores the enrichment (alert data) of an accepted event.
    pub async fn set_enrichment(&self, id: &str, enrichment: String) -> Result<(), JournalError> {
        on_backend!(self, b => b.set_enrichment(id, enrichment).await)
    }

    /// Sets an accepted event's state, and its note when given.
    pub async fn set_state(
        &self,
        id: &str,
        state: State,
        note: Option<String>,
    ) -> Result<(), JournalError> {
        on_backend!(self, b => b.set_state(id, state, note).await)
    }

    /// The delivery of `event_id` on `channel`, if any was recorded.
    pub async fn delivery(
        &self,
        event_id: &str,
        channel: &str,
    ) -> Result<Option<Delivery>, JournalError> {
        on_backend!(self, b => b.delivery(event_id, channel).await)
    }

    /// Every delivery of `event_id`, by channel.
    pub async fn deliveries(&self, event_id: &str) -> Result<Vec<Delivery>, JournalError> {
        on_backend!(self, b => b.deliveries(event_id).await)
    }

    /// Records where a delivery stands.
    pub async fn set_delivery(&self, d: Delivery) -> Result<(), JournalError> {
        on_backend!(self, b => b.set_delivery(d).await)
    }

    /// Takes the rate-limit slot `key` if it was last taken more than `window_ms` ago (or
    /// never), recording `delivery` with it; `false`: suppress (nothing recorded). Atomic.
    pub async fn claim_rate_slot(
        &self,
        key: &str,
        window_ms: i64,
        delivery: Delivery,
    ) -> Result<bool, JournalError> {
        on_backend!(self, b => b.claim_rate_slot(key, window_ms, delivery).await)
    }

    /// Makes `event_id` the event that alerts for the reload unless another already is;
    /// returns the one that is. Atomic and kept across restarts.
    pub async fn claim_reload(
        &self,
        tenant_id: &str,
        reload_id: &str,
        event_id: &str,
    ) -> Result<String, JournalError> {
        on_backend!(self, b => b.claim_reload(tenant_id, reload_id, event_id).await)
    }

    /// The event that alerts for the reload, if one does.
    pub async fn reload_claim(
        &self,
        tenant_id: &str,
        reload_id: &str,
    ) -> Result<Option<String>, JournalError> {
        on_backend!(self, b => b.reload_claim(tenant_id, reload_id).await)
    }

    /// The accepted events of one reload, oldest first.
    pub async fn reload_events(
        &self,
        tenant_id: &str,
        reload_id: &str,
    ) -> Result<Vec<Entry>, JournalError> {
        on_backend!(self, b => b.reload_events(tenant_id, reload_id).await)
    }

    /// The tenant's webhook state the watchdog last reported.
    pub async fn watch_state(&self, tenant_id: &str) -> Result<Option<String>, JournalError> {
        on_backend!(self, b => b.watch_state(tenant_id).await)
    }

    pub async fn set_watch_state(&self, tenant_id: &str, state: &str) -> Result<(), JournalError> {
        on_backend!(self, b => b.set_watch_state(tenant_id, state).await)
    }

    /// Whether the tenant has sent an accepted event of `event_type` on another topic than
    /// `except_topic`.
    pub async fn has_event_type(
        &self,
        tenant_id: &str,
        event_type: &str,
        except_topic: &str,
    ) -> Result<bool, JournalError> {
        on_backend!(self, b => b.has_event_type(tenant_id, event_type, except_topic).await)
    }

    /// Deletes events received before `before_ms` that have no work left (and their
    /// deliveries and claims); returns how many events.
    pub async fn prune(&self, before_ms: i64) -> Result<usize, JournalError> {
        on_backend!(self, b => b.prune(before_ms).await)
    }
}

/// Why events could not be recorded, while the last attempt failed (for `/readyz`); kept by
/// each backend, clones share it.
#[derive(Clone, Default)]
pub(crate) struct RecordFailure(std::sync::Arc<std::sync::Mutex<Option<String>>>);

impl RecordFailure {
    pub(crate) fn get(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Records the outcome of the last attempt: its error, or none.
    pub(crate) fn note(&self, error: Option<&JournalError>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = error.map(ToString::to_string);
    }
}

/// Now, in unix milliseconds.
pub fn now_ms() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// Now, as log lines and the lock file write it (UTC, RFC 3339).
pub fn now_rfc3339() -> String {
    OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
