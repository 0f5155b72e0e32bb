//! The listener's configuration: the Butler-style YAML of design.md §4.
//!
//! Why Butler's layout: a Butler user can point the listener at the file they already have.
//! Sections the listener does not use are ignored; the keys it uses are checked strictly at
//! start-up, and every problem is reported with the file and the key path, e.g.
//! `butler.yaml: Butler.qlikSenseCloud.event.mqtt.tenant.tenantUrl: not a URL`. Secret values
//! may be written as `${ENV_VAR}` and never appear in errors or summaries.
//!
//! How it is read ([`value`] says more): serde reads the YAML into one type per section, each
//! key written once as a field (the section files: [`broker`], [`tenant`], [`channel`],
//! [`email`], [`butler`]); a value of the wrong shape stops there with its key path. A second
//! pass checks the values and builds the [`Config`] the listener runs on, reporting every
//! problem at once. [`schema`] gives the JSON Schema of the same types, shipped as
//! `listener/config.schema.json` for editors.
//!
//! Our extensions live in the same tree (see docs/listener.md):
//! - `…mqttForward.broker.{tls.{enable,caFile,certFile,keyFile,insecureSkipVerify}, clientId,
//!   protocolVersion, keepAliveSeconds, sessionExpirySeconds}`;
//! - `…mqttForward.requireSignature` with a `webhookSecret` per tenant (and
//!   `webhookSecretPrevious` while rotating it);
//! - `Butler.qlikSenseCloud.event.mqtt.tenants: [ … ]` beside Butler's single `tenant`;
//! - `Butler.qlikCloudListener.{journal.path, journal.retentionDays, logLevel, alerts}`.

mod broker;
mod butler;
mod channel;
mod email;
mod listener;
mod summary;
mod tenant;
mod value;
mod warnings;

pub use broker::{BrokerConfig, Protocol, TlsKeys, TlsSettings};
pub use butler::{ButlerMqttConfig, QrsConfig, RestConfig};
pub use channel::{ChannelConfig, ChannelKind, Format, Message, RateKey, Rules, Target};
pub use email::{mailbox, EmailSettings, OwnerAlert, Priority, SmtpConfig, SmtpSecurity};
pub use listener::{
    time_zone, FinalOutcome, Reconcile, ScriptLogLayout, WaitForFinal, WebhookWatch,
};
pub use tenant::{TenantConfig, TenantRef};

use schemars::JsonSchema;
use serde::Deserialize;
use std::fmt;
use std::path::{Path, PathBuf};
use value::{Check, Flag, KeyPath, Text};

/// Where the MQTT alert channel publishes unless told otherwise (outside `qscloud/#`).
pub const DEFAULT_ALERT_TOPIC: &str = "qlikcloud/alerts/reload-failed";

/// The shortest journal retention: Qlik resends deliveries up to 7 days old, plus a day.
pub const MIN_RETENTION_DAYS: u64 = 8;

/// Whether an MQTT topic filter (`a/+/c`, `a/#`, `$share/g/a/#`) matches a topic.
pub fn topic_matches(filter: &str, topic: &str) -> bool {
    let filter = match filter.strip_prefix("$share/") {
        Some(rest) => rest.split_once('/').map(|(_, f)| f).unwrap_or(""),
        None => filter,
    };
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// One problem in the file: where, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub reason: String,
}

/// Every problem found, with the file they are in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors {
    pub file: PathBuf,
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}: {}: {}", self.file.display(), e.path, e.reason)?;
        }
        Ok(())
    }
}

