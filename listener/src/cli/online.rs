//! `check-config --online`: what the file alone cannot show, tried for real before the service
//! depends on it: the broker takes the listener's credentials and subscription, Qlik Cloud takes
//! each tenant's API key, the webhook exists, is enabled and calls the forwarder; with
//! `--send-test`, Qlik resends the webhook's newest delivery (so the forwarder's answer shows
//! whether the webhook's secret is its own) and each channel gets a test alert.
//!
//! Promises: without `--send-test` nothing is left behind (the broker session is a passing one
//! under its own client id, so the service's queued messages are untouched; no event is
//! recorded, nothing is sent); with it, the test alerts are marked `TEST:` and the resent event
//! is one Qlik already sent (a duplicate to the listener, unless its delivery had failed); each
//! line is `ok` or says what is wrong and which key to change; secrets are never printed.

use crate::config::{Config, WebhookWatch};
use crate::qlik_api::{webhooks, QlikApi};
use crate::watchdog::{self, Health};
use relay_mqtt::session::Polled;
use std::time::Duration;

/// How long the broker may take to accept, and to answer the subscription.
const BROKER_WAIT: Duration = Duration::from_secs(10);

/// One finding: fine, or what is wrong and what to change.
pub struct Line {
    pub ok: bool,
    pub text: String,
}

impl Line {
    fn ok(text: String) -> Line {
        Line { ok: true, text }
    }

    fn wrong(text: String) -> Line {
        Line { ok: false, text }
    }
}

impl std::fmt::Display for Line {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mark = if self.ok { "ok  " } else { "FAIL" };
        write!(f, "{mark} {}", super::shown(&self.text))
    }
}

/// `check-config` after the file parsed (its file warnings printed): the template and journal
/// checks, the summary, and with `online` every check of [`check`]. Errors when anything is
/// wrong (the caller exits 1), each problem printed first with its key.
pub async fn check_config(
    path: &std::path::Path,
    config: &Config,
    online: bool,
    send_test: bool,
) -> anyhow::Result<()> {
    let templates = crate::check_templates(config);
    for warning in &templates.warnings {
        eprintln!("warning: {warning}");
    }
    let mut problems = config.local_problems();
    problems.extend(templates.errors);
    for problem in &problems {
        eprintln!("{}: {problem}", path.display());
    }
    anyhow::ensure!(
        problems.is_empty(),
        "the configuration has {} problem(s)",
        problems.len()
    );
    print!("{}", config.summary());
    println!("configuration OK");
    if !online {
        return Ok(());
    }
    let lines = check(config, send_test).await;
    for line in &lines {
        println!("{line}");
    }
    let failed = lines.iter().filter(|l| !l.ok).count();
    anyhow::ensure!(failed == 0, "{failed} online check(s) failed");
    println!("online checks OK");
    Ok(())
}

/// Every check, in order: the broker, then each tenant's API key and webhook, then (with
/// `send_test`) each channel.
pub async fn check(config: &Config, send_test: bool) -> Vec<Line> {
    let mut lines = vec![broker(config).await];
    for tenant in &config.tenants {
        lines.extend(qlik_cloud(config, tenant, send_test).await);
    }
    if send_test {
        lines.extend(channels(config).await);
    }
    lines
}

/// The same checks at service start, summarised in the log: the service's own broker session
/// (connected within [`BROKER_WAIT`], or not: its own log lines say why), then each tenant's API
/// key and webhook. One line when all pass; otherwise a warning for each failure and their count.
/// It only reports: the service starts either way, and keeps retrying what failed.
pub async fn at_start(config: Config, connected: crate::subscriber::Connected) {
    let b = &config.broker;
    let at = format!("{}:{}", b.host, b.port);
    let deadline = tokio::time::Instant::now() + BROKER_WAIT;
    while !connected.get() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut lines = vec![if connected.get() {
        Line::ok(format!("broker {at}: connected"))
    } else {
        Line::wrong(format!(
            "broker {at}: not connected within {}s (the lines above say why; check {})",
            BROKER_WAIT.as_secs(),
            b.key_path
        ))
    }];
    for tenant in &config.tenants {
        lines.extend(qlik_cloud(&config, tenant, false).await);
    }
    let failed: Vec<&Line> = lines.iter().filter(|l| !l.ok).collect();
    if failed.is_empty() {
        let passed: Vec<&str> = lines.iter().map(|l| l.text.as_str()).collect();
        tracing::info!(checks = %passed.join("; "), "start-up checks passed");
        return;
    }
    for line in &failed {
        tracing::warn!("start-up check failed: {}", super::shown(&line.text));
    }
    tracing::warn!(
        "{} of {} start-up checks failed (`qlik-listener check-config --online` repeats them)",
        failed.len(),
        lines.len()
    );
}

