//! `qlik-listener webhook …`: create or update the Qlik Cloud webhook that calls the forwarder,
//! list webhooks, and recover after an outage by resending failed deliveries.
//!
//! It uses `/api/core/webhooks`, the replacement of the deprecated `/api/v1/webhooks` (removal
//! on or after 2027-11-01; the same paths below it).
//!
//! Idempotent by name: a webhook with the same name is replaced (`PUT`, every writable property
//! sent again, the secret included, since Qlik clears what a `PUT` omits).

use crate::config::Config;
use crate::qlik_api::{segment, ApiError, QlikApi};
use anyhow::Context as _;
use qlik_events::event::{APP_RELOAD_FINISHED, RELOAD_FINISHED};
use qlik_events::Secret;
use serde::Deserialize;
use serde_json::{json, Value};

/// A webhook as Qlik Cloud lists it (`GET /api/core/webhooks`), the fields we use.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Webhook {
    pub id: String,
    pub name: Option<String>,
    pub url: Option<String>,
    pub enabled: bool,
    pub event_types: Vec<String>,
    pub enable_cloud_event_delivery: bool,
    /// Why Qlik disabled it, when it did.
    pub disabled_reason: Option<String>,
}

impl Webhook {
    pub fn is_named(&self, name: &str) -> bool {
        self.name.as_deref() == Some(name)
    }
}

/// A delivery of a webhook (`GET /api/core/webhooks/{id}/deliveries`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct WebhookDelivery {
    pub id: String,
    pub event_type: Option<String>,
    pub status_message: Option<String>,
    pub triggered_at: Option<String>,
}

/// Qlik's list envelope.
#[derive(Deserialize)]
struct Page<T> {
    #[serde(default = "Vec::new")]
    data: Vec<T>,
}

/// `webhook`'s subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Create the webhook that calls the forwarder, or update the one with this name (run it
    /// again after changing the URL or the secret). It subscribes to both reload events:
    /// `com.qlik.v1.app.reload.finished` (each run of a reload) and `com.qlik.v1.reload.finished`
    /// (the final outcome); with --failures-only, only failed app reloads.
    Register(RegisterArgs),
    /// List the tenant's webhooks (secrets are never shown).
    List(TenantArg),
    /// Show the webhook's failed deliveries (Qlik keeps them 7 days).
    FailedDeliveries(NamedArgs),
    /// Resend the webhook's failed deliveries: the recovery path after an outage.
    Resend(NamedArgs),
    /// Turn the webhook back on after Qlik disabled it (it does so after repeated failed
    /// deliveries); then `webhook resend` sends what failed meanwhile.
    Enable(NamedArgs),
}

