//! Qlik Cloud tenants (`Butler.qlikSenseCloud`): Butler's single `tenant`, or our list of
//! `tenants`, each with its API key, webhook secret and alert channels.

use super::broker::Forward;
use super::channel::{self, ChannelConfig};
use super::value::{Check, Flag, KeyPath, Text};
use qlik_events::Secret;
use schemars::JsonSchema;
use serde::Deserialize;

/// How a tenant was named in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenantRef {
    /// The tenant id as events carry it.
    Id(String),
    /// A host name (Butler's template shows `tenant.id: xyz.eu.qlikcloud.com`): resolved to the
    /// id once at start-up with `GET /api/v1/users/me`.
    Host(String),
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

#[cfg(test)]
impl TenantConfig {
    /// A tenant at `url` named "Test tenant", without channels.
    pub fn for_tests(url: &str) -> TenantConfig {
        TenantConfig {
            path: "Butler.qlikSenseCloud.event.mqtt.tenant".into(),
            id: TenantRef::Id("T1".into()),
            tenant_url: url::Url::parse(url).expect("a URL"),
            token: Secret::new("token"),
            qmc_url: None,
            hub_url: None,
            comment: Some("Test tenant".into()),
            webhook_secret: None,
            webhook_secret_previous: None,
            channels: Vec::new(),
        }
    }
}

/// `Butler.qlikSenseCloud`.
#[derive(Deserialize, JsonSchema, Default)]
#[serde(default, rename_all = "camelCase")]
pub struct QlikSenseCloud {
    /// Must be true to handle Qlik Cloud events.
    enable: Option<Flag>,
    /// Qlik Cloud events (`event.mqtt`).
    event: Option<Event>,
}

#[derive(Deserialize, JsonSchema, Default)]
#[serde(default)]
struct Event {
    /// The tenants whose events arrive over MQTT: `tenant`, and more in `tenants`.
    mqtt: Option<Tenants>,
}

#[derive(Deserialize, JsonSchema, Default)]
#[serde(default)]
struct Tenants {
    /// Butler's single tenant.
    tenant: Option<Tenant>,
    /// Ours: more tenants, each as `tenant`.
    tenants: Option<Vec<Tenant>>,
}

/// One Qlik Cloud tenant.
#[derive(Deserialize, JsonSchema, Default)]
#[serde(default, rename_all = "camelCase")]
struct Tenant {
    /// The tenant id as events carry it, or the tenant's host name (resolved at start-up).
    id: Option<Text>,
    /// `https://<tenant>.<region>.qlikcloud.com`
    tenant_url: Option<Text>,
    /// `jwt`: an API key or JWT, sent as bearer token.
    auth_type: Option<Text>,
    /// How the listener calls the Qlik Cloud API: `jwt.token`.
    auth: Option<Auth>,
    /// The webhook's secret (literal or `${ENV_VAR}`), to check `qlik-signature`.
    webhook_secret: Option<Text>,
    /// Accepted beside webhookSecret while the secret is rotated.
    webhook_secret_previous: Option<Text>,
    /// Links offered to templates: `qmc` and `hub`.
    qlik_sense_urls: Option<QlikSenseUrls>,
    /// A name for the tenant in alerts (`tenantComment`) and logs.
    comment: Option<Text>,
    /// Alert channels for failed reloads.
    alert: Option<channel::Alert>,
    /// Ours: `none` when this tenant has no alert channel on purpose (its events are recorded,
    /// nobody is told). Without it, a tenant with no enabled channel is an error.
    alerts: Option<Text>,
}

#[derive(Deserialize, JsonSchema, Default)]
#[serde(default)]
struct Auth {
    /// The API key (`token`).
    jwt: Option<Jwt>,
}

#[derive(Deserialize, JsonSchema, Default)]
#[serde(default)]
struct Jwt {
    /// API key for the Qlik Cloud REST API (literal or `${ENV_VAR}`).
    token: Option<Text>,
}

