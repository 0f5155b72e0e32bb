//! The singleton role: which instance of the group runs reconciliation, the webhook watchdog
//! and pruning.
//!
//! Promises: at most one instance holds the role while the database is up (a session advisory
//! lock on a connection of its own); when the holder dies or loses its connection, PostgreSQL
//! releases the lock with the session and another instance takes it at its next try, within
//! one interval; an instance that loses its connection gives the role up as soon as it
//! notices (at its next check, within one interval: the only time two may both think they
//! hold it).

use super::Postgres;
use std::time::Duration;

/// The advisory lock's key (any constant; `qlik` in ASCII, then 2).
const ROLE_LOCK: i64 = 0x716c_696b_0002;

/// Tries for the role every `every`, and says on `role` whether this instance holds it. Runs
/// until the task is stopped (dropping the connection gives the role up).
pub async fn elect(pg: Postgres, role: tokio::sync::watch::Sender<bool>, every: Duration) {
    let mut said_down = false;
    loop {
        let client = match pg.connect_alone().await {
            Ok(client) => {
                said_down = false;
                client
            }
            Err(e) => {
                if !said_down {
                    tracing::warn!(error = %e, "cannot connect to the shared journal to take part in the election; trying again");
                    said_down = true;
                }
                role.send_replace(false);
                tokio::time::sleep(every).await;
                continue;
            }
        };
        loop {
            let held = *role.borrow();
            let now = if held {
                client.simple_query("SELECT 1").await.map(|_| true)
            } else {
                client
                    .query_one("SELECT pg_try_advisory_lock($1)", &[&ROLE_LOCK])
                    .await
                    .map(|r| r.get::<_, bool>(0))
            };
            match now {
                Ok(now) if now != held => {
                    if now {
                        tracing::info!(instance = pg.instance(), "this instance now holds the singleton role (reconciliation, webhook watchdog, pruning)");
                    }
                    role.send_replace(now);
                }
                Ok(_) => {}
                Err(e) => {
                    if held {
                        tracing::warn!(instance = pg.instance(), error = %e, "lost the connection that holds the singleton role; giving it up");
                    }
                    role.send_replace(false);
                    break;
                }
            }
            tokio::time::sleep(every).await;
        }
        tokio::time::sleep(every).await;
    }
}
