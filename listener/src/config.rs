//! The listener's configuration: the Butler-style YAML of design.md §4.
//!
//! Why Butler's layout: a Butler user can point the listener at the file they already have.
//! Sections the listener does not use are ignored; the keys it uses are checked strictly at
//! start-up, and every problem is reported (all of them, not just the first) with the file and
//! the key path, e.g. `butler.yaml: Butler.qlikSenseCloud.event.mqtt.tenant.tenantUrl: not a URL`.
//! Secret values may be written as `${ENV_VAR}` and never appear in errors or summaries.
//!
//! Our extensions live in the same tree (see the README's listener section):
//! - `…mqttForward.broker.{tls.{enable,caFile,certFile,keyFile,insecureSkipVerify}, clientId,
//!   protocolVersion, keepAliveSeconds, sessionExpirySeconds}`;
//! - `…mqttForward.requireSignature` with a `webhookSecret` per tenant (and
//!   `webhookSecretPrevious` while rotating it);
//! - `Butler.qlikSenseCloud.event.mqtt.tenants: [ … ]` beside Butler's single `tenant`;
//! - `Butler.qlikCloudListener.{journal.path, journal.retentionDays, logLevel}`.

use qlik_events::Secret;
use serde_norway::Value;
use std::fmt;
use std::path::{Path, PathBuf};

const FORWARD: &str = "Butler.mqttConfig.qlikSenseCloud.event.mqttForward";
const CLOUD: &str = "Butler.qlikSenseCloud";
const TENANT_ROOT: &str = "Butler.qlikSenseCloud.event.mqtt";
const SCRIPT_LOG: &str = "Butler.scriptLog.storeOnDisk.qsCloud.appReloadFailure";
const LISTENER: &str = "Butler.qlikCloudListener";
/// Where the MQTT alert channel publishes unless told otherwise (outside `qscloud/#`).
pub const DEFAULT_ALERT_TOPIC: &str = "qlikcloud/alerts/reload-failed";

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

pub use relay_mqtt::Protocol;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub enable: bool,
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub insecure_skip_verify: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerConfig {
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub tls: TlsSettings,
    /// Stable, so the broker keeps our session (and queued events) while we are away.
    pub client_id: String,
    pub protocol: Protocol,
    pub keep_alive_secs: u16,
    /// How long the broker keeps the session after a disconnect (MQTT 5).
    pub session_expiry_secs: u32,
}

/// How a tenant was named in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenantRef {
    /// The tenant id as events carry it.
    Id(String),
    /// A host name (Butler's template shows `tenant.id: xyz.eu.qlikcloud.com`): resolved to the
    /// id once at start-up with `GET /api/v1/users/me`.
    Host(String),
}

/// Which kind of alert channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelKind {
    /// MS Teams through a Power Automate workflow (`webhookURL`), an Adaptive Card.
    Teams,
    /// A Slack incoming webhook.
    Slack,
    /// Our outgoing webhook: a stable JSON document, HMAC-signed.
    Webhook,
    /// The same document, published QoS 1 on the listener's broker (Node-RED and friends).
    Mqtt,
    /// E-mail over SMTP (`Butler.emailNotification.smtp`), one message per recipient.
    Email,
    /// Plain text on the listener's standard output (`consoleNotification`; ours, not Butler's):
    /// for the demo and for trying templates.
    Console,
    /// The webhook's JSON document appended as one line to a file (`fileNotification.path`;
    /// ours): a local audit trail or a hand-off to a log shipper.
    File,
}

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// `secure: true`: TLS from the first byte (usually port 465).
    Implicit,
    /// `tls.requireTLS: true`: STARTTLS, refused if the server does not offer it.
    StartTls,
    /// The default: STARTTLS when offered.
    Opportunistic,
    /// `tls.ignoreTLS: true`: plain text (a local relay only).
    None,
}

/// `Butler.emailNotification.smtp`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    pub security: SmtpSecurity,
    /// `tls.serverName`: the name to verify the certificate against (default: host).
    pub server_name: Option<String>,
    /// `tls.rejectUnauthorized: false`: accept any certificate (logged as a warning).
    pub accept_invalid_certs: bool,
    pub credentials: Option<(String, Secret)>,
}

/// Who gets the e-mail alert and what it looks like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailSettings {
    pub from: String,
    pub recipients: Vec<String>,
    /// A template (text), like Butler's `subject`.
    pub subject: String,
    /// `bodyFileDirectory` + `htmlTemplateFile`.
    pub body_template: Option<PathBuf>,
    /// `high`, `normal` or `low`.
    pub priority: String,
    /// `appOwnerAlert`, when enabled.
    pub owner_alert: Option<OwnerAlert>,
}

/// Whether the app owner is alerted too (`appOwnerAlert`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerAlert {
    pub include_all: bool,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
}

/// One alert channel for reload failures (`tenant.alert.<channel>.reloadAppFailure`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelConfig {
    /// `teams`, `slack`, `webhook-1`, …: the name deliveries are recorded under.
    pub id: String,
    pub kind: ChannelKind,
    /// Where to POST (Teams, Slack, webhook).
    pub url: Option<url::Url>,
    /// Where to publish (MQTT).
    pub topic: Option<String>,
    /// Where to append (file).
    pub file: Option<PathBuf>,
    /// `messageType: formatted` (the default) or `basic`.
    pub formatted: bool,
    pub basic_template: Option<String>,
    pub template_file: Option<PathBuf>,
    /// Leave the script log out (Teams).
    pub basic_content_only: bool,
    /// `alertEnableByTag`: alert only apps with this tag.
    pub tag: Option<String>,
    /// Seconds between two alerts for the same app on this channel; 0 = no limit.
    pub rate_limit_secs: u64,
    pub head_lines: usize,
    pub tail_lines: usize,
    pub slack_channel: Option<String>,
    pub slack_from_user: Option<String>,
    pub slack_icon_emoji: Option<String>,
    /// Key for our webhook's `X-Qlik-Relay-Signature`.
    pub secret: Option<Secret>,
    pub email: Option<EmailSettings>,
}

