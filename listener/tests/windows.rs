//! The Windows builds, run under wine: the listener's `check-config`, and one failed reload
//! from a real Mosquitto to an alert in a file, with the Qlik Cloud stand-in answering its
//! lookups; the forwarder publishing a signed event; the native service installed, started,
//! alerting, stopped and removed through wine's service manager.
//!
//! Ignored by `scripts/test` (it needs the Windows build and wine); `scripts/windows-smoke`
//! builds them and runs it, and CI runs that script. `QLIK_LISTENER_EXE` and `QLIK_WEBHOOK_EXE`
//! name the `.exe` files.

mod common;

use common::{event_id, Options, Setup, NO_WAIT};
use relay_tests::fixtures::{self, FIXTURES};
use relay_tests::process;
use std::time::Duration;

/// Wine starts slowly (its first start in a prefix takes tens of seconds).
const WINE_LIMIT: Duration = Duration::from_secs(120);
const WINE: &str = "/usr/lib/wine/wine64";

fn exe() -> String {
    std::env::var("QLIK_LISTENER_EXE")
        .expect("QLIK_LISTENER_EXE: the Windows qlik-listener.exe (scripts/windows-smoke sets it)")
}

/// A Linux path as the Windows program sees it (wine maps `/` to drive `Z:`).
fn windows_path(path: &std::path::Path) -> String {
    format!("Z:{}", path.display()).replace('/', "\\")
}

/// The test's environment for the listener, plus what wine needs.
fn wine_env(s: &Setup) -> Vec<(&'static str, String)> {
    let mut env = s.env();
    for key in ["HOME", "WINEPREFIX"] {
        if let Ok(value) = std::env::var(key) {
            env.push((key, value));
        }
    }
    env.push(("WINEDEBUG", "-all".to_owned()));
    env
}

/// A listener set up to alert to `alerts.jsonl` beside its configuration.
async fn alerting_to_a_file() -> Setup {
    let tenant = "          alert:
            fileNotification:
              reloadAppFailure:
                enable: true
                path: alerts.jsonl
";
    Setup::with(Options {
        tenant,
        listener: NO_WAIT,
        ..Options::default()
    })
    .await
}

/// The first alert written to `alerts.jsonl`, once there.
async fn first_alert(s: &Setup) -> serde_json::Value {
    let alerts = s.dir.path().join("alerts.jsonl");
    let line = relay_tests::wait::until(WINE_LIMIT, "the alert in alerts.jsonl", || {
        let text = std::fs::read_to_string(&alerts).unwrap_or_default();
        async move { text.lines().next().map(str::to_owned) }
    })
    .await;
    serde_json::from_str(&line).unwrap()
}

#[tokio::test]
#[ignore = "needs the Windows build and wine: scripts/windows-smoke runs it"]
async fn the_windows_listener_checks_its_config_and_alerts_a_failed_reload() {
    let exe = exe();
    let s = alerting_to_a_file().await;
    let config = windows_path(&s.config);
    let env = wine_env(&s);

    let (code, out) = process::run(WINE, &[&exe, "check-config", "--config", &config], &env).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("configuration OK"), "{out}");
    assert!(out.contains("alerts:        file"), "{out}");

    let mut listener = process::Running::spawn(WINE, &[&exe, "--config", &config], &env);
    listener.wait_for_output("subscribed", 1, WINE_LIMIT).await;
    let body = fixtures::event("app-reload-failed.cloudevents.json");
    s.publish(FIXTURES[0].1, &body).await;
    let id = event_id(&body);
    let alert = first_alert(&s).await;
    assert_eq!(alert["alert"]["eventId"], id.as_str(), "{alert}");
    // Enriched from the Qlik Cloud stand-in, through Windows' own HTTP stack and TLS roots.
    assert_eq!(
        alert["alert"]["appName"], "App 4f2c9d1e-7a6b-4c3d-9e8f-1a2b3c4d5e6f",
        "{alert}"
    );
    listener.kill().await;
}

/// The forwarder's Windows build, `serve`d under wine: a signed event posted to it is on the
/// broker, with its signature, before the 200.
#[tokio::test]
#[ignore = "needs the Windows build and wine: scripts/windows-smoke runs it"]
async fn the_windows_forwarder_publishes_a_signed_event() {
    let exe = std::env::var("QLIK_WEBHOOK_EXE")
        .expect("QLIK_WEBHOOK_EXE: the Windows qlik-webhook.exe (scripts/windows-smoke sets it)");
    let broker = relay_tests::mosquitto::Mosquitto::start().await;
    let mut events = relay_tests::mqtt::Subscriber::connect(broker.port, "qscloud/#").await;
    let mut env = vec![
        ("QLIK_WEBHOOK_SECRET", fixtures::SECRET.to_owned()),
        ("MQTT_URL", broker.url()),
        ("WINEDEBUG", "-all".to_owned()),
    ];
    for key in ["HOME", "WINEPREFIX"] {
        if let Ok(value) = std::env::var(key) {
            env.push((key, value));
        }
    }
    let mut forwarder =
        process::Running::spawn(WINE, &[&exe, "serve", "--listen", "127.0.0.1:0"], &env);
    let ready = forwarder
        .wait_for_line("qlik-webhook listening on ", WINE_LIMIT)
        .await;
    let base = ready
        .trim_start_matches("qlik-webhook listening on ")
        .trim()
        .to_owned();
    let body = fixtures::event("app-reload-failed.cloudevents.json");
    let response = reqwest::Client::new()
        .post(format!("{base}/webhook"))
        .header("Qlik-Signature", fixtures::sign(&body))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let got = events.expect().await;
    assert_eq!(got.payload, body);
    assert_eq!(
        got.property("qlik-signature"),
        Some(fixtures::sign(&body).as_str())
    );
    forwarder.kill().await;
}

