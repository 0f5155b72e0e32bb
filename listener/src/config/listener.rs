//! The listener's own section (`Butler.qlikCloudListener`, not Butler's): the journal, alert
//! retries, one alert per reload, reconciliation and the webhook watchdog.

use super::value::{Check, KeyPath, Text, Whole};
use super::MIN_RETENTION_DAYS;
use schemars::JsonSchema;
use serde::Deserialize;
use std::path::PathBuf;

/// Qlik sends `app.reload.finished` for each attempt of a reload and `reload.finished` once,
/// with the final outcome: whether a failed attempt waits for the final word, and how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FinalOutcome {
    pub wait: WaitForFinal,
    pub wait_secs: u64,
}

/// How stored script logs are laid out under the log directory
/// (`qlikCloudListener.scriptLogLayout`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ScriptLogLayout {
    /// Butler's: `<YYYY-MM-DD>/<YYYY-MM-DDTHH-MM-SS>_appId=…_reloadId=….log`.
    #[default]
    Butler,
    /// `<tenantId>/<appId>/<reloadId>.log`: one folder per app, across tenants.
    ByTenant,
}

/// The time zone named `name` (IANA, e.g. `Europe/Stockholm`), or the machine's.
pub fn time_zone(name: Option<&str>) -> Result<jiff::tz::TimeZone, String> {
    use jiff::tz::TimeZone;
    match name {
        Some(name) => TimeZone::get(name).map_err(|_| {
            format!("'{name}' is not a time zone name (IANA, e.g. Europe/Stockholm or UTC)")
        }),
        None => Ok(TimeZone::try_system().unwrap_or(TimeZone::UTC)),
    }
}

/// `Butler.qlikCloudListener.reconcile`: how often the listener asks Qlik Cloud for failed
/// reloads that never arrived over the webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reconcile {
    pub interval: std::time::Duration,
    /// The window each run looks at: reloads that ended this long ago or less.
    pub look_back: std::time::Duration,
    /// Reloads that ended more recently are left to the webhook path.
    pub grace: std::time::Duration,
}

/// `Butler.qlikCloudListener.webhookWatch`: which Qlik Cloud webhook feeds the forwarder, to
/// check that it still does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookWatch {
    /// Its name (default `qlik-cloud-mqtt-relay`, what `webhook register` creates).
    pub name: String,
    /// Its id, when known (wins over the name).
    pub id: Option<String>,
    /// The forwarder's URL, to notice a webhook pointing elsewhere.
    pub expected_url: Option<String>,
    pub interval: std::time::Duration,
    /// At most two alerts about the webhook in this time (further changes are summed up in the
    /// next one).
    pub min_alert_interval: std::time::Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitForFinal {
    /// Once the tenant has sent a `reload.finished` (its webhook delivers them).
    Auto,
    Always,
    /// Alert each failed attempt at once (a webhook with `app.reload.finished` only).
    Never,
}

/// `Butler.qlikCloudListener`: ours.
#[derive(Deserialize, JsonSchema, Default)]
#[serde(default, rename_all = "camelCase")]
pub struct Listener {
    /// true: the same file also runs Butler (for Qlik Sense Enterprise); the listener takes Qlik
    /// Cloud only and leaves task starts (`mqttConfig`) and the HTTP API (`restServerConfig`) to
    /// Butler, so a task is never started twice and the port is Butler's.
    beside_butler: Option<super::value::Flag>,
    /// The time zone of Butler's `…TimeLocal1`–`5` template fields: an IANA name such as
    /// `Europe/Stockholm` (default: this machine's, as in Butler).
    time_zone: Option<Text>,
    /// How stored script logs are laid out: `butler` (default:
    /// `<day>/<time>_appId=…_reloadId=….log`) or `byTenant` (`<tenantId>/<appId>/<reloadId>.log`).
    script_log_layout: Option<Text>,
    /// Where events and deliveries are recorded: a SQLite file (`path`, the default) or PostgreSQL shared by two or three listeners (`url`).
    journal: Option<JournalSection>,
    /// This listener's name among those sharing a PostgreSQL journal (default: the host name);
    /// it also ends the MQTT client ids (`<clientId>-<instanceId>`), so each instance has its
    /// own session. Letters, digits, `.`, `_` and `-`.
    instance_id: Option<Text>,
    /// error, warn, info (default), verbose or debug, silly or trace; `RUST_LOG` wins.
    log_level: Option<Text>,
    /// Alert delivery: retries, give-up time, waiting for a reload's final outcome.
    alerts: Option<AlertsSection>,
    /// Asking Qlik Cloud for failed reloads that never arrived over the webhook.
    reconcile: Option<ReconcileSection>,
    /// Where to serve `/metrics`, `/healthz` and `/readyz` on their own, e.g. `127.0.0.1:9464`
    /// (for Prometheus without Butler's HTTP API; `restServerConfig` serves them too).
    metrics_listen: Option<Text>,
    /// Checking that the Qlik Cloud webhook feeding the forwarder is enabled and healthy.
    webhook_watch: Option<WebhookWatchSection>,
}

