//! The `events` table in PostgreSQL: what arrived, its state, its alert data, who holds it.

use super::{Postgres, DB_NOW};
use crate::journal::{Entry, JournalError, Recorded, State};

/// Rows of refused events: they do not claim their event id (as in SQLite).
const REFUSED: &str = "('rejected', 'skipped')";
const COLUMNS: &str = "id, event_type, tenant_id, app_id, reload_id, reload_status, topic, received_at, body, state, note, enrichment";

fn row(r: &tokio_postgres::Row) -> Result<Entry, JournalError> {
    let state: String = r.get(9);
    Ok(Entry {
        id: r.get(0),
        event_type: r.get(1),
        tenant_id: r.get(2),
        app_id: r.get(3),
        reload_id: r.get(4),
        reload_status: r.get(5),
        topic: r.get(6),
        received_at: r.get(7),
        body: r.get(8),
        state: State::parse(&state)
            .ok_or_else(|| JournalError::Postgres(format!("unknown event state {state:?}")))?,
        note: r.get(10),
        enrichment: r.get(11),
    })
}

fn rows(rows: Vec<tokio_postgres::Row>) -> Result<Vec<Entry>, JournalError> {
    rows.iter().map(row).collect()
}

fn err(what: &'static str) -> impl Fn(tokio_postgres::Error) -> JournalError {
    move |e| JournalError::postgres(what, &e)
}

fn insert() -> String {
    format!(
        "INSERT INTO events
         (id, event_type, tenant_id, app_id, reload_id, reload_status, topic, received_at, body, state, note, recorded_by, owner, lease_until)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12, {DB_NOW} + $13)
         ON CONFLICT DO NOTHING"
    )
}

impl Postgres {
    /// Records an event unless its id is known; this instance holds it while it is pending.
    pub async fn record(&self, entry: Entry) -> Result<Recorded, JournalError> {
        let result = self
            .record_all(std::sync::Arc::from(vec![entry]))
            .await
            .map(|r| r.into_iter().next().unwrap_or(Recorded::Duplicate));
        result
    }

    /// Records several events in one transaction, each unless its id is known.
    pub async fn record_all(
        &self,
        entries: std::sync::Arc<[Entry]>,
    ) -> Result<Vec<Recorded>, JournalError> {
        let result = self.insert_all(&entries).await;
        self.note_record(result.as_ref().err());
        result
    }

