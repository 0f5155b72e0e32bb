//! Reconciliation: failed reloads that Qlik Cloud knows of but whose outcome never arrived over
//! the webhook path (a disabled webhook, a forwarder down, a broker that dropped the message, a
//! listener session that expired, a final outcome lost while its failed attempt arrived, an
//! event whose outcome could not be read).
//!
//! Why: every link must hold for an alert to arrive, and when one drops an event nothing
//! notices: the forwarder answered 200 and Qlik considers it delivered. So the listener also
//! asks Qlik Cloud itself, per tenant, at start-up and every `interval`: the reloads API
//! (`GET /api/v1/reloads?filter=(status eq "FAILED") OR (status eq "EXCEEDED_LIMIT")&log=false`;
//! Qlik filters on status server-side, not on time; tier 1, 1,000 requests a minute).
//!
//! How: a sliding window, not a watermark. Each run reads every page of the list (Qlik
//! promises no order, so no page can be skipped), keeps the reloads that ended within the last
//! `look_back` and more than `grace` ago (by their `endTime`, else `creationTime`), and records
//! each one whose outcome the journal has not decided. The journal's per-reload claim does the
//! de-duplication, so a reload seen by many runs is alerted once.
//!
//! Promises (the bound docs/reliability.md states):
//! - a failed reload whose outcome did not arrive over the webhook is alerted within `grace` +
//!   `interval` (+ the run's own time) after it ended, provided Qlik lists it within `look_back`
//!   of its end (listing lag or clock skew up to `look_back` − `grace` − `interval` is covered),
//!   whatever the list's order and however many pages it has (up to [`MAX_PAGES`]: beyond that
//!   the run says it is incomplete);
//! - "decided" means: the reload is claimed by an alert, or the journal holds its final outcome
//!   read clearly; a reload held only as a failed attempt waiting for its final outcome, or as
//!   an event whose outcome could not be read, is settled from the API's status at the next run;
//! - at most one alert per reload (tenant + reload id), whichever way it comes first; reloads of
//!   two tenants with the same id are two reloads;
//! - what the webhook path missed is said in the event's note (`history`) and in the alert;
//! - a failing API costs a warning and a metric, and the next run tries again; a refused API key
//!   is reported to the operator ([`crate::watchdog::Report::api_key`]); it never stops the MQTT
//!   path.

use super::one_alert::Seen;
use crate::journal::{self, Entry, Journal, State};
use crate::metrics::METRICS;
use crate::qlik_api::{segment, ApiError, QlikApi};
use crate::watchdog::{key_refused, Report};
use qlik_events::event::RELOAD_FINISHED;
use qlik_events::ReloadOutcome;
use serde::Deserialize;
use serde_json::json;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// The `source` of an event made by reconciliation.
pub const SOURCE: &str = "qlik-listener/reconcile";
/// The `topic` recorded with it.
pub const TOPIC: &str = "(reconciliation)";
/// Most pages read in one run (20,000 failed reloads at 100 a page).
pub const MAX_PAGES: usize = 200;

use crate::config::Reconcile as Settings;

/// A reload as the reloads API lists it (the fields we use).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default)]
pub struct ListedReload {
    pub id: String,
    pub app_id: Option<String>,
    pub status: Option<String>,
    #[serde(rename = "type")]
    pub trigger: Option<String>,
    pub partial: Option<bool>,
    pub creation_time: Option<String>,
    pub start_time: Option<String>,
    pub end_time: Option<String>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
}

impl ListedReload {
    /// When it ended (or, failing that, was created), unix ms.
    fn ended_ms(&self) -> Option<i64> {
        let t = self.end_time.as_deref().or(self.creation_time.as_deref())?;
        let t = OffsetDateTime::parse(t, &Rfc3339).ok()?;
        Some((t.unix_timestamp_nanos() / 1_000_000) as i64)
    }
}