/// Connects as a passing client (`<clientId>-check`), subscribes to the subscription root and
/// leaves.
async fn broker(config: &Config) -> Line {
    let b = &config.broker;
    let at = format!("{}:{}", b.host, b.port);
    let client_id = format!("{}-check-{}", b.client_id, std::process::id());
    let mut session = match crate::subscriber::session(b, &client_id, false, None) {
        Ok(s) => s,
        Err(e) => return Line::wrong(format!("broker {at}: {e:#}")),
    };
    let filter = &config.subscription_root;
    let setting = relay_mqtt::Setting::Yaml(b.key_path.clone());
    let outcome = tokio::time::timeout(BROKER_WAIT, async {
        loop {
            match session.poll().await {
                Polled::Connected { .. } => {
                    if let Err(e) = session.client().subscribe(filter).await {
                        return Line::wrong(format!("broker {at}: cannot subscribe: {e}"));
                    }
                }
                Polled::Subscribed(codes) if codes.contains("Success") => {
                    return Line::ok(format!(
                        "broker {at}: connected, and subscribed to {filter}"
                    ));
                }
                Polled::Subscribed(codes) => {
                    return Line::wrong(format!(
                        "broker {at}: connected, but the broker refused the subscription to {filter} ({codes}): its ACL must let this user read it ({}.username, and the topic.subscriptionRoot beside it)",
                        b.key_path
                    ));
                }
                Polled::Failed(reason, failure) => {
                    let hint = failure
                        .hint(&setting, b.port, b.tls.enable, false)
                        .unwrap_or_else(|| format!("check host and port in {}", b.key_path));
                    return Line::wrong(format!("broker {at}: {reason}: {hint}"));
                }
                Polled::Message(_) | Polled::Other => {}
            }
        }
    })
    .await;
    outcome.unwrap_or_else(|_| {
        Line::wrong(format!(
            "broker {at}: no answer within {}s (a firewall, or the wrong host or port in {})",
            BROKER_WAIT.as_secs(),
            b.key_path
        ))
    })
}

/// The tenant's API key (`users/me`) and its webhook (exists, enabled, calls the forwarder,
/// sends reload events); with `resend`, whether the forwarder takes the webhook's signature
/// ([`secret`]).
async fn qlik_cloud(
    config: &Config,
    tenant: &crate::config::TenantConfig,
    resend: bool,
) -> Vec<Line> {
    let name = format!(
        "tenant {}",
        tenant.tenant_url.as_str().trim_end_matches('/')
    );
    let key = format!("{}.auth.jwt.token", tenant.path);
    let api = match QlikApi::new(tenant.tenant_url.clone(), tenant.token.clone()) {
        Ok(api) => api,
        Err(e) => return vec![Line::wrong(format!("{name}: {e}"))],
    };
    let me = match api.me().await {
        Ok(me) => me,
        Err(e) if e.is_key_refused() => {
            return vec![Line::wrong(format!(
                "{name}: Qlik Cloud refused the API key ({e}): {} and put it in {key}",
                crate::qlik_api::NEW_KEY
            ))]
        }
        Err(e) => {
            return vec![Line::wrong(format!(
                "{name}: cannot reach the Qlik Cloud API ({e}): check {}.tenantUrl and the proxy or firewall",
                tenant.path
            ))]
        }
    };
    let user = me.name.unwrap_or_else(|| "?".into());
    let mut lines = vec![Line::ok(format!("{name}: the API key works (user {user})"))];
    let hooks = match webhooks::list(&api).await {
        Ok(hooks) => hooks,
        Err(e) => {
            lines.push(Line::wrong(format!(
                "{name}: cannot read its webhooks ({e}): the API key's user needs the Tenant Admin role (for the webhook watchdog and reconciliation too)"
            )));
            return lines;
        }
    };
    // The watchdog's judgement (the same choice by id, name and URL), in this command's words:
    // what to run, or which key to change.
    let watch = config
        .webhook_watch
        .clone()
        .unwrap_or_else(|| WebhookWatch {
            name: webhooks::DEFAULT_NAME.to_owned(),
            id: None,
            expected_url: None,
            interval: Duration::ZERO,
            min_alert_interval: Duration::ZERO,
        });
    let wanted = watch.name.as_str();
    let expected = watch.expected_url.as_deref();
    let hook = watchdog::watched(&hooks, &watch).ok().flatten();
    lines.push(match watchdog::health(&hooks, &watch, 0) {
        Health::Healthy => {
            let url = hook.and_then(|w| w.url.as_deref()).unwrap_or("-");
            match expected {
                Some(_) => Line::ok(format!("{name}: webhook {wanted:?} is enabled and calls {url}")),
                None => Line::ok(format!(
                    "{name}: webhook {wanted:?} is enabled and calls {url} (set qlikCloudListener.webhookWatch.expectedUrl to have it compared with the forwarder's)"
                )),
            }
        }
        Health::Missing => Line::wrong(format!(
            "{name}: no webhook named {wanted:?}: create it with `qlik-listener webhook register --url https://<forwarder>/webhook` (or name yours in qlikCloudListener.webhookWatch.name)"
        )),
        Health::Disabled(reason) => Line::wrong(format!(
            "{name}: webhook {wanted:?} is disabled ({}): fix what failed, then `qlik-listener webhook enable`",
            reason.as_deref().unwrap_or("no reason given")
        )),
        Health::WrongUrl(url) => {
            let expected = expected.unwrap_or_default();
            Line::wrong(format!(
                "{name}: webhook {wanted:?} calls {url}, not the forwarder at {expected} (qlikCloudListener.webhookWatch.expectedUrl): `qlik-listener webhook register --url {expected}`"
            ))
        }
        Health::NoReloadEvents(types) => Line::wrong(format!(
            "{name}: webhook {wanted:?} sends no reload events ({}): `qlik-listener webhook register` sets them",
            types.join(", ")
        )),
        other => Line::wrong(format!(
            "{name}: {}",
            other.problem(wanted).unwrap_or_default()
        )),
    });
    if let (true, Some(hook)) = (resend, hook) {
        lines.push(secret(&api, &name, hook).await);
    }
    lines
}