    async fn insert_all(&self, entries: &[Entry]) -> Result<Vec<Recorded>, JournalError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(err("recording"))?;
        let insert = tx
            .prepare_cached(&insert())
            .await
            .map_err(err("recording"))?;
        let lease = self.lease_ms;
        let instance: &str = &self.instance;
        let mut results = Vec::with_capacity(entries.len());
        for e in entries {
            let n = tx
                .execute(
                    &insert,
                    &[
                        &e.id,
                        &e.event_type,
                        &e.tenant_id,
                        &e.app_id,
                        &e.reload_id,
                        &e.reload_status,
                        &e.topic,
                        &e.received_at,
                        &e.body,
                        &e.state.as_str(),
                        &e.note,
                        &instance,
                        &lease,
                    ],
                )
                .await
                .map_err(err("recording"))?;
            results.push(if n == 1 {
                Recorded::New
            } else {
                Recorded::Duplicate
            });
        }
        tx.commit().await.map_err(err("recording"))?;
        Ok(results)
    }

    pub async fn get(&self, id: &str) -> Result<Option<Entry>, JournalError> {
        let client = self.client().await?;
        let found = super::query_opt_cached(
            &client,
            &format!(
                "SELECT {COLUMNS} FROM events WHERE id = $1
                     ORDER BY state IN {REFUSED}, received_at DESC LIMIT 1"
            ),
            &[&id],
        )
        .await
        .map_err(err("reading an event"))?;
        found.as_ref().map(row).transpose()
    }

    pub async fn ids_starting_with(
        &self,
        prefix: &str,
        limit: u32,
    ) -> Result<Vec<String>, JournalError> {
        let client = self.client().await?;
        let found = client
            .query(
                "SELECT DISTINCT id FROM events WHERE starts_with(id, $1) ORDER BY id LIMIT $2",
                &[&prefix, &i64::from(limit)],
            )
            .await
            .map_err(err("finding events by id"))?;
        Ok(found.iter().map(|r| r.get(0)).collect())
    }

    /// Events with work left that this instance holds or takes over (its own, and those whose
    /// holder's lease ran out), oldest first; their leases are this instance's now.
    pub async fn pending(&self) -> Result<Vec<Entry>, JournalError> {
        let client = self.client().await?;
        let found = super::query_cached(&client,
                &format!(
                    "UPDATE events SET owner = $1, lease_until = {DB_NOW} + $2
                     WHERE state = 'pending' AND (owner = $1 OR owner IS NULL OR lease_until < {DB_NOW})
                     RETURNING {COLUMNS}"
                ),
                &[&&*self.instance, &self.lease_ms],
            )
            .await
            .map_err(err("reading pending events"))?;
        let mut entries = rows(found)?;
        entries.sort_by_key(|e| e.received_at);
        Ok(entries)
    }

    /// Which instance recorded the event, and which sent each of its alerts (by channel).
    pub async fn who(&self, event_id: &str) -> Result<super::Who, JournalError> {
        let client = self.client().await?;
        let recorded_by = super::query_opt_cached(
            &client,
            &format!(
                "SELECT recorded_by FROM events WHERE id = $1
                     ORDER BY state IN {REFUSED}, received_at DESC LIMIT 1"
            ),
            &[&event_id],
        )
        .await
        .map_err(err("reading an event"))?
        .and_then(|r| r.get(0));
        let delivered_by = super::query_cached(&client,
                "SELECT channel, delivered_by FROM deliveries WHERE event_id = $1 AND delivered_by IS NOT NULL",
                &[&event_id],
            )
            .await
            .map_err(err("reading deliveries"))?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        Ok(super::Who {
            recorded_by,
            delivered_by,
        })
    }

    pub async fn pending_count(&self) -> Result<u64, JournalError> {
        let client = self.client().await?;
        let n: i64 = super::query_one_cached(
            &client,
            "SELECT COUNT(*) FROM events WHERE state = 'pending'",
            &[],
        )
        .await
        .map_err(err("counting pending events"))?
        .get(0);
        Ok(n.max(0) as u64)
    }

    pub async fn recent(&self, since_ms: i64, limit: u32) -> Result<Vec<Entry>, JournalError> {
        let client = self.client().await?;
        let found = super::query_cached(&client,
                &format!(
                    "SELECT {COLUMNS} FROM events WHERE received_at >= $1 ORDER BY received_at DESC, id DESC LIMIT $2"
                ),
                &[&since_ms, &i64::from(limit)],
            )
            .await
            .map_err(err("reading recent events"))?;
        rows(found)
    }

    pub async fn set_enrichment(&self, id: &str, enrichment: String) -> Result<(), JournalError> {
        let client = self.client().await?;
        super::execute_cached(
            &client,
            &format!("UPDATE events SET enrichment = $2 WHERE id = $1 AND state NOT IN {REFUSED}"),
            &[&id, &enrichment],
        )
        .await
        .map_err(err("storing alert data"))?;
        Ok(())
    }

    pub async fn set_state(
        &self,
        id: &str,
        state: State,
        note: Option<String>,
    ) -> Result<(), JournalError> {
        let client = self.client().await?;
        super::execute_cached(
            &client,
            &format!(
                "UPDATE events SET state = $2, note = COALESCE($3, note)
                     WHERE id = $1 AND state NOT IN {REFUSED}"
            ),
            &[&id, &state.as_str(), &note],
        )
        .await
        .map_err(err("setting an event's state"))?;
        Ok(())
    }

    pub async fn reload_events(
        &self,
        tenant_id: &str,
        reload_id: &str,
    ) -> Result<Vec<Entry>, JournalError> {
        let client = self.client().await?;
        let found = super::query_cached(
            &client,
            &format!(
                "SELECT {COLUMNS} FROM events WHERE tenant_id = $1 AND reload_id = $2
                     AND state NOT IN {REFUSED} ORDER BY received_at"
            ),
            &[&tenant_id, &reload_id],
        )
        .await
        .map_err(err("reading a reload's events"))?;
        rows(found)
    }

    pub async fn has_event_type(
        &self,
        tenant_id: &str,
        event_type: &str,
        except_topic: &str,
    ) -> Result<bool, JournalError> {
        let client = self.client().await?;
        let found = super::query_one_cached(
            &client,
            &format!(
                "SELECT EXISTS (SELECT 1 FROM events WHERE tenant_id = $1 AND event_type = $2
                     AND topic != $3 AND state NOT IN {REFUSED})"
            ),
            &[&tenant_id, &event_type, &except_topic],
        )
        .await
        .map_err(err("reading events"))?;
        Ok(found.get(0))
    }

    pub async fn prune(&self, before_ms: i64) -> Result<usize, JournalError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(err("pruning"))?;
        let deleted = tx
            .execute(
                "DELETE FROM events WHERE received_at < $1 AND state != 'pending'",
                &[&before_ms],
            )
            .await
            .map_err(err("pruning"))?;
        tx.execute(
            &format!(
                "DELETE FROM deliveries d WHERE NOT EXISTS
                   (SELECT 1 FROM events e WHERE e.id = d.event_id AND e.state NOT IN {REFUSED})"
            ),
            &[],
        )
        .await
        .map_err(err("pruning"))?;
        tx.execute(
            "DELETE FROM reload_alerts WHERE claimed_at < $1",
            &[&before_ms],
        )
        .await
        .map_err(err("pruning"))?;
        tx.execute("DELETE FROM instances WHERE seen_at < $1", &[&before_ms])
            .await
            .map_err(err("pruning"))?;
        tx.commit().await.map_err(err("pruning"))?;
        Ok(deleted as usize)
    }
}
