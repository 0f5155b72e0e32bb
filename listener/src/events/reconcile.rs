//! Reconciliation: failed reloads that Qlik Cloud knows of but that never arrived over the
//! webhook path (a disabled webhook, a forwarder down, a broker that dropped the message, a
//! listener session that expired).
//!
//! Why: every link must hold for an alert to arrive, and when one drops an event nothing
//! notices: the forwarder answered 200 and Qlik considers it delivered. So the listener also
//! asks Qlik Cloud itself, per tenant, at start-up and every `interval`: the reloads API
//! (`GET /api/v1/reloads?filter=status eq "FAILED"…&log=false`, newest first, 100 a page; tier 1,
//! 1,000 requests a minute) lists the tenant's failed reloads, and each one whose reload id the
//! journal does not hold becomes an event: recorded (`reconciled-<reloadId>`, marked as found
//! by reconciliation), enriched and alerted like any other, once.
//!
//! Promises:
//! - at most one alert per reload, whichever way it comes first (the journal's reload claim);
//! - a reload that ended less than `grace` ago is left to the webhook path (its events may be
//!   on their way), and so is one still running or retrying (not `FAILED` yet);
//! - the watermark is kept in the journal: a restart carries on where the last run ended, and
//!   a first start looks back `look_back`;
//! - a failing API costs a warning and a metric, and the next run tries again; it never stops
//!   the MQTT path.

use crate::journal::{self, Entry, Journal, State};
use crate::metrics::METRICS;
use crate::qlik_api::{segment, ApiError, QlikApi};
use qlik_events::event::RELOAD_FINISHED;
use serde::Deserialize;
use serde_json::json;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// The `source` of an event made by reconciliation.
pub const SOURCE: &str = "qlik-listener/reconcile";
/// The `topic` recorded with it.
pub const TOPIC: &str = "(reconciliation)";
/// Most pages read in one run (10,000 failed reloads).
const MAX_PAGES: usize = 100;

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

#[derive(Deserialize)]
struct Page {
    #[serde(default)]
    data: Vec<ListedReload>,
    #[serde(default)]
    links: Links,
}

#[derive(Deserialize, Default)]
struct Links {
    next: Option<Link>,
}

#[derive(Deserialize)]
struct Link {
    href: String,
}