#[derive(Debug, clap::Args)]
pub struct TenantArg {
    /// Which configured tenant (its id or host name); default the first.
    #[arg(long)]
    tenant: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct NamedArgs {
    /// The webhook's name in Qlik Cloud.
    #[arg(long, default_value = DEFAULT_NAME)]
    name: String,
    #[command(flatten)]
    tenant: TenantArg,
}

#[derive(Debug, clap::Args)]
pub struct RegisterArgs {
    /// The forwarder's URL (the stack's WebhookUrl output).
    #[arg(long)]
    url: String,
    /// The webhook's name in Qlik Cloud.
    #[arg(long, default_value = DEFAULT_NAME)]
    name: String,
    /// Environment variable holding the webhook secret (the forwarder's QLIK_WEBHOOK_SECRET).
    #[arg(long, default_value = "QLIK_WEBHOOK_SECRET")]
    secret_env: String,
    /// Only failed app reloads (filter `data.status eq "error"`).
    #[arg(long)]
    failures_only: bool,
    #[command(flatten)]
    tenant: TenantArg,
}

/// Where Qlik Cloud's webhooks API lives.
const WEBHOOKS: &str = "/api/core/webhooks";

pub const DEFAULT_NAME: &str = "qlik-cloud-mqtt-relay";

/// Runs a `webhook` subcommand against the chosen tenant.
pub async fn run(config: &Config, command: Command) -> anyhow::Result<()> {
    let tenant = match &command {
        Command::Register(a) => &a.tenant,
        Command::List(t) => t,
        Command::FailedDeliveries(a) | Command::Resend(a) | Command::Enable(a) => &a.tenant,
    };
    let api = tenant_api(config, tenant.tenant.as_deref())?;
    match command {
        Command::List(_) => {
            let hooks = list(&api).await?;
            println!("{:<24}  {:<8}  {:<48}  events", "id", "enabled", "url");
            for w in &hooks {
                println!(
                    "{:<24}  {:<8}  {:<48}  {}  ({})",
                    w.id,
                    w.enabled,
                    w.url.as_deref().unwrap_or("-"),
                    w.event_types.join(","),
                    w.name.as_deref().unwrap_or("-"),
                );
            }
            println!("{} webhook(s)", hooks.len());
        }
        Command::FailedDeliveries(a) => {
            let id = find(&api, &a.name).await?;
            let failed = failed_deliveries(&api, &id).await?;
            println!("{} failed deliveries of webhook {id}", failed.len());
            for d in &failed {
                println!(
                    "{}  {}  {}  {}",
                    d.id,
                    d.triggered_at.as_deref().unwrap_or("-"),
                    d.event_type.as_deref().unwrap_or("-"),
                    d.status_message.as_deref().unwrap_or("-")
                );
            }
        }
        Command::Resend(a) => {
            let id = find(&api, &a.name).await?;
            let failed = failed_deliveries(&api, &id).await?;
            println!("{} failed deliveries of webhook {id}", failed.len());
            for (i, d) in failed.iter().enumerate() {
                resend(&api, &id, &d.id).await?;
                println!(
                    "[{}/{}] resent {} ({})",
                    i + 1,
                    failed.len(),
                    d.id,
                    d.triggered_at.as_deref().unwrap_or("-")
                );
            }
        }
        Command::Enable(a) => {
            let id = find(&api, &a.name).await?;
            enable(&api, &id).await?;
            println!(
                "enabled webhook {id} ({}); now `webhook resend` sends what failed meanwhile",
                a.name
            );
        }
        Command::Register(a) => {
            let parsed = url::Url::parse(&a.url)
                .with_context(|| format!("--url: {} is not a URL", a.url))?;
            if parsed.scheme() != "https" {
                eprintln!("warning: Qlik Cloud only calls https:// URLs with a DNS name");
            }
            let secret = std::env::var(&a.secret_env)
                .ok()
                .filter(|s| !s.is_empty())
                .map(Secret::new)
                .with_context(|| {
                    format!(
                        "--secret-env: environment variable {} is not set",
                        a.secret_env
                    )
                })?;
            let registration = Registration {
                name: a.name.clone(),
                url: a.url,
                secret,
                failures_only: a.failures_only,
            };
            match register(&api, &registration).await? {
                Outcome::Created(id) => println!("created webhook {id} ({})", a.name),
                Outcome::Updated(id) => println!("updated webhook {id} ({})", a.name),
            }
        }
    }
    Ok(())
}

/// The API client of the tenant named `wanted` (id or host name), or of the first tenant.
fn tenant_api(config: &Config, wanted: Option<&str>) -> anyhow::Result<QlikApi> {
    let tenant = super::tenant(config, wanted)?;
    Ok(QlikApi::new(
        tenant.tenant_url.clone(),
        tenant.token.clone(),
    )?)
}

/// The id of the webhook named `name`.
async fn find(api: &QlikApi, name: &str) -> anyhow::Result<String> {
    list(api)
        .await?
        .into_iter()
        .find(|w| w.is_named(name))
        .map(|w| w.id)
        .with_context(|| format!("no webhook named {name:?} in Qlik Cloud"))
}

pub struct Registration {
    pub name: String,
    pub url: String,
    pub secret: Secret,
    /// Only failed app reloads (`data.status eq "error"`), which Qlik allows for
    /// `com.qlik.v1.app.reload.finished` alone.
    pub failures_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Created(String),
    Updated(String),
}

impl Registration {
    /// The webhook document Qlik Cloud stores.
    pub fn body(&self, existing: Option<&Webhook>) -> Value {
        let mut body = json!({
            "name": self.name,
            "description": "Qlik Cloud → MQTT relay: qlik-webhook forwarder",
            "url": self.url,
            "secret": String::from_utf8_lossy(self.secret.expose()),
            "enabled": true,
            "level": "tenant",
        });
        if self.failures_only {
            body["eventTypes"] = json!([APP_RELOAD_FINISHED]);
            body["filter"] = json!("data.status eq \"error\"");
        } else {
            body["eventTypes"] = json!([APP_RELOAD_FINISHED, RELOAD_FINISHED]);
        }
        // Once on, CloudEvents delivery cannot be turned off; a PUT that omits it is refused.
        if existing.is_some_and(|w| w.enable_cloud_event_delivery) {
            body["enableCloudEventDelivery"] = json!(true);
        }
        body
    }
}

pub async fn list(api: &QlikApi) -> Result<Vec<Webhook>, ApiError> {
    let page: Page<Webhook> = api.get_json(WEBHOOKS).await?;
    Ok(page.data)
}

/// Creates the webhook, or replaces the one with the same name.
pub async fn register(api: &QlikApi, registration: &Registration) -> Result<Outcome, ApiError> {
    let existing = list(api)
        .await?
        .into_iter()
        .find(|w| w.is_named(&registration.name));
    match existing {
        Some(w) => {
            let id = w.id.clone();
            api.write(
                reqwest::Method::PUT,
                &format!("{WEBHOOKS}/{}", segment(&id)),
                &registration.body(Some(&w)),
            )
            .await?;
            Ok(Outcome::Updated(id))
        }
        None => {
            let created = api
                .write(reqwest::Method::POST, WEBHOOKS, &registration.body(None))
                .await?;
            Ok(Outcome::Created(
                created["id"].as_str().unwrap_or_default().to_owned(),
            ))
        }
    }
}

/// The webhook's failed deliveries (Qlik keeps 7 days).
pub async fn failed_deliveries(
    api: &QlikApi,
    webhook_id: &str,
) -> Result<Vec<WebhookDelivery>, ApiError> {
    let path = format!("{WEBHOOKS}/{}/deliveries?status=fail", segment(webhook_id));
    let page: Page<WebhookDelivery> = api.get_json(&path).await?;
    Ok(page.data)
}

/// Turns the webhook on (`PATCH`, JSON Patch on `/enabled`): nothing else changes.
pub async fn enable(api: &QlikApi, webhook_id: &str) -> Result<(), ApiError> {
    let path = format!("{WEBHOOKS}/{}", segment(webhook_id));
    let patch = json!([{ "op": "replace", "path": "/enabled", "value": true }]);
    api.write(reqwest::Method::PATCH, &path, &patch)
        .await
        .map(|_| ())
}

pub async fn resend(api: &QlikApi, webhook_id: &str, delivery_id: &str) -> Result<(), ApiError> {
    let path = format!(
        "{WEBHOOKS}/{}/deliveries/{}/actions/resend",
        segment(webhook_id),
        segment(delivery_id)
    );
    api.write(reqwest::Method::POST, &path, &json!({}))
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(failures_only: bool) -> Registration {
        Registration {
            name: "relay".into(),
            url: "https://x.lambda-url.eu-west-1.on.aws/".into(),
            secret: Secret::new("s"),
            failures_only,
        }
    }

    #[test]
    fn bodies() {
        let b = reg(true).body(None);
        assert_eq!(b["eventTypes"], json!([APP_RELOAD_FINISHED]));
        assert_eq!(b["filter"], "data.status eq \"error\"");
        assert_eq!(b["secret"], "s");
        assert_eq!(b["enabled"], true);
        let existing = Webhook {
            enable_cloud_event_delivery: true,
            ..Webhook::default()
        };
        let b = reg(false).body(Some(&existing));
        assert_eq!(
            b["eventTypes"],
            json!([APP_RELOAD_FINISHED, RELOAD_FINISHED])
        );
        assert!(b.get("filter").is_none());
        assert_eq!(b["enableCloudEventDelivery"], true);
    }
}
