//! The webhook watchdog: is the Qlik Cloud webhook that feeds the forwarder still sending?
//!
//! Why: Qlik disables a webhook after repeated failed deliveries, and while it is disabled it
//! sends nothing: every event is lost to the pipeline and nothing else says so. Per tenant, every
//! `intervalSeconds`, the listener reads the webhook (by id or name: `webhook register` names it
//! `qlik-cloud-mqtt-relay`) and its failed deliveries.
//!
//! Promises:
//! - each change of the webhook's health (disabled by Qlik and why, missing, pointing at
//!   another URL, failing deliveries, healthy again) is logged and alerted on the tenant's
//!   channels once, not at every check; the last state is kept in the journal, so a restart does
//!   not alert the same state again;
//! - `/readyz` lists an unhealthy webhook and `/metrics` has `qlik_listener_webhook_healthy`;
//! - a check that cannot read the API costs a warning (once per failing streak), never a stall.
//!
//! The recovery path: `qlik-listener webhook enable` turns it back on, `webhook resend` resends
//! what Qlik kept of the failed deliveries (7 days); reconciliation finds the rest.

use crate::cli::webhooks::{self, Webhook};
use crate::config::WebhookWatch;
use crate::journal::Journal;
use crate::qlik_api::QlikApi;

/// How the watched webhook stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Healthy,
    /// No webhook with the watched id or name.
    Missing,
    /// `enabled: false`, with Qlik's reason if it gave one.
    Disabled(Option<String>),
    /// It calls another URL than the forwarder's.
    WrongUrl(String),
    /// Deliveries failed since the last check.
    Failing(usize),
}

impl Health {
    /// What is wrong, for logs, `/readyz` and the operator alert; `None` when healthy.
    pub fn problem(&self, name: &str) -> Option<String> {
        Some(match self {
            Health::Healthy => return None,
            Health::Missing => format!("no webhook {name} in Qlik Cloud: events are not being sent (create it with qlik-listener webhook register)"),
            Health::Disabled(reason) => format!(
                "Qlik disabled the webhook {name}{}: events are not being sent (qlik-listener webhook enable, then webhook resend)",
                reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default()
            ),
            Health::WrongUrl(url) => format!("the webhook {name} calls {url}, not the forwarder's expected URL: events go elsewhere"),
            Health::Failing(n) => format!("{n} deliveries of the webhook {name} failed since the last check: Qlik disables a webhook that keeps failing (see webhook failed-deliveries)"),
        })
    }

    /// A short stable word for the state (kept in the journal, compared between checks).
    pub fn key(&self) -> String {
        match self {
            Health::Healthy => "healthy".into(),
            Health::Missing => "missing".into(),
            Health::Disabled(r) => format!("disabled:{}", r.as_deref().unwrap_or("")),
            Health::WrongUrl(u) => format!("wrong-url:{u}"),
            Health::Failing(_) => "failing".into(),
        }
    }
}

/// The watched webhook among the tenant's: by id when configured, else by name.
fn watched<'a>(hooks: &'a [Webhook], watch: &WebhookWatch) -> Option<&'a Webhook> {
    hooks.iter().find(|w| match &watch.id {
        Some(id) => &w.id == id,
        None => w.is_named(&watch.name),
    })
}

/// The watched webhook's health, from the tenant's webhooks and how many of its deliveries
/// failed since the last check. Pure.
pub fn health(hooks: &[Webhook], watch: &WebhookWatch, failed_since_last: usize) -> Health {
    let Some(hook) = watched(hooks, watch) else {
        return Health::Missing;
    };
    if !hook.enabled {
        return Health::Disabled(hook.disabled_reason.clone());
    }
    if let (Some(expected), Some(url)) = (&watch.expected_url, &hook.url) {
        if expected.trim_end_matches('/') != url.trim_end_matches('/') {
            return Health::WrongUrl(url.clone());
        }
    }
    if failed_since_last > 0 {
        return Health::Failing(failed_since_last);
    }
    Health::Healthy
}

/// One check of the tenant's webhook. `since` (RFC 3339): failed deliveries triggered before
/// it were seen by an earlier check.
pub async fn check(api: &QlikApi, watch: &WebhookWatch, since: &str) -> anyhow::Result<Health> {
    let hooks = webhooks::list(api).await?;
    let failed = match watched(&hooks, watch) {
        Some(hook) => webhooks::failed_deliveries(api, &hook.id)
            .await?
            .iter()
            .filter(|d| d.triggered_at.as_deref().is_some_and(|t| t > since))
            .count(),
        None => 0,
    };
    Ok(health(&hooks, watch, failed))
}

/// What the watchdog tells the rest of the listener: log it, count it, alert on the channels.
pub trait Report: Send + Sync {
    fn changed(&self, tenant_id: &str, health: &Health, problem: Option<String>);
}

/// Watches the tenant's webhook until the task is stopped.
pub async fn run(
    journal: Journal,
    tenant_id: String,
    api: QlikApi,
    watch: WebhookWatch,
    report: std::sync::Arc<dyn Report>,
) {
    let mut last = journal.watch_state(&tenant_id).await.ok().flatten();
    let mut since = rfc3339(time::OffsetDateTime::now_utc() - watch.interval);
    let mut failing_streak = 0u32;
    let mut warned_unknown = false;
    loop {
        let checked_at = rfc3339(time::OffsetDateTime::now_utc());
        match check(&api, &watch, &since).await {
            Ok(health) => {
                failing_streak = 0;
                since = checked_at;
                if last.is_none() && health == Health::Missing {
                    // Never seen: perhaps this tenant's webhook has another name. Not an alarm.
                    if !warned_unknown {
                        warned_unknown = true;
                        tracing::warn!(tenant = %tenant_id, webhook = %watch.name, "no webhook of this name or id in Qlik Cloud, so it is not watched; set Butler.qlikCloudListener.webhookWatch.name (or .id) to the webhook that calls the forwarder");
                    }
                    tokio::time::sleep(watch.interval).await;
                    continue;
                }
                crate::metrics::METRICS.webhook_health(&tenant_id, &health, &watch.name);
                let key = health.key();
                if last.is_none() && health == Health::Healthy {
                    // The first look, and all is well: nothing to tell.
                    let _ = journal.set_watch_state(&tenant_id, &key).await;
                    last = Some(key.clone());
                }
                if last.as_deref() != Some(key.as_str()) {
                    let problem = health.problem(&watch.name);
                    report.changed(&tenant_id, &health, problem);
                    if let Err(e) = journal.set_watch_state(&tenant_id, &key).await {
                        tracing::warn!(tenant = %tenant_id, error = %e, "cannot keep the webhook's state in the journal");
                    }
                    last = Some(key);
                }
            }
            Err(e) => {
                failing_streak += 1;
                if failing_streak == 1 {
                    tracing::warn!(tenant = %tenant_id, webhook = %watch.name, error = %format!("{e:#}"), "cannot check the Qlik Cloud webhook; trying again at the next interval (warned once until it works)");
                }
            }
        }
        tokio::time::sleep(watch.interval).await;
    }
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(name: &str, enabled: bool, url: &str) -> Webhook {
        Webhook {
            id: format!("id-{name}"),
            name: Some(name.into()),
            url: Some(url.into()),
            enabled,
            disabled_reason: (!enabled).then(|| "too many failed deliveries".into()),
            ..Webhook::default()
        }
    }

    fn watch(expected_url: Option<&str>) -> WebhookWatch {
        WebhookWatch {
            name: "relay".into(),
            id: None,
            expected_url: expected_url.map(str::to_owned),
            interval: std::time::Duration::from_secs(60),
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
}
