//! Reading the whole SQLite journal out, to move it to a shared one (`journal migrate`).

use super::events::{row, COLUMNS};
use super::Sqlite;
use crate::journal::{Contents, Delivery, JournalError};

impl Sqlite {
    /// Everything the journal holds, in one read transaction (a consistent copy).
    pub async fn contents(&self) -> Result<Contents, JournalError> {
        self.with(|c| {
            let events = c
                .prepare(&format!("SELECT {COLUMNS} FROM events ORDER BY received_at"))?
                .query_map([], row)?
                .collect::<Result<_, _>>()?;
            let deliveries = c
                .prepare("SELECT event_id, channel, state, attempts, last_error, updated_at FROM deliveries")?
                .query_map([], |r| {
                    Ok((
                        Delivery {
                            event_id: r.get(0)?,
                            channel: r.get(1)?,
                            state: r.get(2)?,
                            attempts: r.get(3)?,
                            last_error: r.get(4)?,
                        },
                        r.get(5)?,
                    ))
                })?
                .collect::<Result<_, _>>()?;
            let reload_alerts = c
                .prepare("SELECT tenant_id, reload_id, event_id, claimed_at FROM reload_alerts")?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                .collect::<Result<_, _>>()?;
            let watch_states = c
                .prepare("SELECT tenant_id, state FROM watch_states")?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?;
            let rate_limits = c
                .prepare("SELECT key, last_sent_at FROM rate_limits")?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?;
            Ok(Contents {
                events,
                deliveries,
                reload_alerts,
                watch_states,
                rate_limits,
            })
        })
        .await
    }
}
