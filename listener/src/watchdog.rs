//! The webhook watchdog: is the Qlik Cloud webhook that feeds the forwarder still sending?
//!
//! Why: Qlik disables a webhook after repeated failed deliveries, and while it is disabled it
//! sends nothing: every event is lost to the pipeline and nothing else says so. Per tenant, every
//! `intervalSeconds`, the listener reads the tenant's webhooks (every page) and the watched one's
//! failed deliveries.
//!
//! Promises:
//! - the watched webhook is found by id, or by name; when several share the name, the one whose
//!   URL is `expectedUrl` (several and none calling it: reported as such, not guessed);
//! - each change of its health (disabled by Qlik, missing, pointing at another URL, no longer
//!   sending reload events, failing deliveries, healthy again) is logged and alerted on the
//!   tenant's channels once, not at every check; a disabled reason whose text changes is not a
//!   new state;
//! - no alert storm: at most two alerts about one tenant's webhook per
//!   `minAlertIntervalSeconds` (a problem and its end are said at once); changes beyond that
//!   are held back and summed up ("changed state N times") in one alert once the interval has
//!   passed;
//! - a failed delivery is counted once: by its id after the first check (at the first check,
//!   by its time, parsed: Qlik's offsets and precision vary), so neither the text of a
//!   timestamp nor clock skew can hide one;
//! - the last alerted state is kept in the journal, so a restart does not alert it again;
//! - `/readyz` lists an unhealthy webhook and `/metrics` has `qlik_listener_webhook_healthy`;
//! - Qlik refusing the API key (401/403) is reported ([`Report::api_key`]: one operator alert
//!   and a red `/readyz` until it works again); other failures to check cost a warning (once per
//!   failing streak), never a stall;
//! - what the webhook sends is told to the pipeline ([`Report::webhook_seen`]), so failed
//!   attempts wait for the final outcome when the webhook delivers final outcomes.
//!
//! The recovery path: `qlik-listener webhook enable` turns it back on, `webhook resend` resends
//! what Qlik kept of the failed deliveries (7 days); reconciliation finds the rest.

use crate::config::WebhookWatch;
use crate::journal::Journal;
use crate::qlik_api::webhooks::{self, choose, Choice, Webhook};
use crate::qlik_api::{ApiError, QlikApi};
use std::time::{Duration, Instant};
use time::OffsetDateTime;

/// How the watched webhook stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Healthy,
    /// No webhook with the watched id or name.
    Missing,
    /// Several webhooks have the watched name and none calls `expectedUrl`.
    Ambiguous(usize),
    /// `enabled: false`, with Qlik's reason if it gave one.
    Disabled(Option<String>),
    /// It calls another URL than the forwarder's.
    WrongUrl(String),
    /// Its event types include no reload event (someone edited it): it sends no failures.
    NoReloadEvents(Vec<String>),
    /// Deliveries failed since the last check.
    Failing(usize),
}

impl Health {
    /// What is wrong, for logs, `/readyz` and the operator alert; `None` when healthy.
    pub fn problem(&self, name: &str) -> Option<String> {
        Some(match self {
            Health::Healthy => return None,
            Health::Missing => format!("no webhook {name} in Qlik Cloud: events are not being sent (create it with qlik-listener webhook register)"),
            Health::Ambiguous(n) => format!("{n} webhooks are named {name} and none calls webhookWatch.expectedUrl: the watchdog cannot tell which one feeds the forwarder (set expectedUrl, or webhookWatch.id)"),
            Health::Disabled(reason) => format!(
                "Qlik disabled the webhook {name}{}: events are not being sent (qlik-listener webhook enable, then webhook resend)",
                reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default()
            ),
            Health::WrongUrl(url) => format!("the webhook {name} calls {url}, not the forwarder's expected URL: events go elsewhere"),
            Health::NoReloadEvents(types) => format!(
                "the webhook {name} no longer sends reload events (its event types: {}): failed reloads are not being sent (qlik-listener webhook register puts them back)",
                if types.is_empty() { "none".to_owned() } else { types.join(", ") }
            ),
            Health::Failing(n) => format!("{n} deliveries of the webhook {name} failed since the last check: Qlik disables a webhook that keeps failing (see webhook failed-deliveries)"),
        })
    }

