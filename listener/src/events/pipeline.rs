//! What happens to each message: normalise → decide → record → acknowledge, then, for reload
//! failures, enrich from the Qlik Cloud API and hand the template data to the alert stage.
//!
//! Promises (design.md §6):
//! - a message is acknowledged only after its event is in the journal; if the journal cannot
//!   be written, it is held unacknowledged and recording is retried until the journal takes it
//!   (`/readyz` says so meanwhile), so the listener resumes by itself once the fault is gone;
//! - an event id is handled once, however often it is delivered;
//! - garbage (not an event) is logged with its topic and acknowledged, never crashes the loop;
//! - an event over the pipeline's size limit (`qlik_events::MAX_EVENT_BYTES`) is recorded as
//!   rejected (without its body) and acknowledged, never redelivered in a loop;
//! - with `requireSignature`, an event whose `qlik-signature` does not verify is recorded as
//!   rejected and not acted on;
//! - with `requireSignature`, a copy the forwarder rewrote for Butler (marked
//!   `qlik-relay-rewritten`, unsigned) is acknowledged and not recorded: it is not the event
//!   Qlik signed, and the original comes on its own topic, so the copy must neither claim the
//!   event's id nor be rejected in its place (without `requireSignature` it is read like any
//!   hybrid body);
//! - an event older than `journal.retentionDays` (by its own time) is recorded as rejected: its
//!   first delivery's row may be pruned already, so a replay would otherwise alert again;
//! - pending work survives restarts: the worker starts with what the journal still holds;
//! - one alert per failed reload, not per event ([`super::one_alert`]): a failed attempt waits
//!   for the reload's final outcome when the tenant sends it, and the wait survives restarts.

use super::alert_data::{self, AlertData};
use super::enrich::Enrichment;
use super::one_alert::{self, Decision, Seen};
use super::{enrich, script_log};
use crate::config::{Config, FinalOutcome, TenantConfig, WaitForFinal};
use crate::journal::{self, Entry, Journal, Recorded, State};
use crate::metrics::METRICS;
use crate::notify::Notifier;
use crate::qlik_api::QlikApi;
use crate::subscriber::{Message, MAX_MESSAGE_BYTES};
use qlik_events::event::RELOAD_FINISHED;
use qlik_events::{Event, ReloadOutcome, Verifier};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Script-log lines kept in the alert data when no channel asks for more.
const DEFAULT_LOG_LINES: usize = 15;
/// How long ago an RFC 3339 event time was, in milliseconds (`None` if it does not parse).
fn age_ms(time: &str) -> Option<i64> {
    let at =
        time::OffsetDateTime::parse(time, &time::format_description::well_known::Rfc3339).ok()?;
    Some(journal::now_ms() - (at.unix_timestamp_nanos() / 1_000_000) as i64)
}

const DAY_MS: i64 = 24 * 3600 * 1000;

/// First and longest wait between attempts to record events the journal refused.
const RECORD_RETRY_FIRST: std::time::Duration = std::time::Duration::from_millis(250);
const RECORD_RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(30);
/// Most messages recorded in one journal transaction.
const MAX_BATCH: usize = 256;
/// Most events enriched at once (each makes up to five Qlik Cloud API calls and holds its
/// script log). A burst waits its turn, in arrival order, instead of opening hundreds of
/// connections at once; alert delivery (which may wait out a channel's retries) is not limited.
const ENRICH_AT_ONCE: usize = 16;

/// What an operator alert says (see [`crate::notify::operator`]).
pub struct Notice {
    pub alert_id: String,
    pub problem: bool,
    pub title: &'static str,
    pub what: String,
    pub action: &'static str,
    pub subject: String,
    pub page: crate::notify::operator::Page,
}

/// The event field that should have said the reload's outcome.
fn unclear_field(r: &qlik_events::Reload) -> &'static str {
    if r.is_final {
        "data.status (with data.succeeded)"
    } else {
        "data.status"
    }
}

/// What the reloads API's `status` says of a reload: `None` while it is still running or
/// queued (ask again later).
fn api_outcome(status: Option<&str>) -> Option<ReloadOutcome> {
    match status? {
        "FAILED" | "EXCEEDED_LIMIT" => Some(ReloadOutcome::Failed),
        "SUCCEEDED" => Some(ReloadOutcome::Succeeded),
        "CANCELED" => Some(ReloadOutcome::Canceled),
        "QUEUED" | "RELOADING" | "CANCELING" => None,
        _ => Some(ReloadOutcome::Unknown),
    }
}

