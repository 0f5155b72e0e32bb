//! Taking in a whole journal read from SQLite (`journal migrate`).

use super::Postgres;
use crate::journal::{Contents, JournalError};

fn err(e: tokio_postgres::Error) -> JournalError {
    JournalError::postgres("importing", &e)
}

impl Postgres {
    /// Adds `contents` in one transaction: all of it or nothing. Rows already there (an
    /// earlier import, or events the group recorded since) are kept as they are, so running it
    /// twice changes nothing. Pending events are held by no instance: the first to scan takes
    /// them; deliveries keep their state (a sent alert is not sent again). Returns how many
    /// events and deliveries were added.
    pub async fn import(&self, contents: &Contents) -> Result<(u64, u64), JournalError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(err)?;
        let insert = tx
            .prepare(
                "INSERT INTO events
                 (id, event_type, tenant_id, app_id, reload_id, reload_status, topic, received_at, body, state, note, enrichment, recorded_by)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 'migrated')
                 ON CONFLICT DO NOTHING",
            )
            .await
            .map_err(err)?;
        let mut events = 0;
        for e in &contents.events {
            events += tx
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
                        &e.enrichment,
                    ],
                )
                .await
                .map_err(err)?;
        }
        let mut deliveries = 0;
        for (d, updated_at) in &contents.deliveries {
            let attempts = i32::try_from(d.attempts).unwrap_or(i32::MAX);
            deliveries += tx
                .execute(
                    "INSERT INTO deliveries (event_id, channel, state, attempts, last_error, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                    &[&d.event_id, &d.channel, &d.state.as_str(), &attempts, &d.last_error, updated_at],
                )
                .await
                .map_err(err)?;
        }
        for (tenant, reload, event, at) in &contents.reload_alerts {
            tx.execute(
                "INSERT INTO reload_alerts (tenant_id, reload_id, event_id, claimed_at) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                &[tenant, reload, event, at],
            )
            .await
            .map_err(err)?;
        }
        for (tenant, state) in &contents.watch_states {
            tx.execute(
                "INSERT INTO watch_states (tenant_id, state) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[tenant, state],
            )
            .await
            .map_err(err)?;
        }
        for (key, at) in &contents.rate_limits {
            tx.execute(
                "INSERT INTO rate_limits (key, last_sent_at) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[key, at],
            )
            .await
            .map_err(err)?;
        }
        tx.commit().await.map_err(err)?;
        Ok((events, deliveries))
    }
}