    /// A short stable word for the state (kept in the journal, compared between checks). A
    /// disabled reason's wording, or a count of failures, is not part of it.
    pub fn key(&self) -> String {
        match self {
            Health::Healthy => "healthy".into(),
            Health::Missing => "missing".into(),
            Health::Ambiguous(_) => "ambiguous".into(),
            Health::Disabled(_) => "disabled".into(),
            Health::WrongUrl(u) => format!("wrong-url:{u}"),
            Health::NoReloadEvents(_) => "no-reload-events".into(),
            Health::Failing(_) => "failing".into(),
        }
    }
}

/// The watched webhook's health, from the tenant's webhooks and how many of its deliveries
/// failed since the last check. Pure.
pub fn health(hooks: &[Webhook], watch: &WebhookWatch, failed_since_last: usize) -> Health {
    let hook = match watched(hooks, watch) {
        Ok(Some(hook)) => hook,
        Ok(None) => return Health::Missing,
        Err(n) => return Health::Ambiguous(n),
    };
    if !hook.enabled {
        return Health::Disabled(hook.disabled_reason.clone());
    }
    if let Some(expected) = &watch.expected_url {
        if hook.url.is_some() && !hook.calls(expected) {
            return Health::WrongUrl(hook.url.clone().unwrap_or_default());
        }
    }
    if !hook.sends_reload_events() {
        return Health::NoReloadEvents(hook.event_types.clone());
    }
    if failed_since_last > 0 {
        return Health::Failing(failed_since_last);
    }
    Health::Healthy
}

/// The watched webhook: `Err(n)` when `n` share its name and none can be told apart.
pub fn watched<'a>(
    hooks: &'a [Webhook],
    watch: &WebhookWatch,
) -> Result<Option<&'a Webhook>, usize> {
    let expected = watch.expected_url.as_deref();
    match choose(hooks, watch.id.as_deref(), &watch.name, expected) {
        Choice::None => Ok(None),
        Choice::One(w) | Choice::OfSeveral(w, _) => Ok(Some(w)),
        Choice::Ambiguous(all) => Err(all.len()),
    }
}

/// What one check found.
pub struct Checked {
    pub health: Health,
    /// The watched webhook, when found.
    pub hook: Option<Webhook>,
    /// How many webhooks share its name (1 when it is alone).
    pub namesakes: usize,
}

/// Which failed deliveries a check has seen already.
#[derive(Debug, Default)]
pub struct SeenDeliveries {
    /// `None` before the first check: then those triggered after `since` are new.
    ids: Option<std::collections::HashSet<String>>,
}

impl SeenDeliveries {
    /// How many of `failed` are new: at the first check, those triggered after `since` (times
    /// compared as times, whatever offset or precision Qlik writes); after it, those whose id
    /// was not listed before (no clock is compared, so skew between Qlik and this host or
    /// whole-second timestamps cannot hide one or count it twice).
    pub fn new_failures(
        &mut self,
        failed: &[webhooks::WebhookDelivery],
        since: OffsetDateTime,
    ) -> usize {
        let new = match &self.ids {
            None => failed
                .iter()
                .filter(|d| d.triggered().is_some_and(|t| t > since))
                .count(),
            Some(seen) => failed.iter().filter(|d| !seen.contains(&d.id)).count(),
        };
        // Only what Qlik still lists (7 days) is kept.
        self.ids = Some(failed.iter().map(|d| d.id.clone()).collect());
        new
    }
}

/// One check of the tenant's webhook: failed deliveries not seen before count (at the first
/// check, those triggered after `since`).
pub async fn check(
    api: &QlikApi,
    watch: &WebhookWatch,
    seen: &mut SeenDeliveries,
    since: OffsetDateTime,
) -> Result<Checked, ApiError> {
    let hooks = webhooks::list(api).await?;
    let hook = watched(&hooks, watch).ok().flatten().cloned();
    let failed = match &hook {
        Some(hook) => {
            let failed = webhooks::failed_deliveries(api, &hook.id).await?;
            seen.new_failures(&failed, since)
        }
        None => 0,
    };
    let namesakes = hooks.iter().filter(|w| w.is_named(&watch.name)).count();
    Ok(Checked {
        health: health(&hooks, watch, failed),
        hook,
        namesakes,
    })
}

/// Most alerts about one webhook in one `minAlertIntervalSeconds`: a problem and its end are
/// both said at once; more changes within the interval are held back and summed up.
const BURST: u32 = 2;