/// The event recorded for a failed reload found by reconciliation: a CloudEvents
/// `com.qlik.v1.reload.finished` as Qlik would have sent it, with our `source`.
pub fn event_for(tenant_id: &str, r: &ListedReload) -> Vec<u8> {
    let body = json!({
        "specversion": "1.0",
        "id": format!("reconciled-{}", r.id),
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

/// The journal entry for it (pending: the pipeline enriches and alerts it).
pub fn entry_for(tenant_id: &str, r: &ListedReload, now_ms: i64) -> Entry {
    Entry {
        id: format!("reconciled-{}", r.id),
        event_type: RELOAD_FINISHED.to_owned(),
        tenant_id: tenant_id.to_owned(),
        app_id: r.app_id.clone(),
        reload_id: Some(r.id.clone()),
        reload_status: r.status.clone(),
        topic: TOPIC.to_owned(),
        received_at: now_ms,
        body: event_for(tenant_id, r),
        state: State::Pending,
        note: Some("found by reconciliation: never received over the webhook".into()),
        enrichment: None,
    }
}

/// The failed reloads that ended in `[from_ms, to_ms)`, newest first, read page by page until
/// one ends before `from_ms`.
async fn failed_reloads(
    api: &QlikApi,
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<ListedReload>, ApiError> {
    let filter = segment(r#"(status eq "FAILED") OR (status eq "EXCEEDED_LIMIT")"#);
    let mut path = format!("/api/v1/reloads?filter={filter}&log=false&limit=100");
    let mut found = Vec::new();
    for _ in 0..MAX_PAGES {
        let page: Page = api.get_json(&path).await?;
        let mut older = false;
        for r in page.data {
            match r.ended_ms() {
                Some(t) if t < from_ms => older = true,
                Some(t) if t >= to_ms => {}
                _ => found.push(r),
            }
        }
        match page.links.next.and_then(|next| same_api(&next.href)) {
            Some(next) if !older => path = next,
            _ => return Ok(found),
        }
    }
    tracing::warn!(
        pages = MAX_PAGES,
        "reconciliation read its most pages in one run; older failures are left to the next"
    );
    Ok(found)
}

/// The path and query of a `links.next.href`, whatever host it names: the API key is only ever
/// sent to the configured tenant.
fn same_api(href: &str) -> Option<String> {
    let base = url::Url::parse("https://tenant.invalid/").ok()?;
    let url = base.join(href).ok()?;
    Some(match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    })
}

/// One reconciliation run for a tenant: records what was missed; returns those entries.
pub async fn run_once(
    journal: &Journal,
    tenant_id: &str,
    api: &QlikApi,
    settings: Settings,
) -> anyhow::Result<Vec<Entry>> {
    let now = journal::now_ms();
    let to_ms = now - settings.grace.as_millis() as i64;
    let from_ms = match journal.reconciled_until(tenant_id).await? {
        Some(mark) => mark,
        None => now - settings.look_back.as_millis() as i64,
    };
    if from_ms >= to_ms {
        return Ok(Vec::new());
    }
    let listed = failed_reloads(api, from_ms, to_ms).await?;
    let mut missed = Vec::new();
    for r in listed.iter().filter(|r| !r.id.is_empty()) {
        if journal.knows_reload(tenant_id, &r.id).await? {
            continue;
        }
        let entry = entry_for(tenant_id, r, now);
        if journal.record(entry.clone()).await? == journal::Recorded::New {
            tracing::warn!(tenant = tenant_id, reload_id = %r.id, app_id = r.app_id.as_deref().unwrap_or("-"), ended = r.end_time.as_deref().unwrap_or("-"), "failed reload found by reconciliation: it never arrived over the webhook; alerting it now");
            missed.push(entry);
        }
    }
    journal.set_reconciled_until(tenant_id, to_ms).await?;
    Ok(missed)
}

/// Runs reconciliation for a tenant now and then every `settings.interval`, handing what was
/// missed to `found`.
pub async fn run(
    journal: Journal,
    tenant_id: String,
    api: QlikApi,
    settings: Settings,
    found: impl Fn(Entry) + Send,
) {
    let mut failing = 0u32;
    loop {
        match run_once(&journal, &tenant_id, &api, settings).await {
            Ok(missed) => {
                crate::metrics::inc(&METRICS.reconcile_runs);
                METRICS.reconciled(&tenant_id, missed.len());
                if failing > 0 {
                    tracing::info!(tenant = %tenant_id, failed_runs = failing, "reconciliation with Qlik Cloud works again");
                    failing = 0;
                }
                missed.into_iter().for_each(&found);
            }
            Err(e) => {
                crate::metrics::inc(&METRICS.reconcile_failures);
                failing += 1;
                // Once when it starts failing, then once an hour or so: not at every run.
                let runs_per_hour = (3600 / settings.interval.as_secs().max(1)).max(1) as u32;
                if failing == 1 || failing % runs_per_hour == 0 {
                    tracing::warn!(tenant = %tenant_id, failed_runs = failing, error = %format!("{e:#}"), "reconciliation with Qlik Cloud failed; trying again at every interval (said again hourly while it fails)");
                } else {
                    tracing::debug!(tenant = %tenant_id, error = %format!("{e:#}"), "reconciliation failed again");
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
        let e = entry_for("T", &r, 5);
        let event = qlik_events::Event::parse(&e.body).unwrap();
        assert_eq!(event.id, "reconciled-r9");
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

    #[test]
    fn a_next_link_never_leaves_the_tenant() {
        assert_eq!(
            same_api("https://evil.example.com/api/v1/reloads?next=abc").as_deref(),
            Some("/api/v1/reloads?next=abc")
        );
        assert_eq!(
            same_api("/api/v1/reloads?next=x&limit=100").as_deref(),
            Some("/api/v1/reloads?next=x&limit=100")
        );
    }
}
