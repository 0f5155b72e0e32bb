//! Configuration from the environment (the table in docs/forwarder.md is the reference).
//!
//! Why: a Lambda is configured by environment variables, and the server mode uses the same ones
//! so that both behave alike. Promises: every setting is read and checked here, before anything
//! is served; a missing, malformed or contradictory setting is a [`ConfigError`] naming the
//! variable; secret values never appear in an error or in `Debug` output.

use qlik_events::topic::{self, DEFAULT_PREFIX};
use qlik_events::Secret;
use std::time::Duration;

/// Default and ceiling for `MAX_BODY_BYTES`.
pub const DEFAULT_MAX_BODY_BYTES: usize = 256 * 1024;
const MAX_MAX_BODY_BYTES: usize = qlik_events::MAX_EVENT_BYTES;
/// Default for `PUBLISH_TIMEOUT_MS`: well under the 10 s Lambda timeout of `template.yaml`.
pub const DEFAULT_PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);

/// A setting that could not be used. The message names the variable, never a secret value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var}: {reason}")]
pub struct ConfigError {
    pub var: &'static str,
    pub reason: String,
}

fn err(var: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        var,
        reason: reason.into(),
    }
}

/// Where the webhook secret comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// `QLIK_WEBHOOK_SECRET`.
    Env(Secret),
    /// `QLIK_WEBHOOK_SECRET_SSM_PARAMETER`: a SecureString parameter name.
    Ssm(String),
    /// `QLIK_WEBHOOK_SECRET_ID`: a Secrets Manager secret id or ARN.
    SecretsManager(String),
}

/// Which broker the forwarder publishes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublisherConfig {
    Mqtt(MqttConfig),
    /// AWS IoT Core through the IoT data plane HTTPS API.
    IotCore {
        endpoint_url: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttConfig {
    pub url: MqttUrlSource,
    pub ca_file: Option<String>,
    pub client_cert_file: Option<String>,
    pub client_key_file: Option<String>,
    /// Prefix of the client id; a random suffix keeps concurrent instances apart.
    pub client_id_prefix: String,
    pub protocol: MqttProtocol,
}

/// `MQTT_URL` may hold a password, so it can also come from SSM (`MQTT_URL_SSM_PARAMETER`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MqttUrlSource {
    Env(MqttUrl),
    Ssm(String),
}

pub use relay_mqtt::Protocol as MqttProtocol;

/// A parsed broker URL: `mqtt://host:port` or `mqtts://user:pass@host:port`.
#[derive(Clone, PartialEq, Eq)]
pub struct MqttUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<Secret>,
}

impl std::fmt::Debug for MqttUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.redacted())
    }
}

impl MqttUrl {
    /// Parses a broker URL; `var` names the setting it came from, for errors.
    pub fn parse(var: &'static str, value: &str) -> Result<Self, ConfigError> {
        const SHAPE: &str = "expected mqtt://host[:port] or mqtts://[user:password@]host[:port]";
        // The value may contain a password: errors describe it, never quote it.
        // A broker URL has no fragment, so `#` is a password's character, cutting the URL.
        if value.contains('#') {
            return Err(err(
                var,
                "holds a '#', which ends a URL: in a password write it as %23 (and '@' as %40, '/' as %2F, '?' as %3F, ':' as %3A, '%' as %25)",
            ));
        }
        let url =
            url::Url::parse(value.trim()).map_err(|_| err(var, format!("not a URL ({SHAPE})")))?;
        let (tls, default_port) = match url.scheme() {
            "mqtt" | "tcp" => (false, 1883),
            "mqtts" | "ssl" => (true, 8883),
            other => return Err(err(var, format!("unsupported scheme '{other}' ({SHAPE})"))),
        };
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| err(var, format!("no host ({SHAPE})")))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
            return Err(err(
                var,
                format!("a broker URL has no path or query ({SHAPE})"),
            ));
        }
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .map(|c| c.into_owned())
                .map_err(|_| err(var, "user name or password is not valid UTF-8 once decoded"))
        };
        let username = match url.username() {
            "" => None,
            u => Some(decode(u)?),
        };
        let password = url.password().map(decode).transpose()?.map(Secret::new);
        if password.is_some() && username.is_none() {
            return Err(err(var, "a password needs a user name"));
        }
        Ok(MqttUrl {
            tls,
            host,
            port: url.port().unwrap_or(default_port),
            username,
            password,
        })
    }

    /// The URL without its password, for logs.
    pub fn redacted(&self) -> String {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        let user = match (&self.username, &self.password) {
            (Some(u), Some(_)) => format!("{u}:***@"),
            (Some(u), None) => format!("{u}@"),
            _ => String::new(),
        };
        format!("{scheme}://{user}{}:{}", self.host, self.port)
    }
}

