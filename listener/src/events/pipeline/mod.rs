//! What happens to each event: [`intake`] (normalise, decide its state with the pure `admit`,
//! record, acknowledge), the [`worker`] (which pending event is handled when, and stopping),
//! and here the handler: for a reload failure, decide whether it alerts (one alert per reload),
//! enrich it from the Qlik Cloud API, and hand the alert data to the notifier.
//!
//! Promises of the handler (design.md §6):
//! - an event id is handled once, however often it is delivered;
//! - one alert per failed reload, not per event ([`super::one_alert`]): a failed attempt waits
//!   for the reload's final outcome when the tenant sends it, and the wait survives restarts;
//! - an event whose outcome it cannot read is decided by the reloads API's status;
//! - an event is marked done only once every delivery is final (at shutdown, one whose
//!   deliveries were stopped stays pending for the next start);
//! - after a restart the alert data made before is reused: the same alert, no new lookups.

mod intake;
mod worker;

pub use worker::Worker;

use super::alert_data::{self, AlertData};
use super::enrich;
use super::enrich::Enrichment;
use super::one_alert::{self, Decision, Seen};
use crate::config::{Config, FinalOutcome, TenantConfig, WaitForFinal};
use crate::journal::{self, Entry, Journal, State};
use crate::metrics::METRICS;
use crate::notify::Notifier;
use crate::qlik_api::QlikApi;
use crate::script_log;
use intake::unclear_field;
use qlik_events::event::RELOAD_FINISHED;
use qlik_events::{Event, ReloadOutcome, Verifier};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Script-log lines kept in the alert data when no channel asks for more.
const DEFAULT_LOG_LINES: usize = 15;

/// What the alert of a test event says (`qlik-webhook send-test-event`).
const TEST_NOTE: &str = "This is a test event from qlik-webhook send-test-event: the path from the forwarder to this channel works. No reload failed.";
pub(crate) const DAY_MS: i64 = 24 * 3600 * 1000;

/// First and longest wait between attempts to record events the journal refused.
const RECORD_RETRY_FIRST: std::time::Duration = std::time::Duration::from_millis(250);
const RECORD_RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(30);
/// Most messages recorded in one journal transaction.
const MAX_BATCH: usize = 256;
/// Most events enriched at once (each makes up to five Qlik Cloud API calls and holds its
/// script log). A burst waits its turn, in arrival order, instead of opening hundreds of
/// connections at once; alert delivery (which may wait out a channel's retries) is not limited.
const ENRICH_AT_ONCE: usize = 16;

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
    /// Failed attempts with a timer set for the end of their wait.
    waiting: Mutex<HashSet<String>>,
    /// How often the journal is scanned for pending events (with a shared journal: half a
    /// lease, so the events of a listener that died are taken over soon after its lease).
    rescan: std::time::Duration,
}

impl Pipeline {
    pub fn new(
        config: &Config,
        journal: Journal,
        tenants: Vec<Tenant>,
        alert_publisher: Option<Arc<dyn relay_mqtt::Publish>>,
    ) -> anyhow::Result<(Arc<Pipeline>, Worker)> {
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
        let pipeline = Arc::new(Pipeline {
            final_outcome: config.final_outcome,
            sends_final: Mutex::new(HashSet::new()),
            webhook_final: Mutex::new(HashMap::new()),
            wake,
            waiting: Mutex::new(HashSet::new()),
            rescan: match &config.shared_journal {
                Some(shared) => std::time::Duration::from_millis(shared.lease_secs * 500),
                None => std::time::Duration::from_secs(60),
            },
            notifier,
            new_pending,
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
        });
        let worker = Worker {
            new_pending: new_pending_rx,
            wake: wake_rx,
        };
        Ok((pipeline, worker))
    }

    /// Alerts the operator on the tenant's channels about the safety net itself (the webhook
    /// watchdog, a refused API key), with the operator templates and without the channels' app
    /// rules. Each alert is delivered once (recorded under its id).
    pub async fn operator_alert(&self, tenant_id: &str, notice: crate::notify::operator::Notice) {
        let Some(tenant) = self.tenants.get(tenant_id) else {
            return;
        };
        let alert = crate::notify::OperatorAlert::new(notice, &tenant.config, tenant_id);
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
                data.alert_note = match note {
                    Some(note) => note,
                    None if event.is_test() => TEST_NOTE.to_owned(),
                    None => String::new(),
                };
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
        // With a shared journal, the event must still be this listener's: its lease may have
        // run out while it was busy, and another listener taken it over.
        match self.journal.take(&entry.id).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(event_id = %entry.id, "the event's lease ran out and another listener took it over; leaving its alerts to that one");
                return;
            }
            Err(e) => {
                tracing::error!(event_id = %entry.id, error = %e, "cannot renew the event's lease; will retry");
                return;
            }
        }
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

    /// What [`one_alert::decide_and_claim`] says for this failed event: whether it waits for the
    /// final outcome is the pipeline's to know.
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
        let wait = waits.then_some((entry.received_at, self.final_outcome.wait_secs));
        one_alert::decide_and_claim(&self.journal, &me, tenant_id, reload_id, wait).await
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

    /// Enriches the failure, stores its script log, and builds the alert data.
    async fn alert_data(
        &self,
        entry: &Entry,
        event: &Event<'_>,
        attempt: Option<&Event<'_>>,
        reload: &qlik_events::Reload,
        tenant: &Tenant,
    ) -> AlertData {
        let store = self.script_log_dir.as_deref().map(|dir| enrich::LogStore {
            dir,
            layout: self.script_log_layout,
        });
        let test = event.is_test();
        let enrichment: Enrichment = if test {
            // Its app and reload are made up: asking Qlik Cloud would only fail (404s).
            tracing::info!(event_id = %entry.id, "a test event (qlik-webhook send-test-event): alerted as a test, without Qlik Cloud lookups");
            Enrichment::default()
        } else {
            enrich::enrich_and_store(&entry.id, &tenant.api, event, reload, store).await
        };
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
        let mut data = alert_data::build(&inputs, head, tail);
        if test {
            data.alert_title = format!("TEST: {}", data.alert_title);
            data.app_owner_name = "(a test event: no app, no owner)".to_owned();
        }
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
