//! The `deliveries`, `rate_limits`, `reload_alerts` and `watch_states` tables in PostgreSQL.

use super::Postgres;
use crate::journal::{now_ms, Delivery, DeliveryState, JournalError};

fn err(what: &'static str) -> impl Fn(tokio_postgres::Error) -> JournalError {
    move |e| JournalError::postgres(what, &e)
}

const UPSERT: &str = "INSERT INTO deliveries (event_id, channel, state, attempts, last_error, updated_at, delivered_by)
    VALUES ($1, $2, $3, $4, $5, $6, $7)
    ON CONFLICT (event_id, channel) DO UPDATE SET
      state = excluded.state, attempts = excluded.attempts, last_error = excluded.last_error,
      updated_at = excluded.updated_at, delivered_by = excluded.delivered_by";

fn delivery_row(r: &tokio_postgres::Row) -> Result<Delivery, JournalError> {
    let state: String = r.get(2);
    let attempts: i32 = r.get(3);
    Ok(Delivery {
        event_id: r.get(0),
        channel: r.get(1),
        state: DeliveryState::parse(&state)
            .ok_or_else(|| JournalError::Postgres(format!("unknown delivery state {state:?}")))?,
        attempts: attempts.max(0) as u32,
        last_error: r.get(4),
    })
}

async fn upsert(
    client: &impl deadpool_postgres::GenericClient,
    instance: &str,
    d: &Delivery,
) -> Result<(), tokio_postgres::Error> {
    let attempts = i32::try_from(d.attempts).unwrap_or(i32::MAX);
    let statement = client.prepare_cached(UPSERT).await?;
    client
        .execute(
            &statement,
            &[
                &d.event_id,
                &d.channel,
                &d.state.as_str(),
                &attempts,
                &d.last_error,
                &now_ms(),
                &instance,
            ],
        )
        .await
        .map(|_| ())
}

impl Postgres {
    pub async fn delivery(
        &self,
        event_id: &str,
        channel: &str,
    ) -> Result<Option<Delivery>, JournalError> {
        let client = self.client().await?;
        let found = super::query_opt_cached(&client,
                "SELECT event_id, channel, state, attempts, last_error FROM deliveries WHERE event_id = $1 AND channel = $2",
                &[&event_id, &channel],
            )
            .await
            .map_err(err("reading a delivery"))?;
        found.as_ref().map(delivery_row).transpose()
    }

    pub async fn deliveries(&self, event_id: &str) -> Result<Vec<Delivery>, JournalError> {
        let client = self.client().await?;
        let found = super::query_cached(&client,
                "SELECT event_id, channel, state, attempts, last_error FROM deliveries WHERE event_id = $1 ORDER BY channel",
                &[&event_id],
            )
            .await
            .map_err(err("reading deliveries"))?;
        found.iter().map(delivery_row).collect()
    }

    pub async fn set_delivery(&self, d: Delivery) -> Result<(), JournalError> {
        let client = self.client().await?;
        upsert(&client, &self.instance, &d)
            .await
            .map_err(err("recording a delivery"))
    }

    /// Takes the rate-limit slot and records the delivery that takes it, in one transaction;
    /// of two instances asking at once, one gets it.
    pub async fn claim_rate_slot(
        &self,
        key: &str,
        window_ms: i64,
        delivery: Delivery,
    ) -> Result<bool, JournalError> {
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(err("claiming a rate slot"))?;
        let taken = tx
            .query(&super::take_slot(), &[&key, &window_ms])
            .await
            .map_err(err("claiming a rate slot"))?;
        let free = !taken.is_empty();
        if free {
            upsert(&tx, &self.instance, &delivery)
                .await
                .map_err(err("claiming a rate slot"))?;
        }
        tx.commit().await.map_err(err("claiming a rate slot"))?;
        Ok(free)
    }

    pub async fn claim_reload(
        &self,
        tenant_id: &str,
        reload_id: &str,
        event_id: &str,
    ) -> Result<String, JournalError> {
        let client = self.client().await?;
        super::execute_cached(
            &client,
            "INSERT INTO reload_alerts (tenant_id, reload_id, event_id, claimed_at)
                 VALUES ($1, $2, $3, $4) ON CONFLICT (tenant_id, reload_id) DO NOTHING",
            &[&tenant_id, &reload_id, &event_id, &now_ms()],
        )
        .await
        .map_err(err("claiming a reload"))?;
        let holder = super::query_one_cached(
            &client,
            "SELECT event_id FROM reload_alerts WHERE tenant_id = $1 AND reload_id = $2",
            &[&tenant_id, &reload_id],
        )
        .await
        .map_err(err("claiming a reload"))?;
        Ok(holder.get(0))
    }

    pub async fn reload_claim(
        &self,
        tenant_id: &str,
        reload_id: &str,
    ) -> Result<Option<String>, JournalError> {
        let client = self.client().await?;
        let found = super::query_opt_cached(
            &client,
            "SELECT event_id FROM reload_alerts WHERE tenant_id = $1 AND reload_id = $2",
            &[&tenant_id, &reload_id],
        )
        .await
        .map_err(err("reading a reload claim"))?;
        Ok(found.map(|r| r.get(0)))
    }

    pub async fn watch_state(&self, tenant_id: &str) -> Result<Option<String>, JournalError> {
        let client = self.client().await?;
        let found = super::query_opt_cached(
            &client,
            "SELECT state FROM watch_states WHERE tenant_id = $1",
            &[&tenant_id],
        )
        .await
        .map_err(err("reading the watchdog's state"))?;
        Ok(found.map(|r| r.get(0)))
    }

    pub async fn set_watch_state(&self, tenant_id: &str, state: &str) -> Result<(), JournalError> {
        let client = self.client().await?;
        super::execute_cached(
            &client,
            "INSERT INTO watch_states (tenant_id, state) VALUES ($1, $2)
                 ON CONFLICT (tenant_id) DO UPDATE SET state = excluded.state",
            &[&tenant_id, &state],
        )
        .await
        .map_err(err("recording the watchdog's state"))?;
        Ok(())
    }
}