/// What is accepted but deliberately not published.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FilterConfig {
    /// `ALLOWED_EVENT_TYPES`: exact types, or prefixes ending in `*`.
    pub event_types: Option<Vec<String>>,
    /// `ALLOWED_TENANT_IDS`.
    pub tenant_ids: Option<Vec<String>>,
    /// `MAX_EVENT_AGE_SECONDS`.
    pub max_age: Option<Duration>,
}

/// The reload event types Qlik Cloud sends (what this relay is for).
const RELOAD_EVENT_TYPES: [&str; 2] = [
    "com.qlik.v1.app.reload.finished",
    "com.qlik.v1.reload.finished",
];

impl FilterConfig {
    /// Filters that most likely drop everything or more than meant, one line each naming the
    /// setting: a host name where a tenant id belongs, an event-type pattern no Qlik event has.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        for id in self.tenant_ids.iter().flatten() {
            if id.contains('.') {
                out.push(format!("ALLOWED_TENANT_IDS: '{id}' looks like a host name; tenant ids have no dots (the tenant's id is under Settings → Tenant in the Management Console, or in GET /api/v1/users/me as tenantId), so events from that tenant are filtered out (202)"));
            }
        }
        for pattern in self.event_types.iter().flatten() {
            let prefix = pattern.strip_suffix('*');
            let qlik_like =
                "com.qlik.".starts_with(prefix.unwrap_or("-")) || pattern.starts_with("com.qlik.");
            let reload_typo = prefix.is_none()
                && (pattern.starts_with("com.qlik.v1.app.reload")
                    || pattern.starts_with("com.qlik.v1.reload"))
                && !RELOAD_EVENT_TYPES.contains(&pattern.as_str());
            if !qlik_like {
                out.push(format!("ALLOWED_EVENT_TYPES: '{pattern}' matches no Qlik Cloud event type (they start with com.qlik.), so it lets nothing through"));
            } else if reload_typo {
                out.push(format!("ALLOWED_EVENT_TYPES: '{pattern}' is not a reload event type Qlik sends ({}), so it lets nothing through", RELOAD_EVENT_TYPES.join(", ")));
            }
        }
        out
    }
}

/// `BUTLER_OUTPUT`: whether, and where, events are also published in a form Butler v16 reads
/// (CloudEvents bodies with the legacy fields added; see `qlik_events::butler`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ButlerOutput {
    /// `off` (the default): the raw body only.
    #[default]
    Off,
    /// `replace`: the Butler-readable body instead of the raw one, on the usual topics. For
    /// Butler alone with its default topic settings.
    Replace,
    /// `copy`: the raw body as usual, and a Butler-readable copy under `BUTLER_TOPIC_PREFIX`,
    /// both acknowledged before the 2xx. For Butler beside a listener that checks signatures.
    Copy { topic_prefix: String },
}