/// Whether the forwarder takes what Qlik signs with the webhook's secret. Qlik never shows the
/// secret, but it resends a delivery with the webhook's current URL and secret and says how
/// that went: the newest delivery is resent (its event again, which the listener recognises as
/// a duplicate by its id; one that had failed arrives now).
async fn secret(api: &QlikApi, name: &str, hook: &webhooks::Webhook) -> Line {
    let called = hook.url.as_deref().unwrap_or("-");
    let newest = match webhooks::newest_delivery(api, &hook.id).await {
        Ok(Some(d)) => d,
        Ok(None) => {
            return Line::ok(format!(
                "{name}: the webhook has no delivery of the last 7 days to resend, so its secret is tried with the first event (`qlik-webhook send-test-event` tries the forwarder's)"
            ))
        }
        Err(e) => return Line::wrong(format!("{name}: cannot read the webhook's deliveries ({e})")),
    };
    let new = match webhooks::resend(api, &hook.id, &newest.id).await {
        Ok(new) => new,
        Err(e) => {
            return Line::wrong(format!(
                "{name}: cannot have Qlik Cloud resend a delivery ({e})"
            ))
        }
    };
    match new.succeeded() {
        Some(true) => Line::ok(format!(
            "{name}: Qlik Cloud resent the webhook's newest delivery ({}) and {called} took it: the webhook's secret is the forwarder's",
            newest.id
        )),
        None => Line::ok(format!(
            "{name}: Qlik Cloud resent the webhook's newest delivery ({}), but its answer does not say how it went, so the webhook's secret is not known to be the forwarder's (`qlik-listener webhook failed-deliveries` lists the resend if it failed)",
            newest.id
        )),
        Some(false) => {
            let said = new.status_message.unwrap_or_else(|| "no reason given".into());
            let hint = if said.contains("401") {
                "the forwarder refused the signature: the webhook's secret in Qlik Cloud is not the forwarder's QLIK_WEBHOOK_SECRET; `qlik-listener webhook register --url <the forwarder's URL>` with QLIK_WEBHOOK_SECRET set to the forwarder's sets it"
            } else {
                "the forwarder's log says why (a 401 is a secret that is not the forwarder's QLIK_WEBHOOK_SECRET)"
            };
            Line::wrong(format!(
                "{name}: Qlik Cloud resent the webhook's newest delivery ({}) to {called} and it failed ({said}): {hint}",
                newest.id
            ))
        }
    }
}

/// A test alert on each channel of each tenant, said as a test.
async fn channels(config: &Config) -> Vec<Line> {
    let mut lines = Vec::new();
    let journal = match super::journal_opened(config, false).await {
        Ok(j) => j,
        Err(e) => return vec![Line::wrong(format!("channels: {e:#}"))],
    };
    for tenant in &config.tenants {
        let mut data = match super::preview::sample(config, tenant) {
            Ok(d) => d,
            Err(e) => return vec![Line::wrong(format!("channels: {e:#}"))],
        };
        data.alert_title = format!("TEST: {}", data.alert_title);
        data.alert_note = "A test from qlik-listener check-config --online --send-test: no reload failed. The app and its data are a sample.".into();
        let id = format!("check-{}", crate::journal::now_ms());
        let give_up = Duration::from_secs(30);
        match super::deliver_now(config, &journal, &id, &tenant.channels, &data, give_up).await {
            Ok(sent) => {
                for d in sent {
                    let at = format!("{}.alert, channel {}", tenant.path, d.channel);
                    match d.state {
                        crate::journal::DeliveryState::Sent => {
                            lines.push(Line::ok(format!("{at}: test alert sent")));
                        }
                        state => lines.push(Line::wrong(format!(
                            "{at}: test alert {} ({}): check its URL or address and credentials",
                            state.as_str(),
                            d.last_error.unwrap_or_default()
                        ))),
                    }
                }
            }
            Err(e) => lines.push(Line::wrong(format!("{}.alert: {e:#}", tenant.path))),
        }
    }
    lines
}
