//! `qlik-listener service …`: the listener as a native Windows service (no wrapper needed).
//!
//! `install` registers it with the service control manager (automatic start, restarted after a
//! failure: 10 s, 60 s, then every 5 minutes, the count reset after a day; the account `NT AUTHORITY\LocalService` unless `--account`
//! says otherwise) to run `qlik-listener --config <file> service run`; `start`, `stop` and
//! `uninstall` do what they say. `run` is what the SCM starts: the listener, with its log in a
//! daily file under `logs\` beside the configuration (kept 14 days), stopping cleanly when
//! Windows asks. Secrets come from the service's environment (`${VAR}` in the file; set with
//! `reg add … /v Environment /t REG_MULTI_SZ`) or from the file, readable by the service
//! account only. Start, stop and a fatal error are also written to the Windows Event Log
//! (Application log, source `qlik-listener`, registered by `install`), where Windows admins and
//! their monitoring look first. On other systems these commands say to use the systemd unit in
//! `infra/`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The service's name in the service control manager.
pub const NAME: &str = "qlik-listener";

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Register the listener as a Windows service (run as Administrator).
    Install {
        /// The account it runs as (`LocalSystem` for the built-in system account).
        #[arg(long, default_value = "NT AUTHORITY\\LocalService")]
        account: String,
    },
    /// Stop and remove the service.
    Uninstall,
    /// Start the service.
    Start,
    /// Stop the service.
    Stop,
    /// What the service control manager runs (not for use by hand).
    #[command(hide = true)]
    Run,
}

/// The arguments the service is started with: the configuration (made absolute, as the
/// service's working directory is the system folder) and `service run`.
pub fn launch_arguments(config: &Path) -> std::io::Result<Vec<OsString>> {
    let config = std::path::absolute(config)?;
    Ok(vec![
        "--config".into(),
        config.into_os_string(),
        "service".into(),
        "run".into(),
    ])
}

/// The Event Log source's registry key (Application log), written by `install`.
pub const EVENT_SOURCE_KEY: &str =
    r"HKLM\SYSTEM\CurrentControlSet\Services\EventLog\Application\qlik-listener";

/// The message file that shows an event's text as it is (`%1`), from the .NET Framework that
/// every supported Windows Server has.
pub const EVENT_MESSAGE_FILE: &str =
    r"%SystemRoot%\Microsoft.NET\Framework64\v4.0.30319\EventLogMessages.dll";

/// What the service writes to the Event Log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LifeEvent {
    Started { config: PathBuf },
    Stopped,
    Failed { error: String, log_dir: PathBuf },
}

impl LifeEvent {
    /// The Event Log entry's id (distinct per kind, for filters and monitoring rules).
    pub fn id(&self) -> u32 {
        match self {
            LifeEvent::Started { .. } => 1000,
            LifeEvent::Stopped => 1001,
            LifeEvent::Failed { .. } => 1002,
        }
    }

    pub fn is_error(&self) -> bool {
        matches!(self, LifeEvent::Failed { .. })
    }

    /// The entry's text.
    pub fn message(&self) -> String {
        let version = env!("CARGO_PKG_VERSION");
        match self {
            LifeEvent::Started { config } => {
                format!("qlik-listener {version} started with {}", config.display())
            }
            LifeEvent::Stopped => format!("qlik-listener {version} stopped"),
            LifeEvent::Failed { error, log_dir } => format!(
                "qlik-listener {version} stopped on an error: {error}\nThe log is in {}.",
                log_dir.display()
            ),
        }
    }
}

/// Where the service writes its log: `logs` beside the configuration file.
pub fn log_dir(config: &Path) -> PathBuf {
    config.parent().unwrap_or(Path::new(".")).join("logs")
}

/// Carries out `command`; `install` and `run` need the configuration file.
#[cfg(not(windows))]
pub fn run(config: Option<&Path>, command: Command) -> anyhow::Result<()> {
    let _ = (config, command);
    anyhow::bail!(
        "qlik-listener service is for Windows; on Linux run the listener with the systemd unit in infra/systemd (see infra/README.md)"
    )
}

#[cfg(windows)]
pub use windows::run;