/// Default for `BUTLER_TOPIC_PREFIX`.
pub const DEFAULT_BUTLER_TOPIC_PREFIX: &str = "butler/qscloud";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub secret: SecretSource,
    /// The previous secret, accepted too during a rotation: `QLIK_WEBHOOK_SECRET_PREVIOUS`
    /// or, by name, `QLIK_WEBHOOK_SECRET_PREVIOUS_SSM_PARAMETER`.
    pub previous_secret: Option<SecretSource>,
    pub publisher: PublisherConfig,
    pub topic_prefix: String,
    pub filter: FilterConfig,
    pub max_body_bytes: usize,
    pub publish_timeout: Duration,
    pub butler: ButlerOutput,
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads settings through `get` (the environment, or a map in tests). Empty values count
    /// as unset, so `VAR=` in a `.env` file does not switch a feature on.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| get(name).filter(|v| !v.trim().is_empty());

        let secret = one_of(
            &get,
            [
                "QLIK_WEBHOOK_SECRET",
                "QLIK_WEBHOOK_SECRET_SSM_PARAMETER",
                "QLIK_WEBHOOK_SECRET_ID",
            ],
        )?;
        let secret =
            match secret {
                Some(("QLIK_WEBHOOK_SECRET", v)) => SecretSource::Env(Secret::new(v)),
                Some(("QLIK_WEBHOOK_SECRET_SSM_PARAMETER", v)) => {
                    SecretSource::Ssm(v.trim().to_owned())
                }
                Some((_, v)) => SecretSource::SecretsManager(v.trim().to_owned()),
                None => return Err(err(
                    "QLIK_WEBHOOK_SECRET",
                    "not set: give the webhook secret in QLIK_WEBHOOK_SECRET, or its location in \
                     QLIK_WEBHOOK_SECRET_SSM_PARAMETER or QLIK_WEBHOOK_SECRET_ID",
                )),
            };
        let previous_secret = match one_of(
            &get,
            [
                "QLIK_WEBHOOK_SECRET_PREVIOUS",
                "QLIK_WEBHOOK_SECRET_PREVIOUS_SSM_PARAMETER",
            ],
        )? {
            Some(("QLIK_WEBHOOK_SECRET_PREVIOUS", v)) => Some(SecretSource::Env(Secret::new(v))),
            Some((_, v)) => Some(SecretSource::Ssm(v.trim().to_owned())),
            None => None,
        };

        let publisher = publisher(&get)?;

        let topic_prefix = get("MQTT_TOPIC_PREFIX")
            .map(|p| p.trim().to_owned())
            .unwrap_or_else(|| DEFAULT_PREFIX.to_owned());
        topic::check_prefix(&topic_prefix).map_err(|e| err("MQTT_TOPIC_PREFIX", e.to_string()))?;

        let filter = FilterConfig {
            event_types: list(get("ALLOWED_EVENT_TYPES")),
            tenant_ids: list(get("ALLOWED_TENANT_IDS")),
            max_age: number(&get, "MAX_EVENT_AGE_SECONDS", 1, u64::MAX)?.map(Duration::from_secs),
        };
        let max_body_bytes = number(&get, "MAX_BODY_BYTES", 1024, MAX_MAX_BODY_BYTES as u64)?
            .map(|n| n as usize)
            .unwrap_or(DEFAULT_MAX_BODY_BYTES);
        let publish_timeout = number(&get, "PUBLISH_TIMEOUT_MS", 100, 60_000)?
            .map(Duration::from_millis)
            .unwrap_or(DEFAULT_PUBLISH_TIMEOUT);

        let butler = butler_output(&get, &topic_prefix)?;

        Ok(Config {
            secret,
            previous_secret,
            publisher,
            topic_prefix,
            filter,
            max_body_bytes,
            publish_timeout,
            butler,
        })
    }

    /// Whether any setting needs AWS credentials (SSM, Secrets Manager or IoT Core).
    pub fn needs_aws(&self) -> bool {
        !matches!(self.secret, SecretSource::Env(_))
            || matches!(self.previous_secret, Some(SecretSource::Ssm(_)))
            || matches!(self.publisher, PublisherConfig::IotCore { .. })
            || matches!(
                self.publisher,
                PublisherConfig::Mqtt(MqttConfig {
                    url: MqttUrlSource::Ssm(_),
                    ..
                })
            )
    }
}