/// `Butler.genericUrls[]`: links offered to alert templates.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GenericUrl {
    /// The link's id (`genericUrls[].id` in templates).
    pub id: String,
    /// The text shown for the link.
    pub link_text: String,
    /// The link's address.
    pub url: String,
    /// Butler's free-text note on the link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// What the listener runs on: every value checked, defaults applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub file: PathBuf,
    pub broker: BrokerConfig,
    /// `topic.subscriptionRoot` (Butler: `qscloud/#`).
    pub subscription_root: String,
    /// `topic.appReload` (Butler: `qscloud/app/reload`).
    pub app_reload_topic: String,
    pub require_signature: bool,
    pub tenants: Vec<TenantConfig>,
    pub journal_path: PathBuf,
    /// `journal.url`: a journal in PostgreSQL shared with other listeners (wins over the path).
    pub shared_journal: Option<listener::SharedJournal>,
    pub retention_days: u32,
    /// `Butler.scriptLog.storeOnDisk.qsCloud.appReloadFailure.logDirectory` when enabled.
    pub script_log_dir: Option<PathBuf>,
    /// How the script logs are laid out there (default: Butler's).
    pub script_log_layout: ScriptLogLayout,
    pub log_level: Option<String>,
    pub generic_urls: Vec<GenericUrl>,
    /// The time zone of Butler's local-time template fields and the script-log folders.
    pub time_zone: jiff::tz::TimeZone,
    /// How long an alert is retried before it is recorded as failed.
    pub give_up_secs: u64,
    /// The first wait between retries (doubling, capped at a minute).
    pub retry_base_ms: u64,
    /// Required when an e-mail channel is enabled.
    pub smtp: Option<SmtpConfig>,
    /// `Butler.mqttConfig`, when enabled.
    pub butler_mqtt: Option<ButlerMqttConfig>,
    /// Required with `butler_mqtt`, for task starts.
    pub qrs: Option<QrsConfig>,
    /// `Butler.restServerConfig`, when enabled.
    pub rest: Option<RestConfig>,
    /// `qlikCloudListener.metricsListen`: `/metrics`, `/healthz` and `/readyz` on their own.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// When a failed attempt waits for the reload's final outcome.
    pub final_outcome: FinalOutcome,
    /// Reconciliation with Qlik Cloud's reloads API; `None`: off.
    pub reconcile: Option<Reconcile>,
    /// The webhook watchdog; `None`: off.
    pub webhook_watch: Option<WebhookWatch>,
    /// Where this file deliberately means something else here than in Butler, and which
    /// enabled Butler features the listener does not provide: said by `check-config` and at
    /// start-up.
    pub notes: Vec<String>,
    /// What in the file most likely does not do what was meant: said by `check-config` and
    /// at start-up as warnings.
    pub warnings: Vec<String>,
    /// Key paths of secrets written in the file itself rather than as `${VAR}`.
    pub literal_secrets: Vec<String>,
}

/// The whole file: Butler's configuration has a single root key.
#[derive(Deserialize, JsonSchema, Default)]
#[serde(default)]
#[schemars(title = "qlik-listener configuration (Butler-style YAML)")]
pub struct ConfigFile {
    /// Everything is under `Butler`, as in Butler's file.
    #[serde(rename = "Butler")]
    butler: Option<Butler>,
}

/// The sections of Butler's configuration the listener reads (others are ignored).
#[derive(Deserialize, JsonSchema, Default)]
#[serde(default, rename_all = "camelCase")]
struct Butler {
    /// Butler's MQTT integration; `qlikSenseCloud.event.mqttForward` is where Qlik Cloud events arrive.
    mqtt_config: Option<butler::MqttConfig>,
    /// Qlik Cloud: the tenants and their alert channels.
    qlik_sense_cloud: Option<tenant::QlikSenseCloud>,
    /// Storing failed reloads' script logs on disk.
    script_log: Option<ScriptLog>,
    /// Links offered to alert templates as `genericUrls`.
    generic_urls: Option<Vec<GenericUrlSection>>,
    /// The SMTP server for e-mail alerts (`smtp`).
    email_notification: Option<email::EmailNotification>,
    /// The Qlik Sense Repository Service, for task starts.
    #[serde(rename = "configQRS")]
    config_qrs: Option<butler::ConfigQrs>,
    /// The client certificate for the QRS API.
    cert: Option<butler::Cert>,
    /// The listener's HTTP API (health, metrics, Butler's publish endpoint).
    rest_server_config: Option<butler::RestServerConfig>,
    /// Butler's HTTP endpoints: the listener serves `mqttPublishMessage` and `butlerping`.
    rest_server_endpoints_enable: Option<butler::RestServerEndpointsEnable>,
    /// The listener's own settings (not Butler's).
    qlik_cloud_listener: Option<listener::Listener>,
    // Butler's features the listener does not provide (named by check-config when enabled):
    /// Butler's InfluxDB output (not provided by the listener).
    influx_db: Option<butler::Switch>,
    /// Butler's key-value store (not provided by the listener).
    key_value_store: Option<butler::Switch>,
    /// Butler's scheduler (not provided by the listener).
    scheduler: Option<butler::Switch>,
    /// Butler's uptime monitor (not provided by the listener).
    uptime_monitor: Option<butler::Switch>,
    /// Butler's incident tools (not provided by the listener).
    incident_tool: Option<butler::IncidentTool>,
}