#[derive(Deserialize, JsonSchema, Default)]
#[serde(default, rename_all = "camelCase")]
struct WebhookWatchSection {
    /// The webhook's name (default `qlik-cloud-mqtt-relay`, what `webhook register` creates).
    name: Option<Text>,
    /// Its id (wins over the name).
    id: Option<Text>,
    /// The forwarder's URL: a webhook calling another URL is reported.
    expected_url: Option<Text>,
    /// Seconds between checks (default 300; 0 turns the watchdog off).
    interval_seconds: Option<Whole>,
    /// Alerts about the webhook within this many seconds (default 900): a problem and its end
    /// are said at once, further changes in the interval are held back and summed up in one
    /// alert after it ("changed state N times").
    min_alert_interval_seconds: Option<Whole>,
}

#[derive(Deserialize, JsonSchema, Default)]
#[serde(default, rename_all = "camelCase")]
struct ReconcileSection {
    /// Seconds between runs (default 300; 0 turns reconciliation off).
    interval_seconds: Option<Whole>,
    /// How far back each run looks, hours (default 24, at most 168): a failed reload is found
    /// when Qlik's list shows it within this long after it ended (listing lag, clock skew).
    look_back_hours: Option<Whole>,
    /// Reloads that ended more recently are left to the webhook path, seconds (default 600).
    grace_seconds: Option<Whole>,
}

#[derive(Deserialize, JsonSchema, Default)]
#[serde(default, rename_all = "camelCase")]
struct JournalSection {
    /// The SQLite journal (default `qlik-listener.sqlite` beside this file).
    path: Option<Text>,
    /// A journal in PostgreSQL shared by two or three listeners (high availability), e.g.
    /// `postgres://qlik_listener@pg01.corp.example:5432/qlik_listener?sslmode=require`; wins
    /// over `path`. The password goes in `password` or `passwordFile`, not here.
    url: Option<Text>,
    /// The PostgreSQL password, best as `${VARIABLE}` from the environment.
    password: Option<Text>,
    /// A file whose first line is the PostgreSQL password (readable by the service account only).
    password_file: Option<Text>,
    /// CA certificates (PEM) that PostgreSQL's certificate is checked against (default: the
    /// system's); used unless the URL says `sslmode=disable`.
    ca_file: Option<Text>,
    /// With `url`: seconds an instance's hold on the events it handles lasts without renewal
    /// (default 30, 3 to 600). When an instance dies, another takes over its events after this
    /// long, and the singleton role moves within a third of it.
    lease_seconds: Option<Whole>,
    /// Days events are kept (default 30, at least 8: Qlik resends for 7 days).
    retention_days: Option<Whole>,
}

#[derive(Deserialize, JsonSchema, Default)]
#[serde(default, rename_all = "camelCase")]
struct AlertsSection {
    /// How long an alert is retried before it is recorded as failed (default 3600).
    give_up_seconds: Option<Whole>,
    /// The first wait between retries, doubling up to a minute (default 1000).
    retry_base_milliseconds: Option<Whole>,
    /// Whether a failed attempt (`app.reload.finished`) waits for the reload's final outcome
    /// (`reload.finished`) before alerting: `auto` (default: once the tenant has sent a
    /// `reload.finished`), `always` or `never`.
    wait_for_final_outcome: Option<Text>,
    /// How long a failed attempt waits for the final outcome (default 1800).
    final_outcome_wait_seconds: Option<Whole>,
}

