//! Intake: what happens to each message before it is acknowledged: normalise, decide its state
//! ([`admit`], pure), record it in the journal (batches together), acknowledge.
//!
//! Promises (design.md §6):
//! - a message is acknowledged only after its event is in the journal; if the journal cannot
//!   be written, it is held unacknowledged and recording is retried until the journal takes it
//!   (`/readyz` says so meanwhile), so the listener resumes by itself once the fault is gone;
//! - garbage (not an event) is logged with its topic and acknowledged, never crashes the loop;
//! - an event over the pipeline's size limit (`qlik_events::MAX_EVENT_BYTES`) is recorded as
//!   rejected (without its body) and acknowledged, never redelivered in a loop;
//! - with `requireSignature`, an event whose `qlik-signature` does not verify is recorded as
//!   rejected and not acted on; a copy the forwarder rewrote for Butler (marked
//!   `qlik-relay-rewritten`, unsigned) is acknowledged and not recorded: it is not the event
//!   Qlik signed, and the original comes on its own topic;
//! - an event older than `journal.retentionDays` (by its own time) is recorded as rejected: its
//!   first delivery's row may be pruned already, so a replay would otherwise alert again.

use super::{Pipeline, DAY_MS, MAX_BATCH, RECORD_RETRY_FIRST, RECORD_RETRY_MAX};
use crate::journal::{self, Entry, Recorded, State};
use crate::metrics::METRICS;
use crate::subscriber::{Message, MAX_MESSAGE_BYTES};
use qlik_events::event::RELOAD_FINISHED;
use qlik_events::{Event, Matched, Reload, ReloadOutcome};
use std::sync::Arc;

/// How long ago an RFC 3339 event time was, in milliseconds (`None` if it does not parse).
fn age_ms(time: &str) -> Option<i64> {
    let at =
        time::OffsetDateTime::parse(time, &time::format_description::well_known::Rfc3339).ok()?;
    Some(journal::now_ms() - (at.unix_timestamp_nanos() / 1_000_000) as i64)
}

/// What [`admit`] looks at.
pub struct Facts<'a> {
    pub tenant_known: bool,
    /// With `requireSignature`: how the signature verified (`None`: not checked).
    pub signature: Option<Result<Matched, &'a str>>,
    /// How old the event says it is.
    pub age_ms: Option<i64>,
    pub retention_ms: i64,
    /// The reload it reports, for reload events.
    pub reload: Option<Result<&'a Reload, String>>,
}

/// An arriving event's state and note, and why (for the log line).
#[derive(Debug, PartialEq, Eq)]
pub struct Admitted {
    pub state: State,
    pub note: Option<String>,
    pub why: Why,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Why {
    UnknownTenant,
    BadSignature(String),
    TooOld,
    /// A reload failure: work to do.
    Failure,
    /// The outcome could not be read; `ask`: the reloads API is asked (it has a reload id).
    Unclear {
        field: &'static str,
        value: String,
        ask: bool,
    },
    Unreadable(String),
    /// Anything else: recorded.
    Other,
}

/// The event field that should have said the reload's outcome.
pub fn unclear_field(r: &Reload) -> &'static str {
    if r.is_final {
        "data.status (with data.succeeded)"
    } else {
        "data.status"
    }
}