/// The event recorded for a failed reload found by reconciliation: a CloudEvents
/// `com.qlik.v1.reload.finished` as Qlik would have sent it, with our `source`.
pub fn event_for(tenant_id: &str, r: &ListedReload) -> Vec<u8> {
    let body = json!({
        "specversion": "1.0",
        "id": event_id(tenant_id, &r.id),
        "type": RELOAD_FINISHED,
        "source": SOURCE,
        "time": r.end_time.as_deref().or(r.creation_time.as_deref()),
        "datacontenttype": "application/json",
        "tenantid": tenant_id,
        "toplevelresourceid": r.app_id,
        "data": {
            "id": r.id, "appId": r.app_id, "status": r.status, "succeeded": false,
            "type": r.trigger, "partial": r.partial, "creationTime": r.creation_time,
            "startTime": r.start_time, "endTime": r.end_time,
            "errorCode": r.error_code, "errorMessage": r.error_message,
        },
    });
    serde_json::to_vec(&body).unwrap_or_default()
}

/// The id of the event reconciliation records for a reload: per tenant, since two tenants'
/// reloads may share an id.
pub fn event_id(tenant_id: &str, reload_id: &str) -> String {
    format!("reconciled-{tenant_id}-{reload_id}")
}

/// The journal entry for it (pending: the pipeline enriches and alerts it); `missed` says why
/// the webhook path did not bring the outcome.
pub fn entry_for(tenant_id: &str, r: &ListedReload, now_ms: i64, missed: &Missed) -> Entry {
    Entry {
        id: event_id(tenant_id, &r.id),
        event_type: RELOAD_FINISHED.to_owned(),
        tenant_id: tenant_id.to_owned(),
        app_id: r.app_id.clone(),
        reload_id: Some(r.id.clone()),
        reload_status: r.status.clone(),
        topic: TOPIC.to_owned(),
        received_at: now_ms,
        body: event_for(tenant_id, r),
        state: State::Pending,
        note: Some(format!("{NOTE_PREFIX}{missed}")),
        enrichment: None,
    }
}

/// How the journal's note on a reconciled event begins.
const NOTE_PREFIX: &str = "found by reconciliation: ";

/// Why the webhook path did not bring a reload's outcome, as far as the journal tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Missed {
    /// No event of the reload arrived.
    Nothing,
    /// A failed attempt arrived (this event), the final outcome did not.
    FinalOutcome(String),
    /// An event arrived whose outcome could not be read (this event).
    Unreadable(String),
}

impl std::fmt::Display for Missed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Missed::Nothing => write!(f, "never received over the webhook"),
            Missed::FinalOutcome(id) => write!(
                f,
                "its failed attempt arrived (event {id}) but its final outcome never did"
            ),
            Missed::Unreadable(id) => write!(
                f,
                "an event of it arrived (event {id}) but did not say the outcome clearly"
            ),
        }
    }
}

/// Whether the journal has decided the reload (`None`), or why not. Pure: `claimed` says whether
/// an alert claimed it, `seen` is the reload's recorded events.
pub fn undecided(claimed: bool, seen: &[Seen]) -> Option<Missed> {
    if claimed {
        return None;
    }
    let clear = |s: &&Seen| s.outcome != ReloadOutcome::Unknown;
    if seen.iter().filter(|s| s.is_final).any(|s| clear(&s)) {
        return None;
    }
    if let Some(unclear) = seen.iter().find(|s| s.outcome == ReloadOutcome::Unknown) {
        return Some(Missed::Unreadable(unclear.event_id.clone()));
    }
    if let Some(attempt) = seen
        .iter()
        .rev()
        .find(|s| !s.is_final && s.outcome == ReloadOutcome::Failed)
    {
        return Some(Missed::FinalOutcome(attempt.event_id.clone()));
    }
    // Only successful or canceled attempts: the API says the reload failed after all.
    Some(match seen.last() {
        Some(s) => Missed::FinalOutcome(s.event_id.clone()),
        None => Missed::Nothing,
    })
}

/// The alert's note for a reconciled event, from the note it was recorded with.
pub fn alert_note(recorded: Option<&str>) -> String {
    let why = recorded
        .and_then(|n| n.strip_prefix(NOTE_PREFIX))
        .unwrap_or("never received over the webhook");
    format!("Not received over the webhook: found by reconciliation with Qlik Cloud's reloads API ({why}). Check the webhook in Qlik Cloud (qlik-listener webhook list), the forwarder and the broker.")
}

/// Which listed reloads a run looks at: those that ended in `[from_ms, to_ms]` (or say no
/// time). Pure.
pub fn in_window(r: &ListedReload, from_ms: i64, to_ms: i64) -> bool {
    !r.id.is_empty() && r.ended_ms().is_none_or(|t| (from_ms..=to_ms).contains(&t))
}

