//! The group of listeners that share a journal in PostgreSQL (high availability), as one
//! instance sees it: its heartbeat, whether it holds the singleton role, and the singleton
//! work that runs only while it does.
//!
//! Promises: singleton work (reconciliation, the webhook watchdog, pruning) runs on the holder
//! of the role only, starts when this instance takes the role and stops when it loses it;
//! with SQLite (one listener) the role is always held. The heartbeat renews this instance's
//! leases on the events it handles, a third of the lease apart, and says who is alive for
//! `/readyz` and `/metrics`.

use crate::journal::{self, postgres::Peer, Journal};
use std::time::Duration;

pub struct Group {
    journal: Journal,
    role: tokio::sync::watch::Receiver<bool>,
    /// How long an instance counts as alive after its last heartbeat.
    alive_ms: i64,
}

impl Group {
    /// Joins the group: takes part in the election and beats, a third of `lease` apart.
    pub fn join(journal: &Journal, lease: Duration) -> Group {
        let every = (lease / 3).max(Duration::from_millis(500));
        let role = journal.role(every);
        if let Some(pg) = journal.shared().cloned() {
            let role = role.clone();
            tokio::spawn(async move {
                let mut failing = false;
                let mut connection = None;
                loop {
                    let holds = *role.borrow();
                    let beat = match &connection {
                        Some(client) => pg.heartbeat(client, holds).await,
                        None => match pg.heartbeat_connection().await {
                            Ok(client) => {
                                let beat = pg.heartbeat(&client, holds).await;
                                connection = Some(client);
                                beat
                            }
                            Err(e) => Err(e),
                        },
                    };
                    match beat {
                        Ok(()) if failing => {
                            tracing::info!("the shared journal takes heartbeats again");
                            failing = false;
                        }
                        Ok(()) => {}
                        Err(e) => {
                            // A new connection at the next beat.
                            connection = None;
                            if !failing {
                                tracing::warn!(error = %e, "cannot write this instance's heartbeat; its events move to another instance if this goes on past the lease");
                                failing = true;
                            }
                        }
                    }
                    tokio::time::sleep(every).await;
                }
            });
        }
        Group {
            journal: journal.clone(),
            role,
            alive_ms: 3 * lease.as_millis() as i64,
        }
    }

    /// This instance's name, when the journal is shared.
    pub fn instance(&self) -> Option<&str> {
        self.journal.shared().map(|pg| pg.instance())
    }

    pub fn holds_role(&self) -> bool {
        *self.role.borrow()
    }

    /// The instances with a heartbeat within the last three leases (empty with SQLite).
    pub async fn peers(&self) -> Result<Vec<Peer>, journal::JournalError> {
        match self.journal.shared() {
            Some(pg) => pg.peers(self.alive_ms).await,
            None => Ok(Vec::new()),
        }
    }

    /// Runs `work()` while this instance holds the role: started when it takes it, stopped
    /// when it loses it, started again when it takes it back.
    pub fn singleton<F, Fut>(&self, work: F) -> tokio::task::JoinHandle<()>
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let mut role = self.role.clone();
        tokio::spawn(async move {
            loop {
                if role.wait_for(|held| *held).await.is_err() {
                    return;
                }
                // Stopped with this task too (at shutdown).
                let mut task = AbortOnDrop(tokio::spawn(work()));
                let lost = role.wait_for(|held| !*held).await.is_ok();
                if !lost {
                    // Nobody can take the role away (SQLite): it runs for good.
                    let _ = (&mut task.0).await;
                    return;
                }
                drop(task);
            }
        })
    }

    /// At shutdown: gives up this instance's leases so another takes its events at once.
    pub async fn leave(&self) {
        if let Some(pg) = self.journal.shared() {
            if let Err(e) = pg.release().await {
                tracing::warn!(error = %e, "cannot hand this instance's events over; another takes them after the lease");
            }
        }
    }
}

/// A task that is stopped when its handle is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