/// Keeps operator alerts about one webhook to [`BURST`] per `min`. Pure (time is passed in).
#[derive(Debug)]
pub struct Throttle {
    min: Duration,
    /// The state last alerted (or found at start).
    alerted: Option<String>,
    /// The state seen at the last check.
    last_seen: Option<String>,
    /// Changes seen since the last alert.
    changes: u32,
    /// When the current interval began, and the alerts sent in it.
    window: Option<(Instant, u32)>,
}

impl Throttle {
    pub fn new(alerted: Option<String>, min: Duration) -> Throttle {
        Throttle {
            min,
            last_seen: alerted.clone(),
            alerted,
            changes: 0,
            window: None,
        }
    }

    /// The state a check found. `Some(changes)`: alert now, `changes` being how many state
    /// changes this alert covers (more than 1: it kept changing meanwhile).
    pub fn observe(&mut self, key: &str, now: Instant) -> Option<u32> {
        if self.last_seen.as_deref() != Some(key) {
            self.changes += 1;
            self.last_seen = Some(key.to_owned());
        }
        let news = self.alerted.as_deref() != Some(key) || self.changes > 1;
        if !news || self.changes == 0 {
            return None;
        }
        let (start, sent) = match self.window {
            Some((start, sent)) if now.duration_since(start) < self.min => (start, sent),
            _ => (now, 0),
        };
        if sent >= BURST {
            return None;
        }
        self.window = Some((start, sent + 1));
        self.alerted = Some(key.to_owned());
        Some(std::mem::take(&mut self.changes))
    }

    /// Whether a state was alerted, found at start, or settled: the webhook has been seen.
    pub fn knows_a_state(&self) -> bool {
        self.alerted.is_some()
    }

    /// Taken as alerted without an alert (the first look, when all is well).
    pub fn settle(&mut self, key: &str) {
        self.alerted = Some(key.to_owned());
        self.last_seen = Some(key.to_owned());
        self.changes = 0;
    }
}

/// What the watchdog tells the rest of the listener.
pub trait Report: Send + Sync {
    /// The webhook's state changed (`changes` > 1: several times since the last alert).
    fn changed(&self, tenant_id: &str, webhook: &str, health: &Health, changes: u32);
    /// The watched webhook as just read (what it sends).
    fn webhook_seen(&self, tenant_id: &str, hook: &Webhook);
    /// Qlik refused the tenant's API key (`Some(why)`), or accepted it (`None`). Called at every
    /// check and reconciliation run; acted on when it changes.
    fn api_key(&self, tenant_id: &str, refused: Option<String>);
}

/// What to say when Qlik refuses a tenant's API key during a check.
pub fn key_refused(e: &ApiError, what: &str) -> Option<String> {
    e.is_key_refused().then(|| {
        format!("Qlik Cloud refused the tenant's API key ({e}) while {what}: it was revoked, expired or lost its permissions: {} and put it in the tenant's auth.jwt.token; meanwhile reconciliation and the webhook watchdog cannot run, and alerts lack app details", crate::qlik_api::NEW_KEY)
    })
}