#[derive(Deserialize, JsonSchema, Default)]
#[serde(default)]
struct QlikSenseUrls {
    /// The Management Console's address, for templates (`qlikSenseQMC`).
    qmc: Option<Text>,
    /// The hub's address, for templates (`qlikSenseHub`).
    hub: Option<Text>,
}

/// The tenant's address is where links in alerts start (`<tenantUrl>/sense/app/<id>`) and
/// where the API is called: a path (`…/hub/`) or a query would break every link, so it is an
/// error; plain HTTP to anything but this machine is warned about (the API key travels in it).
fn tenant_address(c: &mut Check<'_>, at: &KeyPath, url: url::Url) -> Option<url::Url> {
    let host = url.host_str().unwrap_or_default().to_owned();
    if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
        c.error(
            at,
            format!("must be the tenant's address only, without a path: https://{host} (not {url}): links in alerts and API calls start from it"),
        );
        return None;
    }
    let local = matches!(host.as_str(), "localhost" | "127.0.0.1" | "[::1]");
    if url.scheme() == "http" && !local {
        c.warnings.push(format!(
            "{at}: {url} is plain HTTP: the API key would be sent unencrypted, and Qlik Cloud answers on https:// only; write https://{host}"
        ));
    }
    Some(url)
}

/// A tenant alerts somewhere, or says `alerts: none`. A tenant without a channel is most often
/// an `alert:` block indented one level too shallow or too deep: the error says where such a
/// block was found.
fn check_some_channel(c: &mut Check<'_>, at: &KeyPath, alerts: &Option<Text>, none_enabled: bool) {
    let alerts_at = at.key("alerts");
    let off = match Text::of(alerts) {
        None => false,
        Some(v) if v.eq_ignore_ascii_case("none") => true,
        Some(v) => {
            c.error(
                &alerts_at,
                format!("'{v}' is not a value here: write `alerts: none` for a tenant that alerts nobody on purpose, or leave it out"),
            );
            return;
        }
    };
    if !none_enabled || off {
        return;
    }
    let alert_at = at.key("alert");
    let alert_path = alert_at.to_string();
    if c.errors.iter().any(|e| e.path.starts_with(&alert_path)) {
        // A channel is enabled but wrong: that error says it.
        return;
    }
    let misplaced: Vec<&str> = c
        .ignored
        .iter()
        .filter(|p| {
            let last = p.rsplit('.').next().unwrap_or(p);
            last == "alert" || last.ends_with("Notification") || last == "reloadAppFailure"
        })
        .filter(|p| {
            !p.starts_with("Butler.emailNotification")
                && !p.starts_with("Butler.teamsNotification")
                && !p.starts_with("Butler.slackNotification")
                && !p.starts_with("Butler.webhookNotification")
        })
        .map(String::as_str)
        .collect();
    let found = match misplaced.as_slice() {
        [] => String::new(),
        paths => format!(
            ". Found where the listener does not read it: {} (indented under the tenant, it would be {alert_path}.<channel>.reloadAppFailure)",
            paths.join(", ")
        ),
    };
    c.error(
        &alert_at,
        format!("no alert channel is enabled for this tenant: failed reloads would be recorded but nobody told. Enable one (e.g. teamsNotification.reloadAppFailure.enable: true), or write `alerts: none` beside tenantUrl if that is what you want{found}"),
    );
}

