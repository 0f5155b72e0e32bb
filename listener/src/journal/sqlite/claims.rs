//! The claims: which event alerts for a reload (`reload_alerts`), and the webhook watchdog's
//! last state per tenant (`watch_states`).

use super::Sqlite;
use crate::journal::{now_ms, JournalError};
use rusqlite::{params, OptionalExtension};

impl Sqlite {
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
}