/// A configured tenant, ready to use.
pub struct Tenant {
    pub id: String,
    pub config: TenantConfig,
    pub api: QlikApi,
    verifier: Option<Verifier>,
}

impl Tenant {
    pub fn new(id: String, config: TenantConfig, api: QlikApi) -> Tenant {
        let verifier = config
            .webhook_secret
            .as_ref()
            .map(|s| Verifier::new(s, config.webhook_secret_previous.as_ref()));
        Tenant {
            id,
            config,
            api,
            verifier,
        }
    }
}

pub struct Pipeline {
    journal: Journal,
    tenants: HashMap<String, Tenant>,
    require_signature: bool,
    /// Events older than this (by their own time) are refused: the journal no longer holds
    /// what it would need to tell a replay from a new event (`journal.retentionDays`).
    retention_ms: i64,
    script_log_dir: Option<PathBuf>,
    script_log_layout: script_log::Layout,
    generic_urls: Vec<crate::config::GenericUrl>,
    time_zone: jiff::tz::TimeZone,
    notifier: Notifier,
    /// Newly recorded pending events, for the worker.
    new_pending: tokio::sync::mpsc::UnboundedSender<Entry>,
    new_pending_rx: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<Entry>>>,
    warned_tenants: Mutex<HashSet<String>>,
    /// Whether the "Butler copy received" warning was logged (once per run).
    warned_rewritten: std::sync::atomic::AtomicBool,
    /// Events being handled now, so the worker does not start them twice.
    in_flight: Mutex<HashSet<String>>,
    /// Told when `in_flight` becomes empty (for [`Pipeline::drain`]).
    idle: tokio::sync::Notify,
    /// Set at shutdown: no new event is started, and deliveries stop before their next attempt.
    closing: tokio::sync::watch::Sender<bool>,
    /// Permits to enrich, [`ENRICH_AT_ONCE`].
    enrich_slots: tokio::sync::Semaphore,
    final_outcome: FinalOutcome,
    /// Tenants known to send `reload.finished` (final outcomes), for `waitForFinalOutcome: auto`.
    sends_final: Mutex<HashSet<String>>,
    /// Per tenant, whether the watched webhook's definition includes `reload.finished` (what
    /// the watchdog read): it wins over what was seen.
    webhook_final: Mutex<HashMap<String, bool>>,
    /// Reloads (tenant, reload id) whose final outcome just arrived: their waiting attempts
    /// are decided now rather than at the end of their wait.
    wake: tokio::sync::mpsc::UnboundedSender<(String, String)>,
    wake_rx: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<(String, String)>>>,
    /// Failed attempts with a timer set for the end of their wait.
    waiting: Mutex<HashSet<String>>,
}

