//! Butler's integration with Qlik Sense Enterprise: its MQTT broker (`Butler.mqttConfig`: task
//! starts in, status out), the QRS API (`Butler.configQRS`, `Butler.cert`) and the HTTP API
//! (`Butler.restServerConfig`).

use super::broker::{self, BrokerConfig, Connection, MqttForward, Tls};
use super::value::{Check, Flag, KeyPath, Text, Whole};
use qlik_events::Secret;
use schemars::JsonSchema;
use serde::Deserialize;
use std::path::PathBuf;

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
    /// `serverHost`: an IP address, `localhost` or a host name (resolved when binding).
    pub host: String,
    pub port: u16,
    /// `tls`: serve HTTPS.
    pub tls: Option<RestTls>,
    /// `PUT /v4/mqttpublishmessage`.
    pub publish_enabled: bool,
    /// `GET /v4/butlerping`.
    pub ping_enabled: bool,
    /// Ours: require `Authorization: Bearer <token>` for the publish endpoint.
    pub bearer_token: Option<Secret>,
    /// Ours: topics must start with one of these.
    pub allowed_topic_prefixes: Option<Vec<String>>,
    pub max_message_bytes: usize,
    /// Ours: host names the API answers to besides IP addresses and `localhost` (the `Host`
    /// header is checked against them, against DNS rebinding).
    pub allowed_hosts: Vec<String>,
}

/// `Butler.mqttConfig`: Butler's broker, and where Qlik Cloud events come from.
#[derive(Deserialize, JsonSchema, Default)]
#[serde(default, rename_all = "camelCase")]
pub struct MqttConfig {
    /// Butler's MQTT integration: task starts and status (needs configQRS and cert).
    enable: Option<Flag>,
    /// Butler's broker (task starts, status, the publish API's messages): its host name or IP address.
    broker_host: Option<Text>,
    /// Default 1883 (8883 with TLS or Azure Event Grid).
    broker_port: Option<Whole>,
    /// Default `qliksense/#`.
    subscription_root_topic: Option<Text>,
    /// A task id (or `{"taskId"}`, `{"taskName"}`, a list) published here starts it (default `qliksense/start_task`).
    task_start_topic: Option<Text>,
    /// Ours: retained online/offline status (default `qlik-listener/status`).
    status_topic: Option<Text>,
    /// Ours: the outcome of each task start (default `qlik-listener/task-result`).
    task_result_topic: Option<Text>,
    /// Ours: only these task ids or names may be started.
    task_allow_list: Option<Vec<Text>>,
    /// Butler's Azure Event Grid MQTT settings: read for Butler's compatibility only.
    azure_event_grid: Option<AzureEventGrid>,
    // Ours, as in mqttForward.broker:
    /// The user name for Butler's broker.
    username: Option<Text>,
    /// The password for Butler's broker (literal or `${ENV_VAR}`).
    password: Option<Text>,
    /// The client id on Butler's broker (the listener adds a suffix per connection).
    client_id: Option<Text>,
    /// `5` (default) or `3.1.1`.
    protocol_version: Option<Text>,
    /// Seconds between keep-alive pings (default 30).
    keep_alive_seconds: Option<Whole>,
    /// How long the broker keeps the session while the listener is away (seconds; default 604800, a week).
    session_expiry_seconds: Option<Whole>,
    /// TLS to Butler's broker: `enable`, `caFile`, `certFile`/`keyFile`.
    tls: Option<Tls>,
    /// Where the forwarder's Qlik Cloud events arrive.
    pub qlik_sense_cloud: Option<ForwardSection>,
}

#[derive(Deserialize, JsonSchema, Default)]
#[serde(default)]
pub struct ForwardSection {
    /// Qlik Cloud events forwarded over MQTT (`event.mqttForward`).
    pub event: Option<ForwardEvent>,
}

#[derive(Deserialize, JsonSchema, Default)]
#[serde(default, rename_all = "camelCase")]
pub struct ForwardEvent {
    /// The broker and topics Qlik Cloud events arrive on.
    pub mqtt_forward: Option<MqttForward>,
}

/// Client-certificate login to Azure Event Grid's MQTT broker.
#[derive(Deserialize, JsonSchema, Default)]
#[serde(default, rename_all = "camelCase")]
struct AzureEventGrid {
    /// Butler's Azure Event Grid switch: the listener does not connect to Event Grid.
    enable: Option<Flag>,
    /// Butler's Event Grid client id (not used by the listener).
    client_id: Option<Text>,
    /// Butler's Event Grid client certificate (not used by the listener).
    client_cert_file: Option<Text>,
    /// Butler's Event Grid client key (not used by the listener).
    client_key_file: Option<Text>,
}

