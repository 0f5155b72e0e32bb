//! The `qlik-listener` binary: parses arguments, sets up logging, runs the library.

use clap::{Parser, Subcommand};
use relay_cli::{init_logging, shutdown_signal, LogFormat};
use std::path::PathBuf;

/// Receives Qlik Cloud events from MQTT (published by qlik-webhook), records each durably in
/// a SQLite journal, and enriches reload failures from the Qlik Cloud REST API.
///
/// The configuration is a Butler-style YAML file (root key `Butler`); a Butler user can point
/// it at the file they already have. Secrets may be written as ${ENV_VAR}.
#[derive(Parser)]
#[command(version, about, long_about)]
struct Cli {
    /// The YAML configuration file.
    #[arg(long, short, global = true, env = "QLIK_LISTENER_CONFIG")]
    config: Option<PathBuf>,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the listener (the default).
    Run,
    /// Check the configuration, print a summary (secrets masked) and exit 0, or list every
    /// problem with its key path and exit 1.
    CheckConfig,
    /// Print the JSON Schema of the configuration (also in the repository as
    /// listener/config.schema.json): editors use it for completion and checks with the line
    /// `# yaml-language-server: $schema=config.schema.json` at the top of the YAML file.
    ConfigSchema,
    /// Create or update (by name) the Qlik Cloud webhook that calls the forwarder; or list the
    /// tenant's webhooks (--list); or show (--failed-deliveries) and resend (--resend) its failed
    /// deliveries, the recovery path after an outage. Uses the first tenant (or --tenant).
    RegisterWebhook(WebhookAction),
    /// Show what the journal holds: events, their state and their alerts, newest first.
    History {
        /// How far back: 90s, 30m, 1h, 7d.
        #[arg(long, default_value = "24h", value_parser = qlik_listener::history::parse_age)]
        since: std::time::Duration,
        /// Only events in this state (`failed`: reload failures).
        #[arg(long, value_enum)]
        status: Option<qlik_listener::history::StatusFilter>,
        /// At most this many events.
        #[arg(long, default_value_t = 200)]
        limit: u32,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Run an embedded MQTT broker for trying the relay on one machine (needs no --config; built
    /// with `--features embedded-broker`). No TLS, no passwords, nothing kept across a restart:
    /// use Mosquitto or AWS IoT Core for real deployments (see infra/).
    #[cfg(feature = "embedded-broker")]
    Broker {
        /// MQTT 5 address.
        #[arg(long, default_value = "127.0.0.1:1883")]
        listen: std::net::SocketAddr,
        /// Also serve MQTT 3.1.1 on this address.
        #[arg(long)]
        listen_v311: Option<std::net::SocketAddr>,
        /// Print one line per message published on topics matching this filter.
        #[arg(long)]
        show: Option<String>,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    #[cfg(feature = "embedded-broker")]
    if let Some(Command::Broker {
        listen,
        listen_v311,
        show,
    }) = cli.command
    {
        init_logging(cli.log_format, "warn");
        let options = qlik_listener::broker::Options {
            listen,
            listen_v311,
            show,
            max_payload: 2 * 1024 * 1024,
        };
        return match qlik_listener::broker::run(options) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    if let Some(Command::ConfigSchema) = cli.command {
        print!("{}", qlik_listener::config::schema());
        return std::process::ExitCode::SUCCESS;
    }
    let Some(path) = cli.config.clone() else {
        eprintln!("error: --config <FILE> is required (or set QLIK_LISTENER_CONFIG)");
        return std::process::ExitCode::from(2);
    };
    let config = match qlik_listener::config::Config::load(&path, &|name| std::env::var(name).ok())
    {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!(
                "error: the configuration has {} problem(s)",
                errors.errors.len()
            );
            return std::process::ExitCode::FAILURE;
        }
    };
    match cli.command {
        Some(Command::CheckConfig) => {
            for warning in config.file_warnings(&path) {
                eprintln!("warning: {warning}");
            }
            print!("{}", config.summary());
            println!("configuration OK");
            std::process::ExitCode::SUCCESS
        }
        Some(Command::History {
            since,
            status,
            limit,
            json,
        }) => block_on(history(&config, since, status, limit, json)),
        Some(Command::RegisterWebhook(action)) => block_on(register_webhook(&config, action)),
        #[cfg(feature = "embedded-broker")]
        Some(Command::Broker { .. }) => std::process::ExitCode::SUCCESS,
        Some(Command::ConfigSchema) => std::process::ExitCode::SUCCESS,
        Some(Command::Run) | None => {
            init_logging(
                cli.log_format,
                config.log_level.as_deref().unwrap_or("info"),
            );
            for warning in config.file_warnings(&path) {
                tracing::warn!("{warning}");
            }
            block_on(qlik_listener::run(config, shutdown_signal()))
        }
    }
}

/// Runs `work` on a multi-threaded runtime; errors are printed with their context.
fn block_on(work: impl std::future::Future<Output = anyhow::Result<()>>) -> std::process::ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(work) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn history(
    config: &qlik_listener::config::Config,
    since: std::time::Duration,
    status: Option<qlik_listener::history::StatusFilter>,
    limit: u32,
    json: bool,
) -> anyhow::Result<()> {
    use qlik_listener::history;
    anyhow::ensure!(
        config.journal_path.exists(),
        "no journal at {} yet: the listener has not run with this config",
        config.journal_path.display()
    );
    let journal = qlik_listener::journal::Journal::open(&config.journal_path).await?;
    let rows = history::load(&journal, since, status, limit).await?;
    if json {
        println!("{}", history::json(&rows));
    } else {
        print!("{}", history::table(&rows));
    }
    Ok(())
}

/// `register-webhook`'s options.
#[derive(clap::Args)]
struct WebhookAction {
    /// The forwarder's URL (the stack's WebhookUrl output).
    #[arg(long, required_unless_present_any = ["list", "failed_deliveries", "resend"])]
    url: Option<String>,
    /// The webhook's name in Qlik Cloud.
    #[arg(long, default_value = "qlik-cloud-mqtt-relay")]
    name: String,
    /// Environment variable holding the webhook secret (the forwarder's QLIK_WEBHOOK_SECRET).
    #[arg(long, default_value = "QLIK_WEBHOOK_SECRET")]
    secret_env: String,
    /// Only failed app reloads (filter `data.status eq "error"`).
    #[arg(long)]
    failures_only: bool,
    /// Which configured tenant (its id or host name); default the first.
    #[arg(long)]
    tenant: Option<String>,
    /// List the tenant's webhooks and exit.
    #[arg(long)]
    list: bool,
    /// Show the webhook's failed deliveries instead of registering.
    #[arg(long)]
    failed_deliveries: bool,
    /// Resend the webhook's failed deliveries instead of registering.
    #[arg(long)]
    resend: bool,
}

async fn register_webhook(
    config: &qlik_listener::config::Config,
    a: WebhookAction,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use qlik_listener::config::TenantRef;
    use qlik_listener::webhooks;
    let tenant = match &a.tenant {
        Some(wanted) => config
            .tenants
            .iter()
            .find(|t| matches!(&t.id, TenantRef::Id(id) | TenantRef::Host(id) if id == wanted))
            .with_context(|| format!("--tenant: {wanted} is not configured"))?,
        None => config.tenants.first().context("no tenant configured")?,
    };
    let api =
        qlik_listener::qlik_api::QlikApi::new(tenant.tenant_url.clone(), tenant.token.clone())?;
    let hooks = webhooks::list(&api).await?;
    if a.list {
        println!("{:<24}  {:<8}  {:<48}  events", "id", "enabled", "url");
        for w in &hooks {
            println!(
                "{:<24}  {:<8}  {:<48}  {}  ({})",
                w["id"].as_str().unwrap_or("-"),
                w["enabled"].as_bool().unwrap_or(false),
                w["url"].as_str().unwrap_or("-"),
                w["eventTypes"]
                    .as_array()
                    .map(|t| t
                        .iter()
                        .filter_map(|v| v.as_str())
                        .collect::<Vec<_>>()
                        .join(","))
                    .unwrap_or_default(),
                w["name"].as_str().unwrap_or("-"),
            );
        }
        println!("{} webhook(s)", hooks.len());
        return Ok(());
    }
    if a.failed_deliveries || a.resend {
        let hook = hooks
            .iter()
            .find(|w| w["name"] == serde_json::json!(a.name))
            .with_context(|| format!("no webhook named {:?} in Qlik Cloud", a.name))?;
        let id = hook["id"].as_str().unwrap_or_default();
        let failed = webhooks::failed_deliveries(&api, id).await?;
        println!("{} failed deliveries of webhook {id}", failed.len());
        for (i, d) in failed.iter().enumerate() {
            let delivery = d["id"].as_str().unwrap_or_default();
            if a.resend {
                webhooks::resend(&api, id, delivery).await?;
                println!(
                    "[{}/{}] resent {delivery} ({})",
                    i + 1,
                    failed.len(),
                    d["triggeredAt"].as_str().unwrap_or("-")
                );
            } else {
                println!(
                    "{delivery}  {}  {}  {}",
                    d["triggeredAt"].as_str().unwrap_or("-"),
                    d["eventType"].as_str().unwrap_or("-"),
                    d["statusMessage"].as_str().unwrap_or("-")
                );
            }
        }
        return Ok(());
    }
    let url = a.url.context("--url is required")?;
    let parsed = url::Url::parse(&url).with_context(|| format!("--url: {url} is not a URL"))?;
    if parsed.scheme() != "https" {
        eprintln!("warning: Qlik Cloud only calls https:// URLs with a DNS name");
    }
    let secret = std::env::var(&a.secret_env)
        .ok()
        .filter(|s| !s.is_empty())
        .map(qlik_events::Secret::new)
        .with_context(|| {
            format!(
                "--secret-env: environment variable {} is not set",
                a.secret_env
            )
        })?;
    let registration = webhooks::Registration {
        name: a.name.clone(),
        url,
        secret,
        failures_only: a.failures_only,
    };
    match webhooks::register(&api, &registration).await? {
        webhooks::Outcome::Created(id) => println!("created webhook {id} ({})", a.name),
        webhooks::Outcome::Updated(id) => println!("updated webhook {id} ({})", a.name),
    }
    Ok(())
}