/// The section, checked.
pub struct Settings {
    pub journal_path: PathBuf,
    pub shared_journal: Option<SharedJournal>,
    pub retention_days: u32,
    pub log_level: Option<String>,
    pub give_up_secs: u64,
    pub retry_base_ms: u64,
    pub final_outcome: FinalOutcome,
    pub reconcile: Option<Reconcile>,
    pub webhook_watch: Option<WebhookWatch>,
    pub beside_butler: bool,
    pub time_zone: jiff::tz::TimeZone,
    pub script_log_layout: ScriptLogLayout,
    pub metrics_listen: Option<std::net::SocketAddr>,
}

/// A journal in PostgreSQL shared by several listeners (`journal.url`), checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedJournal {
    /// The URL, without a password.
    pub url: String,
    pub password: Option<qlik_events::Secret>,
    pub ca_file: Option<PathBuf>,
    pub lease_secs: u64,
    /// This instance's name in the group.
    pub instance: String,
}

impl SharedJournal {
    /// What the journal's backend needs.
    pub fn settings(&self) -> crate::journal::postgres::Settings {
        crate::journal::postgres::Settings {
            url: self.url.clone(),
            password: self.password.clone(),
            ca_file: self.ca_file.clone(),
            lease: std::time::Duration::from_secs(self.lease_secs),
            instance: self.instance.clone(),
        }
    }
}

/// The default instance id: this machine's host name, as far as it is usable in a client id.
fn host_instance_id() -> String {
    let host = hostname::get()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    let id: String = host
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .take(64)
        .collect();
    if id.is_empty() {
        "qlik-listener".into()
    } else {
        id
    }
}

fn shared_journal(
    c: &mut Check<'_>,
    at: &KeyPath,
    journal: &JournalSection,
    instance_id: &Option<Text>,
) -> Option<SharedJournal> {
    let instance = match Text::of(instance_id) {
        None => host_instance_id(),
        Some(id) => {
            let ok = !id.is_empty()
                && id.len() <= 64
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
            if !ok {
                c.error(
                    &at.key("instanceId"),
                    "must be 1 to 64 letters, digits, '.', '_' or '-'",
                );
            }
            id.to_owned()
        }
    };
    let lease_secs = c.whole(
        journal.lease_seconds,
        &at.key("journal.leaseSeconds"),
        3..=600,
        30,
    );
    let url = c.optional(&journal.url, &at.key("journal.url"))?;
    if let Err(reason) = crate::journal::postgres::parse_url(&url) {
        c.error(&at.key("journal.url"), reason);
        return None;
    }
    let password = match (&journal.password, &journal.password_file) {
        (Some(_), Some(_)) => {
            c.error(
                &at.key("journal.passwordFile"),
                "give journal.password or journal.passwordFile, not both",
            );
            None
        }
        (Some(_), None) => c.secret(&journal.password, &at.key("journal.password")),
        (None, Some(_)) => {
            let file = c.file(&journal.password_file, &at.key("journal.passwordFile"))?;
            match std::fs::read_to_string(&file) {
                Ok(text) => Some(qlik_events::Secret::new(
                    text.lines().next().unwrap_or("").trim_end().to_owned(),
                )),
                Err(e) => {
                    c.error(
                        &at.key("journal.passwordFile"),
                        format!("cannot read {}: {e}", file.display()),
                    );
                    None
                }
            }
        }
        (None, None) => None,
    };
    let ca_file = c.file(&journal.ca_file, &at.key("journal.caFile"));
    Some(SharedJournal {
        url,
        password,
        ca_file,
        lease_secs,
        instance,
    })
}

