//! The Windows builds, run under wine: the listener's `check-config`, and one failed reload
//! from a real Mosquitto to an alert in a file, with the Qlik Cloud stand-in answering its
//! lookups; the forwarder publishing a signed event. (The native service is not run here: in wine's service manager `service install`
//! and `start` succeed, but the started service never logs: docs/development.md.)
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

#[tokio::test]
#[ignore = "needs the Windows build and wine: scripts/windows-smoke runs it"]
async fn the_windows_listener_checks_its_config_and_alerts_a_failed_reload() {
    let exe = exe();
    let tenant = "          alert:
            fileNotification:
              reloadAppFailure:
                enable: true
                path: alerts.jsonl
";
    let s = Setup::with(Options {
        tenant,
        listener: NO_WAIT,
        ..Options::default()
    })
    .await;
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
    let alerts = s.dir.path().join("alerts.jsonl");
    let id = event_id(&body);
    let line = relay_tests::wait::until(WINE_LIMIT, "the alert in alerts.jsonl", || {
        let text = std::fs::read_to_string(&alerts).unwrap_or_default();
        async move { text.lines().next().map(str::to_owned) }
    })
    .await;
    let alert: serde_json::Value = serde_json::from_str(&line).unwrap();
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