/// What one run did.
#[derive(Debug, Default)]
pub struct Run {
    /// Recorded now, for the pipeline to alert.
    pub missed: Vec<Entry>,
    /// Failed reloads in the window.
    pub in_window: usize,
    /// Why the list may lack some (pages beyond the bound, a refused next link).
    pub incomplete: Option<String>,
}

/// One reconciliation run for a tenant: records what was missed.
pub async fn run_once(
    journal: &Journal,
    tenant_id: &str,
    api: &QlikApi,
    settings: Settings,
) -> anyhow::Result<Run> {
    let now = journal::now_ms();
    let to_ms = now - settings.grace.as_millis() as i64;
    let from_ms = now - settings.look_back.as_millis() as i64;
    let filter = segment(r#"(status eq "FAILED") OR (status eq "EXCEEDED_LIMIT")"#);
    let listing = api
        .list_all::<ListedReload>(
            &format!("/api/v1/reloads?filter={filter}&log=false&limit=100"),
            MAX_PAGES,
        )
        .await?;
    let mut run = Run {
        incomplete: listing.incomplete,
        ..Run::default()
    };
    let mut done = std::collections::HashSet::new();
    for r in listing
        .items
        .iter()
        .filter(|r| in_window(r, from_ms, to_ms))
    {
        // A page boundary that moved between requests can list one reload twice.
        if !done.insert(r.id.as_str()) {
            continue;
        }
        run.in_window += 1;
        let claimed = journal.reload_claim(tenant_id, &r.id).await?.is_some();
        let seen: Vec<Seen> = if claimed {
            Vec::new()
        } else {
            journal
                .reload_events(tenant_id, &r.id)
                .await?
                .iter()
                .filter_map(Seen::of)
                .collect()
        };
        let Some(missed) = undecided(claimed, &seen) else {
            continue;
        };
        let entry = entry_for(tenant_id, r, now, &missed);
        if journal.record(entry.clone()).await? == journal::Recorded::New {
            tracing::warn!(tenant = tenant_id, reload_id = %r.id, app_id = r.app_id.as_deref().unwrap_or("-"), ended = r.end_time.as_deref().unwrap_or("-"), why = %missed, "failed reload found by reconciliation: its outcome never arrived over the webhook; alerting it now");
            run.missed.push(entry);
        }
    }
    Ok(run)
}

/// Runs reconciliation for a tenant now and then every `settings.interval`, handing what was
/// missed to `found`.
pub async fn run(
    journal: Journal,
    tenant_id: String,
    api: QlikApi,
    settings: Settings,
    report: std::sync::Arc<dyn Report>,
    found: impl Fn(Entry) + Send,
) {
    let mut failing = 0u32;
    let mut said_incomplete = false;
    loop {
        match run_once(&journal, &tenant_id, &api, settings).await {
            Ok(run) => {
                crate::metrics::inc(&METRICS.reconcile_runs);
                METRICS.reconciled(&tenant_id, run.missed.len());
                report.api_key(&tenant_id, None);
                if failing > 0 {
                    tracing::info!(tenant = %tenant_id, failed_runs = failing, "reconciliation with Qlik Cloud works again");
                    failing = 0;
                }
                match &run.incomplete {
                    Some(why) if !said_incomplete => {
                        said_incomplete = true;
                        tracing::warn!(tenant = %tenant_id, reason = %why, in_window = run.in_window, "reconciliation could not read Qlik Cloud's whole list of failed reloads; what it read is handled (said once while it lasts)");
                    }
                    Some(_) => {}
                    None => said_incomplete = false,
                }
                run.missed.into_iter().for_each(&found);
            }
            Err(e) => {
                crate::metrics::inc(&METRICS.reconcile_failures);
                failing += 1;
                let refused = e
                    .downcast_ref::<ApiError>()
                    .and_then(|e| key_refused(e, "reconciling failed reloads"));
                // Once when it starts failing, then once an hour or so: not at every run.
                let runs_per_hour = (3600 / settings.interval.as_secs().max(1)).max(1) as u32;
                if failing == 1 || failing.is_multiple_of(runs_per_hour) {
                    tracing::warn!(tenant = %tenant_id, failed_runs = failing, error = %format!("{e:#}"), "reconciliation with Qlik Cloud failed; trying again at every interval (said again hourly while it fails)");
                } else {
                    tracing::debug!(tenant = %tenant_id, error = %format!("{e:#}"), "reconciliation failed again");
                }
                if let Some(problem) = refused {
                    report.api_key(&tenant_id, Some(problem));
                }
            }
        }
        tokio::time::sleep(settings.interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missed_reload_becomes_a_final_failure_event() {
        let r = ListedReload {
            id: "r9".into(),
            app_id: Some("a9".into()),
            status: Some("EXCEEDED_LIMIT".into()),
            end_time: Some("2026-11-21T02:00:41Z".into()),
            error_message: Some("Out of memory".into()),
            ..ListedReload::default()
        };
        let e = entry_for("T", &r, 5, &Missed::Nothing);
        let event = qlik_events::Event::parse(&e.body).unwrap();
        assert_eq!(event.id, "reconciled-T-r9");
        assert_eq!(
            e.note.as_deref(),
            Some("found by reconciliation: never received over the webhook")
        );
        assert_eq!(event.source.as_deref(), Some(SOURCE));
        let reload = event.reload().unwrap().unwrap();
        assert!(reload.is_final && reload.is_failure(), "{reload:?}");
        assert_eq!(reload.reload_id.as_deref(), Some("r9"));
        assert_eq!(reload.app_id.as_deref(), Some("a9"));
        assert_eq!(
            (e.state, e.reload_id.as_deref()),
            (State::Pending, Some("r9"))
        );
        assert_eq!(r.ended_ms(), Some(1_795_226_441_000));
    }

    fn seen(id: &str, is_final: bool, outcome: ReloadOutcome) -> Seen {
        Seen {
            event_id: id.into(),
            is_final,
            outcome,
        }
    }

    #[test]
    fn only_a_claimed_or_clearly_final_reload_is_decided() {
        use ReloadOutcome::*;
        assert_eq!(undecided(true, &[]), None);
        assert_eq!(undecided(false, &[]), Some(Missed::Nothing));
        // A failed attempt waiting for its final outcome is not decided (before: "known").
        assert_eq!(
            undecided(
                false,
                &[seen("a1", false, Failed), seen("a2", false, Failed)]
            ),
            Some(Missed::FinalOutcome("a2".into()))
        );
        // An event whose outcome could not be read is not decided (before: "known").
        assert_eq!(
            undecided(false, &[seen("x", true, Unknown)]),
            Some(Missed::Unreadable("x".into()))
        );
        for outcome in [Succeeded, Canceled, Failed] {
            assert_eq!(
                undecided(false, &[seen("a", false, Failed), seen("f", true, outcome)]),
                None,
                "{outcome:?}"
            );
        }
        let said = Missed::FinalOutcome("a2".into()).to_string();
        assert_eq!(
            said,
            "its failed attempt arrived (event a2) but its final outcome never did"
        );
        let note = alert_note(Some(&format!("{NOTE_PREFIX}{said}")));
        assert!(note.starts_with("Not received over the webhook: found by reconciliation with Qlik Cloud's reloads API (its failed attempt arrived"), "{note}");
    }

    #[test]
    fn the_window_is_by_end_time_and_keeps_reloads_without_one() {
        let at = |end: Option<&str>| ListedReload {
            id: "r".into(),
            end_time: end.map(str::to_owned),
            ..ListedReload::default()
        };
        let ms = |t: &str| at(Some(t)).ended_ms().unwrap();
        let (from, to) = (ms("2026-12-03T04:00:00Z"), ms("2026-12-03T05:00:00Z"));
        assert!(in_window(&at(Some("2026-12-03T04:30:00Z")), from, to));
        assert!(in_window(&at(Some("2026-12-03T04:00:00Z")), from, to));
        assert!(!in_window(&at(Some("2026-12-03T03:59:59Z")), from, to));
        assert!(
            !in_window(&at(Some("2026-12-03T05:00:01Z")), from, to),
            "within the grace"
        );
        assert!(in_window(&at(None), from, to));
        assert!(!in_window(&ListedReload::default(), from, to), "no id");
    }
}