/// What state an arriving event gets. Pure.
pub fn admit(f: &Facts<'_>) -> Admitted {
    let admitted = |state, note: Option<String>, why| Admitted { state, note, why };
    if !f.tenant_known {
        return admitted(
            State::Skipped,
            Some("tenant not configured".into()),
            Why::UnknownTenant,
        );
    }
    if let Some(Err(reason)) = f.signature {
        return admitted(
            State::Rejected,
            Some(format!("signature: {reason}")),
            Why::BadSignature(reason.to_owned()),
        );
    }
    if f.age_ms.is_some_and(|age| age > f.retention_ms) {
        let days = f.retention_ms / DAY_MS;
        let note = format!("older than journal.retentionDays ({days} days)");
        return admitted(State::Rejected, Some(note), Why::TooOld);
    }
    match &f.reload {
        Some(Ok(r)) if r.is_failure() => admitted(State::Pending, None, Why::Failure),
        Some(Ok(r)) if r.outcome == ReloadOutcome::Unknown => {
            // Format drift (`"ERROR"`, `"Failed"`, a number): the reloads API says what
            // happened. Without a reload id there is nothing to ask.
            let field = unclear_field(r);
            let value = r
                .status
                .as_deref()
                .map(|s| format!("{s:?}"))
                .unwrap_or_else(|| "absent".into());
            let ask = r.reload_id.is_some();
            let (state, note) = match ask {
                true => (
                    State::Pending,
                    format!("reload outcome unclear ({field} is {value}); asking the reloads API"),
                ),
                false => (
                    State::Recorded,
                    format!("reload outcome unknown ({field}) and no reload id"),
                ),
            };
            admitted(state, Some(note), Why::Unclear { field, value, ask })
        }
        Some(Err(e)) => admitted(
            State::Recorded,
            Some(format!("reload unreadable: {e}")),
            Why::Unreadable(e.clone()),
        ),
        _ => admitted(State::Recorded, None, Why::Other),
    }
}

