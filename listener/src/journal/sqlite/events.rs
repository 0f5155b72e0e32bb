//! The `events` table: what arrived, its state, its alert data.

use super::Sqlite;
use crate::journal::{Entry, JournalError, Recorded, State};
use rusqlite::{params, Connection, OptionalExtension};

/// Rows of events that were refused (not acted on). They do not claim their event id: a forged
/// or misrouted copy that arrives first must not make the genuine event a duplicate.
pub(super) const REFUSED: &str = "('rejected', 'skipped')";

impl Sqlite {
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

    pub async fn ids_starting_with(
        &self,
        prefix: &str,
        limit: u32,
    ) -> Result<Vec<String>, JournalError> {
        let prefix = prefix.to_owned();
        self.with(move |c| {
            let mut stmt = c.prepare(
                "SELECT DISTINCT id FROM events WHERE substr(id, 1, length(?1)) = ?1
                 ORDER BY id LIMIT ?2",
            )?;
            let ids = stmt.query_map(rusqlite::params![prefix, limit], |r| r.get(0))?;
            ids.collect()
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
                "SELECT {COLUMNS} FROM events WHERE received_at >= ?1 ORDER BY received_at DESC, id DESC LIMIT ?2"
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

pub(super) const COLUMNS: &str = "id, event_type, tenant_id, app_id, reload_id, reload_status, topic, received_at, body, state, note, enrichment";

pub(super) fn row(r: &rusqlite::Row<'_>) -> Result<Entry, rusqlite::Error> {
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