impl ChannelConfig {
    /// A channel with Butler's defaults (formatted messages, 15 + 15 script-log lines, no
    /// tag gating or rate limit) and nowhere to send yet.
    pub fn new(id: &str, kind: ChannelKind) -> ChannelConfig {
        ChannelConfig {
            id: id.to_owned(),
            kind,
            url: None,
            topic: None,
            file: None,
            formatted: true,
            basic_template: None,
            template_file: None,
            basic_content_only: false,
            tag: None,
            rate_limit_secs: 0,
            head_lines: 15,
            tail_lines: 15,
            slack_channel: None,
            slack_from_user: None,
            slack_icon_emoji: None,
            secret: None,
            email: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantConfig {
    /// Where in the file, for messages.
    pub path: String,
    pub id: TenantRef,
    pub tenant_url: url::Url,
    /// API key or JWT for `Authorization: Bearer`.
    pub token: Secret,
    pub qmc_url: Option<String>,
    pub hub_url: Option<String>,
    pub comment: Option<String>,
    /// The webhook's secret, to check the `qlik-signature` user property.
    pub webhook_secret: Option<Secret>,
    /// A second secret accepted too while the webhook's secret is rotated.
    pub webhook_secret_previous: Option<Secret>,
    pub channels: Vec<ChannelConfig>,
}

/// `Butler.genericUrls[]`: links offered to alert templates.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GenericUrl {
    pub id: String,
    pub link_text: String,
    pub url: String,
}

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
    pub retention_days: u32,
    /// `Butler.scriptLog.storeOnDisk.qsCloud.appReloadFailure.logDirectory` when enabled.
    pub script_log_dir: Option<PathBuf>,
    pub log_level: Option<String>,
    pub generic_urls: Vec<GenericUrl>,
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
    /// Key paths of secrets written in the file itself rather than as `${VAR}`.
    pub literal_secrets: Vec<String>,
}

impl Config {
    /// What is wrong with `file`'s permissions, as ssh says of a private key: other users can
    /// change it (and so redirect alerts and tasks), or read the secrets written in it. Empty
    /// on Windows, where a file's ACL is not checked.
    pub fn file_warnings(&self, file: &Path) -> Vec<String> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let Ok(meta) = std::fs::metadata(file) else {
                return Vec::new();
            };
            let mode = meta.permissions().mode() & 0o777;
            let mut warnings = Vec::new();
            if mode & 0o022 != 0 {
                warnings.push(format!(
                    "{} is writable by other users (mode {mode:04o}): anyone who can change it can redirect alerts and start tasks; chmod go-w it",
                    file.display()
                ));
            }
            if mode & 0o004 != 0 && !self.literal_secrets.is_empty() {
                warnings.push(format!(
                    "{} holds secrets ({}) and is readable by every user (mode {mode:04o}): chmod o-r it, or write them as ${{ENV_VAR}}",
                    file.display(),
                    self.literal_secrets.join(", ")
                ));
            }
            warnings
        }
        #[cfg(not(unix))]
        {
            let _ = file;
            Vec::new()
        }
    }

    /// Reads and checks `file`. `env` resolves `${VAR}` references.
    pub fn load(file: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigErrors> {
        let fail = |reason: String| ConfigErrors {
            file: file.to_owned(),
            errors: vec![ConfigError {
                path: "(file)".into(),
                reason,
            }],
        };
        let text = std::fs::read_to_string(file).map_err(|e| fail(format!("cannot read: {e}")))?;
        Self::parse(file, &text, env)
    }

    /// Checks the YAML `text`; `file` is only used in messages and to resolve relative paths.
    pub fn parse(
        file: &Path,
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigErrors> {
        let root: Value = serde_norway::from_str(text).map_err(|e| ConfigErrors {
            file: file.to_owned(),
            errors: vec![ConfigError {
                path: "(file)".into(),
                reason: format!("not valid YAML: {e}"),
            }],
        })?;
        let base = file.parent().unwrap_or(Path::new("."));
        let mut r = Reader {
            root: &root,
            env,
            errors: Vec::new(),
            base,
            literal_secrets: Vec::new(),
        };
        let mut config = r.config(file);
        config.literal_secrets = std::mem::take(&mut r.literal_secrets);
        if r.errors.is_empty() {
            Ok(config)
        } else {
            Err(ConfigErrors {
                file: file.to_owned(),
                errors: r.errors,
            })
        }
    }

    /// A human summary for `check-config`, with secrets masked.
    pub fn summary(&self) -> String {
        let b = &self.broker;
        let scheme = if b.tls.enable { "mqtts" } else { "mqtt" };
        let user = match (&b.username, &b.password) {
            (Some(u), Some(_)) => format!("{u}:***@"),
            (Some(u), None) => format!("{u}@"),
            _ => String::new(),
        };
        let mut out = format!(
            "config file:   {}\nbroker:        {scheme}://{user}{}:{} (MQTT {}, client id {}{}{})\n",
            self.file.display(),
            b.host,
            b.port,
            match b.protocol {
                Protocol::V5 => "5",
                Protocol::V311 => "3.1.1",
            },
            b.client_id,
            if b.tls.cert_file.is_some() { ", client certificate" } else { "" },
            if b.tls.insecure_skip_verify { ", CERTIFICATE VERIFICATION OFF" } else { "" },
        );
        out += &format!(
            "subscription:  {} (app reloads on {})\nsignatures:    {}\n",
            self.subscription_root,
            self.app_reload_topic,
            if self.require_signature {
                "required (qlik-signature user property)"
            } else {
                "not checked"
            }
        );
        for t in &self.tenants {
            let id = match &t.id {
                TenantRef::Id(id) => id.clone(),
                TenantRef::Host(h) => format!("{h} (host name; id resolved at start-up)"),
            };
            out += &format!(
                "tenant:        {id} at {} (token ***{})\n",
                t.tenant_url,
                match (&t.webhook_secret, &t.webhook_secret_previous) {
                    (Some(_), Some(_)) => ", webhook secret *** and previous ***",
                    (Some(_), None) => ", webhook secret ***",
                    _ => "",
                }
            );
            if !t.channels.is_empty() {
                let ids: Vec<&str> = t.channels.iter().map(|c| c.id.as_str()).collect();
                out += &format!("alerts:        {}\n", ids.join(", "));
            }
        }
        out += &format!(
            "journal:       {} (kept {} days)\nscript logs:   {}\n",
            self.journal_path.display(),
            self.retention_days,
            self.script_log_dir
                .as_ref()
                .map(|d| d.display().to_string())
                .unwrap_or_else(|| "not stored".into())
        );
        out
    }
}

/// Butler's general MQTT integration (`Butler.mqttConfig`): task starts in, status out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ButlerMqttConfig {
    pub broker: BrokerConfig,
    /// `subscriptionRootTopic` (Butler: `qliksense/#`).
    pub subscription_root: String,
    /// `taskStartTopic` (Butler: `qliksense/start_task`).
    pub task_start_topic: String,
    /// Ours: where the listener says it is online (retained; last will `offline`).
    pub status_topic: String,
    /// Ours: where the outcome of each task start is published.
    pub task_result_topic: String,
    /// Ours: only these task ids or names may be started (none: any).
    pub task_allow_list: Option<Vec<String>>,
}

/// The Qlik Sense Repository Service (`Butler.configQRS` and `Butler.cert`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QrsConfig {
    /// `https://<host>:<port>`
    pub base_url: url::Url,
    /// `headers.static`: e.g. `X-Qlik-User: UserDirectory=INTERNAL; UserId=sa_repository`.
    pub headers: Vec<(String, String)>,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub ca_cert: Option<PathBuf>,
    /// `rejectUnauthorized: false` skips certificate verification (logged as a warning).
    pub accept_invalid_certs: bool,
}

/// The listener's HTTP API (`Butler.restServerConfig`, `Butler.restServerEndpointsEnable`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestConfig {
    pub listen: std::net::SocketAddr,
    /// `PUT /v4/mqttpublishmessage`.
    pub publish_enabled: bool,
    /// Ours: require `Authorization: Bearer <token>` for the publish endpoint.
    pub bearer_token: Option<Secret>,
    /// Ours: topics must start with one of these.
    pub allowed_topic_prefixes: Option<Vec<String>>,
    pub max_message_bytes: usize,
    /// Ours: host names the API answers to besides IP addresses and `localhost` (the `Host`
    /// header is checked against them, against DNS rebinding).
    pub allowed_hosts: Vec<String>,
}

/// Where a broker's settings are in the file.
struct BrokerKeys {
    host: String,
    port: String,
    base: String,
    tls_default: bool,
    client_id: &'static str,
}

/// Walks the YAML tree by key path, collecting errors instead of stopping at the first.
struct Reader<'a> {
    root: &'a Value,
    env: &'a dyn Fn(&str) -> Option<String>,
    errors: Vec<ConfigError>,
    base: &'a Path,
    /// Key paths of secrets written in the file itself (not `${VAR}`).
    literal_secrets: Vec<String>,
}

/// The shortest journal retention: Qlik resends deliveries up to 7 days old, plus a day.
pub const MIN_RETENTION_DAYS: u64 = 8;

fn join(path: &str, key: &str) -> String {
    format!("{path}.{key}")
}

impl<'a> Reader<'a> {
    fn error(&mut self, path: &str, reason: impl Into<String>) {
        self.errors.push(ConfigError {
            path: path.to_owned(),
            reason: reason.into(),
        });
    }

