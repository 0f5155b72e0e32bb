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
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
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
    if let Some(Command::History {
        since,
        status,
        limit,
        json,
    }) = cli.command
    {
        return history(&config, since, status, limit, json);
    }
    if let Some(Command::CheckConfig) = cli.command {
        print!("{}", config.summary());
        println!("configuration OK");
        return std::process::ExitCode::SUCCESS;
    }
    init_logging(
        cli.log_format,
        config.log_level.as_deref().unwrap_or("info"),
    );
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
    match runtime.block_on(qlik_listener::run(config, shutdown_signal())) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn history(
    config: &qlik_listener::config::Config,
    since: std::time::Duration,
    status: Option<qlik_listener::history::StatusFilter>,
    limit: u32,
    json: bool,
) -> std::process::ExitCode {
    use qlik_listener::history;
    if !config.journal_path.exists() {
        eprintln!(
            "error: no journal at {} yet: the listener has not run with this config",
            config.journal_path.display()
        );
        return std::process::ExitCode::FAILURE;
    }
    let rows = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| {
            rt.block_on(async {
                let journal = qlik_listener::journal::Journal::open(&config.journal_path).await?;
                Ok(history::load(&journal, since, status, limit).await?)
            })
        });
    match rows {
        Ok(rows) if json => {
            println!("{}", history::json(&rows));
            std::process::ExitCode::SUCCESS
        }
        Ok(rows) => {
            print!("{}", history::table(&rows));
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
