//! The `qlik-webhook` binary: parses arguments, sets up logging and wires the library parts.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use relay_cli::{init_logging, shutdown_signal, LogFormat};
use std::io::Read as _;
use std::net::SocketAddr;
use std::sync::Arc;

/// Verifies Qlik Cloud webhooks (Qlik-Signature) and publishes them to MQTT with QoS 1,
/// answering 2xx only after the broker acknowledged.
///
/// Under AWS Lambda (AWS_LAMBDA_RUNTIME_API set) it runs as the function handler without any
/// arguments. Elsewhere use `serve`. Settings come from the environment: QLIK_WEBHOOK_SECRET
/// (or _SSM_PARAMETER / _ID), and MQTT_URL or AWS_IOT_ENDPOINT; see docs/forwarder.md for the full list.
#[derive(Parser)]
#[command(version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run as an HTTP server: POST / or /webhook takes webhooks, GET /healthz answers 200.
    Serve {
        /// Address to listen on. Port 0 picks a free port; the chosen address is printed.
        #[arg(long, env = "QLIK_WEBHOOK_LISTEN", default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Log format.
        #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
        /// Most connections held at once; at the cap the oldest idle one is closed for a new
        /// one, and when all are busy new ones get 503. Keep it well below the file-descriptor
        /// limit (ulimit -n; LimitNOFILE in systemd).
        #[arg(long, env = "MAX_CONNECTIONS", default_value_t = qlik_webhook::server::DEFAULT_MAX_CONNECTIONS,
              value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
        max_connections: u32,
        /// Seconds a client may take to send a request head; also how long a kept-alive
        /// connection may stay idle.
        #[arg(long, env = "HEADER_READ_TIMEOUT_SECONDS", default_value_t = qlik_webhook::server::DEFAULT_HEADER_READ_TIMEOUT_SECS,
              value_parser = clap::value_parser!(u64).range(1..=300))]
        header_read_timeout_seconds: u64,
    },
    /// Run under the AWS Lambda runtime (the default when AWS_LAMBDA_RUNTIME_API is set).
    Lambda,
    /// Post a realistic, freshly signed event to a forwarder and report its answer: the smoke
    /// test after deploying. Exits 0 when the forwarder published it (200); a 202 (filtered: the
    /// tenant or event type is not allowed, or the event is too old) exits 1 with the reason.
    SendTestEvent {
        /// The forwarder's URL (the Function URL, or http://127.0.0.1:8080/webhook).
        #[arg(long)]
        url: String,
        /// Environment variable holding the webhook secret.
        #[arg(long, default_value = "QLIK_WEBHOOK_SECRET")]
        secret_env: String,
        /// Which event.
        #[arg(long, value_enum, default_value = "reload-failed")]
        event: qlik_webhook::test_event::Sample,
        /// CloudEvents 1.0 (what Qlik sends now) or the legacy fields.
        #[arg(long, value_enum, default_value = "cloudevents")]
        format: qlik_webhook::test_event::Format,
        /// The tenant id the event claims to come from: use your tenant's, so the event passes
        /// ALLOWED_TENANT_IDS and the listener and ends in an alert.
        #[arg(long, env = "QLIK_TENANT_ID", conflicts_with = "listener_config")]
        tenant_id: Option<String>,
        /// Take the tenant id from the listener's configuration (tenant.id).
        #[arg(long)]
        listener_config: Option<std::path::PathBuf>,
        /// Fail unless the forwarder also published the event in the form Butler reads
        /// (BUTLER_OUTPUT=copy or replace); prints the topic Butler must subscribe to.
        #[arg(long)]
        expect_butler: bool,
    },
    /// Check the configuration (the same environment as `serve`) and publish a test event
    /// (`com.qlik-relay.check`, tenant `qlik-webhook-check`) where events go: exits 0 when the
    /// broker took it. With MQTT 5 or IoT Core a topic the broker's ACL or policy denies fails
    /// here; MQTT 3.1.1 cannot show a denial, which the output says. With --listener-config, also
    /// checks that the listener behind it can take what this forwarder publishes.
    Check {
        /// The listener's configuration (Butler-style YAML), to check the two agree: for
        /// example BUTLER_OUTPUT=replace sends unsigned bodies, which a listener with
        /// requireSignature rejects.
        #[arg(long)]
        listener_config: Option<std::path::PathBuf>,
    },
    /// Print the table of settings (environment variables) in Markdown, as docs/forwarder.md shows it.
    ConfigReference,
    /// Print the Qlik-Signature value for a body (a file, or standard input), as Qlik computes it.
    Sign {
        /// Environment variable holding the webhook secret.
        #[arg(long, default_value = "QLIK_WEBHOOK_SECRET")]
        secret_env: String,
        /// File with the body; standard input when absent.
        file: Option<std::path::PathBuf>,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    relay_cli::run_to_exit(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let on_lambda = std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some();
    match cli.command {
        Some(Command::Sign { secret_env, file }) => sign(&secret_env, file.as_deref()),
        Some(Command::ConfigReference) => {
            print!("{}", qlik_webhook::variables::reference());
            Ok(())
        }
        Some(Command::SendTestEvent {
            url,
            secret_env,
            event,
            format,
            tenant_id,
            listener_config,
            expect_butler,
        }) => {
            let secret = secret_from_env(&secret_env)?;
            let tenant_id = match (tenant_id, listener_config) {
                (Some(id), _) => id,
                (None, Some(file)) => qlik_webhook::test_event::tenant_from_listener_config(&file)?,
                (None, None) => {
                    eprintln!("note: no --tenant-id or --listener-config: the event claims tenant qlik-webhook-test-tenant, which a tenant filter or the listener will not take");
                    "qlik-webhook-test-tenant".to_owned()
                }
            };
            let now = time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .context("cannot format the time")?;
            let body = qlik_webhook::test_event::body(event, format, &tenant_id, &now).to_string();
            let (status, answer) =
                qlik_webhook::test_event::send(&url, &secret, body.as_bytes()).await?;
            println!("HTTP {status} {answer}");
            if status == 202 {
                anyhow::bail!("the forwarder did not publish the event (HTTP 202, filtered): see the reason above; check ALLOWED_TENANT_IDS and ALLOWED_EVENT_TYPES, and the tenant id (--tenant-id)");
            }
            if !(200..300).contains(&status) {
                anyhow::bail!("the forwarder answered HTTP {status}");
            }
            if expect_butler {
                let butler_topic = serde_json::from_str::<serde_json::Value>(&answer)
                    .ok()
                    .and_then(|v| v["butlerTopic"].as_str().map(str::to_owned));
                match butler_topic {
                    Some(topic) => println!("Butler reads this event on {topic}"),
                    None => anyhow::bail!(
                        "the forwarder did not publish a Butler-readable form: set BUTLER_OUTPUT=copy or replace on the forwarder"
                    ),
                }
            }
            Ok(())
        }
        Some(Command::Check { listener_config }) => {
            init_logging(LogFormat::Text, "warn");
            let config = qlik_webhook::config::Config::from_env()?;
            if let Some(file) = listener_config {
                qlik_webhook::test_event::agrees_with_listener(&config, &file)?;
            }
            let v311 = matches!(
                &config.publisher,
                qlik_webhook::config::PublisherConfig::Mqtt(m)
                    if m.protocol == qlik_webhook::config::MqttProtocol::V311
            );
            let forwarder = qlik_webhook::build(config).await?;
            let topics = forwarder
                .check()
                .await
                .map_err(|e| anyhow::anyhow!("the broker did not take the test event: {e}"))?;
            for topic in &topics {
                println!("published and acknowledged: {topic}");
            }
            if v311 {
                println!("NOT VERIFIED: with MQTT 3.1.1 the broker acknowledges publishes its ACL denies; check that a subscriber receives these topics, or use MQTT_PROTOCOL_VERSION=5");
            } else {
                println!("configuration OK: the broker allows this forwarder's topics");
            }
            Ok(())
        }
        Some(Command::Serve {
            listen,
            log_format,
            max_connections,
            header_read_timeout_seconds,
        }) => {
            init_logging(log_format, "info");
            let config = qlik_webhook::config::Config::from_env()?;
            let forwarder = Arc::new(qlik_webhook::build(config).await?);
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("--listen: cannot listen on {listen}"))?;
            let local = listener.local_addr().context("no local address")?;
            // On stdout, for scripts and tests; logs go to stderr.
            println!("qlik-webhook listening on http://{local}");
            tracing::info!(address = %local, "listening");
            let limits = qlik_webhook::server::Limits {
                max_connections: max_connections as usize,
                header_read_timeout: std::time::Duration::from_secs(header_read_timeout_seconds),
            };
            qlik_webhook::server::serve(listener, forwarder, limits, shutdown_signal())
                .await
                .context("HTTP server failed")?;
            tracing::info!("stopped");
            Ok(())
        }
        Some(Command::Lambda) | None
            if on_lambda || matches!(cli.command, Some(Command::Lambda)) =>
        {
            init_logging(LogFormat::Json, "info");
            let config = qlik_webhook::config::Config::from_env()?;
            let forwarder = Arc::new(qlik_webhook::build(config).await?);
            qlik_webhook::lambda::run(forwarder)
                .await
                .map_err(|e| anyhow::anyhow!("Lambda runtime failed: {e}"))
        }
        _ => {
            use clap::CommandFactory as _;
            Cli::command().print_help().context("cannot print help")?;
            anyhow::bail!("no command: use `qlik-webhook serve`, or run under AWS Lambda");
        }
    }
}

fn secret_from_env(secret_env: &str) -> anyhow::Result<qlik_events::Secret> {
    std::env::var(secret_env)
        .ok()
        .filter(|s| !s.is_empty())
        .map(qlik_events::Secret::new)
        .with_context(|| format!("--secret-env: environment variable {secret_env} is not set"))
}

fn sign(secret_env: &str, file: Option<&std::path::Path>) -> anyhow::Result<()> {
    let secret = secret_from_env(secret_env)?;
    let body = match file {
        Some(path) => {
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?
        }
        None => {
            let mut body = Vec::new();
            std::io::stdin()
                .read_to_end(&mut body)
                .context("cannot read standard input")?;
            body
        }
    };
    println!("{}", qlik_events::sign(&secret, &body));
    Ok(())
}