/// Watches the tenant's webhook until the task is stopped.
pub async fn run(
    journal: Journal,
    tenant_id: String,
    api: QlikApi,
    watch: WebhookWatch,
    report: std::sync::Arc<dyn Report>,
) {
    let stored = journal.watch_state(&tenant_id).await.ok().flatten();
    // Journals from before reasons were left out of the state key.
    let stored = stored.map(|s| {
        if s.starts_with("disabled:") {
            "disabled".to_owned()
        } else {
            s
        }
    });
    let mut throttle = Throttle::new(stored, watch.min_alert_interval);
    let since = OffsetDateTime::now_utc() - watch.interval;
    let mut seen = SeenDeliveries::default();
    let mut failing_streak = 0u32;
    let mut warned_unknown = false;
    let mut warned_namesakes = 0usize;
    loop {
        match check(&api, &watch, &mut seen, since).await {
            Ok(checked) => {
                failing_streak = 0;
                report.api_key(&tenant_id, None);
                let Checked {
                    health,
                    hook,
                    namesakes,
                } = checked;
                if let Some(hook) = &hook {
                    report.webhook_seen(&tenant_id, hook);
                    if namesakes > 1 && namesakes != warned_namesakes {
                        warned_namesakes = namesakes;
                        tracing::warn!(tenant = %tenant_id, webhook = %watch.name, count = namesakes, watched = %hook.id, "several webhooks share the watched name; watching the one that calls webhookWatch.expectedUrl");
                    }
                }
                if !throttle.knows_a_state() && health == Health::Missing {
                    // Never seen: perhaps this tenant's webhook has another name. Not an alarm.
                    if !warned_unknown {
                        warned_unknown = true;
                        tracing::warn!(tenant = %tenant_id, webhook = %watch.name, "no webhook of this name or id in Qlik Cloud, so it is not watched; set Butler.qlikCloudListener.webhookWatch.name (or .id) to the webhook that calls the forwarder");
                    }
                    tokio::time::sleep(watch.interval).await;
                    continue;
                }
                let problem = health.problem(&watch.name);
                let enabled = !matches!(health, Health::Disabled(_) | Health::Missing);
                let failed = match health {
                    Health::Failing(n) => n as u64,
                    _ => 0,
                };
                crate::metrics::METRICS.webhook_health(
                    &tenant_id,
                    problem.is_none(),
                    enabled,
                    failed,
                );
                let problem_key = format!("webhook {tenant_id}");
                match problem {
                    Some(p) => crate::operations::PROBLEMS.set(
                        &problem_key,
                        format!("tenant {tenant_id}: {p}"),
                        None,
                    ),
                    None => crate::operations::PROBLEMS.clear(&problem_key),
                }
                let key = health.key();
                if !throttle.knows_a_state() && health == Health::Healthy {
                    // The first look, and all is well: nothing to tell.
                    let _ = journal.set_watch_state(&tenant_id, &key).await;
                    throttle.settle(&key);
                }
                if let Some(changes) = throttle.observe(&key, Instant::now()) {
                    report.changed(&tenant_id, &watch.name, &health, changes);
                    if let Err(e) = journal.set_watch_state(&tenant_id, &key).await {
                        tracing::warn!(tenant = %tenant_id, error = %e, "cannot keep the webhook's state in the journal");
                    }
                }
            }
            Err(e) => {
                failing_streak += 1;
                if let Some(problem) = key_refused(&e, "checking the webhook") {
                    report.api_key(&tenant_id, Some(problem));
                } else if failing_streak == 1 {
                    tracing::warn!(tenant = %tenant_id, webhook = %watch.name, error = %e, "cannot check the Qlik Cloud webhook; trying again at the next interval (warned once until it works)");
                }
            }
        }
        tokio::time::sleep(watch.interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use qlik_events::event::{APP_RELOAD_FINISHED, RELOAD_FINISHED};

    fn hook(name: &str, enabled: bool, url: &str) -> Webhook {
        Webhook {
            id: format!("id-{name}"),
            name: Some(name.into()),
            url: Some(url.into()),
            enabled,
            event_types: vec![APP_RELOAD_FINISHED.into(), RELOAD_FINISHED.into()],
            disabled_reason: (!enabled).then(|| "too many failed deliveries".into()),
            ..Webhook::default()
        }
    }

    fn watch(expected_url: Option<&str>) -> WebhookWatch {
        WebhookWatch {
            name: "relay".into(),
            id: None,
            expected_url: expected_url.map(str::to_owned),
            interval: Duration::from_secs(60),
            min_alert_interval: Duration::from_secs(900),
        }
    }

    #[test]
    fn the_watched_webhooks_health() {
        let url = "https://relay.example.com/webhook";
        let ok = [hook("other", false, "x"), hook("relay", true, url)];
        assert_eq!(health(&ok, &watch(Some(url)), 0), Health::Healthy);
        assert_eq!(health(&ok, &watch(None), 2), Health::Failing(2));
        assert_eq!(health(&ok[..1], &watch(None), 0), Health::Missing);
        let off = [hook("relay", false, url)];
        let h = health(&off, &watch(Some(url)), 5);
        assert_eq!(
            h,
            Health::Disabled(Some("too many failed deliveries".into()))
        );
        let said = h.problem("relay").unwrap();
        assert!(said.contains("Qlik disabled the webhook relay (too many failed deliveries): events are not being sent"), "{said}");
        assert_eq!(
            health(&ok, &watch(Some("https://elsewhere/")), 0),
            Health::WrongUrl(url.into())
        );
        // By id, whatever its name.
        let by_id = WebhookWatch {
            id: Some("id-other".into()),
            ..watch(None)
        };
        assert!(matches!(health(&ok, &by_id, 0), Health::Disabled(_)));
        assert_eq!(Health::Healthy.problem("relay"), None);
    }

    #[test]
    fn a_webhook_without_reload_events_is_a_problem_and_namesakes_are_told_apart() {
        let url = "https://relay.example.com/webhook";
        let mut edited = hook("relay", true, url);
        edited.event_types = vec!["com.qlik.v1.app.created".into()];
        let h = health(&[edited], &watch(Some(url)), 0);
        assert_eq!(
            h,
            Health::NoReloadEvents(vec!["com.qlik.v1.app.created".into()])
        );
        assert!(h
            .problem("relay")
            .unwrap()
            .contains("no longer sends reload events (its event types: com.qlik.v1.app.created)"));
        // Only the app attempt event still counts as sending reload events.
        let mut attempts = hook("relay", true, url);
        attempts.event_types = vec![APP_RELOAD_FINISHED.into()];
        assert_eq!(health(&[attempts], &watch(Some(url)), 0), Health::Healthy);
        // Two of the name: the one calling the forwarder is watched; neither: ambiguous.
        let mut stale = hook("relay", false, "https://old.example.com/");
        stale.id = "id-stale".into();
        let both = [stale, hook("relay", true, url)];
        assert_eq!(health(&both, &watch(Some(url)), 0), Health::Healthy);
        assert_eq!(health(&both, &watch(None), 0), Health::Ambiguous(2));
    }

    #[test]
    fn new_failed_deliveries_are_counted_once_whatever_their_dates_say() {
        let d = |id: &str, at: &str| webhooks::WebhookDelivery {
            id: id.into(),
            triggered_at: Some(at.into()),
            ..webhooks::WebhookDelivery::default()
        };
        let since = OffsetDateTime::parse(
            "2026-12-03T05:00:00.5Z",
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        let mut seen = SeenDeliveries::default();
        // First check: by time (an offset, whole seconds), not by text.
        let first = [
            d("old", "2026-12-03T04:59:00Z"),
            d("new", "2026-12-03T00:00:01-05:00"),
        ];
        assert_eq!(seen.new_failures(&first, since), 1);
        // Later: by id. One dated before `since` (Qlik's clock behind ours, whole seconds) is
        // new all the same; those seen are not counted again.
        let later = [
            d("old", "2026-12-03T04:59:00Z"),
            d("new", "2026-12-03T00:00:01-05:00"),
            d("skewed", "2026-12-03T05:00:00Z"),
            d("undated", "soon"),
        ];
        assert_eq!(seen.new_failures(&later, since), 2);
        assert_eq!(seen.new_failures(&later, since), 0);
    }

    #[test]
    fn a_reason_whose_text_changes_is_the_same_state() {
        let a = Health::Disabled(Some("too many failures".into()));
        let b = Health::Disabled(Some("too many failures (2026-12-03T05:00:00Z)".into()));
        assert_eq!(a.key(), b.key());
        assert_eq!(Health::Failing(1).key(), Health::Failing(7).key());
    }

    #[test]
    fn a_flapping_webhook_alerts_twice_per_interval_then_sums_up() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut t = Throttle::new(Some("healthy".into()), Duration::from_secs(900));
        assert_eq!(
            t.observe("healthy", at(0)),
            None,
            "no change, nothing to say"
        );
        assert_eq!(t.observe("disabled", at(60)), Some(1), "a problem at once");
        assert_eq!(
            t.observe("healthy", at(120)),
            Some(1),
            "and its end at once"
        );
        // Flapping at every check: held back.
        for (i, key) in ["disabled", "healthy", "disabled", "healthy"]
            .iter()
            .enumerate()
        {
            assert_eq!(
                t.observe(key, at(180 + 60 * i as u64)),
                None,
                "{key} at check {i}"
            );
        }
        // Past the interval: one alert for the state now, covering the four changes.
        assert_eq!(t.observe("healthy", at(960)), Some(4));
        assert_eq!(t.observe("healthy", at(2000)), None);
        // A change after a quiet interval is said at once again.
        assert_eq!(t.observe("disabled", at(2100)), Some(1));
        // A state found at start is not alerted again.
        let mut t = Throttle::new(Some("disabled".into()), Duration::from_secs(900));
        assert_eq!(t.observe("disabled", at(0)), None);
        let mut t = Throttle::new(None, Duration::from_secs(900));
        t.settle("healthy");
        assert_eq!(t.observe("healthy", at(0)), None);
        assert_eq!(t.observe("missing", at(1)), Some(1));
    }
}
