//! What the journal refuses, with the real binary: a second listener on the same file, a file
//! from a newer version, a row this version cannot fill; and a configuration that would reject
//! every genuine event.

mod common;

use common::{Options, Setup, LIMIT};
use relay_tests::fixtures::FIXTURES;
use relay_tests::process::{run, Running};

/// Two listeners on one journal would share the broker session and alert twice: the second
/// refuses to start, naming the first (before: both ran).
#[tokio::test]
async fn a_second_listener_on_the_same_journal_refuses_to_start() {
    let s = Setup::new("").await;
    let first = s.start(true).await;
    let pid = first.pid().expect("running");
    let config = s.config.to_str().unwrap().to_owned();
    let (code, out) = run(common::BIN, &["--config", &config], &s.env()).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("is in use by another listener (process ")
            && out.contains(&format!("process {pid} on ")),
        "{out}"
    );
    assert!(out.contains("journal.path"), "{out}");
    // The first goes on: it still records and handles events.
    let body = relay_tests::fixtures::event(FIXTURES[0].0);
    s.publish(FIXTURES[0].1, &body).await;
    s.wait_state(
        &common::event_id(&body),
        qlik_listener::journal::State::Done,
    )
    .await;
}

/// A journal written by a newer version is refused at start with a clear error (before: opened,
/// and written with a schema it did not know).
#[tokio::test]
async fn a_journal_from_a_newer_version_is_refused() {
    let s = Setup::new("").await;
    let path = s.dir.path().join("journal.sqlite");
    drop(s.journal().await);
    let raw = rusqlite::Connection::open(&path).unwrap();
    raw.pragma_update(None, "user_version", 99).unwrap();
    drop(raw);
    let config = s.config.to_str().unwrap().to_owned();
    let (code, out) = run(common::BIN, &["--config", &config], &s.env()).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("was written by a newer qlik-listener (journal schema 99"),
        "{out}"
    );
}

/// A journal whose `events` has a column this version does not fill: every insert fails. The
/// event must be held (not acknowledged as "already recorded" and lost), and `/readyz` says
/// why (before: `INSERT OR IGNORE` took it for a duplicate).
#[tokio::test]
async fn a_row_the_journal_cannot_take_is_held_not_taken_for_a_duplicate() {
    let s = Setup::with(Options {
        butler:
            "  restServerConfig:\n    enable: true\n    serverHost: 127.0.0.1\n    serverPort: 0\n",
        ..Options::default()
    })
    .await;
    let path = s.dir.path().join("journal.sqlite");
    drop(s.journal().await);
    let raw = rusqlite::Connection::open(&path).unwrap();
    raw.execute_batch(
        "ALTER TABLE events RENAME TO events_old;
         CREATE TABLE events (id TEXT NOT NULL, event_type TEXT NOT NULL, tenant_id TEXT NOT NULL,
           app_id TEXT, reload_id TEXT, reload_status TEXT, topic TEXT NOT NULL,
           received_at INTEGER NOT NULL, body BLOB NOT NULL, state TEXT NOT NULL, note TEXT,
           enrichment TEXT, region TEXT NOT NULL);
         DROP TABLE events_old;",
    )
    .unwrap();
    drop(raw);
    let config = s.config.to_str().unwrap().to_owned();
    let mut listener = Running::spawn(common::BIN, &["--config", &config], &s.env());
    let api = listener.wait_for_line("qlik-listener API on ", LIMIT).await;
    listener.wait_for_output("subscribed", 1, LIMIT).await;
    let body = relay_tests::fixtures::event(FIXTURES[0].0);
    s.publish(FIXTURES[0].1, &body).await;
    listener
        .wait_for_output("could not record the event; held unacknowledged", 1, LIMIT)
        .await;
    let out = listener.output().join("\n");
    assert!(out.contains("events.region"), "{out}");
    assert!(!out.contains("duplicate event"), "{out}");
    let r = reqwest::get(format!("{api}/readyz")).await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("events.region"), "{text}");
}

/// `requireSignature` needs MQTT 5: with 3.1.1 it is a configuration error naming both keys
/// (before: `check-config` said OK and every genuine event was rejected).
#[tokio::test]
async fn require_signature_with_mqtt_3_1_1_is_refused_by_check_config() {
    let s = Setup::with(Options {
        forward: "          requireSignature: true\n",
        broker: "            protocolVersion: \"3.1.1\"\n",
        ..Options::default()
    })
    .await;
    let config = s.config.to_str().unwrap().to_owned();
    let (code, out) = run(
        common::BIN,
        &["check-config", "--config", &config],
        &s.env(),
    )
    .await;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("mqttForward.requireSignature: needs MQTT 5")
            && out.contains("broker.protocolVersion is 3.1.1"),
        "{out}"
    );
}

/// Issue #33 item 5: the journal's folder not writable by the listener's user (the config's
/// folder under the shipped systemd unit): `check-config` said OK and the service failed with
/// SQLite's "unable to open database file", naming no key. Now both name `journal.path` and
/// say what to do. As root, the listener runs as `nobody`, as a service account would.
#[tokio::test]
async fn a_journal_folder_the_listener_cannot_write_is_named_by_check_config_and_at_start() {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    let s = Setup::new("").await;
    let yaml = std::fs::read_to_string(&s.config).unwrap().replacen(
        "      path: journal.sqlite\n",
        "      path: state/journal.sqlite\n",
        1,
    );
    std::fs::write(&s.config, yaml).unwrap();
    let state = s.dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let root = std::fs::metadata("/proc/self").unwrap().uid() == 0;
    let mode = |p: &std::path::Path, m: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
    };
    // Readable by the service's user, writable by its owner only.
    mode(s.dir.path(), 0o755);
    mode(&s.config, 0o644);
    mode(&state, 0o555);
    let listener = |args: &[&str]| {
        let mut cmd = tokio::process::Command::new(common::BIN);
        cmd.args(args)
            .args(["--config", s.config.to_str().unwrap()])
            .envs(s.env())
            .kill_on_drop(true);
        if root {
            cmd.uid(65534).gid(65534);
        }
        async move {
            let out = tokio::time::timeout(LIMIT, cmd.output())
                .await
                .expect("the listener exits")
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr);
            (out.status.code(), text)
        }
    };
    let said = format!(
        "Butler.qlikCloudListener.journal.path: the listener cannot create its journal in {}",
        state.display()
    );
    let (code, out) = listener(&["check-config"]).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&said) && out.contains("/var/lib/qlik-listener"),
        "{out}"
    );
    assert!(!out.contains("configuration OK"), "{out}");

    let (code, out) = listener(&["run"]).await;
    assert_ne!(code, Some(0), "{out}");
    assert!(out.contains(&said), "{out}");
    assert!(!out.contains("unable to open database file"), "{out}");

    // Writable: fine.
    mode(&state, 0o777);
    let (code, out) = listener(&["check-config"]).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(
        std::fs::read_dir(&state).unwrap().next().is_none(),
        "the check leaves nothing behind"
    );
}