pub fn check(c: &mut Check<'_>, at: &KeyPath, l: Listener) -> Settings {
    let journal = l.journal.unwrap_or_default();
    let shared_journal = shared_journal(c, at, &journal, &l.instance_id);
    let journal_path = match Text::of(&journal.path) {
        Some(p) => c.base.join(p),
        None => c.base.join("qlik-listener.sqlite"),
    };
    // Events older than the retention are refused (a replay could not be told from a new
    // event), so it must cover Qlik's 7-day resend window with a day to spare.
    let retention_days = c.whole(
        journal.retention_days,
        &at.key("journal.retentionDays"),
        MIN_RETENTION_DAYS..=3650,
        30,
    ) as u32;
    let alerts = l.alerts.unwrap_or_default();
    let give_up_secs = c.whole(
        alerts.give_up_seconds,
        &at.key("alerts.giveUpSeconds"),
        1..=7 * 24 * 3600,
        3600,
    );
    let retry_base_ms = c.whole(
        alerts.retry_base_milliseconds,
        &at.key("alerts.retryBaseMilliseconds"),
        10..=60_000,
        1000,
    );
    let wait = match Text::of(&alerts.wait_for_final_outcome) {
        None | Some("auto") => WaitForFinal::Auto,
        Some("always") => WaitForFinal::Always,
        Some("never") => WaitForFinal::Never,
        Some(other) => {
            let reason = format!("'{other}' is not auto, always or never");
            c.error(&at.key("alerts.waitForFinalOutcome"), reason);
            WaitForFinal::Auto
        }
    };
    let reconcile = l.reconcile.unwrap_or_default();
    let reconcile_at = at.key("reconcile");
    let interval = c.whole(
        reconcile.interval_seconds,
        &reconcile_at.key("intervalSeconds"),
        0..=24 * 3600,
        300,
    );
    let look_back = c.whole(
        reconcile.look_back_hours,
        &reconcile_at.key("lookBackHours"),
        1..=7 * 24,
        24,
    );
    let grace = c.whole(
        reconcile.grace_seconds,
        &reconcile_at.key("graceSeconds"),
        0..=24 * 3600,
        600,
    );
    let reconcile = (interval > 0).then(|| Reconcile {
        interval: std::time::Duration::from_secs(interval),
        look_back: std::time::Duration::from_secs(look_back * 3600),
        grace: std::time::Duration::from_secs(grace),
    });
    let watch = l.webhook_watch.unwrap_or_default();
    let watch_interval = c.whole(
        watch.interval_seconds,
        &at.key("webhookWatch.intervalSeconds"),
        0..=24 * 3600,
        300,
    );
    let min_alert_interval = c.whole(
        watch.min_alert_interval_seconds,
        &at.key("webhookWatch.minAlertIntervalSeconds"),
        0..=7 * 24 * 3600,
        900,
    );
    let webhook_watch = (watch_interval > 0).then(|| WebhookWatch {
        min_alert_interval: std::time::Duration::from_secs(min_alert_interval),
        name: Text::of(&watch.name)
            .unwrap_or(crate::qlik_api::webhooks::DEFAULT_NAME)
            .to_owned(),
        id: Text::of(&watch.id).map(str::to_owned),
        expected_url: Text::of(&watch.expected_url).map(str::to_owned),
        interval: std::time::Duration::from_secs(watch_interval),
    });
    let final_outcome = FinalOutcome {
        wait,
        wait_secs: c.whole(
            alerts.final_outcome_wait_seconds,
            &at.key("alerts.finalOutcomeWaitSeconds"),
            1..=24 * 3600,
            1800,
        ),
    };

    let time_zone = time_zone(Text::of(&l.time_zone)).unwrap_or_else(|e| {
        c.error(&at.key("timeZone"), e);
        jiff::tz::TimeZone::UTC
    });
    let script_log_layout = match Text::of(&l.script_log_layout) {
        None | Some("butler") => ScriptLogLayout::Butler,
        Some("byTenant") => ScriptLogLayout::ByTenant,
        Some(other) => {
            c.error(
                &at.key("scriptLogLayout"),
                format!("'{other}' is not butler or byTenant"),
            );
            ScriptLogLayout::Butler
        }
    };
    let metrics_listen = Text::of(&l.metrics_listen).and_then(|a| match a.parse() {
        Ok(addr) => Some(addr),
        Err(_) => {
            let reason =
                format!("'{a}' is not an address to listen on (IP:port, e.g. 127.0.0.1:9464)");
            c.error(&at.key("metricsListen"), reason);
            None
        }
    });
    Settings {
        metrics_listen,
        time_zone,
        script_log_layout,
        journal_path,
        shared_journal,
        retention_days,
        log_level: Text::of(&l.log_level).and_then(|level| {
            // Butler's names too (verbose, silly); anything else would silence the log.
            match relay_cli::log_filter(Some(level), "info") {
                (level, None) => Some(level),
                (_, Some(_)) => {
                    let reason = format!(
                        "'{level}' is not a log level (error, warn, info, verbose, debug, trace)"
                    );
                    c.error(&at.key("logLevel"), reason);
                    None
                }
            }
        }),
        give_up_secs,
        retry_base_ms,
        final_outcome,
        reconcile,
        webhook_watch,
        beside_butler: super::value::Flag::or(l.beside_butler, false),
    }
}
