//! `qlik-listener webhook …`: create or update the Qlik Cloud webhook that calls the forwarder,
//! list webhooks, and recover after an outage by resending failed deliveries.
//!
//! It uses `/api/core/webhooks`, the replacement of the deprecated `/api/v1/webhooks` (removal
//! on or after 2027-11-01; the same paths below it).
//!
//! Idempotent by name: a webhook with the same name is replaced (`PUT`, every writable property
//! sent again, the secret included, since Qlik clears what a `PUT` omits).

use crate::config::Config;
pub use crate::qlik_api::webhooks::DEFAULT_NAME;
use crate::qlik_api::webhooks::{
    choose, enable, failed_deliveries, list, register, resend, Choice, Outcome, Registration,
};
use crate::qlik_api::QlikApi;
use anyhow::Context as _;
use qlik_events::Secret;

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
    /// Resend the webhook's failed deliveries: the recovery path after an outage. Qlik sends
    /// each to the webhook's current URL with its current secret; each line says whether it
    /// was delivered this time, and the command fails when any was not.
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

/// Runs a `webhook` subcommand against the chosen tenant.
pub async fn run(config: &Config, command: Command) -> anyhow::Result<()> {
    let tenant = match &command {
        Command::Register(a) => &a.tenant,
        Command::List(t) => t,
        Command::FailedDeliveries(a) | Command::Resend(a) | Command::Enable(a) => &a.tenant,
    };
    let api = tenant_api(config, tenant.tenant.as_deref())?;
    let expected_url = config
        .webhook_watch
        .as_ref()
        .and_then(|w| w.expected_url.as_deref());
    match command {
        Command::List(_) => {
            let hooks = list(&api).await?;
            print!("{}", list_table(&hooks));
        }
        Command::FailedDeliveries(a) => {
            let id = find(&api, &a.name, expected_url).await?;
            let mut failed = failed_deliveries(&api, &id).await?;
            // Oldest first, whatever order Qlik lists them in: resent in the order they happened.
            failed.sort_by_key(|d| d.triggered());
            println!("{} failed deliveries of webhook {id}", failed.len());
            for d in &failed {
                println!(
                    "{}  {}  {}  {}",
                    super::shown(&d.id),
                    super::shown(d.triggered_at.as_deref().unwrap_or("-")),
                    super::shown(d.event_type.as_deref().unwrap_or("-")),
                    super::shown(d.status_message.as_deref().unwrap_or("-"))
                );
            }
        }
        Command::Resend(a) => {
            let id = find(&api, &a.name, expected_url).await?;
            let mut failed = failed_deliveries(&api, &id).await?;
            // Oldest first, whatever order Qlik lists them in: resent in the order they happened.
            failed.sort_by_key(|d| d.triggered());
            println!("{} failed deliveries of webhook {id}", failed.len());
            // Qlik answers a resend with the new delivery, which can have failed again.
            let mut again = 0;
            for (i, d) in failed.iter().enumerate() {
                let new = resend(&api, &id, &d.id).await?;
                let outcome = match new.succeeded() {
                    Some(true) => "delivered".to_owned(),
                    Some(false) => {
                        again += 1;
                        format!(
                            "failed again: {}",
                            new.status_message.as_deref().unwrap_or("no reason given")
                        )
                    }
                    None => "resent; Qlik's answer does not say how it went (`webhook failed-deliveries` lists it if it failed)".to_owned(),
                };
                println!(
                    "[{}/{}] resent {} ({}): {}",
                    i + 1,
                    failed.len(),
                    super::shown(&d.id),
                    super::shown(d.triggered_at.as_deref().unwrap_or("-")),
                    super::shown(&outcome)
                );
            }
            anyhow::ensure!(
                again == 0,
                "{again} of {} resent deliveries failed again: the forwarder is still not taking them (its log says why; a 401 means the webhook's secret is not the forwarder's QLIK_WEBHOOK_SECRET)",
                failed.len()
            );
        }
        Command::Enable(a) => {
            let id = find(&api, &a.name, expected_url).await?;
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

/// The id of the webhook named `name` (among several of that name, the one calling the
/// forwarder's URL when the configuration names it: `webhookWatch.expectedUrl`).
async fn find(api: &QlikApi, name: &str, expected_url: Option<&str>) -> anyhow::Result<String> {
    let hooks = list(api).await?;
    match choose(&hooks, None, name, expected_url) {
        Choice::None => anyhow::bail!("no webhook named {name:?} in Qlik Cloud"),
        Choice::One(w) => Ok(w.id.clone()),
        Choice::OfSeveral(w, n) => {
            eprintln!("note: {n} webhooks are named {name:?}; using {} (it calls the forwarder's URL)", w.id);
            Ok(w.id.clone())
        }
        Choice::Ambiguous(all) => anyhow::bail!(
            "{} webhooks are named {name:?} and none can be told from the others (set Butler.qlikCloudListener.webhookWatch.expectedUrl to the forwarder's URL, or delete the extra ones in the Management Console): {}",
            all.len(),
            all.iter().map(|w| w.id.as_str()).collect::<Vec<_>>().join(", ")
        ),
    }
}
/// `webhook list`'s table: one line per webhook, columns aligned, and why Qlik disabled one
/// (it does after repeated failed deliveries).
pub fn list_table(hooks: &[crate::qlik_api::webhooks::Webhook]) -> String {
    let mut lines = vec![["id", "name", "state", "url", "events"].map(str::to_owned)];
    for w in hooks {
        let state = match (w.enabled, w.disabled_reason.as_deref()) {
            (true, _) => "enabled".to_owned(),
            (false, Some(reason)) if !reason.is_empty() => format!("disabled: {reason}"),
            (false, _) => "disabled".to_owned(),
        };
        lines.push(
            [
                w.id.clone(),
                w.name.clone().unwrap_or_else(|| "-".into()),
                state,
                w.url.clone().unwrap_or_else(|| "-".into()),
                w.event_types.join(","),
            ]
            .map(|cell| super::shown(&cell)),
        );
    }
    format!("{}{} webhook(s)\n", super::aligned(&lines), hooks.len())
}