/// `Butler.configQRS`.
#[derive(Deserialize, JsonSchema, Default)]
#[serde(default, rename_all = "camelCase")]
pub struct ConfigQrs {
    /// The Qlik Sense server running the repository service (host name or IP address).
    host: Option<Text>,
    /// Default 4242.
    port: Option<Whole>,
    /// Must be true: the QRS API is HTTPS only.
    #[serde(rename = "useSSL")]
    use_ssl: Option<Flag>,
    /// false: the QRS certificate is not verified (logged as a warning).
    reject_unauthorized: Option<Flag>,
    /// HTTP headers sent with every QRS request.
    headers: Option<QrsHeaders>,
}

#[derive(Deserialize, JsonSchema, Default)]
#[serde(default)]
struct QrsHeaders {
    /// Sent with every request (default `X-Qlik-User: UserDirectory=INTERNAL; UserId=sa_repository`).
    #[serde(rename = "static")]
    fixed: Option<Vec<Header>>,
}

#[derive(Deserialize, JsonSchema, Default)]
#[serde(default)]
struct Header {
    /// The header's name.
    name: Option<Text>,
    /// The header's value.
    value: Option<Text>,
}

/// `Butler.cert`: the QRS client certificate (PEM files exported from the QMC).
#[derive(Deserialize, JsonSchema, Default)]
#[serde(default, rename_all = "camelCase")]
pub struct Cert {
    /// The client certificate (PEM) exported from the QMC, for the QRS API.
    client_cert: Option<Text>,
    /// Its private key (PEM).
    client_cert_key: Option<Text>,
    /// The Qlik Sense root CA (PEM) that signed the QRS server's certificate.
    #[serde(rename = "clientCertCA")]
    client_cert_ca: Option<Text>,
}

/// `Butler.restServerConfig.tls`, checked: PEM files that exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Intermediate certificates sent after the server's own.
    pub ca: Option<PathBuf>,
}

impl RestConfig {
    /// `host:port` as configured, for messages.
    pub fn address(&self) -> String {
        match self.host.contains(':') {
            true => format!("[{}]:{}", self.host, self.port),
            false => format!("{}:{}", self.host, self.port),
        }
    }

    pub fn scheme(&self) -> &'static str {
        match self.tls {
            Some(_) => "https",
            None => "http",
        }
    }
}

/// `Butler.restServerConfig`.
#[derive(Deserialize, JsonSchema, Default)]
#[serde(default, rename_all = "camelCase")]
pub struct RestServerConfig {
    /// Serve Butler's HTTP API (`PUT /v4/mqttpublishmessage`, `/healthz`, `/readyz`, `/metrics`; default false).
    enable: Option<Flag>,
    /// An IP address (default 127.0.0.1), localhost or a host name of this machine (the API
    /// then also answers to that name).
    server_host: Option<Text>,
    /// Default 8080.
    server_port: Option<Whole>,
    /// Butler's internal port; not used here (the listener needs no internal proxy).
    background_server_port: Option<Whole>,
    /// HTTPS, as in Butler: `enable`, `cert` and `key` (PEM files), `ca` (optional: intermediate
    /// certificates sent with the server's).
    tls: Option<RestTlsSection>,
    /// Ours: required as `Authorization: Bearer` for the publish endpoint.
    bearer_token: Option<Text>,
    /// Ours: topics the publish endpoint accepts.
    allowed_topic_prefixes: Option<Vec<Text>>,
    /// Ours: default 65536.
    max_message_bytes: Option<Whole>,
    /// Ours: host names answered besides IP addresses and localhost.
    allowed_hosts: Option<Vec<Text>>,
}

#[derive(Deserialize, JsonSchema, Default)]
#[serde(default, rename_all = "camelCase")]
pub struct RestTlsSection {
    /// Serve the HTTP API over HTTPS (needs `cert` and `key`).
    enable: Option<Flag>,
    /// The server certificate (PEM; a chain is allowed).
    cert: Option<Text>,
    /// Its private key (PEM).
    key: Option<Text>,
    /// Optional: further certificates of the chain (PEM); `null` when not needed.
    ca: Option<Text>,
}

#[derive(Deserialize, JsonSchema, Default)]
#[serde(default, rename_all = "camelCase")]
pub struct RestServerEndpointsEnable {
    /// `PUT /v4/mqttpublishmessage`.
    mqtt_publish_message: Option<Flag>,
    /// `GET /v4/butlerping`, answered as Butler answers it.
    butlerping: Option<Flag>,
}

