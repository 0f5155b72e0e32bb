//! The worker: which pending event is handled when, and how handling stops.
//!
//! Promises:
//! - pending work survives restarts: the worker starts with what the journal still holds, and
//!   a rescan every minute picks up anything an error left pending (with a shared journal,
//!   every half lease: also the events of a listener that died, once its lease ran out);
//! - with a shared journal, an event is handled only by the listener holding its lease;
//! - an event is handled by one task at a time, however often it is handed over;
//! - a failed attempt that waits for its reload's final outcome is woken when that outcome
//!   (or reconciliation's) arrives, or at the end of its wait, which is the event's receive
//!   time plus the bound, so a restart resumes it where it was;
//! - at shutdown ([`Pipeline::drain`]) no new event starts, and the ones under way finish
//!   within a bound.

use super::Pipeline;
use crate::journal::{self, Entry, State};
use std::sync::Arc;

/// What hands events to the worker; made with the pipeline, run once.
pub struct Worker {
    /// Newly recorded pending events.
    pub(super) new_pending: tokio::sync::mpsc::UnboundedReceiver<Entry>,
    /// Reloads (tenant, reload id) whose final outcome just arrived.
    pub(super) wake: tokio::sync::mpsc::UnboundedReceiver<(String, String)>,
}

impl Worker {
    /// Handles pending events: those left from before a restart, then each new one. Each
    /// event runs in its own task, so a slow alert channel for one does not hold up the next.
    pub async fn run(self, pipeline: Arc<Pipeline>) {
        let Worker {
            mut new_pending,
            mut wake,
        } = self;
        let me = pipeline;
        // What a previous run left, then each new event as it is recorded; a rescan every
        // minute picks up anything an error left pending.
        let mut rescan = tokio::time::interval(me.rescan);
        loop {
            tokio::select! {
                Some((tenant, reload)) = wake.recv() => match me.journal.reload_events(&tenant, &reload).await {
                    Ok(entries) => entries
                        .into_iter()
                        .filter(|e| e.state == State::Pending)
                        .for_each(|e| me.start(e)),
                    Err(e) => tracing::error!(error = %e, "cannot read the reload's events"),
                },
                _ = rescan.tick() => match me.journal.pending().await {
                    Ok(entries) => entries.into_iter().for_each(|e| me.start(e)),
                    Err(e) => tracing::error!(error = %e, "cannot read pending events"),
                },
                entry = new_pending.recv() => {
                    let Some(entry) = entry else { return };
                    me.start(entry);
                }
            }
        }
    }
}

impl Pipeline {
    /// Handles `entry` in its own task, unless it is already being handled or the listener is
    /// stopping (then it stays pending in the journal for the next start).
    pub(super) fn start(self: &Arc<Self>, entry: Entry) {
        if *self.closing.borrow() {
            return;
        }
        let fresh = self
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(entry.id.clone());
        if fresh {
            let me = self.clone();
            tokio::spawn(async move {
                let id = entry.id.clone();
                // With a shared journal, another listener may hold the event (it recorded it,
                // or took it over): then it is that one's to handle.
                match me.journal.take(&id).await {
                    Ok(true) => me.clone().process(entry).await,
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(event_id = %id, error = %e, "cannot take the event; the rescan tries again")
                    }
                }
                let mut in_flight = me.in_flight.lock().unwrap_or_else(|p| p.into_inner());
                in_flight.remove(&id);
                if in_flight.is_empty() {
                    me.idle.notify_waiters();
                }
            });
        }
    }

    /// Stops taking new work and waits, up to `bound`, for the events being handled to finish
    /// (an alert request in flight completes and is recorded; a delivery waiting to retry stays
    /// pending for the next start). Returns how many were still being handled at the bound.
    pub async fn drain(&self, bound: std::time::Duration) -> usize {
        self.closing.send_replace(true);
        let deadline = tokio::time::Instant::now() + bound;
        loop {
            let idle = self.idle.notified();
            let left = self
                .in_flight
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .len();
            if left == 0 {
                return 0;
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                return left;
            }
        }
    }

    /// Keeps a failed attempt pending until `until_ms` (or until the reload's final outcome
    /// arrives), then decides again. The wait is the event's receive time plus the bound, so a
    /// restart resumes it where it was.
    pub(super) async fn wait_for_final(self: Arc<Self>, entry: Entry, until_ms: i64) {
        let note = format!(
            "failed attempt; waiting for the reload's final outcome (up to {} s)",
            self.final_outcome.wait_secs
        );
        if entry.note.as_deref() != Some(note.as_str()) {
            tracing::info!(event_id = %entry.id, reload_id = entry.reload_id.as_deref().unwrap_or("-"), wait_seconds = self.final_outcome.wait_secs, "failed attempt; waiting for the reload's final outcome before alerting");
            let _ = self
                .journal
                .set_state(&entry.id, State::Pending, Some(note))
                .await;
        }
        let timer_set = !self
            .waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(entry.id.clone());
        if timer_set {
            return;
        }
        let wait_ms = (until_ms - journal::now_ms()).max(0) as u64;
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(wait_ms)).await;
            self.waiting
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&entry.id);
            // Decided meanwhile (its final outcome arrived) unless still pending.
            match self.journal.get(&entry.id).await {
                Ok(Some(current)) if current.state == State::Pending => self.start(current),
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(event_id = %entry.id, error = %e, "cannot read the waiting event; the rescan will pick it up")
                }
            }
        });
    }
}
