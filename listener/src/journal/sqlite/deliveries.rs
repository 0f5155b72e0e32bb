//! The `deliveries` and `rate_limits` tables: where each alert channel stands for each event.

use super::Sqlite;
use crate::journal::{now_ms, Delivery, JournalError};
use rusqlite::{params, Connection, OptionalExtension};

impl Sqlite {
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
}

pub(super) fn upsert_delivery(c: &mut Connection, d: &Delivery) -> Result<(), rusqlite::Error> {
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

fn delivery_row(r: &rusqlite::Row<'_>) -> Result<Delivery, rusqlite::Error> {
    Ok(Delivery {
        event_id: r.get(0)?,
        channel: r.get(1)?,
        state: r.get(2)?,
        attempts: r.get(3)?,
        last_error: r.get(4)?,
    })
}