pub fn check_mqtt(c: &mut Check<'_>, at: &KeyPath, m: MqttConfig) -> Option<ButlerMqttConfig> {
    if !Flag::or(m.enable, false) {
        return None;
    }
    let port_given = m.broker_port.is_some();
    let connection = Connection {
        host: m.broker_host,
        port: m.broker_port,
        username: m.username,
        password: m.password,
        client_id: m.client_id,
        protocol_version: m.protocol_version,
        keep_alive_seconds: m.keep_alive_seconds,
        session_expiry_seconds: m.session_expiry_seconds,
        tls: m.tls,
    };
    let keys = broker::Keys {
        base: at,
        host: at.key("brokerHost"),
        port: at.key("brokerPort"),
    };
    let defaults = broker::Defaults {
        tls: false,
        client_id: "qlik-listener-butler",
    };
    let mut broker = broker::check_broker(c, connection, keys, defaults);
    // Azure Event Grid's MQTT broker authenticates clients by certificate.
    let eg = m.azure_event_grid.unwrap_or_default();
    if Flag::or(eg.enable, false) {
        let eg_at = at.key("azureEventGrid");
        broker.tls.enable = true;
        if let Some(id) = c.required(&eg.client_id, &eg_at.key("clientId")) {
            broker.username = Some(id.clone());
            broker.client_id = id;
        }
        let (cert_at, key_at) = (eg_at.key("clientCertFile"), eg_at.key("clientKeyFile"));
        broker.tls.cert_file = c.required_file(&eg.client_cert_file, &cert_at);
        broker.tls.key_file = c.required_file(&eg.client_key_file, &key_at);
        broker.tls.keys.cert_file = cert_at.to_string();
        broker.tls.keys.key_file = key_at.to_string();
        if !port_given {
            broker.port = 8883;
        }
    }
    let subscription_root = c.topic_filter(
        &m.subscription_root_topic,
        &at.key("subscriptionRootTopic"),
        "qliksense/#",
    );
    let task_start_topic = Text::of(&m.task_start_topic)
        .unwrap_or("qliksense/start_task")
        .to_owned();
    if !super::topic_matches(&subscription_root, &task_start_topic) {
        c.error(&at.key("taskStartTopic"), format!("'{task_start_topic}' does not lie under subscriptionRootTopic '{subscription_root}', so it would never be received"));
    }
    Some(ButlerMqttConfig {
        broker,
        subscription_root,
        task_start_topic,
        status_topic: c.topic(
            &m.status_topic,
            &at.key("statusTopic"),
            "qlik-listener/status",
        ),
        task_result_topic: c.topic(
            &m.task_result_topic,
            &at.key("taskResultTopic"),
            "qlik-listener/task-result",
        ),
        task_allow_list: c.strings(&m.task_allow_list, &at.key("taskAllowList")),
    })
}

pub fn check_qrs(c: &mut Check<'_>, root: &KeyPath, q: ConfigQrs, cert: Cert) -> Option<QrsConfig> {
    let at = root.key("configQRS");
    let host = c.required(&q.host, &at.key("host"));
    let port = c.whole(q.port, &at.key("port"), 1..=65535, 4242);
    if !Flag::or(q.use_ssl, true) {
        c.error(
            &at.key("useSSL"),
            "must be true: the QRS API is only reachable over HTTPS",
        );
    }
    let headers_at = at.key("headers.static");
    let mut headers: Vec<(String, String)> = q
        .headers
        .and_then(|h| h.fixed)
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .filter_map(|(i, h)| {
            let name = c.required(&h.name, &headers_at.item(i).key("name"));
            let value = c.required(&h.value, &headers_at.item(i).key("value"));
            name.zip(value)
        })
        .collect();
    if !headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("X-Qlik-User"))
    {
        headers.push((
            "X-Qlik-User".into(),
            "UserDirectory=INTERNAL; UserId=sa_repository".into(),
        ));
    }
    let cert_at = root.key("cert");
    let client_cert = c.required_file(&cert.client_cert, &cert_at.key("clientCert"));
    let client_key = c.required_file(&cert.client_cert_key, &cert_at.key("clientCertKey"));
    let ca_cert = c.file(&cert.client_cert_ca, &cert_at.key("clientCertCA"));
    let host = host?;
    let Ok(base_url) = url::Url::parse(&format!("https://{host}:{port}")) else {
        c.error(&at.key("host"), format!("'{host}' is not a host name"));
        return None;
    };
    Some(QrsConfig {
        base_url,
        headers,
        client_cert: client_cert?,
        client_key: client_key?,
        ca_cert,
        accept_invalid_certs: !Flag::or(q.reject_unauthorized, true),
    })
}

