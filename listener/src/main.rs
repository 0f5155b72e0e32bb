//! The `qlik-listener` binary: parses arguments, loads the configuration and dispatches to the
//! library.

use clap::{Parser, Subcommand};
use qlik_listener::cli::{history, migrate, preview, service, webhooks};
use qlik_listener::config::Config;
use relay_cli::{init_logging, run_to_exit, shutdown_signal, LogFormat};
use std::path::PathBuf;
use std::process::ExitCode;

/// Receives Qlik Cloud events from MQTT (published by qlik-webhook), records each durably in
/// a journal (SQLite, or PostgreSQL shared by two or three listeners), and enriches reload
/// failures from the Qlik Cloud REST API.
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

/// `check-config`'s options.
#[derive(clap::Args)]
struct CheckArgs {
    /// Also connect to the broker and subscribe (as a passing client that leaves nothing
    /// behind), call Qlik Cloud with each tenant's API key and read its webhook.
    #[arg(long)]
    online: bool,
    /// With --online: send a test alert, marked as a test, on each channel.
    #[arg(long, requires = "online")]
    send_test: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Run the listener (the default).
    Run,
    /// Check the configuration, print a summary (secrets masked) and exit 0, or list every
    /// problem with its key path and exit 1. With --online, also try the broker, Qlik Cloud
    /// (each API key and webhook) for real; with --send-test, send a test alert on each channel.
    CheckConfig(CheckArgs),
    /// Print the JSON Schema of the configuration (also in the repository as
    /// listener/config.schema.json): editors use it for completion and checks with the line
    /// `# yaml-language-server: $schema=config.schema.json` at the top of the YAML file.
    ConfigSchema,
    /// Print the configuration reference (Markdown: every key, its type and meaning; also in the
    /// repository as docs/configuration.md).
    ConfigReference,
    /// The Qlik Cloud webhook that calls the forwarder: register it, list webhooks, show and
    /// resend failed deliveries. Uses the first configured tenant (or --tenant).
    #[command(subcommand)]
    Webhook(webhooks::Command),
    /// Same as `webhook register` (kept for scripts written before `webhook`).
    #[command(hide = true)]
    RegisterWebhook(webhooks::RegisterArgs),
    /// Show what the journal holds: events, their state and their alerts, newest first.
    History(history::Args),
    /// The journal itself: `journal migrate` copies the SQLite journal into a shared one in
    /// PostgreSQL (for two or three listeners: docs/high-availability.md).
    #[command(subcommand)]
    Journal(migrate::Command),
    /// The listener as a native Windows service: install (with --config), start, stop,
    /// uninstall. On Linux use the systemd unit in infra/systemd.
    #[command(subcommand)]
    Service(service::Command),
    /// Show what each enabled alert channel would send, for a sample failed reload or an event
    /// from the journal (--event ID); with --send, deliver it for real.
    Preview(preview::Args),
    /// Run an embedded MQTT broker for trying the relay on one machine (needs no --config; built
    /// with `--features embedded-broker`). No TLS, no passwords, nothing kept across a restart:
    /// use Mosquitto or AWS IoT Core for real deployments (see infra/).
    #[cfg(feature = "embedded-broker")]
    Broker(qlik_listener::cli::broker::Options),
    /// Not in this build: the embedded broker is in builds with the `embedded-broker` feature.
    #[cfg(not(feature = "embedded-broker"))]
    #[command(hide = true, disable_help_flag = true)]
    Broker {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
        ignored: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = || load_config(cli.config.as_deref());
    match cli.command {
        Some(Command::ConfigSchema) => {
            print!("{}", qlik_listener::config::schema());
            ExitCode::SUCCESS
        }
        Some(Command::ConfigReference) => {
            print!("{}", qlik_listener::config::reference());
            ExitCode::SUCCESS
        }
        #[cfg(not(feature = "embedded-broker"))]
        Some(Command::Broker { .. }) => {
            eprintln!("error: `qlik-listener broker` (the embedded MQTT broker) is not in this build: build with `cargo build --release -p qlik-listener --features embedded-broker` (as the demo does), or use Mosquitto (infra/mosquitto)");
            ExitCode::FAILURE
        }
        #[cfg(feature = "embedded-broker")]
        Some(Command::Broker(options)) => {
            init_logging(cli.log_format, "warn");
            match qlik_listener::cli::broker::run(options) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Some(Command::CheckConfig(check)) => match config() {
            Ok((path, config)) => {
                for warning in config.file_warnings(&path) {
                    eprintln!("warning: {warning}");
                }
                let check = qlik_listener::cli::online::check_config(
                    &path,
                    &config,
                    check.online,
                    check.send_test,
                );
                run_to_exit(check)
            }
            Err(code) => code,
        },
        Some(Command::History(args)) => match config() {
            Ok((_, config)) => run_to_exit(async move { history::run(&config, args).await }),
            Err(code) => code,
        },
        Some(Command::Journal(command)) => match config() {
            Ok((_, config)) => run_to_exit(async move { migrate::run(&config, command).await }),
            Err(code) => code,
        },
        Some(Command::Service(command)) => match service::run(cli.config.as_deref(), command) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
        Some(Command::Preview(args)) => match config() {
            Ok((_, config)) => run_to_exit(async move { preview::run(&config, args).await }),
            Err(code) => code,
        },
        Some(Command::Webhook(command)) => match config() {
            Ok((_, config)) => run_to_exit(async move { webhooks::run(&config, command).await }),
            Err(code) => code,
        },
        Some(Command::RegisterWebhook(args)) => match config() {
            Ok((_, config)) => run_to_exit(async move {
                webhooks::run(&config, webhooks::Command::Register(args)).await
            }),
            Err(code) => code,
        },
        Some(Command::Run) | None => match config() {
            Ok((path, config)) => {
                let level = config.log_level.as_deref().unwrap_or("info");
                init_logging(cli.log_format, level);
                for warning in config.file_warnings(&path) {
                    tracing::warn!("{warning}");
                }
                for note in &config.notes {
                    tracing::info!("{note}");
                }
                for warning in &config.warnings {
                    tracing::warn!("{warning}");
                }
                run_to_exit(qlik_listener::run(config, shutdown_signal()))
            }
            Err(code) => code,
        },
    }
}

/// Loads `--config`; on failure prints every problem and gives the exit code (2: no file
/// given, 1: problems in it).
fn load_config(path: Option<&std::path::Path>) -> Result<(PathBuf, Config), ExitCode> {
    let Some(path) = path else {
        eprintln!("error: --config <FILE> is required (or set QLIK_LISTENER_CONFIG)");
        return Err(ExitCode::from(2));
    };
    match Config::load(path, &|name| std::env::var(name).ok()) {
        Ok(config) => Ok((path.to_owned(), config)),
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!(
                "error: the configuration has {} problem(s)",
                errors.errors.len()
            );
            Err(ExitCode::FAILURE)
        }
    }
}