/// What the service wrote to its daily log files (`logs\` beside the configuration).
fn service_log(logs: &std::path::Path) -> String {
    std::fs::read_dir(logs)
        .into_iter()
        .flatten()
        .flatten()
        .map(|f| std::fs::read_to_string(f.path()).unwrap_or_default())
        .collect()
}

/// Waits until the service's log holds `what`.
async fn wait_for_log(logs: &std::path::Path, what: &str) {
    relay_tests::wait::until(
        WINE_LIMIT,
        &format!("the service's log to say {what:?}"),
        || {
            let text = service_log(logs);
            async move { text.contains(what).then_some(()) }
        },
    )
    .await
}

/// Starts `prefix`'s wineserver to persist (wine ends a prefix's services with it) and boots the
/// prefix (created the first time; the services set to start automatically are started), with
/// no output to hold: the programs it starts live as long as the wineserver.
fn boot(prefix: &std::path::Path) {
    wineserver(prefix, &["-p"]);
    let booted = std::process::Command::new(WINE)
        .arg("wineboot")
        .env("WINEPREFIX", prefix)
        .env("WINEDEBUG", "-all")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("wineboot runs");
    assert!(booted.success(), "wineboot: {booted}");
}

/// Wine's `wineserver` for `prefix`, with `args`.
fn wineserver(prefix: &std::path::Path, args: &[&str]) {
    let status = std::process::Command::new("/usr/lib/wine/wineserver")
        .args(args)
        .env("WINEPREFIX", prefix)
        .status()
        .expect("wineserver runs");
    assert!(status.success(), "wineserver {args:?}: {status}");
}

/// The native Windows service (issue #33 item 15), through wine's service manager, in a prefix
/// of its own whose wineserver persists (wine ends a prefix's services with its wineserver, which
/// otherwise exits after the last command: one cause of the silent service seen before).
/// `service install` registers it to start automatically, and it does at the next boot; a
/// `${VAR}` the service's environment lacks is said in the service's daily log (before, that
/// log stayed empty and only the exit code told: the other cause); with the
/// values in the file (wine's service manager does not apply the service's `Environment`
/// registry value that Windows does), `service start` runs it: the log says it started and a
/// published failed reload is alerted; `service stop` stops it cleanly; `uninstall` removes it.
#[tokio::test]
#[ignore = "needs the Windows build and wine: scripts/windows-smoke runs it"]
async fn the_windows_service_is_installed_started_alerts_and_is_stopped_and_removed() {
    let exe = exe();
    let s = alerting_to_a_file().await;
    let prefix = tempfile::tempdir().unwrap();
    boot(prefix.path());
    // Installed as the Windows guide says, in Program Files (with the shim wine needs beside it:
    // scripts/windows-smoke).
    let built = std::path::Path::new(&exe);
    let folder = prefix.path().join("drive_c/Program Files/qlik-listener");
    std::fs::create_dir_all(&folder).unwrap();
    for file in ["qlik-listener.exe", "bcryptprimitives.dll"] {
        std::fs::copy(built.with_file_name(file), folder.join(file)).unwrap();
    }
    let exe = r"C:\Program Files\qlik-listener\qlik-listener.exe".to_owned();
    let mut env: Vec<(&'static str, String)> = vec![
        ("WINEPREFIX", prefix.path().display().to_string()),
        ("WINEDEBUG", "-all".to_owned()),
    ];
    if let Ok(home) = std::env::var("HOME") {
        env.push(("HOME", home));
    }
    let config = windows_path(&s.config);
    let service = |command: &'static str| {
        let (exe, config, env) = (exe.clone(), config.clone(), env.clone());
        async move { process::run(WINE, &[&exe, "service", command, "--config", &config], &env).await }
    };
    let logs = s.dir.path().join("logs");
    let log = || service_log(&logs);
    let log_says = |what: &'static str| wait_for_log(&logs, what);

    let (code, out) = service("install").await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("installed qlik-listener"), "{out}");

    // Wine's service manager sees a new service after a restart of the prefix (Windows at
    // once); the service starts by itself then, as it is installed to. The file refers to
    // ${QLIK_TOKEN}, which the service's environment does not have: the log says so.
    wineserver(prefix.path(), &["-k"]);
    wineserver(prefix.path(), &["-w"]);
    boot(prefix.path());
    log_says("ERROR the service cannot start").await;
    assert!(
        log().contains("environment variable QLIK_TOKEN is not set"),
        "{}",
        log()
    );

    // With the values in the file, it runs.
    let text = std::fs::read_to_string(&s.config).unwrap();
    let mut literal = text.clone();
    for (name, value) in s.env() {
        literal = literal.replace(&format!("${{{name}}}"), &value);
    }
    std::fs::write(&s.config, literal).unwrap();
    let (code, out) = service("start").await;
    assert_eq!(code, Some(0), "{out}");
    log_says("subscribed").await;
    assert!(log().contains("INFO service started"), "{}", log());
    let body = fixtures::event("app-reload-failed.cloudevents.json");
    s.publish(FIXTURES[0].1, &body).await;
    let alert = first_alert(&s).await;
    assert_eq!(
        alert["alert"]["eventId"],
        event_id(&body).as_str(),
        "{alert}"
    );

    let (code, out) = service("stop").await;
    assert_eq!(code, Some(0), "{out}");
    log_says("INFO service stopped").await;
    let (code, out) = service("uninstall").await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("removed qlik-listener"), "{out}");
    let (code, out) = service("start").await;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("the service is not installed"), "{out}");
    wineserver(prefix.path(), &["-k"]);
}
