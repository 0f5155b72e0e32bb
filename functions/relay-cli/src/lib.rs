//! What the relay's binaries (`qlik-webhook`, `qlik-listener`) share at their edges: setting up
//! logs, waiting for the signal to stop, and serving HTTP so that no client can hold it up
//! ([`connections`], with [`admission`] deciding which connections are kept). Kept apart so
//! each `main.rs` stays a thin wiring of its library.

pub mod admission;
pub mod connections;

/// Runs `work` to completion on a multi-threaded runtime and turns its outcome into the exit
/// code: 0, or 1 with the error and its context on standard error (and in the log). Errors carry
/// context and never a secret value.
pub fn run_to_exit(
    work: impl std::future::Future<Output = anyhow::Result<()>>,
) -> std::process::ExitCode {
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

/// How logs are written (to standard error).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines, coloured on a terminal.
    Text,
    /// One JSON object per line (CloudWatch, Loki, Elastic, …).
    Json,
}

/// The log filter: `RUST_LOG` when it is one, else `default_level`, and what to warn about.
///
/// A bare word in `RUST_LOG` is a *target* to tracing, so `RUST_LOG=verbose` (Butler's level
/// name) would silence every log line without a word. Level names are taken as levels, Butler's
/// `verbose` and `silly` as `debug` and `trace`, and any other bare word is refused with a warning.
pub fn log_filter(rust_log: Option<&str>, default_level: &str) -> (String, Option<String>) {
    let Some(value) = rust_log.map(str::trim).filter(|v| !v.is_empty()) else {
        return (default_level.to_owned(), None);
    };
    let levels = ["off", "error", "warn", "info", "debug", "trace"];
    let bare = !value.contains(['=', ',', ':', '[']);
    let lower = value.to_ascii_lowercase();
    match lower.as_str() {
        "verbose" => ("debug".to_owned(), None),
        "silly" => ("trace".to_owned(), None),
        "warning" => ("warn".to_owned(), None),
        l if levels.contains(&l) => (l.to_owned(), None),
        _ if bare => (
            default_level.to_owned(),
            Some(format!("RUST_LOG={value:?} is not a log level (error, warn, info, debug, trace, off); using {default_level}")),
        ),
        _ => match tracing_subscriber::EnvFilter::try_new(value) {
            Ok(_) => (value.to_owned(), None),
            Err(e) => (
                default_level.to_owned(),
                Some(format!("RUST_LOG={value:?} cannot be read ({e}); using {default_level}")),
            ),
        },
    }
}

fn env_filter(default_level: &str) -> (tracing_subscriber::EnvFilter, Option<String>) {
    let rust_log = std::env::var("RUST_LOG").ok();
    let (directives, warning) = log_filter(rust_log.as_deref(), default_level);
    let filter = tracing_subscriber::EnvFilter::try_new(&directives)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    (filter, warning)
}

/// Installs the global log subscriber on standard error (coloured on a terminal). `RUST_LOG`
/// wins over `default_level`.
pub fn init_logging(format: LogFormat, default_level: &str) {
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    install(format, default_level, std::io::stderr, ansi);
}

/// Installs the global log subscriber writing to `writer` (a log file: no colours). `RUST_LOG`
/// wins over `default_level`.
pub fn init_logging_to<W>(format: LogFormat, default_level: &str, writer: W)
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    install(format, default_level, writer, false);
}

fn install<W>(format: LogFormat, default_level: &str, writer: W, ansi: bool)
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let (filter, warning) = env_filter(default_level);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi)
        .with_target(false);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
    if let Some(w) = warning {
        tracing::warn!("{w}");
    }
}

/// Completes on Ctrl-C or SIGTERM (what systemd, Docker and Kubernetes send).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutting down");
}

/// For each accepted HTTP connection (`axum::serve::ListenerExt::tap_io`): answers go out at
/// once. With Nagle's algorithm a small response can wait for the client's delayed ACK (up to
/// 40 ms on Linux).
pub fn set_nodelay(tcp: &mut tokio::net::TcpStream) {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "could not set TCP_NODELAY");
    }
}

#[cfg(test)]
mod tests {
    use super::log_filter;

    #[test]
    fn rust_log_words_that_would_silence_everything_are_not_taken_as_targets() {
        assert_eq!(log_filter(None, "info"), ("info".into(), None));
        assert_eq!(log_filter(Some(" "), "info"), ("info".into(), None));
        assert_eq!(log_filter(Some("DEBUG"), "info"), ("debug".into(), None));
        // Butler's level names.
        assert_eq!(log_filter(Some("verbose"), "info"), ("debug".into(), None));
        assert_eq!(log_filter(Some("silly"), "info"), ("trace".into(), None));
        let (level, warning) = log_filter(Some("loud"), "info");
        assert_eq!(level, "info");
        assert!(warning
            .unwrap()
            .contains("RUST_LOG=\"loud\" is not a log level"));
        // Directives stay directives.
        assert_eq!(
            log_filter(Some("qlik_listener=debug,warn"), "info"),
            ("qlik_listener=debug,warn".into(), None)
        );
        let (level, warning) = log_filter(Some("x=notalevel"), "info");
        assert_eq!(level, "info");
        assert!(warning.is_some());
    }
}