fn publisher(get: &impl Fn(&str) -> Option<String>) -> Result<PublisherConfig, ConfigError> {
    let mqtt = one_of(get, ["MQTT_URL", "MQTT_URL_SSM_PARAMETER"])?;
    let iot = get("AWS_IOT_ENDPOINT_URL")
        .map(|u| ("AWS_IOT_ENDPOINT_URL", u))
        .or_else(|| get("AWS_IOT_ENDPOINT").map(|e| ("AWS_IOT_ENDPOINT", e)));
    let mqtt_only = [
        "MQTT_CA_FILE",
        "MQTT_CLIENT_CERT_FILE",
        "MQTT_CLIENT_KEY_FILE",
        "MQTT_CLIENT_ID",
        "MQTT_PROTOCOL_VERSION",
    ];
    match (mqtt, iot) {
        (Some((mqtt_var, _)), Some((iot_var, _))) => Err(err(
            mqtt_var,
            format!(
                "set either {mqtt_var} (any MQTT broker) or {iot_var} (AWS IoT Core), not both"
            ),
        )),
        (None, None) => Err(err(
            "MQTT_URL",
            "no publisher: set MQTT_URL (e.g. mqtt://localhost:1883) or AWS_IOT_ENDPOINT \
             (e.g. abc123-ats.iot.eu-west-1.amazonaws.com)",
        )),
        (None, Some((var, value))) => {
            if let Some(stray) = mqtt_only.iter().find(|v| get(v).is_some()) {
                return Err(err(
                    stray,
                    format!("only applies to MQTT_URL, but {var} is set"),
                ));
            }
            Ok(PublisherConfig::IotCore {
                endpoint_url: iot_endpoint_url(var, value.trim())?,
            })
        }
        (Some((var, value)), None) => {
            let url = match var {
                "MQTT_URL" => MqttUrlSource::Env(MqttUrl::parse("MQTT_URL", &value)?),
                _ => MqttUrlSource::Ssm(value.trim().to_owned()),
            };
            let protocol = match get("MQTT_PROTOCOL_VERSION").as_deref().map(str::trim) {
                None | Some("5") | Some("5.0") => MqttProtocol::V5,
                Some("3.1.1") | Some("4") | Some("311") => MqttProtocol::V311,
                Some(other) => {
                    return Err(err(
                        "MQTT_PROTOCOL_VERSION",
                        format!("'{other}' is not 5 or 3.1.1"),
                    ))
                }
            };
            let file = |name: &'static str| -> Result<Option<String>, ConfigError> {
                match get(name) {
                    None => Ok(None),
                    Some(path) if std::path::Path::new(path.trim()).is_file() => {
                        Ok(Some(path.trim().to_owned()))
                    }
                    Some(path) => Err(err(name, format!("no such file: {}", path.trim()))),
                }
            };
            let (cert, key) = (
                file("MQTT_CLIENT_CERT_FILE")?,
                file("MQTT_CLIENT_KEY_FILE")?,
            );
            match (&cert, &key) {
                (Some(_), None) => {
                    return Err(err(
                        "MQTT_CLIENT_KEY_FILE",
                        "needed with MQTT_CLIENT_CERT_FILE",
                    ))
                }
                (None, Some(_)) => {
                    return Err(err(
                        "MQTT_CLIENT_CERT_FILE",
                        "needed with MQTT_CLIENT_KEY_FILE",
                    ))
                }
                _ => {}
            }
            let ca_file = file("MQTT_CA_FILE")?;
            if let MqttUrlSource::Env(url) = &url {
                if !url.tls && (ca_file.is_some() || cert.is_some()) {
                    return Err(err(
                        "MQTT_URL",
                        "certificate files are set but the URL is not mqtts://",
                    ));
                }
            }
            let client_id_prefix = get("MQTT_CLIENT_ID")
                .map(|c| c.trim().to_owned())
                .unwrap_or_else(|| "qlik-webhook".to_owned());
            if client_id_prefix.len() > 40 {
                return Err(err(
                    "MQTT_CLIENT_ID",
                    "at most 40 characters (a suffix is added)",
                ));
            }
            Ok(PublisherConfig::Mqtt(MqttConfig {
                url,
                ca_file,
                client_cert_file: cert,
                client_key_file: key,
                client_id_prefix,
                protocol,
            }))
        }
    }
}