pub fn check_cloud(
    c: &mut Check<'_>,
    at: &KeyPath,
    cloud: QlikSenseCloud,
    forward: &Forward,
) -> Vec<TenantConfig> {
    if !Flag::or(cloud.enable, false) {
        c.error(
            &at.key("enable"),
            "must be true to handle Qlik Cloud events",
        );
    }
    let root = at.key("event.mqtt");
    let list = cloud.event.and_then(|e| e.mqtt).unwrap_or_default();
    let single = root.key("tenant");
    let mut nodes: Vec<(KeyPath, Tenant)> = Vec::new();
    if let Some(t) = list.tenant {
        nodes.push((single.clone(), t));
    }
    let many = root.key("tenants");
    for (i, t) in list.tenants.unwrap_or_default().into_iter().enumerate() {
        nodes.push((many.item(i), t));
    }
    if nodes.is_empty() {
        c.error(
            &single,
            "missing: configure the Qlik Cloud tenant (or a list under tenants)",
        );
    }
    let mut tenants: Vec<TenantConfig> = Vec::new();
    for (path, node) in nodes {
        if let Some(t) = check_tenant(c, &path, node, forward) {
            if tenants.iter().any(|other| other.id == t.id) {
                c.error(&path.key("id"), "the same tenant is configured twice");
            } else {
                tenants.push(t);
            }
        }
    }
    tenants
}

fn check_tenant(
    c: &mut Check<'_>,
    at: &KeyPath,
    t: Tenant,
    forward: &Forward,
) -> Option<TenantConfig> {
    let id = c.required(&t.id, &at.key("id"));
    let url_at = at.key("tenantUrl");
    let tenant_url = c
        .required(&t.tenant_url, &url_at)
        .and_then(|u| match url::Url::parse(&u) {
            Ok(url) if !url.username().is_empty() || url.password().is_some() => {
                // The value is not repeated: it holds a credential.
                c.error(
                    &url_at,
                    "must not contain a user name or password (the API key goes in auth.jwt.token)",
                );
                None
            }
            Ok(url) if matches!(url.scheme(), "https" | "http") && url.host_str().is_some() => {
                tenant_address(c, &url_at, url)
            }
            _ => {
                c.error(
                    &url_at,
                    "not a URL (expected https://<tenant>.<region>.qlikcloud.com)",
                );
                None
            }
        });
    if let Some(kind) = Text::of(&t.auth_type) {
        if !kind.eq_ignore_ascii_case("jwt") && !kind.eq_ignore_ascii_case("apikey") {
            c.error(
                &at.key("authType"),
                format!("'{kind}' is not supported (jwt: an API key or JWT as bearer token)"),
            );
        }
    }
    let token_at = at.key("auth.jwt.token");
    let token_raw = t.auth.and_then(|a| a.jwt).and_then(|j| j.token);
    if token_raw.is_none() {
        c.error(&token_at, "missing: an API key for the Qlik Cloud REST API");
    }
    let token = c.secret(&token_raw, &token_at);
    let secret_at = at.key("webhookSecret");
    let webhook_secret = c.secret(&t.webhook_secret, &secret_at);
    if forward.require_signature && t.webhook_secret.is_none() {
        c.error(
            &secret_at,
            "missing: requireSignature is on, so each tenant needs the webhook's secret",
        );
    }
    let previous_at = at.key("webhookSecretPrevious");
    let webhook_secret_previous = c.secret(&t.webhook_secret_previous, &previous_at);
    if t.webhook_secret_previous.is_some() && t.webhook_secret.is_none() {
        c.error(
            &previous_at,
            "needs webhookSecret: the previous secret is accepted beside the current one, not instead of it",
        );
    }
    let urls = t.qlik_sense_urls.unwrap_or_default();
    let channels = channel::check_alert(
        c,
        &at.key("alert"),
        t.alert.unwrap_or_default(),
        &forward.subscription_root,
    );
    check_some_channel(c, at, &t.alerts, channels.is_empty());
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
        path: at.to_string(),
        id,
        tenant_url: tenant_url?,
        token: token?,
        qmc_url: Text::of(&urls.qmc).map(str::to_owned),
        hub_url: Text::of(&urls.hub).map(str::to_owned),
        comment: Text::of(&t.comment).map(str::to_owned),
        webhook_secret,
        webhook_secret_previous,
        channels,
    })
}
