//! Brokers: where Qlik Cloud events arrive (`mqttForward`) and the connection settings both
//! brokers share (the forwarder's and Butler's, see `config::butler`).

use super::value::{Check, Flag, KeyPath, Text, Whole};
use qlik_events::Secret;
use schemars::JsonSchema;
use serde::Deserialize;
use std::path::PathBuf;

pub use relay_mqtt::Protocol;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub enable: bool,
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub insecure_skip_verify: bool,
    /// Where the files are set in the file, for messages about them.
    pub keys: TlsKeys,
}

/// The key paths of a broker's TLS files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsKeys {
    pub ca_file: String,
    pub cert_file: String,
    pub key_file: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerConfig {
    /// Where its settings are in the file, for messages (`Butler.mqttConfig`).
    pub key_path: String,
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

impl BrokerConfig {
    /// The key path of a setting of this broker (`tls.caFile`), for messages.
    pub fn key(&self, key: &str) -> String {
        format!("{}.{key}", self.key_path)
    }
}

/// `…mqttForward`: the broker the forwarder publishes Qlik Cloud events to.
#[derive(Deserialize, JsonSchema, Default)]
#[serde(default, rename_all = "camelCase")]
pub struct MqttForward {
    /// Must be true: the listener receives Qlik Cloud events through this broker.
    enable: Option<Flag>,
    /// Refuse events whose MQTT 5 `qlik-signature` does not verify against the tenant's webhookSecret.
    require_signature: Option<Flag>,
    /// The broker the listener subscribes to (and publishes its own messages on).
    broker: Option<Connection>,
    /// The topics: `subscriptionRoot` (what the listener subscribes to) and `appReload`.
    topic: Option<Topics>,
}

#[derive(Deserialize, JsonSchema, Default)]
#[serde(default, rename_all = "camelCase")]
struct Topics {
    /// The filter subscribed to (default `qscloud/#`; `$share/<group>/qscloud/#` shares the load).
    subscription_root: Option<Text>,
    /// Butler's topic for app reload events (default `qscloud/app/reload`).
    app_reload: Option<Text>,
}

/// TLS to the broker (on by default for the events broker, as in Butler).
#[derive(Deserialize, JsonSchema, Default)]
#[serde(default, rename_all = "camelCase")]
pub struct Tls {
    /// Connect with TLS (default false; the broker's TLS port is usually 8883).
    enable: Option<Flag>,
    /// CA certificates (PEM); default: the system's roots.
    ca_file: Option<Text>,
    /// Client certificate (PEM), e.g. for AWS IoT Core.
    cert_file: Option<Text>,
    /// The client certificate's private key (PEM), with `certFile` (AWS IoT Core, or a broker that wants client certificates).
    key_file: Option<Text>,
    /// Never in production; logged as a warning.
    insecure_skip_verify: Option<Flag>,
}

/// A broker's connection settings: `mqttForward.broker`, and the same keys beside Butler's
/// `brokerHost` and `brokerPort` in `mqttConfig`.
#[derive(Deserialize, JsonSchema, Default)]
#[serde(default, rename_all = "camelCase")]
pub struct Connection {
    /// Host name, without mqtt:// (AWS IoT Core: `<prefix>-ats.iot.<region>.amazonaws.com`).
    pub host: Option<Text>,
    /// Default 8883 with TLS, 1883 without.
    pub port: Option<Whole>,
    /// The user name the broker knows the listener by.
    pub username: Option<Text>,
    /// A literal or `${ENV_VAR}`.
    pub password: Option<Text>,
    /// Stable, so the broker keeps the session while the listener is away (default `qlik-listener`).
    pub client_id: Option<Text>,
    /// 5 (default) or 3.1.1.
    pub protocol_version: Option<Text>,
    /// Default 30.
    pub keep_alive_seconds: Option<Whole>,
    /// MQTT 5: how long the broker queues events for the listener (default 604800, 7 days).
    pub session_expiry_seconds: Option<Whole>,
    /// TLS to the broker: `enable`, `caFile`, `certFile`/`keyFile`, `insecureSkipVerify`.
    pub tls: Option<Tls>,
}

/// The events broker and its topics, checked.
pub struct Forward {
    pub broker: BrokerConfig,
    pub subscription_root: String,
    pub app_reload_topic: String,
    pub require_signature: bool,
}

pub fn check_forward(c: &mut Check<'_>, at: &KeyPath, f: MqttForward) -> Forward {
    if !Flag::or(f.enable, false) {
        c.error(
            &at.key("enable"),
            "must be true: the listener receives Qlik Cloud events through this broker",
        );
    }
    let b = f.broker.unwrap_or_default();
    let broker_at = at.key("broker");
    let broker = check_broker(
        c,
        b,
        Keys {
            base: &broker_at,
            host: broker_at.key("host"),
            port: broker_at.key("port"),
        },
        Defaults {
            tls: true,
            client_id: "qlik-listener",
        },
    );
    let topics = f.topic.unwrap_or_default();
    let subscription_root = c.topic_filter(
        &topics.subscription_root,
        &at.key("topic.subscriptionRoot"),
        "qscloud/#",
    );
    let require_signature = Flag::or(f.require_signature, false);
    if require_signature && broker.protocol == Protocol::V311 {
        // The signature travels as an MQTT 5 user property: with 3.1.1 no event would carry
        // it, and every genuine one would be rejected.
        c.error(
            &at.key("requireSignature"),
            format!(
                "needs MQTT 5 ({}.protocolVersion is 3.1.1, which carries no user properties, so every event would be rejected as unsigned): set protocolVersion to 5, or requireSignature to false",
                broker_at
            ),
        );
    }
    Forward {
        broker,
        subscription_root,
        app_reload_topic: Text::of(&topics.app_reload)
            .unwrap_or("qscloud/app/reload")
            .to_owned(),
        require_signature,
    }
}

/// Where a broker's settings are: `host` and `port` where the file keeps them, our
/// extensions (`tls`, `username`, `clientId`, …) below `base`.
pub struct Keys<'a> {
    pub base: &'a KeyPath,
    pub host: KeyPath,
    pub port: KeyPath,
}