#[derive(Deserialize, JsonSchema, Default)]
#[serde(default, rename_all = "camelCase")]
struct ScriptLog {
    /// Where script logs are written.
    store_on_disk: Option<StoreOnDisk>,
}

#[derive(Deserialize, JsonSchema, Default)]
#[serde(default, rename_all = "camelCase")]
struct StoreOnDisk {
    /// Qlik Cloud's script logs.
    qs_cloud: Option<QsCloud>,
}

#[derive(Deserialize, JsonSchema, Default)]
#[serde(default, rename_all = "camelCase")]
struct QsCloud {
    /// Script logs of failed reloads: `enable`, `logDirectory`.
    app_reload_failure: Option<ScriptLogStore>,
}

/// Failed reloads' script logs, one file per reload.
#[derive(Deserialize, JsonSchema, Default)]
#[serde(default, rename_all = "camelCase")]
struct ScriptLogStore {
    /// Store each failed reload's script log (default false).
    enable: Option<Flag>,
    /// Folder for the logs, relative to this file's folder.
    log_directory: Option<Text>,
}

#[derive(Deserialize, JsonSchema, Default)]
#[serde(default, rename_all = "camelCase")]
struct GenericUrlSection {
    /// The link's id (`genericUrls[].id` in templates).
    id: Option<Text>,
    /// The text shown for the link.
    link_text: Option<Text>,
    /// The link's address.
    url: Option<Text>,
    /// A note on the link (Butler's `comment`), for templates.
    comment: Option<Text>,
}

impl Config {
    /// Reads and checks `file`. `env` resolves `${VAR}` references.
    pub fn load(file: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(file)
            .map_err(|e| one_error(file, "(file)", format!("cannot read: {e}")))?;
        Self::parse(file, &text, env)
    }