pub fn check_rest(
    c: &mut Check<'_>,
    root: &KeyPath,
    r: RestServerConfig,
    endpoints: RestServerEndpointsEnable,
) -> Option<RestConfig> {
    if !Flag::or(r.enable, false) {
        return None;
    }
    let at = root.key("restServerConfig");
    let host = Text::of(&r.server_host).unwrap_or("127.0.0.1");
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = c.whole(r.server_port, &at.key("serverPort"), 0..=65535, 8080) as u16;
    let is_name = host.parse::<std::net::IpAddr>().is_err() && host != "localhost";
    if is_name && !valid_host_name(&host) {
        let reason = format!("'{host}' is not an IP address or a host name to listen on");
        c.error(&at.key("serverHost"), reason);
        return None;
    }
    let tls_section = r.tls.unwrap_or_default();
    let tls = match Flag::or(tls_section.enable, false) {
        false => None,
        true => {
            let tls_at = at.key("tls");
            let cert = c.required_file(&tls_section.cert, &tls_at.key("cert"));
            let key = c.required_file(&tls_section.key, &tls_at.key("key"));
            let ca = c.file(&tls_section.ca, &tls_at.key("ca"));
            Some(RestTls {
                cert: cert?,
                key: key?,
                ca,
            })
        }
    };
    let mut allowed_hosts: Vec<String> = c
        .strings(&r.allowed_hosts, &at.key("allowedHosts"))
        .unwrap_or_default()
        .into_iter()
        .map(|h| h.to_ascii_lowercase())
        .collect();
    if is_name {
        // Butler's users name the host they call; the API answers to it.
        allowed_hosts.push(host.to_ascii_lowercase());
    }
    Some(RestConfig {
        host,
        port,
        tls,
        publish_enabled: Flag::or(endpoints.mqtt_publish_message, false),
        ping_enabled: Flag::or(endpoints.butlerping, false),
        bearer_token: c.secret(&r.bearer_token, &at.key("bearerToken")),
        allowed_topic_prefixes: c
            .strings(&r.allowed_topic_prefixes, &at.key("allowedTopicPrefixes")),
        max_message_bytes: c.whole(
            r.max_message_bytes,
            &at.key("maxMessageBytes"),
            1..=1024 * 1024,
            64 * 1024,
        ) as usize,
        allowed_hosts,
    })
}

/// A DNS host name: dot-separated labels of letters, digits and hyphens.
fn valid_host_name(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// A Butler section with an `enable` switch.
#[derive(Deserialize, JsonSchema, Default)]
#[serde(default)]
pub struct Switch {
    /// Butler's switch for this feature: the listener does not provide it, and `check-config` names it when true.
    enable: Option<Flag>,
}

/// `Butler.incidentTool`.
#[derive(Deserialize, JsonSchema, Default)]
#[serde(default, rename_all = "camelCase")]
pub struct IncidentTool {
    /// Butler's Signl4 integration (not provided by the listener).
    signl4: Option<Switch>,
    /// Butler's New Relic integration (not provided by the listener).
    new_relic: Option<Switch>,
}

/// Butler's features the listener does not provide, enabled in this file: one line each for
/// `check-config` and the start-up log (Butler itself still provides them).
pub fn not_provided(
    influx_db: Option<Switch>,
    key_value_store: Option<Switch>,
    scheduler: Option<Switch>,
    uptime_monitor: Option<Switch>,
    incident_tool: Option<IncidentTool>,
) -> Vec<String> {
    let incident = incident_tool.unwrap_or_default();
    [
        ("Butler.influxDb", influx_db, "InfluxDB metrics"),
        ("Butler.keyValueStore", key_value_store, "the key-value store"),
        ("Butler.scheduler", scheduler, "the scheduler"),
        ("Butler.uptimeMonitor", uptime_monitor, "the uptime monitor"),
        ("Butler.incidentTool.signl4", incident.signl4, "Signl4 incidents"),
        ("Butler.incidentTool.newRelic", incident.new_relic, "New Relic events"),
    ]
    .into_iter()
    .filter(|(_, switch, _)| switch.as_ref().is_some_and(|s| Flag::or(s.enable, false)))
    .map(|(key, _, what)| format!("{key} is enabled: {what} are not provided by the listener (Butler provides them for Qlik Sense Enterprise)"))
    .collect()
}