#[cfg(windows)]
mod windows {
    use super::{launch_arguments, log_dir, Command, NAME};
    use anyhow::Context as _;
    use std::ffi::OsString;
    use std::path::{Path, PathBuf};
    use std::sync::OnceLock;
    use std::time::Duration;
    use windows_service::service::{
        ServiceAccess, ServiceAction, ServiceActionType, ServiceControl, ServiceControlAccept,
        ServiceErrorControl, ServiceExitCode, ServiceFailureActions, ServiceFailureResetPeriod,
        ServiceInfo, ServiceStartType, ServiceState, ServiceStatus, ServiceType,
    };
    use windows_service::service_control_handler::{self, ServiceControlHandlerResult};
    use windows_service::service_manager::{ServiceManager, ServiceManagerAccess};

    /// The configuration file, for the service's main function (the SCM calls it without it).
    static CONFIG: OnceLock<PathBuf> = OnceLock::new();

    windows_service::define_windows_service!(ffi_service_main, service_main);

    pub fn run(config: Option<&Path>, command: Command) -> anyhow::Result<()> {
        let config = || config.context("--config <FILE> is required (or set QLIK_LISTENER_CONFIG)");
        match command {
            Command::Install { account } => install(config()?, &account),
            Command::Uninstall => uninstall(),
            Command::Start => {
                let service = manager(ServiceManagerAccess::CONNECT)?
                    .open_service(NAME, ServiceAccess::START)
                    .context("the service is not installed (qlik-listener service install)")?;
                service.start(&[] as &[&std::ffi::OsStr])?;
                println!("started {NAME}");
                Ok(())
            }
            Command::Stop => {
                let service = manager(ServiceManagerAccess::CONNECT)?
                    .open_service(NAME, ServiceAccess::STOP)
                    .context("the service is not installed")?;
                service.stop()?;
                println!("stopping {NAME}");
                Ok(())
            }
            Command::Run => {
                let _ = CONFIG.set(config()?.to_owned());
                windows_service::service_dispatcher::start(NAME, ffi_service_main).context(
                    "not started by the service control manager (use qlik-listener service start)",
                )
            }
        }
    }

    fn manager(access: ServiceManagerAccess) -> anyhow::Result<ServiceManager> {
        ServiceManager::local_computer(None::<&str>, access)
            .context("cannot open the service control manager (run as Administrator)")
    }

    fn install(config: &Path, account: &str) -> anyhow::Result<()> {
        let executable_path = std::env::current_exe().context("where this program is")?;
        let info = ServiceInfo {
            name: OsString::from(NAME),
            display_name: OsString::from("Qlik Cloud listener (qlik-listener)"),
            service_type: ServiceType::OWN_PROCESS,
            start_type: ServiceStartType::AutoStart,
            error_control: ServiceErrorControl::Normal,
            executable_path,
            launch_arguments: launch_arguments(config)?,
            dependencies: vec![],
            account_name: (account != "LocalSystem").then(|| OsString::from(account)),
            account_password: None,
        };
        let manager =
            manager(ServiceManagerAccess::CONNECT | ServiceManagerAccess::CREATE_SERVICE)?;
        let service = manager
            .create_service(&info, ServiceAccess::CHANGE_CONFIG | ServiceAccess::START)
            .context("cannot create the service (already installed? run as Administrator)")?;
        service.set_description(
            "Receives Qlik Cloud events over MQTT, records them and alerts on failed reloads.",
        )?;
        // Recovery, as `sc.exe failure` would set it: restarted after a crash or an error exit.
        let restart = |secs| ServiceAction {
            action_type: ServiceActionType::Restart,
            delay: std::time::Duration::from_secs(secs),
        };
        service
            .update_failure_actions(ServiceFailureActions {
                reset_period: ServiceFailureResetPeriod::After(std::time::Duration::from_secs(
                    24 * 3600,
                )),
                reboot_msg: None,
                command: None,
                actions: Some(vec![restart(10), restart(60), restart(300)]),
            })
            .context("cannot set the service's recovery (restart on failure)")?;
        // Also after an error exit, not only a crash (wine's service manager lacks this setting).
        if let Err(e) = service.set_failure_actions_on_non_crash_failures(true) {
            eprintln!("note: the service restarts after a crash, but could not be set to restart after an error exit too ({e}): sc.exe failureflag {NAME} 1");
        }
        // The Event Log source; without it entries still appear, with a "description not
        // found" note around the text.
        let registered = std::process::Command::new("reg")
            .args([
                "add",
                super::EVENT_SOURCE_KEY,
                "/v",
                "EventMessageFile",
                "/t",
                "REG_EXPAND_SZ",
                "/d",
                super::EVENT_MESSAGE_FILE,
                "/f",
            ])
            .status()
            .is_ok_and(|s| s.success())
            && std::process::Command::new("reg")
                .args([
                    "add",
                    super::EVENT_SOURCE_KEY,
                    "/v",
                    "TypesSupported",
                    "/t",
                    "REG_DWORD",
                    "/d",
                    "7",
                    "/f",
                ])
                .status()
                .is_ok_and(|s| s.success());
        if !registered {
            eprintln!("note: the Event Log source {NAME} could not be registered; start, stop and errors are still in the log file");
        }
        println!(
            "installed {NAME} (runs as {account}, logs in {}); start it with: qlik-listener service start",
            log_dir(config).display()
        );
        Ok(())
    }