    /// Checks the YAML `text`; `file` is only used in messages and to resolve relative paths.
    pub fn parse(
        file: &Path,
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigErrors> {
        // Syntax first, so that a broken file is not reported as a wrong value.
        serde_norway::from_str::<serde_norway::Value>(text)
            .map_err(|e| one_error(file, "(file)", format!("not valid YAML: {e}")))?;
        let mut ignored = Vec::new();
        let yaml = serde_norway::Deserializer::from_str(text);
        // serde_ignored writes `?` for each `Option` on the way: the key path without them.
        let mut note_ignored =
            |path: serde_ignored::Path<'_>| ignored.push(path.to_string().replace(".?", ""));
        let yaml = serde_ignored::Deserializer::new(yaml, &mut note_ignored);
        let sections: ConfigFile = serde_path_to_error::deserialize(yaml).map_err(|e| {
            let path = e.path().to_string();
            // serde_norway names the path too: said once.
            let message = e.inner().to_string();
            let message = message
                .strip_prefix(&format!("{path}: "))
                .unwrap_or(&message);
            one_error(file, &path, describe(message))
        })?;
        let base = file.parent().unwrap_or(Path::new("."));
        let mut check = Check::new(base, env);
        check.ignored = ignored.clone();
        let mut config = check_file(&mut check, file, sections);
        config.warnings.append(&mut check.warnings);
        config.warnings.extend(warnings::unknown_keys(&ignored));
        config.warnings.extend(warnings::mangled_paths(&config));
        if check.errors.is_empty() {
            Ok(Config {
                literal_secrets: check.literal_secrets,
                ..config
            })
        } else {
            Err(ConfigErrors {
                file: file.to_owned(),
                errors: check.errors,
            })
        }
    }
}

fn one_error(file: &Path, path: &str, reason: String) -> ConfigErrors {
    ConfigErrors {
        file: file.to_owned(),
        errors: vec![ConfigError {
            path: path.to_owned(),
            reason,
        }],
    }
}

/// serde's message for a value of the wrong shape, without the value itself (it may be a
/// secret written in the wrong place): `expected true or false, found text at line 3 column 9`.
fn describe(message: &str) -> String {
    let (message, location) = match message.find(" at line ") {
        Some(i) => message.split_at(i),
        None => (message, ""),
    };
    let Some((found, expected)) = message
        .strip_prefix("invalid type: ")
        .and_then(|m| m.rsplit_once(", expected "))
    else {
        return format!("{message}{location}");
    };
    let found = match found.split([' ', '`', '"']).next().unwrap_or_default() {
        "string" | "char" => "text",
        "integer" | "floating" => "a number",
        "boolean" => "true or false",
        "sequence" => "a list",
        "map" => "a map of keys",
        "unit" => "nothing",
        _ => "another kind of value",
    };
    format!("expected {expected}, found {found}{location}")
}

/// The JSON Schema of what the listener reads, for editors (`listener/config.schema.json`).
pub fn schema() -> String {
    let schema = schemars::generate::SchemaSettings::draft07()
        .into_generator()
        .into_root_schema_for::<ConfigFile>();
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}

/// The second pass over the whole file.
fn check_file(c: &mut Check<'_>, file: &Path, f: ConfigFile) -> Config {
    let root = KeyPath::new("Butler");
    let butler = f.butler.unwrap_or_else(|| {
        c.error(
            &root,
            "missing: the file must have the root key Butler, as Butler's own config",
        );
        Butler::default()
    });
    let mut mqtt_config = butler.mqtt_config.unwrap_or_default();
    let mqtt_path = root.key("mqttConfig");
    let forward = broker::check_forward(
        c,
        &mqtt_path.key("qlikSenseCloud.event.mqttForward"),
        mqtt_config
            .qlik_sense_cloud
            .take()
            .and_then(|q| q.event)
            .and_then(|e| e.mqtt_forward)
            .unwrap_or_default(),
    );
    let tenants = tenant::check_cloud(
        c,
        &root.key("qlikSenseCloud"),
        butler.qlik_sense_cloud.unwrap_or_default(),
        &forward,
    );
    let listener = listener::check(
        c,
        &root.key("qlikCloudListener"),
        butler.qlik_cloud_listener.unwrap_or_default(),
    );
    let store = butler
        .script_log
        .and_then(|s| s.store_on_disk)
        .and_then(|s| s.qs_cloud)
        .and_then(|s| s.app_reload_failure)
        .unwrap_or_default();
    let store_path = root.key("scriptLog.storeOnDisk.qsCloud.appReloadFailure");
    let script_log_dir = if Flag::or(store.enable, false) {
        c.required(&store.log_directory, &store_path.key("logDirectory"))
            .map(|d| c.base.join(d))
    } else {
        None
    };

    let mut notes = butler::not_provided(
        butler.influx_db,
        butler.key_value_store,
        butler.scheduler,
        butler.uptime_monitor,
        butler.incident_tool,
    );
    let mut tenants = tenants;
    let warnings: Vec<String> = Vec::new();

    let email = butler.email_notification.unwrap_or_default();
    let email_off = email.enable.is_some_and(|f| !f.0);
    let wants_email = tenants
        .iter()
        .flat_map(|t| &t.channels)
        .any(|ch| matches!(ch.target, Target::Email(_)));
    if email_off && wants_email {
        for t in &mut tenants {
            t.channels
                .retain(|ch| !matches!(ch.target, Target::Email(_)));
        }
        notes.push("Butler.emailNotification.enable is false: e-mail alerts are off, as in Butler (emailNotification.reloadAppFailure is ignored)".into());
    }
    let wants_email = wants_email && !email_off;
    let smtp = if wants_email {
        email::check_smtp(
            c,
            &root.key("emailNotification.smtp"),
            email.smtp.unwrap_or_default(),
        )
    } else {
        None
    };
    // Beside Butler, Butler keeps task starts and its HTTP API: not even checked here.
    let beside = listener.beside_butler;
    if beside {
        notes.push("Butler.qlikCloudListener.besideButler is true: task starts (mqttConfig) and the HTTP API (restServerConfig) are left to Butler".into());
    }
    let butler_mqtt = match beside {
        true => None,
        false => butler::check_mqtt(c, &mqtt_path, mqtt_config),
    };
    if let Some(m) = &butler_mqtt {
        notes.push(format!("Butler.mqttConfig.enable is true: the listener starts Qlik Sense tasks named on {} (as Butler does); if Butler also runs with this file, set Butler.qlikCloudListener.besideButler: true so no task starts twice", m.task_start_topic));
    }
    let qrs = if butler_mqtt.is_some() {
        butler::check_qrs(
            c,
            &root,
            butler.config_qrs.unwrap_or_default(),
            butler.cert.unwrap_or_default(),
        )
    } else {
        None
    };
    let rest = match beside {
        true => None,
        false => butler::check_rest(
            c,
            &root,
            butler.rest_server_config.unwrap_or_default(),
            butler.rest_server_endpoints_enable.unwrap_or_default(),
        ),
    };
    let urls_path = root.key("genericUrls");
    let generic_urls = butler
        .generic_urls
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .filter_map(|(i, u)| {
            let at = urls_path.item(i);
            let id = c.required(&u.id, &at.key("id"));
            let link_text = c.required(&u.link_text, &at.key("linkText"));
            let url = c.required(&u.url, &at.key("url"));
            Some(GenericUrl {
                id: id?,
                link_text: link_text?,
                url: url?,
                comment: Text::of(&u.comment).map(str::to_owned),
            })
        })
        .collect();
    let mut config = Config {
        file: file.to_owned(),
        broker: forward.broker,
        subscription_root: forward.subscription_root,
        app_reload_topic: forward.app_reload_topic,
        require_signature: forward.require_signature,
        tenants,
        journal_path: listener.journal_path,
        shared_journal: listener.shared_journal,
        retention_days: listener.retention_days,
        script_log_dir,
        script_log_layout: listener.script_log_layout,
        log_level: listener.log_level,
        generic_urls,
        time_zone: listener.time_zone,
        give_up_secs: listener.give_up_secs,
        retry_base_ms: listener.retry_base_ms,
        smtp,
        butler_mqtt,
        qrs,
        rest,
        metrics_listen: listener.metrics_listen,
        final_outcome: listener.final_outcome,
        reconcile: listener.reconcile,
        webhook_watch: listener.webhook_watch,
        notes,
        warnings,
        literal_secrets: Vec::new(),
    };
    // Listeners sharing a journal each keep their own MQTT session: every instance receives
    // every event (the journal keeps one), so none is lost while one of them is connected.
    if let Some(shared) = &config.shared_journal {
        let suffix = format!("-{}", shared.instance);
        config.broker.client_id.push_str(&suffix);
        if let Some(b) = &mut config.butler_mqtt {
            b.broker.client_id.push_str(&suffix);
            // Task starts are taken live by the instances that are connected (one of them
            // starts each task, butler::tasks); none is queued for an instance that is away,
            // which would start it again when it returns.
            b.broker.session_expiry_secs = 0;
        }
    }
    config
}

mod reference;
pub use reference::reference;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_butler;