impl Pipeline {
    pub fn new(
        config: &Config,
        journal: Journal,
        tenants: Vec<Tenant>,
        alert_publisher: Option<Arc<dyn relay_mqtt::Publish>>,
    ) -> anyhow::Result<Arc<Pipeline>> {
        let (closing, closing_rx) = tokio::sync::watch::channel(false);
        let notifier = Notifier::new(
            journal.clone(),
            std::time::Duration::from_secs(config.give_up_secs),
            std::time::Duration::from_millis(config.retry_base_ms),
            alert_publisher,
            config.smtp.as_ref(),
        )?
        .stopped_by(closing_rx);
        let (new_pending, new_pending_rx) = tokio::sync::mpsc::unbounded_channel();
        let (wake, wake_rx) = tokio::sync::mpsc::unbounded_channel();
        Ok(Arc::new(Pipeline {
            final_outcome: config.final_outcome,
            sends_final: Mutex::new(HashSet::new()),
            webhook_final: Mutex::new(HashMap::new()),
            wake,
            wake_rx: Mutex::new(Some(wake_rx)),
            waiting: Mutex::new(HashSet::new()),
            notifier,
            new_pending,
            new_pending_rx: Mutex::new(Some(new_pending_rx)),
            in_flight: Mutex::new(HashSet::new()),
            idle: tokio::sync::Notify::new(),
            closing,
            enrich_slots: tokio::sync::Semaphore::new(ENRICH_AT_ONCE),
            journal,
            tenants: tenants.into_iter().map(|t| (t.id.clone(), t)).collect(),
            require_signature: config.require_signature,
            retention_ms: i64::from(config.retention_days) * DAY_MS,
            script_log_dir: config.script_log_dir.clone(),
            script_log_layout: config.script_log_layout,
            generic_urls: config.generic_urls.clone(),
            time_zone: config.time_zone.clone(),
            warned_tenants: Mutex::new(HashSet::new()),
            warned_rewritten: std::sync::atomic::AtomicBool::new(false),
        }))
    }

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
                if entry.event_type == RELOAD_FINISHED && entry.state != State::Rejected {
                    self.sends_final
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(entry.tenant_id.clone());
                    if let Some(reload_id) = &entry.reload_id {
                        let _ = self.wake.send((entry.tenant_id.clone(), reload_id.clone()));
                    }
                }
                if entry.state == State::Pending {
                    // Only fails when the worker is gone, i.e. at shutdown: the event stays
                    // pending in the journal and is resumed at the next start.
                    let _ = self.new_pending.send(entry);
                }
            }
        }
    }

    fn decide(&self, event: &Event<'_>, message: &Message) -> (State, Option<String>) {
        let Some(tenant) = self.tenants.get(event.tenant_id.as_ref()) else {
            crate::metrics::inc(&crate::metrics::METRICS.events_unknown_tenant);
            let mut warned = self
                .warned_tenants
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if warned.insert(event.tenant_id.to_string()) {
                tracing::warn!(tenant = %event.tenant_id, "event from a tenant that is not configured; recorded and skipped (warned once per tenant)");
            }
            return (State::Skipped, Some("tenant not configured".into()));
        };
        if self.require_signature {
            let verdict = match &tenant.verifier {
                Some(v) => v
                    .verify(
                        message.signature.as_deref().map(str::as_bytes),
                        &message.payload,
                    )
                    .map(|matched| {
                        if matched == qlik_events::Matched::Previous {
                            tracing::info!(event_id = %event.id, tenant = %event.tenant_id, "signed with the tenant's webhookSecretPrevious: finish the rotation in Qlik Cloud, then remove it");
                        }
                    })
                    .map_err(|e| e.to_string()),
                None => Err("no webhook secret for this tenant".into()),
            };
            if let Err(reason) = verdict {
                tracing::warn!(event_id = %event.id, tenant = %event.tenant_id, reason = %reason, "signature check failed; event rejected");
                return (State::Rejected, Some(format!("signature: {reason}")));
            }
        }
        if let Some(age_ms) = event.time.as_deref().and_then(age_ms) {
            if age_ms > self.retention_ms {
                let days = self.retention_ms / DAY_MS;
                tracing::warn!(event_id = %event.id, tenant = %event.tenant_id, time = event.time.as_deref().unwrap_or("-"), "event older than journal.retentionDays; rejected (a replay cannot be told from a new event)");
                return (
                    State::Rejected,
                    Some(format!("older than journal.retentionDays ({days} days)")),
                );
            }
        }
        match event.reload() {
            Some(Ok(r)) if r.is_failure() => (State::Pending, None),
            Some(Ok(r)) if r.outcome == ReloadOutcome::Unknown => {
                // Format drift (`"ERROR"`, `"Failed"`, a number): the reloads API says what
                // happened. Without a reload id there is nothing to ask.
                let field = unclear_field(&r);
                match &r.reload_id {
                    Some(_) => {
                        tracing::warn!(event_id = %event.id, event_type = %event.event_type, field, value = r.status.as_deref().unwrap_or("(absent)"), "the reload's outcome cannot be read from the event; asking Qlik Cloud's reloads API");
                        (
                            State::Pending,
                            Some(format!(
                                "reload outcome unclear ({field} is {}); asking the reloads API",
                                r.status
                                    .as_deref()
                                    .map(|s| format!("{s:?}"))
                                    .unwrap_or_else(|| "absent".into())
                            )),
                        )
                    }
                    None => {
                        tracing::warn!(event_id = %event.id, event_type = %event.event_type, field, value = r.status.as_deref().unwrap_or("(absent)"), "the reload's outcome cannot be read from the event, and it names no reload id to ask about; recorded, not alerted");
                        (
                            State::Recorded,
                            Some(format!("reload outcome unknown ({field}) and no reload id")),
                        )
                    }
                }
            }
            Some(Err(e)) => {
                tracing::warn!(event_id = %event.id, event_type = %event.event_type, reason = %e, "the reload cannot be read from the event; recorded, not alerted");
                (State::Recorded, Some(format!("reload unreadable: {e}")))
            }
            _ => (State::Recorded, None),
        }
    }

    /// Handles pending events: those left from before a restart, then each new one. Each
    /// event runs in its own task, so a slow alert channel for one does not hold up the next.
    pub async fn work(self: Arc<Self>) {
        let Some(mut new_pending) = self
            .new_pending_rx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        else {
            tracing::error!("the pipeline's worker was started twice");
            return;
        };
        // What a previous run left, then each new event as it is recorded; a rescan every
        // minute picks up anything an error left pending.
        let mut rescan = tokio::time::interval(std::time::Duration::from_secs(60));
        let Some(mut wake) = self
            .wake_rx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        else {
            return;
        };
        loop {
            tokio::select! {
                Some((tenant, reload)) = wake.recv() => match self.journal.reload_events(&tenant, &reload).await {
                    Ok(entries) => entries
                        .into_iter()
                        .filter(|e| e.state == State::Pending)
                        .for_each(|e| self.start(e)),
                    Err(e) => tracing::error!(error = %e, "cannot read the reload's events"),
                },
                _ = rescan.tick() => match self.journal.pending().await {
                    Ok(entries) => entries.into_iter().for_each(|e| self.start(e)),
                    Err(e) => tracing::error!(error = %e, "cannot read pending events"),
                },
                entry = new_pending.recv() => {
                    let Some(entry) = entry else { return };
                    self.start(entry);
                }
            }
        }
    }

    /// Alerts the operator on the tenant's channels about the safety net itself (the webhook
    /// watchdog, a refused API key), with the operator templates and without the channels' app
    /// rules. Each alert is delivered once (recorded under its id).
    pub async fn operator_alert(&self, tenant_id: &str, notice: Notice) {
        let Some(tenant) = self.tenants.get(tenant_id) else {
            return;
        };
        let alert = crate::notify::OperatorAlert::new(
            notice.alert_id,
            notice.problem,
            notice.title,
            notice.what,
            notice.action,
            notice.subject,
            &tenant.config,
            tenant_id,
            notice.page,
        );
        if let Err(e) = self
            .notifier
            .deliver_operator(&tenant.config.channels, &alert)
            .await
        {
            tracing::error!(alert_id = %alert.alert_id, error = %e, "cannot record the operator alert's deliveries");
        }
    }

    /// Takes a failed reload that reconciliation found and recorded: counted, logged, handled.
    pub fn reconciled(self: &Arc<Self>, entry: Entry) {
        crate::metrics::inc(&METRICS.events_received);
        // Attempts of the reload that wait for its final outcome are decided now.
        if let Some(reload_id) = &entry.reload_id {
            let _ = self.wake.send((entry.tenant_id.clone(), reload_id.clone()));
        }
        self.start(entry);
    }

    /// The API clients of the configured tenants, by tenant id (for reconciliation).
    pub fn tenant_apis(&self) -> Vec<(String, QlikApi)> {
        self.tenants
            .values()
            .map(|t| (t.id.clone(), t.api.clone()))
            .collect()
    }

    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// Handles `entry` in its own task, unless it is already being handled or the listener is
    /// stopping (then it stays pending in the journal for the next start).
    fn start(self: &Arc<Self>, entry: Entry) {
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
                me.clone().process(entry).await;
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

    async fn process(self: Arc<Self>, entry: Entry) {
        let Ok(event) = Event::parse(&entry.body) else {
            // Recorded events parsed before; a journal edited by hand could break that.
            let _ = self
                .journal
                .set_state(&entry.id, State::Done, Some("body no longer parses".into()))
                .await;
            return;
        };
        let (Some(tenant), Some(Ok(reload))) =
            (self.tenants.get(event.tenant_id.as_ref()), event.reload())
        else {
            let _ = self
                .journal
                .set_state(&entry.id, State::Done, Some("nothing to do".into()))
                .await;
            return;
        };
        // The event did not say clearly: the reloads API's status decides.
        let (reload, asked_note) = if reload.outcome == ReloadOutcome::Unknown {
            match self.ask_outcome(&entry, reload, tenant).await {
                Some(asked) => asked,
                None => return,
            }
        } else {
            (reload, None)
        };
        // One alert per reload: this event may wait for the final outcome, or not alert at all.
        let (note, attempt) = match self.one_alert(&entry, &reload).await {
            Ok(Decision::Alert { note, attempt }) => (note, attempt),
            Ok(Decision::Wait { until_ms }) => {
                self.wait_for_final(entry, until_ms).await;
                return;
            }
            Ok(Decision::Settled(note)) => {
                tracing::info!(event_id = %entry.id, reload_id = reload.reload_id.as_deref().unwrap_or("-"), note = %note, "no alert for this event");
                if let Err(e) = self
                    .journal
                    .set_state(&entry.id, State::Done, Some(note))
                    .await
                {
                    tracing::error!(event_id = %entry.id, error = %e, "cannot mark the event done; will retry");
                }
                return;
            }
            Err(e) => {
                tracing::error!(event_id = %entry.id, error = %e, "cannot read the reload's events; will retry");
                return;
            }
        };
        let note = if event.source.as_deref() == Some(super::reconcile::SOURCE) {
            Some(super::reconcile::alert_note(entry.note.as_deref()))
        } else if reload.reload_id.is_none() {
            Some("This event names no reload id, so it cannot be matched with Qlik Cloud's record of the reload: reconciliation may alert the same failure again.".to_owned())
        } else {
            asked_note.or(note)
        };
        let attempt = match attempt {
            Some(id) => self.journal.get(&id).await.ok().flatten(),
            None => None,
        };
        let attempt_event = attempt.as_ref().and_then(|a| Event::parse(&a.body).ok());
        // After a restart, the alert data made before is reused: the same alert, no new lookups.
        let stored = entry
            .enrichment
            .as_deref()
            .and_then(|json| serde_json::from_str::<AlertData>(json).ok());
        let data = match stored {
            Some(data) => data,
            None => {
                // Only fails once the semaphore is closed, which it never is.
                let Ok(_slot) = self.enrich_slots.acquire().await else {
                    return;
                };
                let mut data = self
                    .alert_data(&entry, &event, attempt_event.as_ref(), &reload, tenant)
                    .await;
                data.alert_note = note.unwrap_or_default();
                if let Err(e) = self
                    .journal
                    .set_enrichment(&entry.id, serde_json::to_string(&data).unwrap_or_default())
                    .await
                {
                    tracing::error!(event_id = %entry.id, error = %e, "cannot store the alert data; will retry");
                    return;
                }
                data
            }
        };
        if let Err(e) = self
            .notifier
            .deliver_all(&entry.id, &tenant.config.channels, &data)
            .await
        {
            tracing::error!(event_id = %entry.id, error = %e, "cannot record alert deliveries; will retry");
            return;
        }
        if *self.closing.borrow() {
            // Deliveries may have stopped before their next attempt: then the event stays
            // pending, and the next start sends what is not final yet.
            let all_final = self
                .journal
                .deliveries(&entry.id)
                .await
                .is_ok_and(|d| d.iter().all(|d| d.state.is_final()));
            if !all_final {
                return;
            }
        }
        if let Err(e) = self.journal.set_state(&entry.id, State::Done, None).await {
            tracing::error!(event_id = %entry.id, error = %e, "cannot mark the event done; will retry");
        }
    }

    /// For an event whose outcome is unclear: the reload as the reloads API reports it (a
    /// final outcome), with a note for the alert; `None` when there is nothing to alert now
    /// (settled, or asked again at the next rescan).
    async fn ask_outcome(
        &self,
        entry: &Entry,
        reload: qlik_events::Reload,
        tenant: &Tenant,
    ) -> Option<(qlik_events::Reload, Option<String>)> {
        let reload_id = reload.reload_id.clone()?;
        let field = unclear_field(&reload);
        let info = match tenant.api.reload(&reload_id).await {
            Ok(info) => info,
            Err(e) => {
                tracing::warn!(event_id = %entry.id, reload_id = %reload_id, error = %e, "cannot ask the reloads API for the outcome the event did not say; asking again at the next rescan (reconciliation also covers it)");
                return None;
            }
        };
        let status = info.status.as_deref();
        let said = status.unwrap_or("(no status)");
        let outcome = match api_outcome(status) {
            None => {
                tracing::info!(event_id = %entry.id, reload_id = %reload_id, status = said, "the reload is still running; asking the reloads API again at the next rescan");
                return None;
            }
            Some(ReloadOutcome::Succeeded) | Some(ReloadOutcome::Canceled) => {
                let why = format!(
                    "the event's {field} was unclear; the reloads API says {said}: no alert"
                );
                tracing::info!(event_id = %entry.id, reload_id = %reload_id, "{why}");
                if let Err(e) = self
                    .journal
                    .set_state(&entry.id, State::Done, Some(why))
                    .await
                {
                    tracing::error!(event_id = %entry.id, error = %e, "cannot mark the event done; will retry");
                }
                return None;
            }
            Some(outcome) => outcome,
        };
        let note = match outcome {
            ReloadOutcome::Failed => format!("The event's {field} could not be read ({}); Qlik Cloud's reloads API says the reload ended {said}.", reload.status.as_deref().unwrap_or("absent")),
            _ => format!("Neither the event ({field}: {}) nor the reloads API ({said}) says clearly how the reload ended; alerted so that a failure is not missed.", reload.status.as_deref().unwrap_or("absent")),
        };
        let asked = qlik_events::Reload {
            status: info.status.clone(),
            outcome: ReloadOutcome::Failed,
            is_final: true,
            ..reload
        };
        Some((asked, Some(note)))
    }

    /// What [`one_alert::decide`] says for this failed event, with the reload claimed when it
    /// says alert (so that no other event of the reload alerts).
    async fn one_alert(
        &self,
        entry: &Entry,
        reload: &qlik_events::Reload,
    ) -> Result<Decision, journal::JournalError> {
        let Some(reload_id) = reload.reload_id.as_deref() else {
            tracing::warn!(event_id = %entry.id, "the event names no reload id: alerted on its own");
            return Ok(Decision::Alert {
                note: None,
                attempt: None,
            });
        };
        let tenant_id = entry.tenant_id.as_str();
        let claimed_by = self.journal.reload_claim(tenant_id, reload_id).await?;
        let others: Vec<Seen> = self
            .journal
            .reload_events(tenant_id, reload_id)
            .await?
            .iter()
            .filter(|e| e.id != entry.id)
            .filter_map(Seen::of)
            .collect();
        let waits = !reload.is_final
            && match self.final_outcome.wait {
                WaitForFinal::Always => true,
                WaitForFinal::Never => false,
                WaitForFinal::Auto => self.sends_final(tenant_id).await?,
            };
        let me = Seen {
            event_id: entry.id.clone(),
            is_final: reload.is_final,
            outcome: reload.outcome,
        };
        let decision = one_alert::decide(&one_alert::Situation {
            me: &me,
            reload_id,
            others: &others,
            claimed_by: claimed_by.as_deref(),
            wait: waits.then_some((entry.received_at, self.final_outcome.wait_secs)),
            now_ms: journal::now_ms(),
        });
        if let Decision::Alert { .. } = decision {
            let holder = self
                .journal
                .claim_reload(tenant_id, reload_id, &entry.id)
                .await?;
            if holder != entry.id {
                return Ok(Decision::Settled(one_alert::alerted_with(
                    reload_id, &holder,
                )));
            }
        }
        Ok(decision)
    }

    /// Whether the tenant's webhook sends final outcomes (`reload.finished`): seen in this run,
    /// or in the journal (those found by reconciliation say nothing about the webhook).
    async fn sends_final(&self, tenant_id: &str) -> Result<bool, journal::JournalError> {
        let defined = self
            .webhook_final
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(tenant_id)
            .copied();
        if let Some(defined) = defined {
            return Ok(defined);
        }
        let known = |s: &Self| {
            s.sends_final
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(tenant_id)
        };
        if known(self) {
            return Ok(true);
        }
        let seen = self
            .journal
            .has_event_type(tenant_id, RELOAD_FINISHED, super::reconcile::TOPIC)
            .await?;
        if seen {
            self.sends_final
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(tenant_id.to_owned());
        }
        Ok(seen)
    }

    /// What the watched webhook's definition says: whether it sends final outcomes
    /// (`com.qlik.v1.reload.finished`). With `waitForFinalOutcome: auto`, failed attempts wait
    /// for them when it does, from the first event on (not only once one was seen).
    pub fn webhook_sends_final(&self, tenant_id: &str, sends: bool) {
        let before = self
            .webhook_final
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(tenant_id.to_owned(), sends);
        if before != Some(sends) && self.final_outcome.wait == WaitForFinal::Auto {
            if sends {
                tracing::info!(tenant = tenant_id, wait_seconds = self.final_outcome.wait_secs, "the webhook sends reloads' final outcomes (com.qlik.v1.reload.finished): a failed attempt waits for its reload's final outcome before alerting");
            } else {
                tracing::info!(tenant = tenant_id, "the webhook does not send reloads' final outcomes (com.qlik.v1.reload.finished): each failed attempt alerts at once");
            }
        }
    }

    /// Keeps a failed attempt pending until `until_ms` (or until the reload's final outcome
    /// arrives), then decides again. The wait is the event's receive time plus the bound, so a
    /// restart resumes it where it was.
    async fn wait_for_final(self: Arc<Self>, entry: Entry, until_ms: i64) {
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

    /// Enriches the failure, stores its script log, and builds the alert data.
    async fn alert_data(
        &self,
        entry: &Entry,
        event: &Event<'_>,
        attempt: Option<&Event<'_>>,
        reload: &qlik_events::Reload,
        tenant: &Tenant,
    ) -> AlertData {
        // The script log is streamed to its file as it downloads (never whole in memory).
        let spool =
            self.script_log_dir.as_ref().and_then(|dir| {
                let of = script_log::LogOf {
                    tenant_id: &event.tenant_id,
                    time: event
                        .timestamp()
                        .unwrap_or_else(|_| time::OffsetDateTime::now_utc()),
                    app_id: reload.app_id.as_deref(),
                    reload_id: reload.reload_id.as_deref(),
                };
                script_log::spool(dir, self.script_log_layout, &of)
            .map_err(|e| tracing::warn!(event_id = %entry.id, error = %e, "script log not stored"))
            .ok()
            });
        let enrichment: Enrichment = enrich::enrich(
            &tenant.api,
            event,
            reload,
            spool.as_ref().map(|s| s.tmp.as_path()),
        )
        .await;
        for error in &enrichment.errors {
            tracing::warn!(event_id = %entry.id, error = %error, "Qlik Cloud lookup failed; the alert will lack it");
        }
        if let Some(spool) = spool {
            let downloaded = enrichment.script_log.is_some();
            let stored = tokio::task::spawn_blocking(move || {
                if downloaded {
                    script_log::commit(&spool).map(Some)
                } else {
                    // A download that failed part-way leaves no half file behind.
                    let _ = std::fs::remove_file(&spool.tmp);
                    Ok(None)
                }
            })
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
            match stored {
                Ok(Some(path)) => {
                    tracing::info!(event_id = %entry.id, path = %path.display(), "script log stored")
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(event_id = %entry.id, error = %e, "script log not stored"),
            }
        }
        let channels = &tenant.config.channels;
        let head = channels
            .iter()
            .map(|c| c.message.head_lines)
            .max()
            .unwrap_or(DEFAULT_LOG_LINES);
        let tail = channels
            .iter()
            .map(|c| c.message.tail_lines)
            .max()
            .unwrap_or(DEFAULT_LOG_LINES);
        let inputs = alert_data::Inputs {
            event,
            attempt,
            reload,
            tenant: &tenant.config,
            enrichment: &enrichment,
            generic_urls: &self.generic_urls,
            time_zone: &self.time_zone,
        };
        let data = alert_data::build(&inputs, head, tail);
        tracing::info!(
            event_id = %entry.id,
            app = %data.app_name,
            app_id = %data.app_id,
            reload_id = %data.reload_id,
            error = %data.error_message,
            "reload failure enriched; alert data ready"
        );
        data
    }

    /// Deletes finished events older than `retention_days`, now and then daily.
    pub async fn prune(self: Arc<Self>) {
        let retention_days = self.retention_ms / DAY_MS;
        loop {
            match self
                .journal
                .prune(journal::now_ms() - self.retention_ms)
                .await
            {
                Ok(0) => {}
                Ok(n) => tracing::info!(deleted = n, retention_days, "journal pruned"),
                Err(e) => tracing::warn!(error = %e, "journal pruning failed"),
            }
            tokio::time::sleep(std::time::Duration::from_secs(24 * 3600)).await;
        }
    }
}