    fn uninstall() -> anyhow::Result<()> {
        let service = manager(ServiceManagerAccess::CONNECT)?
            .open_service(
                NAME,
                ServiceAccess::QUERY_STATUS | ServiceAccess::STOP | ServiceAccess::DELETE,
            )
            .context("the service is not installed")?;
        if service.query_status()?.current_state != ServiceState::Stopped {
            let _ = service.stop();
        }
        service.delete()?;
        let _ = std::process::Command::new("reg")
            .args(["delete", super::EVENT_SOURCE_KEY, "/f"])
            .status();
        println!("removed {NAME} (the configuration, journal and logs are left in place)");
        Ok(())
    }

    fn status(state: ServiceState, exit: u32) -> ServiceStatus {
        ServiceStatus {
            service_type: ServiceType::OWN_PROCESS,
            current_state: state,
            controls_accepted: match state {
                ServiceState::Running => {
                    ServiceControlAccept::STOP | ServiceControlAccept::SHUTDOWN
                }
                _ => ServiceControlAccept::empty(),
            },
            exit_code: ServiceExitCode::Win32(exit),
            checkpoint: 0,
            wait_hint: Duration::from_secs(10),
            process_id: None,
        }
    }

    fn service_main(_arguments: Vec<OsString>) {
        let Some(config_path) = CONFIG.get().cloned() else {
            return;
        };
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let mut stop_tx = Some(stop_tx);
        let handler = move |control| match control {
            ServiceControl::Stop | ServiceControl::Shutdown => {
                if let Some(tx) = stop_tx.take() {
                    let _ = tx.send(());
                }
                ServiceControlHandlerResult::NoError
            }
            ServiceControl::Interrogate => ServiceControlHandlerResult::NoError,
            _ => ServiceControlHandlerResult::NotImplemented,
        };
        let Ok(handle) = service_control_handler::register(NAME, handler) else {
            return;
        };
        let _ = handle.set_service_status(status(ServiceState::Running, 0));
        let appender = tracing_appender::rolling::Builder::new()
            .rotation(tracing_appender::rolling::Rotation::DAILY)
            .filename_prefix("qlik-listener")
            .filename_suffix("log")
            .max_log_files(14)
            .build(log_dir(&config_path));
        let outcome = match appender {
            Ok(appender) => run_listener(&config_path, appender, stop_rx),
            Err(e) => Err(anyhow::anyhow!("cannot open the log folder: {e}")),
        };
        let exit = match outcome {
            Ok(()) => {
                event_log(&super::LifeEvent::Stopped);
                0
            }
            Err(e) => {
                tracing::error!("{e:#}");
                event_log(&super::LifeEvent::Failed {
                    error: format!("{e:#}"),
                    log_dir: log_dir(&config_path),
                });
                1
            }
        };
        let _ = handle.set_service_status(status(ServiceState::Stopped, exit));
    }

