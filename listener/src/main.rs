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