    /// The value at a dotted path below `from` (the root when `from` is `None`).
    fn at(&self, path: &str) -> Option<&'a Value> {
        self.below(self.root, path)
    }

    fn below(&self, from: &'a Value, path: &str) -> Option<&'a Value> {
        path.split('.')
            .try_fold(from, |v, key| v.get(key))
            .filter(|v| !v.is_null())
    }

    fn string(&mut self, v: Option<&Value>, path: &str) -> Option<String> {
        match v? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => {
                self.error(path, "expected a string");
                None
            }
        }
    }

    fn required(&mut self, v: Option<&Value>, path: &str) -> Option<String> {
        match self.string(v, path) {
            Some(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
            Some(_) => {
                self.error(path, "is empty");
                None
            }
            None if v.is_none() => {
                self.error(path, "missing");
                None
            }
            None => None,
        }
    }

    /// A secret: a literal or `${VAR}`, resolved from the environment.
    fn secret(&mut self, v: Option<&Value>, path: &str) -> Option<Secret> {
        let raw = self.string(v, path)?;
        let raw = raw.trim();
        if let Some(var) = raw.strip_prefix("${").and_then(|r| r.strip_suffix('}')) {
            return match (self.env)(var) {
                Some(value) if !value.is_empty() => Some(Secret::new(value)),
                _ => {
                    self.error(path, format!("environment variable {var} is not set"));
                    None
                }
            };
        }
        if raw.is_empty() {
            self.error(path, "is empty");
            return None;
        }
        self.literal_secrets.push(path.to_owned());
        Some(Secret::new(raw))
    }

    fn boolean(&mut self, v: Option<&Value>, path: &str, default: bool) -> bool {
        match v {
            None => default,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                self.error(path, "expected true or false");
                default
            }
        }
    }

    fn number(
        &mut self,
        v: Option<&Value>,
        path: &str,
        range: std::ops::RangeInclusive<u64>,
        default: u64,
    ) -> u64 {
        let n = match v {
            None => return default,
            Some(Value::Number(n)) => n.as_u64(),
            Some(Value::String(s)) => s.trim().parse().ok(),
            Some(_) => None,
        };
        match n {
            Some(n) if range.contains(&n) => n,
            _ => {
                self.error(
                    path,
                    format!(
                        "expected a whole number from {} to {}",
                        range.start(),
                        range.end()
                    ),
                );
                default
            }
        }
    }

    fn file(&mut self, v: Option<&Value>, path: &str) -> Option<PathBuf> {
        let name = self.required(v, path)?;
        let p = self.base.join(name);
        if !p.is_file() {
            self.error(path, format!("no such file: {}", p.display()));
            return None;
        }
        Some(p)
    }

    fn topic_filter(&mut self, v: Option<&Value>, path: &str, default: &str) -> String {
        let t = self.string(v, path).unwrap_or_else(|| default.to_owned());
        let t = t.trim().to_owned();
        let bad_wildcard = t.split('/').enumerate().any(|(i, level)| {
            let last = i == t.split('/').count() - 1;
            (level.contains('#') && (level != "#" || !last))
                || (level.contains('+') && level != "+")
        });
        if t.is_empty() || bad_wildcard || t.contains('\0') {
            self.error(path, "not a valid MQTT topic filter (e.g. qscloud/#)");
        }
        t
    }

    fn config(&mut self, file: &Path) -> Config {
        if self.at("Butler").is_none() {
            self.error(
                "Butler",
                "missing: the file must have the root key Butler, as Butler's own config",
            );
        }
        let forward_enabled = self.at(&join(FORWARD, "enable"));
        if !self.boolean(forward_enabled, &join(FORWARD, "enable"), false) {
            self.error(
                &join(FORWARD, "enable"),
                "must be true: the listener receives Qlik Cloud events through this broker",
            );
        }
        let broker = self.broker();
        let subscription_root = self.topic_filter(
            self.at(&join(FORWARD, "topic.subscriptionRoot")),
            &join(FORWARD, "topic.subscriptionRoot"),
            "qscloud/#",
        );
        let app_reload_topic = self
            .string(
                self.at(&join(FORWARD, "topic.appReload")),
                &join(FORWARD, "topic.appReload"),
            )
            .unwrap_or_else(|| "qscloud/app/reload".into());
        let require_signature = self.boolean(
            self.at(&join(FORWARD, "requireSignature")),
            &join(FORWARD, "requireSignature"),
            false,
        );

        let cloud_enabled = self.at(&join(CLOUD, "enable"));
        if !self.boolean(cloud_enabled, &join(CLOUD, "enable"), false) {
            self.error(
                &join(CLOUD, "enable"),
                "must be true to handle Qlik Cloud events",
            );
        }
        let tenants = self.tenants(require_signature);

        let journal_path = match self.string(
            self.at(&join(LISTENER, "journal.path")),
            &join(LISTENER, "journal.path"),
        ) {
            Some(p) => self.base.join(p.trim()),
            None => self.base.join("qlik-listener.sqlite"),
        };
        let retention_days = self.number(
            self.at(&join(LISTENER, "journal.retentionDays")),
            &join(LISTENER, "journal.retentionDays"),
            // Events older than this are refused (a replay could not be told from a new
            // event), so it must cover Qlik's 7-day resend window with a day to spare.
            MIN_RETENTION_DAYS..=3650,
            30,
        ) as u32;
        let log_level = self.string(
            self.at(&join(LISTENER, "logLevel")),
            &join(LISTENER, "logLevel"),
        );

        let script_log_dir = if self.boolean(
            self.at(&join(SCRIPT_LOG, "enable")),
            &join(SCRIPT_LOG, "enable"),
            false,
        ) {
            self.required(
                self.at(&join(SCRIPT_LOG, "logDirectory")),
                &join(SCRIPT_LOG, "logDirectory"),
            )
            .map(|d| self.base.join(d))
        } else {
            None
        };

        let generic_urls = self.generic_urls();
        let wants_email = tenants
            .iter()
            .flat_map(|t| &t.channels)
            .any(|c| c.email.is_some());
        let smtp = if wants_email { self.smtp() } else { None };
        let butler_mqtt = self.butler_mqtt();
        let qrs = if butler_mqtt.is_some() {
            self.qrs()
        } else {
            None
        };
        let rest = self.rest();
        let give_up_secs = self.number(
            self.at(&join(LISTENER, "alerts.giveUpSeconds")),
            &join(LISTENER, "alerts.giveUpSeconds"),
            1..=7 * 24 * 3600,
            3600,
        );
        let retry_base_ms = self.number(
            self.at(&join(LISTENER, "alerts.retryBaseMilliseconds")),
            &join(LISTENER, "alerts.retryBaseMilliseconds"),
            10..=60_000,
            1000,
        );
        Config {
            generic_urls,
            give_up_secs,
            retry_base_ms,
            smtp,
            butler_mqtt,
            qrs,
            rest,
            literal_secrets: Vec::new(),
            file: file.to_owned(),
            broker,
            subscription_root,
            app_reload_topic,
            require_signature,
            tenants,
            journal_path,
            retention_days,
            script_log_dir,
            log_level,
        }
    }

    fn addresses(&mut self, v: Option<&'a Value>, path: &str, key: Option<&str>) -> Vec<String> {
        let items = match v {
            None => return Vec::new(),
            Some(Value::Sequence(items)) => items,
            Some(_) => {
                self.error(path, "expected a list of e-mail addresses");
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let at = format!("{path}[{i}]");
            let (value, at) = match key {
                Some(k) => (self.below(item, k), join(&at, k)),
                None => (Some(item), at),
            };
            if let Some(address) = self.required(value, &at) {
                if address.parse::<lettre::Address>().is_ok() {
                    out.push(address);
                } else {
                    self.error(&at, format!("'{address}' is not an e-mail address"));
                }
            }
        }
        out
    }

    fn email_settings(&mut self, path: &str, c: &'a Value) -> Option<EmailSettings> {
        let from = self.required(self.below(c, "fromAddress"), &join(path, "fromAddress"));
        if let Some(f) = &from {
            if f.parse::<lettre::message::Mailbox>().is_err() {
                self.error(
                    &join(path, "fromAddress"),
                    format!("'{f}' is not an e-mail address"),
                );
            }
        }
        let recipients =
            self.addresses(self.below(c, "recipients"), &join(path, "recipients"), None);
        let owner_alert = if self.boolean(
            self.below(c, "appOwnerAlert.enable"),
            &join(path, "appOwnerAlert.enable"),
            false,
        ) {
            Some(OwnerAlert {
                include_all: self.boolean(
                    self.below(c, "appOwnerAlert.includeOwner.includeAll"),
                    &join(path, "appOwnerAlert.includeOwner.includeAll"),
                    true,
                ),
                include: self.addresses(
                    self.below(c, "appOwnerAlert.includeOwner.user"),
                    &join(path, "appOwnerAlert.includeOwner.user"),
                    Some("email"),
                ),
                exclude: self.addresses(
                    self.below(c, "appOwnerAlert.excludeOwner.user"),
                    &join(path, "appOwnerAlert.excludeOwner.user"),
                    Some("email"),
                ),
            })
        } else {
            None
        };
        if recipients.is_empty() && owner_alert.is_none() {
            self.error(
                &join(path, "recipients"),
                "missing: no recipients and appOwnerAlert is off",
            );
        }
        let subject = self
            .string(self.below(c, "subject"), &join(path, "subject"))
            .unwrap_or_else(|| "Qlik Cloud reload failed: {{appName}}".into());
        let body_template = match (
            self.below(c, "bodyFileDirectory"),
            self.below(c, "htmlTemplateFile"),
        ) {
            (Some(dir), Some(file)) => {
                let dir = self.string(Some(dir), &join(path, "bodyFileDirectory"));
                let file = self.string(Some(file), &join(path, "htmlTemplateFile"));
                dir.zip(file).and_then(|(d, f)| {
                    let name = if f.ends_with(".handlebars") {
                        f
                    } else {
                        format!("{f}.handlebars")
                    };
                    let p = self.base.join(d.trim()).join(name.trim());
                    if p.is_file() {
                        Some(p)
                    } else {
                        self.error(
                            &join(path, "htmlTemplateFile"),
                            format!("no such file: {}", p.display()),
                        );
                        None
                    }
                })
            }
            _ => None,
        };
        let priority = self
            .string(self.below(c, "priority"), &join(path, "priority"))
            .unwrap_or_else(|| "high".into())
            .to_ascii_lowercase();
        if !matches!(priority.as_str(), "high" | "normal" | "low") {
            self.error(
                &join(path, "priority"),
                format!("'{priority}' is not high, normal or low"),
            );
        }
        Some(EmailSettings {
            from: from?,
            recipients,
            subject,
            body_template,
            priority,
            owner_alert,
        })
    }

    fn smtp(&mut self) -> Option<SmtpConfig> {
        let path = "Butler.emailNotification.smtp";
        let host = self.required(self.at(&join(path, "host")), &join(path, "host"));
        let secure = self.boolean(self.at(&join(path, "secure")), &join(path, "secure"), false);
        let port = self.number(
            self.at(&join(path, "port")),
            &join(path, "port"),
            1..=65535,
            if secure { 465 } else { 587 },
        ) as u16;
        let require = self.boolean(
            self.at(&join(path, "tls.requireTLS")),
            &join(path, "tls.requireTLS"),
            false,
        );
        let ignore = self.boolean(
            self.at(&join(path, "tls.ignoreTLS")),
            &join(path, "tls.ignoreTLS"),
            false,
        );
        let security = match (secure, require, ignore) {
            (true, _, _) => SmtpSecurity::Implicit,
            (false, true, true) => {
                self.error(
                    &join(path, "tls"),
                    "requireTLS and ignoreTLS contradict each other",
                );
                SmtpSecurity::StartTls
            }
            (false, true, false) => SmtpSecurity::StartTls,
            (false, false, true) => SmtpSecurity::None,
            (false, false, false) => SmtpSecurity::Opportunistic,
        };
        let server_name = self
            .string(
                self.at(&join(path, "tls.serverName")),
                &join(path, "tls.serverName"),
            )
            .filter(|s| !s.trim().is_empty());
        let accept_invalid_certs = !self.boolean(
            self.at(&join(path, "tls.rejectUnauthorized")),
            &join(path, "tls.rejectUnauthorized"),
            true,
        );
        let credentials = if self.boolean(
            self.at(&join(path, "auth.enable")),
            &join(path, "auth.enable"),
            false,
        ) {
            let user = self.required(self.at(&join(path, "auth.user")), &join(path, "auth.user"));
            let password = match self.at(&join(path, "auth.password")) {
                Some(v) => self.secret(Some(v), &join(path, "auth.password")),
                None => {
                    self.error(&join(path, "auth.password"), "missing: auth.enable is true");
                    None
                }
            };
            user.zip(password)
        } else {
            None
        };
        Some(SmtpConfig {
            host: host?,
            port,
            security,
            server_name,
            accept_invalid_certs,
            credentials,
        })
    }

    /// An optional list of strings at `path`; `what` says what they are, for errors.
    fn string_list(&mut self, path: &str, what: &str) -> Option<Vec<String>> {
        match self.at(path) {
            None => None,
            Some(Value::Sequence(items)) => Some(
                items
                    .iter()
                    .enumerate()
                    .filter_map(|(i, v)| self.required(Some(v), &format!("{path}[{i}]")))
                    .collect(),
            ),
            Some(_) => {
                self.error(path, format!("expected a list of {what}"));
                None
            }
        }
    }

    fn butler_mqtt(&mut self) -> Option<ButlerMqttConfig> {
        let path = "Butler.mqttConfig";
        if !self.boolean(self.at(&join(path, "enable")), &join(path, "enable"), false) {
            return None;
        }
        let mut broker = self.broker_at(&BrokerKeys {
            host: join(path, "brokerHost"),
            port: join(path, "brokerPort"),
            base: path.to_owned(),
            tls_default: false,
            client_id: "qlik-listener-butler",
        });
        // Azure Event Grid's MQTT broker authenticates clients by certificate.
        let eg = join(path, "azureEventGrid");
        if self.boolean(self.at(&join(&eg, "enable")), &join(&eg, "enable"), false) {
            broker.tls.enable = true;
            if let Some(id) = self.required(self.at(&join(&eg, "clientId")), &join(&eg, "clientId"))
            {
                broker.username = Some(id.clone());
                broker.client_id = id;
            }
            broker.tls.cert_file = self.file(
                self.at(&join(&eg, "clientCertFile")),
                &join(&eg, "clientCertFile"),
            );
            broker.tls.key_file = self.file(
                self.at(&join(&eg, "clientKeyFile")),
                &join(&eg, "clientKeyFile"),
            );
            if broker.port == 1883 && self.at(&join(path, "brokerPort")).is_none() {
                broker.port = 8883;
            }
        }
        let subscription_root = self.topic_filter(
            self.at(&join(path, "subscriptionRootTopic")),
            &join(path, "subscriptionRootTopic"),
            "qliksense/#",
        );
        let task_start_topic = self
            .string(
                self.at(&join(path, "taskStartTopic")),
                &join(path, "taskStartTopic"),
            )
            .unwrap_or_else(|| "qliksense/start_task".into())
            .trim()
            .to_owned();
        if !topic_matches(&subscription_root, &task_start_topic) {
            self.error(&join(path, "taskStartTopic"), format!("'{task_start_topic}' does not lie under subscriptionRootTopic '{subscription_root}', so it would never be received"));
        }
        let status_topic = self
            .string(
                self.at(&join(path, "statusTopic")),
                &join(path, "statusTopic"),
            )
            .unwrap_or_else(|| "qlik-listener/status".into());
        let task_result_topic = self
            .string(
                self.at(&join(path, "taskResultTopic")),
                &join(path, "taskResultTopic"),
            )
            .unwrap_or_else(|| "qlik-listener/task-result".into());
        for (key, topic) in [
            ("statusTopic", &status_topic),
            ("taskResultTopic", &task_result_topic),
        ] {
            if topic.is_empty() || topic.contains(['+', '#', '\0']) {
                self.error(&join(path, key), "not a topic to publish to (no wildcards)");
            }
        }
        let task_allow_list = self.string_list(&join(path, "taskAllowList"), "task ids or names");
        Some(ButlerMqttConfig {
            broker,
            subscription_root,
            task_start_topic,
            status_topic,
            task_result_topic,
            task_allow_list,
        })
    }

    fn qrs(&mut self) -> Option<QrsConfig> {
        let path = "Butler.configQRS";
        let host = self.required(self.at(&join(path, "host")), &join(path, "host"));
        let port = self.number(
            self.at(&join(path, "port")),
            &join(path, "port"),
            1..=65535,
            4242,
        );
        if !self.boolean(self.at(&join(path, "useSSL")), &join(path, "useSSL"), true) {
            self.error(
                &join(path, "useSSL"),
                "must be true: the QRS API is only reachable over HTTPS",
            );
        }
        let accept_invalid_certs = !self.boolean(
            self.at(&join(path, "rejectUnauthorized")),
            &join(path, "rejectUnauthorized"),
            true,
        );
        let mut headers = Vec::new();
        match self.at(&join(path, "headers.static")) {
            None => {}
            Some(Value::Sequence(items)) => {
                for (i, item) in items.iter().enumerate() {
                    let at = format!("{path}.headers.static[{i}]");
                    let name = self.required(self.below(item, "name"), &join(&at, "name"));
                    let value = self.required(self.below(item, "value"), &join(&at, "value"));
                    if let (Some(n), Some(v)) = (name, value) {
                        headers.push((n, v));
                    }
                }
            }
            Some(_) => self.error(
                &join(path, "headers.static"),
                "expected a list of {name, value}",
            ),
        }
        if !headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("X-Qlik-User"))
        {
            headers.push((
                "X-Qlik-User".into(),
                "UserDirectory=INTERNAL; UserId=sa_repository".into(),
            ));
        }
        let cert = "Butler.cert";
        let client_cert = self.file(
            self.at(&join(cert, "clientCert")),
            &join(cert, "clientCert"),
        );
        let client_key = self.file(
            self.at(&join(cert, "clientCertKey")),
            &join(cert, "clientCertKey"),
        );
        let ca_cert = self
            .at(&join(cert, "clientCertCA"))
            .and_then(|v| self.file(Some(v), &join(cert, "clientCertCA")));
        let host = host?;
        let base_url = match url::Url::parse(&format!("https://{host}:{port}")) {
            Ok(u) => u,
            Err(_) => {
                self.error(&join(path, "host"), format!("'{host}' is not a host name"));
                return None;
            }
        };
        Some(QrsConfig {
            base_url,
            headers,
            client_cert: client_cert?,
            client_key: client_key?,
            ca_cert,
            accept_invalid_certs,
        })
    }

    fn rest(&mut self) -> Option<RestConfig> {
        let path = "Butler.restServerConfig";
        if !self.boolean(self.at(&join(path, "enable")), &join(path, "enable"), false) {
            return None;
        }
        let host = self
            .string(
                self.at(&join(path, "serverHost")),
                &join(path, "serverHost"),
            )
            .unwrap_or_else(|| "127.0.0.1".into());
        let port = self.number(
            self.at(&join(path, "serverPort")),
            &join(path, "serverPort"),
            0..=65535,
            8080,
        ) as u16;
        let listen = match format!("{}:{port}", host.trim()).parse::<std::net::SocketAddr>() {
            Ok(a) => a,
            Err(_) => match host.trim() {
                "localhost" => std::net::SocketAddr::from(([127, 0, 0, 1], port)),
                other => {
                    self.error(
                        &join(path, "serverHost"),
                        format!("'{other}' is not an IP address to listen on"),
                    );
                    return None;
                }
            },
        };
        let publish_enabled = self.boolean(
            self.at("Butler.restServerEndpointsEnable.mqttPublishMessage"),
            "Butler.restServerEndpointsEnable.mqttPublishMessage",
            false,
        );
        let bearer_token = self
            .at(&join(path, "bearerToken"))
            .and_then(|v| self.secret(Some(v), &join(path, "bearerToken")));
        let allowed_topic_prefixes =
            self.string_list(&join(path, "allowedTopicPrefixes"), "topic prefixes");
        let max_message_bytes = self.number(
            self.at(&join(path, "maxMessageBytes")),
            &join(path, "maxMessageBytes"),
            1..=1024 * 1024,
            64 * 1024,
        ) as usize;
        let allowed_hosts = self
            .string_list(&join(path, "allowedHosts"), "host names")
            .unwrap_or_default()
            .into_iter()
            .map(|h| h.trim().to_ascii_lowercase())
            .collect();
        Some(RestConfig {
            listen,
            publish_enabled,
            bearer_token,
            allowed_topic_prefixes,
            max_message_bytes,
            allowed_hosts,
        })
    }

    fn generic_urls(&mut self) -> Vec<GenericUrl> {
        let path = "Butler.genericUrls";
        let items = match self.at(path) {
            None => return Vec::new(),
            Some(Value::Sequence(items)) => items,
            Some(_) => {
                self.error(path, "expected a list of {id, linkText, url}");
                return Vec::new();
            }
        };
        let mut urls = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let at = format!("{path}[{i}]");
            let id = self.required(self.below(item, "id"), &join(&at, "id"));
            let link_text = self.required(self.below(item, "linkText"), &join(&at, "linkText"));
            let url = self.required(self.below(item, "url"), &join(&at, "url"));
            if let (Some(id), Some(link_text), Some(url)) = (id, link_text, url) {
                urls.push(GenericUrl { id, link_text, url });
            }
        }
        urls
    }

    fn broker(&mut self) -> BrokerConfig {
        let b = join(FORWARD, "broker");
        self.broker_at(&BrokerKeys {
            host: join(&b, "host"),
            port: join(&b, "port"),
            base: b,
            tls_default: true,
            client_id: "qlik-listener",
        })
    }

    /// A broker's settings: `host` and `port` where the file keeps them, our extensions
    /// (`tls`, `username`, `password`, `clientId`, …) below `base`.
    fn broker_at(&mut self, keys: &BrokerKeys) -> BrokerConfig {
        let b = keys.base.clone();
        let host = self
            .required(self.at(&keys.host), &keys.host)
            .unwrap_or_default();
        if host.contains("://") {
            self.error(
                &keys.host,
                "expected a host name, without mqtt:// or mqtts://",
            );
        }
        let tls_path = join(&b, "tls");
        let enable = self.boolean(
            self.at(&join(&tls_path, "enable")),
            &join(&tls_path, "enable"),
            keys.tls_default,
        );
        let ca_file = self
            .at(&join(&tls_path, "caFile"))
            .and_then(|v| self.file(Some(v), &join(&tls_path, "caFile")));
        let cert_file = self
            .at(&join(&tls_path, "certFile"))
            .and_then(|v| self.file(Some(v), &join(&tls_path, "certFile")));
        let key_file = self
            .at(&join(&tls_path, "keyFile"))
            .and_then(|v| self.file(Some(v), &join(&tls_path, "keyFile")));
        if cert_file.is_some() != key_file.is_some() {
            self.error(&tls_path, "certFile and keyFile go together");
        }
        let insecure = self.boolean(
            self.at(&join(&tls_path, "insecureSkipVerify")),
            &join(&tls_path, "insecureSkipVerify"),
            false,
        );
        let port_default = if enable { 8883 } else { 1883 };
        let port = self.number(self.at(&keys.port), &keys.port, 1..=65535, port_default) as u16;
        let username = self
            .string(self.at(&join(&b, "username")), &join(&b, "username"))
            .filter(|u| !u.trim().is_empty());
        let password = match self.at(&join(&b, "password")) {
            Some(Value::String(s)) if s.is_empty() => None,
            Some(v) => self.secret(Some(v), &join(&b, "password")),
            None => None,
        };
        if password.is_some() && username.is_none() {
            self.error(&join(&b, "password"), "a password needs a username");
        }
        let client_id = self
            .string(self.at(&join(&b, "clientId")), &join(&b, "clientId"))
            .unwrap_or_else(|| keys.client_id.into());
        if client_id.trim().is_empty() || client_id.len() > 128 {
            self.error(&join(&b, "clientId"), "must be 1 to 128 characters");
        }
        let protocol = match self
            .string(
                self.at(&join(&b, "protocolVersion")),
                &join(&b, "protocolVersion"),
            )
            .as_deref()
            .map(str::trim)
        {
            None | Some("5") | Some("5.0") => Protocol::V5,
            Some("3.1.1") | Some("4") => Protocol::V311,
            Some(other) => {
                self.error(
                    &join(&b, "protocolVersion"),
                    format!("'{other}' is not 5 or 3.1.1"),
                );
                Protocol::V5
            }
        };
        let keep_alive_secs = self.number(
            self.at(&join(&b, "keepAliveSeconds")),
            &join(&b, "keepAliveSeconds"),
            5..=3600,
            30,
        ) as u16;
        let session_expiry_secs = self.number(
            self.at(&join(&b, "sessionExpirySeconds")),
            &join(&b, "sessionExpirySeconds"),
            60..=u32::MAX as u64,
            7 * 24 * 3600,
        ) as u32;
        BrokerConfig {
            host,
            port,
            username,
            password,
            tls: TlsSettings {
                enable,
                ca_file,
                cert_file,
                key_file,
                insecure_skip_verify: insecure,
            },
            client_id: client_id.trim().to_owned(),
            protocol,
            keep_alive_secs,
            session_expiry_secs,
        }
    }

    fn tenants(&mut self, require_signature: bool) -> Vec<TenantConfig> {
        let single = join(TENANT_ROOT, "tenant");
        let list = join(TENANT_ROOT, "tenants");
        let mut nodes: Vec<(String, &'a Value)> = Vec::new();
        if let Some(t) = self.at(&single) {
            nodes.push((single.clone(), t));
        }
        match self.at(&list) {
            Some(Value::Sequence(items)) => {
                for (i, t) in items.iter().enumerate() {
                    nodes.push((format!("{list}[{i}]"), t));
                }
            }
            Some(_) => self.error(&list, "expected a list of tenants"),
            None => {}
        }
        if nodes.is_empty() {
            self.error(
                &single,
                "missing: configure the Qlik Cloud tenant (or a list under tenants)",
            );
        }
        let mut tenants: Vec<TenantConfig> = Vec::new();
        for (path, node) in nodes {
            if let Some(t) = self.tenant(&path, node, require_signature) {
                if tenants.iter().any(|other| other.id == t.id) {
                    self.error(&join(&path, "id"), "the same tenant is configured twice");
                } else {
                    tenants.push(t);
                }
            }
        }
        tenants
    }

    fn tenant(
        &mut self,
        path: &str,
        node: &'a Value,
        require_signature: bool,
    ) -> Option<TenantConfig> {
        let id_path = join(path, "id");
        let id = self.required(self.below(node, "id"), &id_path);
        let url_path = join(path, "tenantUrl");
        let tenant_url = self
            .required(self.below(node, "tenantUrl"), &url_path)
            .and_then(|u| match url::Url::parse(&u) {
                Ok(url) if !url.username().is_empty() || url.password().is_some() => {
                    // The value is not repeated: it holds a credential.
                    self.error(
                        &url_path,
                        "must not contain a user name or password (the API key goes in auth.jwt.token)",
                    );
                    None
                }
                Ok(url) if matches!(url.scheme(), "https" | "http") && url.host_str().is_some() => {
                    Some(url)
                }
                _ => {
                    self.error(
                        &url_path,
                        "not a URL (expected https://<tenant>.<region>.qlikcloud.com)",
                    );
                    None
                }
            });
        let auth_type = self.string(self.below(node, "authType"), &join(path, "authType"));
        if let Some(t) = auth_type.as_deref() {
            if !t.eq_ignore_ascii_case("jwt") && !t.eq_ignore_ascii_case("apikey") {
                self.error(
                    &join(path, "authType"),
                    format!("'{t}' is not supported (jwt: an API key or JWT as bearer token)"),
                );
            }
        }
        let token_path = join(path, "auth.jwt.token");
        let token = match self.below(node, "auth.jwt.token") {
            Some(v) => self.secret(Some(v), &token_path),
            None => {
                self.error(
                    &token_path,
                    "missing: an API key for the Qlik Cloud REST API",
                );
                None
            }
        };
        let secret_path = join(path, "webhookSecret");
        let webhook_secret = self
            .below(node, "webhookSecret")
            .and_then(|v| self.secret(Some(v), &secret_path));
        if require_signature
            && webhook_secret.is_none()
            && self.below(node, "webhookSecret").is_none()
        {
            self.error(
                &secret_path,
                "missing: requireSignature is on, so each tenant needs the webhook's secret",
            );
        }
        let previous_path = join(path, "webhookSecretPrevious");
        let webhook_secret_previous = self
            .below(node, "webhookSecretPrevious")
            .and_then(|v| self.secret(Some(v), &previous_path));
        if webhook_secret_previous.is_some() && self.below(node, "webhookSecret").is_none() {
            self.error(
                &previous_path,
                "needs webhookSecret: the previous secret is accepted beside the current one, not instead of it",
            );
        }
        let qmc_url = self.string(
            self.below(node, "qlikSenseUrls.qmc"),
            &join(path, "qlikSenseUrls.qmc"),
        );
        let hub_url = self.string(
            self.below(node, "qlikSenseUrls.hub"),
            &join(path, "qlikSenseUrls.hub"),
        );
        let comment = self.string(self.below(node, "comment"), &join(path, "comment"));
        let channels = self.channels(path, node);
        let id = id?;
        let id = if id.contains('.') || id.contains(':') {
            TenantRef::Host(
                id.trim_start_matches("https://")
                    .trim_end_matches('/')
                    .to_owned(),
            )
        } else {
            TenantRef::Id(id)
        };
        Some(TenantConfig {
            path: path.to_owned(),
            id,
            tenant_url: tenant_url?,
            token: token?,
            qmc_url,
            hub_url,
            comment,
            webhook_secret,
            webhook_secret_previous,
            channels,
        })
    }

    fn channels(&mut self, tenant_path: &str, node: &'a Value) -> Vec<ChannelConfig> {
        let mut channels = Vec::new();
        for (key, kind, id) in [
            ("teamsNotification", ChannelKind::Teams, "teams"),
            ("slackNotification", ChannelKind::Slack, "slack"),
            ("webhookNotification", ChannelKind::Webhook, "webhook"),
            ("mqttNotification", ChannelKind::Mqtt, "mqtt"),
            ("emailNotification", ChannelKind::Email, "email"),
            ("consoleNotification", ChannelKind::Console, "console"),
            ("fileNotification", ChannelKind::File, "file"),
        ] {
            let rel = format!("alert.{key}.reloadAppFailure");
            let path = join(tenant_path, &rel);
            let Some(c) = self.below(node, &rel) else {
                continue;
            };
            if !self.boolean(self.below(c, "enable"), &join(&path, "enable"), false) {
                continue;
            }
            let urls: Vec<(String, Option<&'a Value>)> = match kind {
                ChannelKind::Mqtt
                | ChannelKind::Email
                | ChannelKind::Console
                | ChannelKind::File => Vec::new(),
                ChannelKind::Webhook => match self.below(c, "urls") {
                    Some(Value::Sequence(items)) => items
                        .iter()
                        .enumerate()
                        .map(|(i, v)| (format!("{path}.urls[{i}]"), Some(v)))
                        .collect(),
                    _ => {
                        self.error(
                            &join(&path, "urls"),
                            "missing: a list of URLs to POST alerts to",
                        );
                        continue;
                    }
                },
                _ => vec![(join(&path, "webhookURL"), self.below(c, "webhookURL"))],
            };
            let message_type =
                self.string(self.below(c, "messageType"), &join(&path, "messageType"));
            let formatted = match message_type.as_deref().map(str::trim) {
                None | Some("formatted") => true,
                Some("basic") => false,
                Some(other) => {
                    self.error(
                        &join(&path, "messageType"),
                        format!("'{other}' is not formatted or basic"),
                    );
                    true
                }
            };
            let basic_template = self.string(
                self.below(c, "basicMsgTemplate"),
                &join(&path, "basicMsgTemplate"),
            );
            if !formatted
                && basic_template
                    .as_deref()
                    .is_none_or(|t| t.trim().is_empty())
            {
                self.error(
                    &join(&path, "basicMsgTemplate"),
                    "missing: messageType is basic",
                );
            }
            let template_file = self
                .below(c, "templateFile")
                .and_then(|v| self.file(Some(v), &join(&path, "templateFile")));
            let tag = if self.boolean(
                self.below(c, "alertEnableByTag.enable"),
                &join(&path, "alertEnableByTag.enable"),
                false,
            ) {
                self.required(
                    self.below(c, "alertEnableByTag.tag"),
                    &join(&path, "alertEnableByTag.tag"),
                )
            } else {
                None
            };
            let secret = match kind {
                ChannelKind::Webhook => self
                    .below(c, "secret")
                    .and_then(|v| self.secret(Some(v), &join(&path, "secret"))),
                _ => None,
            };
            let common = ChannelConfig {
                id: id.to_owned(),
                kind,
                url: None,
                topic: None,
                file: None,
                formatted,
                basic_template,
                template_file,
                basic_content_only: self.boolean(
                    self.below(c, "basicContentOnly"),
                    &join(&path, "basicContentOnly"),
                    false,
                ),
                tag,
                rate_limit_secs: self.number(
                    self.below(c, "rateLimit"),
                    &join(&path, "rateLimit"),
                    0..=30 * 24 * 3600,
                    0,
                ),
                head_lines: self.number(
                    self.below(c, "headScriptLogLines"),
                    &join(&path, "headScriptLogLines"),
                    0..=1000,
                    15,
                ) as usize,
                tail_lines: self.number(
                    self.below(c, "tailScriptLogLines"),
                    &join(&path, "tailScriptLogLines"),
                    0..=1000,
                    15,
                ) as usize,
                slack_channel: self.string(self.below(c, "channel"), &join(&path, "channel")),
                slack_from_user: self.string(self.below(c, "fromUser"), &join(&path, "fromUser")),
                slack_icon_emoji: self
                    .string(self.below(c, "iconEmoji"), &join(&path, "iconEmoji")),
                secret,
                email: None,
            };
            if kind == ChannelKind::Email {
                if let Some(email) = self.email_settings(&path, c) {
                    channels.push(ChannelConfig {
                        email: Some(email),
                        ..common
                    });
                }
                continue;
            }
            if kind == ChannelKind::Console {
                channels.push(common);
                continue;
            }
            if kind == ChannelKind::File {
                let file_path = join(&path, "path");
                if let Some(name) = self.required(self.below(c, "path"), &file_path) {
                    let file = self.base.join(name.trim());
                    match file.parent() {
                        Some(dir) if !dir.as_os_str().is_empty() && !dir.is_dir() => {
                            self.error(&file_path, format!("no such directory: {}", dir.display()))
                        }
                        _ => channels.push(ChannelConfig {
                            file: Some(file),
                            ..common
                        }),
                    }
                }
                continue;
            }
            if kind == ChannelKind::Mqtt {
                let topic_path = join(&path, "topic");
                let topic = self
                    .string(self.below(c, "topic"), &topic_path)
                    .unwrap_or_else(|| DEFAULT_ALERT_TOPIC.to_owned());
                let topic = topic.trim().to_owned();
                let subscription = self
                    .string(
                        self.at(&join(FORWARD, "topic.subscriptionRoot")),
                        &join(FORWARD, "topic.subscriptionRoot"),
                    )
                    .unwrap_or_else(|| "qscloud/#".into());
                if topic.is_empty() || topic.contains(['+', '#', '\0']) {
                    self.error(&topic_path, "not a topic to publish to (no wildcards)");
                } else if topic_matches(subscription.trim(), &topic) {
                    self.error(&topic_path, format!("lies under the subscription {subscription}: the listener would receive its own alerts"));
                } else {
                    channels.push(ChannelConfig {
                        topic: Some(topic),
                        ..common
                    });
                }
                continue;
            }
            let many = urls.len() > 1 || kind == ChannelKind::Webhook;
            for (i, (url_path, value)) in urls.into_iter().enumerate() {
                // Webhook URLs carry their own secrets (Teams' `sig=`, Slack's path): `${ENV}` works,
                // and they are never shown.
                let Some(raw) = self.secret(value, &url_path) else {
                    continue;
                };
                match url::Url::parse(String::from_utf8_lossy(raw.expose()).trim()) {
                    Ok(url)
                        if matches!(url.scheme(), "https" | "http") && url.host_str().is_some() =>
                    {
                        let id = if many {
                            format!("{id}-{}", i + 1)
                        } else {
                            id.to_owned()
                        };
                        channels.push(ChannelConfig {
                            id,
                            url: Some(url),
                            ..common.clone()
                        });
                    }
                    _ => self.error(&url_path, "not an http(s) URL"),
                }
            }
        }
        channels
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
Butler:
  logLevel: info            # Butler's own keys are ignored
  mqttConfig:
    enable: false             # Butler's general MQTT integration: see butler_integration()
    brokerHost: 10.0.0.5
    qlikSenseCloud:
      event:
        mqttForward:
          enable: true
          broker:
            host: broker.example.com
            port: 8883
            username: listener
            password: ${BROKER_PASSWORD}
          topic:
            subscriptionRoot: qscloud/#
            appReload: qscloud/app/reload
  qlikSenseCloud:
    enable: true
    event:
      mqtt:
        tenant:
          id: acme.eu.qlikcloud.com
          tenantUrl: https://acme.eu.qlikcloud.com
          authType: jwt
          auth:
            jwt:
              token: ${QLIK_API_KEY}
          qlikSenseUrls:
            qmc: https://acme.eu.qlikcloud.com/console
            hub: https://acme.eu.qlikcloud.com/hub
          comment: Production tenant
          alert:
            teamsNotification:
              reloadAppFailure:
                enable: false
  scriptLog:
    storeOnDisk:
      qsCloud:
        appReloadFailure:
          enable: true
          logDirectory: scriptlogs
  genericUrls:
    - id: ops
      linkText: Operations runbook
      url: https://wiki.example.com/qlik
"#;

    fn env(name: &str) -> Option<String> {
        match name {
            "BROKER_PASSWORD" => Some("br0ker-pa55".into()),
            "QLIK_API_KEY" => Some("eyJhbGciOi.api-key".into()),
            _ => None,
        }
    }

    fn parse(text: &str) -> Result<Config, ConfigErrors> {
        Config::parse(Path::new("/etc/qlik/butler.yaml"), text, &env)
    }

    #[test]
    fn a_butler_config_is_understood() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.broker.host, "broker.example.com");
        assert_eq!(c.broker.port, 8883);
        assert!(c.broker.tls.enable, "TLS is on by default, as in Butler");
        assert_eq!(c.broker.username.as_deref(), Some("listener"));
        assert_eq!(c.broker.password, Some(Secret::new("br0ker-pa55")));
        assert_eq!(c.broker.client_id, "qlik-listener");
        assert_eq!(c.broker.protocol, Protocol::V5);
        assert_eq!(c.subscription_root, "qscloud/#");
        assert_eq!(c.app_reload_topic, "qscloud/app/reload");
        assert_eq!(c.tenants.len(), 1);
        let t = &c.tenants[0];
        assert_eq!(t.id, TenantRef::Host("acme.eu.qlikcloud.com".into()));
        assert_eq!(t.tenant_url.as_str(), "https://acme.eu.qlikcloud.com/");
        assert_eq!(t.token, Secret::new("eyJhbGciOi.api-key"));
        assert_eq!(
            t.hub_url.as_deref(),
            Some("https://acme.eu.qlikcloud.com/hub")
        );
        assert_eq!(c.journal_path, Path::new("/etc/qlik/qlik-listener.sqlite"));
        assert_eq!(c.retention_days, 30);
        assert_eq!(
            c.script_log_dir.as_deref(),
            Some(Path::new("/etc/qlik/scriptlogs"))
        );
        let summary = c.summary();
        assert!(
            summary.contains("mqtts://listener:***@broker.example.com:8883"),
            "{summary}"
        );
        assert!(
            !summary.contains("br0ker-pa55") && !summary.contains("api-key"),
            "{summary}"
        );
    }

    #[test]
    fn extensions() {
        let text = GOOD
            .replace("            port: 8883\n", "            port: 1883\n            clientId: relay-1\n            protocolVersion: \"3.1.1\"\n            tls:\n              enable: false\n")
            .replace("          enable: true\n          broker:", "          enable: true\n          requireSignature: true\n          broker:")
            .replace("          comment: Production tenant\n", "          comment: Production tenant\n          webhookSecret: s3cret-s3cret-s3cret-s3cret-s3cret\n")
            .replace("  scriptLog:\n", "        tenants:\n          - id: Xy2Zq8hT4kLmN0pQrS7uVwA1bC3dE5fG\n            tenantUrl: https://other.us.qlikcloud.com\n            auth: { jwt: { token: literal-token } }\n            webhookSecret: ${QLIK_API_KEY}\n  scriptLog:\n")
            + "  qlikCloudListener:\n    journal:\n      path: /var/lib/qlik-listener/journal.sqlite\n      retentionDays: 8\n";
        let c = parse(&text).unwrap();
        assert!(!c.broker.tls.enable);
        assert_eq!(c.broker.port, 1883);
        assert_eq!(c.broker.client_id, "relay-1");
        assert_eq!(c.broker.protocol, Protocol::V311);
        assert!(c.require_signature);
        assert_eq!(c.tenants.len(), 2);
        assert_eq!(
            c.tenants[1].id,
            TenantRef::Id("Xy2Zq8hT4kLmN0pQrS7uVwA1bC3dE5fG".into())
        );
        assert_eq!(
            c.tenants[1].path,
            "Butler.qlikSenseCloud.event.mqtt.tenants[0]"
        );
        assert_eq!(
            c.tenants[1].webhook_secret,
            Some(Secret::new("eyJhbGciOi.api-key"))
        );
        assert_eq!(
            c.journal_path,
            Path::new("/var/lib/qlik-listener/journal.sqlite")
        );
        assert_eq!(c.retention_days, 8);
    }

    /// Each broken config gives the expected message, with the key path.
    #[test]
    fn broken_configs_name_the_key() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "tenantUrl: https://acme.eu.qlikcloud.com",
                "tenantUrl: acme",
                "Butler.qlikSenseCloud.event.mqtt.tenant.tenantUrl: not a URL",
            ),
            (
                "            host: broker.example.com\n",
                "",
                "Butler.mqttConfig.qlikSenseCloud.event.mqttForward.broker.host: missing",
            ),
            (
                "host: broker.example.com",
                "host: mqtts://broker.example.com",
                "broker.host: expected a host name",
            ),
            (
                "port: 8883",
                "port: 99999",
                "broker.port: expected a whole number from 1 to 65535",
            ),
            (
                "port: 8883",
                "port: [1]",
                "broker.port: expected a whole number",
            ),
            (
                "${BROKER_PASSWORD}",
                "${NOT_SET}",
                "broker.password: environment variable NOT_SET is not set",
            ),
            (
                "token: ${QLIK_API_KEY}",
                "token: \"\"",
                "tenant.auth.jwt.token: is empty",
            ),
            (
                "          enable: true\n          broker:",
                "          enable: false\n          broker:",
                "mqttForward.enable: must be true",
            ),
            (
                "subscriptionRoot: qscloud/#",
                "subscriptionRoot: qscloud/#/x",
                "topic.subscriptionRoot: not a valid MQTT topic filter",
            ),
            (
                "authType: jwt",
                "authType: cert",
                "tenant.authType: 'cert' is not supported",
            ),
            (
                "logDirectory: scriptlogs",
                "logDirectory: \"\"",
                "appReloadFailure.logDirectory: is empty",
            ),
            (
                "enable: true\n          logDirectory",
                "enable: yes-please\n          logDirectory",
                "appReloadFailure.enable: expected true or false",
            ),
            (
                "            port: 8883\n",
                "            port: 8883\n            tls:\n              caFile: missing-ca.pem\n",
                "broker.tls.caFile: no such file: /etc/qlik/missing-ca.pem",
            ),
            (
                "            port: 8883\n",
                "            port: 8883\n            protocolVersion: 6\n",
                "broker.protocolVersion: '6' is not 5 or 3.1.1",
            ),
        ];
        for (from, to, expected) in cases {
            assert!(GOOD.contains(from), "case does not apply: {from}");
            let text = GOOD.replacen(from, to, 1);
            let e = parse(&text).expect_err(expected);
            let msg = e.to_string();
            assert!(msg.contains(expected), "expected {expected:?} in:\n{msg}");
            assert!(msg.starts_with("/etc/qlik/butler.yaml: "), "{msg}");
            assert!(
                !msg.contains("br0ker-pa55") && !msg.contains("api-key"),
                "secret in: {msg}"
            );
        }
    }

    #[test]
    fn butler_integration() {
        let dir = tempfile::tempdir().unwrap();
        for f in ["client.pem", "client_key.pem", "root.pem"] {
            std::fs::write(dir.path().join(f), "-").unwrap();
        }
        let file = dir.path().join("butler.yaml");
        let text = GOOD.replace("    enable: false             # Butler's general MQTT integration: see butler_integration()\n    brokerHost: 10.0.0.5\n",
            "    enable: true\n    brokerHost: 10.0.0.5\n    brokerPort: 1883\n    subscriptionRootTopic: qliksense/#\n    taskStartTopic: qliksense/start_task\n    taskAllowList: [f1a3e5b7-1c2d-4e5f-8a9b-0c1d2e3f4a5b]\n")
            + "  configQRS:\n    host: sense.example.com\n    port: 4242\n    useSSL: true\n    headers:\n      static:\n        - name: X-Qlik-User\n          value: UserDirectory=INTERNAL; UserId=sa_api\n  cert:\n    clientCert: client.pem\n    clientCertKey: client_key.pem\n    clientCertCA: root.pem\n  restServerConfig:\n    enable: true\n    serverHost: 127.0.0.1\n    serverPort: 8081\n  restServerEndpointsEnable:\n    mqttPublishMessage: true\n";
        let c = Config::parse(&file, &text, &env).unwrap();
        let b = c.butler_mqtt.unwrap();
        assert_eq!(
            (b.broker.host.as_str(), b.broker.port, b.broker.tls.enable),
            ("10.0.0.5", 1883, false)
        );
        assert_eq!(b.task_start_topic, "qliksense/start_task");
        assert_eq!(b.status_topic, "qlik-listener/status");
        assert_eq!(
            b.task_allow_list,
            Some(vec!["f1a3e5b7-1c2d-4e5f-8a9b-0c1d2e3f4a5b".to_owned()])
        );
        let q = c.qrs.unwrap();
        assert_eq!(q.base_url.as_str(), "https://sense.example.com:4242/");
        assert_eq!(
            q.headers,
            vec![(
                "X-Qlik-User".to_owned(),
                "UserDirectory=INTERNAL; UserId=sa_api".to_owned()
            )]
        );
        assert_eq!(q.ca_cert, Some(dir.path().join("root.pem")));
        let r = c.rest.unwrap();
        assert_eq!(r.listen.to_string(), "127.0.0.1:8081");
        assert!(r.publish_enabled);

        let broken = text
            .replace(
                "taskStartTopic: qliksense/start_task",
                "taskStartTopic: other/start_task",
            )
            .replace("useSSL: true", "useSSL: false");
        let e = Config::parse(&file, &broken, &env).unwrap_err().to_string();
        assert!(e.contains("Butler.mqttConfig.taskStartTopic: 'other/start_task' does not lie under subscriptionRootTopic"), "{e}");
        assert!(e.contains("Butler.configQRS.useSSL: must be true"), "{e}");
        let no_certs = text.replace("  cert:\n    clientCert: client.pem\n    clientCertKey: client_key.pem\n    clientCertCA: root.pem\n", "");
        let e = Config::parse(&file, &no_certs, &env)
            .unwrap_err()
            .to_string();
        assert!(e.contains("Butler.cert.clientCert: missing"), "{e}");
    }

    #[test]
    fn topic_filters() {
        assert!(topic_matches("qscloud/#", "qscloud/alerts/x"));
        assert!(topic_matches("#", "anything/at/all"));
        assert!(topic_matches("qscloud/+/reload/#", "qscloud/app/reload/t1"));
        assert!(topic_matches("$share/relay/qscloud/#", "qscloud/a"));
        assert!(!topic_matches(
            "qscloud/#",
            "qlikcloud/alerts/reload-failed"
        ));
        assert!(!topic_matches("qscloud/+", "qscloud/a/b"));
        assert!(!topic_matches("a/b", "a"));
    }

    #[test]
    fn all_mistakes_are_reported_at_once() {
        let text = GOOD
            .replacen(
                "tenantUrl: https://acme.eu.qlikcloud.com",
                "tenantUrl: nope",
                1,
            )
            .replacen("port: 8883", "port: 0", 1);
        let e = parse(&text).unwrap_err();
        assert_eq!(e.errors.len(), 2, "{e}");
    }

    #[test]
    fn not_yaml_or_not_butler() {
        let e = parse("Butler: [unclosed").unwrap_err();
        assert!(e.to_string().contains("(file): not valid YAML"), "{e}");
        let e = parse("Other: {}").unwrap_err();
        assert!(e.to_string().contains("Butler: missing"), "{e}");
        let e = Config::load(Path::new("/nonexistent/butler.yaml"), &env).unwrap_err();
        assert!(
            e.to_string()
                .contains("/nonexistent/butler.yaml: (file): cannot read"),
            "{e}"
        );
    }

    #[test]
    fn console_and_file_channels() {
        let dir = tempfile::tempdir().unwrap();
        let yaml = GOOD.replace(
            "          alert:\n",
            "          alert:\n            consoleNotification:\n              reloadAppFailure: { enable: true }\n            fileNotification:\n              reloadAppFailure: { enable: true, path: out/alerts.jsonl }\n",
        );
        assert_ne!(yaml, GOOD, "the fixture has an alert section");
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, &yaml).unwrap();
        let errors = Config::load(&path, &|_| Some("x".into())).unwrap_err();
        let err = errors.to_string();
        assert!(
            err.contains("fileNotification.reloadAppFailure.path: no such directory"),
            "{err}"
        );
        std::fs::create_dir(dir.path().join("out")).unwrap();
        let c = Config::load(&path, &|_| Some("x".into())).unwrap();
        let channels = &c.tenants[0].channels;
        let console = channels.iter().find(|c| c.id == "console").unwrap();
        assert_eq!(console.kind, ChannelKind::Console);
        let file = channels.iter().find(|c| c.id == "file").unwrap();
        assert_eq!(
            file.file.as_deref(),
            Some(dir.path().join("out/alerts.jsonl").as_path())
        );
    }
}