impl Pipeline {
    /// Receives until the channel closes; each message is recorded, then acknowledged. What
    /// has queued up meanwhile is recorded together in one transaction (group commit: one
    /// fsync for the lot), then each message of it acknowledged.
    pub async fn receive(self: Arc<Self>, mut messages: crate::subscriber::Messages) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while messages.recv_many(&mut batch, MAX_BATCH).await > 0 {
            self.record_batch(std::mem::take(&mut batch)).await;
        }
    }

    async fn record_batch(&self, messages: Vec<Message>) {
        let mut to_ack = Vec::with_capacity(messages.len());
        let mut to_record = Vec::with_capacity(messages.len());
        for message in messages {
            match self.entry(&message) {
                Some(entry) => to_record.push((message, entry)),
                // Not an event: logged, acknowledged, nothing recorded.
                None => to_ack.push(message),
            }
        }
        if !to_record.is_empty() {
            let entries: Arc<[Entry]> = to_record.iter().map(|(_, (e, _))| e.clone()).collect();
            let results = self.record_until_recorded(entries).await;
            for ((message, (entry, format)), recorded) in to_record.into_iter().zip(results) {
                self.recorded(entry, format, recorded);
                to_ack.push(message);
            }
        }
        for message in to_ack {
            let topic = message.topic.clone();
            if let Err(e) = message.ack().await {
                tracing::warn!(topic = %topic, error = %e, "could not acknowledge; the broker will deliver again");
            }
        }
    }

    /// Records `entries`, retrying with back-off for as long as the journal refuses (a full
    /// disk, a lock held by another process, an I/O error). Meanwhile the messages stay
    /// unacknowledged (the broker keeps them too), the journal reports the failure to
    /// `/readyz`, and nothing else is received: a transient fault costs a delay, not the
    /// messages, and needs no restart. (The broker only redelivers unacknowledged messages on
    /// a reconnect, so giving up here would stall the subscription.)
    async fn record_until_recorded(&self, entries: Arc<[Entry]>) -> Vec<Recorded> {
        let mut delay = RECORD_RETRY_FIRST;
        let mut failures = 0u32;
        loop {
            match self.journal.record_all(Arc::clone(&entries)).await {
                Ok(results) => {
                    if failures > 0 {
                        tracing::info!(
                            events = entries.len(),
                            attempts = failures + 1,
                            "journal writable again; the held events are recorded"
                        );
                    }
                    return results;
                }
                Err(e) => {
                    failures += 1;
                    // Once per event when it starts, then once a minute or so.
                    if failures == 1 {
                        for entry in entries.iter() {
                            tracing::error!(event_id = %entry.id, topic = %entry.topic, error = %e, "could not record the event; held unacknowledged and retried");
                        }
                    } else if delay == RECORD_RETRY_MAX {
                        tracing::error!(events = entries.len(), attempts = failures, error = %e, "the journal still refuses writes; events held unacknowledged");
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(RECORD_RETRY_MAX);
                }
            }
        }
    }

    /// Decides what the message is: the journal entry to record (and the event's format, for
    /// the log), or `None` for a message that is not an event (logged; acknowledged without
    /// recording).
    fn entry(&self, message: &Message) -> Option<(Entry, &'static str)> {
        let topic = message.topic.as_str();
        let bytes = message.payload.len();
        let too_large = bytes > MAX_MESSAGE_BYTES as usize;
        if let Some(mark) = message
            .rewritten
            .as_ref()
            .filter(|_| self.require_signature)
        {
            if !self
                .warned_rewritten
                .swap(true, std::sync::atomic::Ordering::Relaxed)
            {
                tracing::warn!(topic, rewritten = %mark, "a copy the forwarder rewrote for Butler reached the listener; ignored (the original arrives on its own topic). Subscribe the listener to the forwarder's MQTT_TOPIC_PREFIX only, not to BUTLER_TOPIC_PREFIX (warned once)");
            }
            return None;
        }
        let event = match Event::parse(&message.payload) {
            Ok(event) => event,
            Err(e) if too_large => {
                tracing::warn!(topic, bytes, limit = MAX_MESSAGE_BYTES, reason = %e, "message too large and not a Qlik Cloud event; dropped");
                crate::metrics::inc(&METRICS.messages_invalid);
                return None;
            }
            Err(e) => {
                tracing::warn!(topic, bytes = message.payload.len(), reason = %e, "not a Qlik Cloud event; dropped");
                crate::metrics::inc(&METRICS.messages_invalid);
                return None;
            }
        };
        let reload = event.reload().and_then(Result::ok);
        let (state, note) = if too_large {
            // Recorded (without its body) and acknowledged: never a redelivery loop.
            tracing::warn!(event_id = %event.id, topic, bytes, limit = MAX_MESSAGE_BYTES, "event too large; recorded as rejected");
            let note = format!("too large: {bytes} bytes, the limit is {MAX_MESSAGE_BYTES}");
            (State::Rejected, Some(note))
        } else {
            self.decide(&event, message)
        };
        let entry = Entry {
            id: event.id.to_string(),
            event_type: event.event_type.to_string(),
            tenant_id: event.tenant_id.to_string(),
            app_id: reload
                .as_ref()
                .and_then(|r| r.app_id.clone())
                .or_else(|| event.app_id()),
            reload_id: reload.as_ref().and_then(|r| r.reload_id.clone()),
            reload_status: reload.as_ref().and_then(|r| r.status.clone()),
            topic: topic.to_owned(),
            received_at: journal::now_ms(),
            body: if too_large {
                Vec::new()
            } else {
                message.payload.to_vec()
            },
            state,
            note,
            enrichment: None,
        };
        Some((entry, event.format.as_str()))
    }

    /// Logs and counts a recorded entry, and hands a new pending one to the worker.
    fn recorded(&self, entry: Entry, format: &'static str, recorded: Recorded) {
        // A final outcome wakes the reload's waiting attempts, also when another listener
        // sharing the journal recorded it first (the attempt may be this one's to handle).
        if entry.event_type == RELOAD_FINISHED && entry.state != State::Rejected {
            self.sends_final
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(entry.tenant_id.clone());
            if let Some(reload_id) = &entry.reload_id {
                let _ = self.wake.send((entry.tenant_id.clone(), reload_id.clone()));
            }
        }
        match recorded {
            Recorded::Duplicate => {
                crate::metrics::inc(&METRICS.events_duplicate);
                tracing::info!(
                    event_id = entry.id,
                    event_type = entry.event_type,
                    "duplicate event; already recorded"
                )
            }
            Recorded::New => {
                crate::metrics::inc(&METRICS.events_received);
                if entry.state == State::Rejected {
                    crate::metrics::inc(&METRICS.events_rejected);
                }
                tracing::info!(
                    event_id = entry.id,
                    event_type = entry.event_type,
                    tenant = entry.tenant_id,
                    format,
                    state = entry.state.as_str(),
                    note = entry.note.as_deref().unwrap_or("-"),
                    "event recorded"
                );
                if entry.state == State::Pending {
                    // Only fails when the worker is gone, i.e. at shutdown: the event stays
                    // pending in the journal and is resumed at the next start.
                    let _ = self.new_pending.send(entry);
                }
            }
        }
    }

    /// What state an arriving event of a configured-or-not tenant gets ([`admit`]), with the
    /// log line and metric that go with it.
    fn decide(&self, event: &Event<'_>, message: &Message) -> (State, Option<String>) {
        let tenant = self.tenants.get(event.tenant_id.as_ref());
        let signature = match (self.require_signature, tenant) {
            (true, Some(tenant)) => Some(match &tenant.verifier {
                Some(v) => v
                    .verify(
                        message.signature.as_deref().map(str::as_bytes),
                        &message.payload,
                    )
                    .map_err(|e| e.to_string()),
                None => Err("no webhook secret for this tenant".into()),
            }),
            _ => None,
        };
        let reload = event.reload();
        let facts = Facts {
            tenant_known: tenant.is_some(),
            signature: signature
                .as_ref()
                .map(|v| v.as_ref().map(|m| *m).map_err(String::as_str)),
            age_ms: event.time.as_deref().and_then(age_ms),
            retention_ms: self.retention_ms,
            reload: reload
                .as_ref()
                .map(|r| r.as_ref().map_err(ToString::to_string)),
        };
        let admitted = admit(&facts);
        let (id, tenant_id, event_type) = (&event.id, &event.tenant_id, &event.event_type);
        match &admitted.why {
            Why::UnknownTenant => {
                crate::metrics::inc(&METRICS.events_unknown_tenant);
                let mut warned = self
                    .warned_tenants
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                if warned.insert(tenant_id.to_string()) {
                    tracing::warn!(tenant = %tenant_id, "event from a tenant that is not configured; recorded and skipped (warned once per tenant)");
                }
            }
            Why::BadSignature(reason) => {
                tracing::warn!(event_id = %id, tenant = %tenant_id, reason = %reason, "signature check failed; event rejected (is the tenant's webhookSecret the secret of the webhook in Qlik Cloud, which the forwarder passes on unchanged?)");
                crate::operations::PROBLEMS.set(
                    &format!("signature {tenant_id}"),
                    rejected_problem(tenant_id, reason),
                    Some(REJECTIONS_SHOWN),
                );
            }
            Why::TooOld => {
                tracing::warn!(event_id = %id, tenant = %tenant_id, time = event.time.as_deref().unwrap_or("-"), "event older than journal.retentionDays; rejected (a replay cannot be told from a new event)")
            }
            Why::Unclear { field, value, ask } => match ask {
                true => {
                    tracing::warn!(event_id = %id, event_type = %event_type, field, value = %value, "the reload's outcome cannot be read from the event; asking Qlik Cloud's reloads API")
                }
                false => {
                    tracing::warn!(event_id = %id, event_type = %event_type, field, value = %value, "the reload's outcome cannot be read from the event, and it names no reload id to ask about; recorded, not alerted")
                }
            },
            Why::Unreadable(reason) => {
                tracing::warn!(event_id = %id, event_type = %event_type, reason = %reason, "the reload cannot be read from the event; recorded, not alerted")
            }
            Why::Failure | Why::Other => {}
        }
        if signature.as_ref().is_some_and(Result::is_ok) {
            // Signatures verify again: the secret was fixed.
            crate::operations::PROBLEMS.clear(&format!("signature {tenant_id}"));
        }
        if signature.is_some_and(|v| v == Ok(qlik_events::Matched::Previous)) {
            tracing::info!(event_id = %id, tenant = %tenant_id, "signed with the tenant's webhookSecretPrevious: finish the rotation in Qlik Cloud, then remove it");
        }
        (admitted.state, admitted.note)
    }
}