    /// Writes `event` to the Application log (source `qlik-listener`); best effort.
    fn event_log(event: &super::LifeEvent) {
        use windows_sys::Win32::System::EventLog::{
            DeregisterEventSource, RegisterEventSourceW, ReportEventW, EVENTLOG_ERROR_TYPE,
            EVENTLOG_INFORMATION_TYPE,
        };
        let wide = |s: &str| s.encode_utf16().chain(Some(0)).collect::<Vec<u16>>();
        let source = wide(NAME);
        let text = wide(&event.message());
        let kind = if event.is_error() {
            EVENTLOG_ERROR_TYPE
        } else {
            EVENTLOG_INFORMATION_TYPE
        };
        // SAFETY: the strings are NUL-terminated UTF-16 that outlive the calls; the handle is
        // checked and released.
        unsafe {
            let handle = RegisterEventSourceW(std::ptr::null(), source.as_ptr());
            if handle.is_null() {
                return;
            }
            let strings = [text.as_ptr()];
            ReportEventW(
                handle,
                kind,
                0,
                event.id(),
                std::ptr::null_mut(),
                1,
                0,
                strings.as_ptr(),
                std::ptr::null(),
            );
            DeregisterEventSource(handle);
        }
    }

    fn run_listener(
        config_path: &Path,
        mut appender: tracing_appender::rolling::RollingFileAppender,
        stop: tokio::sync::oneshot::Receiver<()>,
    ) -> anyhow::Result<()> {
        let config =
            match crate::config::Config::load(config_path, &|name| std::env::var(name).ok()) {
                Ok(config) => config,
                Err(errors) => {
                    // Logging is set up from the configuration, so this one goes to the log
                    // file by hand: a service that cannot start says why where the admin looks
                    // (typically a ${VAR} the service's environment lacks).
                    use std::io::Write as _;
                    let _ = writeln!(
                        appender,
                        "{} ERROR the service cannot start: {errors}",
                        crate::journal::now_rfc3339()
                    );
                    anyhow::bail!("{errors}");
                }
            };
        relay_cli::init_logging_to(
            relay_cli::LogFormat::Text,
            config.log_level.as_deref().unwrap_or("info"),
            appender,
        );
        for warning in &config.warnings {
            tracing::warn!("{warning}");
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        tracing::info!(config = %config_path.display(), "service started");
        event_log(&super::LifeEvent::Started {
            config: config_path.to_owned(),
        });
        let result = runtime.block_on(crate::run(config, async {
            let _ = stop.await;
        }));
        tracing::info!("service stopped");
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_log_entries_say_what_happened_and_where_to_look() {
        let started = LifeEvent::Started {
            config: PathBuf::from(r"C:\ProgramData\qlik-listener\butler.yaml"),
        };
        assert!(started.message().starts_with("qlik-listener "));
        assert!(started
            .message()
            .ends_with(r"started with C:\ProgramData\qlik-listener\butler.yaml"));
        let failed = LifeEvent::Failed {
            error: "Butler.qlikSenseCloud.event.mqtt.tenant.id: missing".into(),
            log_dir: PathBuf::from(r"C:\ProgramData\qlik-listener\logs"),
        };
        assert!(failed.is_error() && !started.is_error());
        assert!(failed
            .message()
            .contains("stopped on an error: Butler.qlikSenseCloud.event.mqtt.tenant.id: missing"));
        assert!(failed
            .message()
            .contains(r"The log is in C:\ProgramData\qlik-listener\logs."));
        let ids = [started.id(), LifeEvent::Stopped.id(), failed.id()];
        assert_eq!(ids, [1000, 1001, 1002]);
        assert!(EVENT_SOURCE_KEY.ends_with(r"\EventLog\Application\qlik-listener"));
    }

    #[test]
    fn the_service_runs_with_an_absolute_config_path() {
        let args = launch_arguments(Path::new("butler.yaml")).unwrap();
        assert_eq!(args[0], "--config");
        assert!(Path::new(&args[1]).is_absolute(), "{args:?}");
        assert!(Path::new(&args[1]).ends_with("butler.yaml"));
        assert_eq!(&args[2..], ["service", "run"]);
        assert_eq!(
            log_dir(Path::new("/etc/qlik/butler.yaml")),
            Path::new("/etc/qlik/logs")
        );
    }
}