pub struct Defaults {
    pub tls: bool,
    pub client_id: &'static str,
}

pub fn check_broker(c: &mut Check<'_>, b: Connection, keys: Keys<'_>, d: Defaults) -> BrokerConfig {
    let base = keys.base;
    let host = c.required(&b.host, &keys.host).unwrap_or_default();
    if host.contains("://") {
        c.error(
            &keys.host,
            "expected a host name, without mqtt:// or mqtts://",
        );
    }
    let tls = b.tls.unwrap_or_default();
    let tls_at = base.key("tls");
    let enable = Flag::or(tls.enable, d.tls);
    let ca_file = c.file(&tls.ca_file, &tls_at.key("caFile"));
    let cert_file = c.file(&tls.cert_file, &tls_at.key("certFile"));
    let key_file = c.file(&tls.key_file, &tls_at.key("keyFile"));
    if tls.cert_file.is_some() != tls.key_file.is_some() {
        c.error(&tls_at, "certFile and keyFile go together");
    }
    let port = c.whole(
        b.port,
        &keys.port,
        1..=65535,
        if enable { 8883 } else { 1883 },
    ) as u16;
    let username = c.optional(&b.username, &base.key("username"));
    let password = match Text::of(&b.password) {
        Some("") | None => None,
        Some(_) => c.secret(&b.password, &base.key("password")),
    };
    if password.is_some() && username.is_none() {
        c.error(&base.key("password"), "a password needs a username");
    }
    let client_id = Text::of(&b.client_id).unwrap_or(d.client_id).to_owned();
    if client_id.is_empty() || client_id.len() > 128 {
        c.error(&base.key("clientId"), "must be 1 to 128 characters");
    }
    let protocol = match Text::of(&b.protocol_version) {
        None | Some("5") | Some("5.0") => Protocol::V5,
        Some("3.1.1") | Some("4") => Protocol::V311,
        Some(other) => {
            c.error(
                &base.key("protocolVersion"),
                format!("'{other}' is not 5 or 3.1.1"),
            );
            Protocol::V5
        }
    };
    BrokerConfig {
        key_path: base.to_string(),
        host,
        port,
        username,
        password,
        tls: TlsSettings {
            enable,
            ca_file,
            cert_file,
            key_file,
            insecure_skip_verify: Flag::or(tls.insecure_skip_verify, false),
            keys: TlsKeys {
                ca_file: tls_at.key("caFile").to_string(),
                cert_file: tls_at.key("certFile").to_string(),
                key_file: tls_at.key("keyFile").to_string(),
            },
        },
        client_id,
        protocol,
        keep_alive_secs: c.whole(
            b.keep_alive_seconds,
            &base.key("keepAliveSeconds"),
            5..=3600,
            30,
        ) as u16,
        session_expiry_secs: c.whole(
            b.session_expiry_seconds,
            &base.key("sessionExpirySeconds"),
            60..=u64::from(u32::MAX),
            7 * 24 * 3600,
        ) as u32,
    }
}