fn butler_output(
    get: &impl Fn(&str) -> Option<String>,
    topic_prefix: &str,
) -> Result<ButlerOutput, ConfigError> {
    let prefix = get("BUTLER_TOPIC_PREFIX").map(|p| p.trim().to_owned());
    let output = match get("BUTLER_OUTPUT").as_deref().map(str::trim) {
        None | Some("off") => ButlerOutput::Off,
        Some("replace") => ButlerOutput::Replace,
        Some("copy") => ButlerOutput::Copy {
            topic_prefix: prefix
                .clone()
                .unwrap_or_else(|| DEFAULT_BUTLER_TOPIC_PREFIX.to_owned()),
        },
        Some(other) => {
            return Err(err(
                "BUTLER_OUTPUT",
                format!("'{other}' is not off, replace or copy"),
            ))
        }
    };
    match &output {
        ButlerOutput::Copy {
            topic_prefix: butler,
        } => {
            topic::check_prefix(butler).map_err(|e| err("BUTLER_TOPIC_PREFIX", e.to_string()))?;
            // A subscriber of one prefix (`<prefix>/#`) must not see the other's messages: a
            // listener checking signatures would reject the copies.
            let nested = |outer: &str, inner: &str| {
                inner == outer || inner.starts_with(&format!("{outer}/"))
            };
            if nested(topic_prefix, butler) || nested(butler, topic_prefix) {
                return Err(err(
                    "BUTLER_TOPIC_PREFIX",
                    format!(
                        "'{butler}' overlaps MQTT_TOPIC_PREFIX '{topic_prefix}': a subscriber of \
                         one would receive the other's messages; use a separate prefix such as \
                         {DEFAULT_BUTLER_TOPIC_PREFIX}"
                    ),
                ));
            }
        }
        _ if prefix.is_some() => {
            return Err(err(
                "BUTLER_TOPIC_PREFIX",
                "only applies with BUTLER_OUTPUT=copy",
            ))
        }
        _ => {}
    }
    Ok(output)
}

/// `AWS_IOT_ENDPOINT` is a host name; `AWS_IOT_ENDPOINT_URL` a full URL (tests, VPC endpoints).
fn iot_endpoint_url(var: &'static str, value: &str) -> Result<String, ConfigError> {
    if var == "AWS_IOT_ENDPOINT_URL" {
        let url = url::Url::parse(value).map_err(|_| err(var, "not a URL"))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(err(var, "expected an http(s):// URL"));
        }
        return Ok(value.trim_end_matches('/').to_owned());
    }
    if value.contains("://") || value.contains('/') {
        return Err(err(
            var,
            "expected a host name such as abc123-ats.iot.eu-west-1.amazonaws.com \
             (use AWS_IOT_ENDPOINT_URL for a full URL)",
        ));
    }
    Ok(format!("https://{value}"))
}

/// At most one of `vars` may be set; returns which one and its value.
fn one_of<const N: usize>(
    get: &impl Fn(&str) -> Option<String>,
    vars: [&'static str; N],
) -> Result<Option<(&'static str, String)>, ConfigError> {
    let set: Vec<_> = vars
        .iter()
        .filter_map(|v| get(v).map(|value| (*v, value)))
        .collect();
    match set.len() {
        0 => Ok(None),
        1 => Ok(set.into_iter().next()),
        _ => {
            let names: Vec<_> = set.iter().map(|(v, _)| *v).collect();
            Err(err(
                set[0].0,
                format!("only one of {} may be set", names.join(", ")),
            ))
        }
    }
}

fn number(
    get: &impl Fn(&str) -> Option<String>,
    var: &'static str,
    min: u64,
    max: u64,
) -> Result<Option<u64>, ConfigError> {
    let Some(value) = get(var) else {
        return Ok(None);
    };
    match value.trim().parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(Some(n)),
        _ => Err(err(
            var,
            format!(
                "'{}' is not a whole number from {min} to {max}",
                value.trim()
            ),
        )),
    }
}

fn list(value: Option<String>) -> Option<Vec<String>> {
    let items: Vec<String> = value?
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    (!items.is_empty()).then_some(items)
}

#[cfg(test)]
mod tests;