/// How long `/readyz` shows that a tenant's events were rejected for their signature, after the
/// latest one (or until one verifies).
const REJECTIONS_SHOWN: std::time::Duration = std::time::Duration::from_secs(3600);

/// What `/readyz` says while a tenant's events are rejected for their signature: most often
/// the tenant's `webhookSecret` is not the webhook's secret in Qlik Cloud (the forwarder
/// checks the same secret as `QLIK_WEBHOOK_SECRET` and passes the signature on unchanged).
fn rejected_problem(tenant_id: &str, reason: &str) -> String {
    format!("tenant {tenant_id}: events are being rejected because their qlik-signature does not verify ({reason}; see qlik_listener_events_rejected_total): is the tenant's webhookSecret the same secret as the webhook's in Qlik Cloud and the forwarder's QLIK_WEBHOOK_SECRET?")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reload(status: Option<&str>, outcome: ReloadOutcome, reload_id: Option<&str>) -> Reload {
        Reload {
            reload_id: reload_id.map(str::to_owned),
            app_id: None,
            status: status.map(str::to_owned),
            outcome,
            is_final: false,
        }
    }

    fn facts<'a>(reload: Option<Result<&'a Reload, String>>) -> Facts<'a> {
        Facts {
            tenant_known: true,
            signature: None,
            age_ms: Some(1_000),
            retention_ms: 8 * DAY_MS,
            reload,
        }
    }

    #[test]
    fn what_state_an_arriving_event_gets() {
        let failed = reload(Some("error"), ReloadOutcome::Failed, Some("r1"));
        let ok = reload(Some("ok"), ReloadOutcome::Succeeded, Some("r1"));
        let drift = reload(Some("ERROR"), ReloadOutcome::Unknown, Some("r1"));
        let drift_no_id = reload(Some("ERROR"), ReloadOutcome::Unknown, None);
        let state = |f: &Facts<'_>| admit(f).state;
        assert_eq!(state(&facts(Some(Ok(&failed)))), State::Pending);
        assert_eq!(state(&facts(Some(Ok(&ok)))), State::Recorded);
        assert_eq!(state(&facts(None)), State::Recorded, "not a reload event");
        // An unclear outcome is asked of the reloads API when there is a reload id.
        let a = admit(&facts(Some(Ok(&drift))));
        assert_eq!(a.state, State::Pending);
        assert_eq!(
            a.note.as_deref(),
            Some("reload outcome unclear (data.status is \"ERROR\"); asking the reloads API")
        );
        assert_eq!(admit(&facts(Some(Ok(&drift_no_id)))).state, State::Recorded);
        let a = admit(&facts(Some(Err("data: expected an object".into()))));
        assert_eq!(
            (a.state, a.note.as_deref()),
            (
                State::Recorded,
                Some("reload unreadable: data: expected an object")
            )
        );
        // Refusals come first, in this order: tenant, signature, age.
        let mut f = facts(Some(Ok(&failed)));
        f.age_ms = Some(9 * DAY_MS);
        assert_eq!(admit(&f).why, Why::TooOld);
        f.signature = Some(Err("no signature"));
        assert_eq!(admit(&f).note.as_deref(), Some("signature: no signature"));
        assert_eq!(admit(&f).state, State::Rejected);
        f.tenant_known = false;
        assert_eq!(
            (admit(&f).state, admit(&f).why),
            (State::Skipped, Why::UnknownTenant)
        );
        // A good signature (either secret) and no time: admitted.
        let mut f = facts(Some(Ok(&failed)));
        f.signature = Some(Ok(Matched::Previous));
        f.age_ms = None;
        assert_eq!(admit(&f).state, State::Pending);
    }
}
