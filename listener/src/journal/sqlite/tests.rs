//! The SQLite journal's own tests (raw SQL edits of the file, the writer thread).

use super::Sqlite as Journal;
use crate::journal::*;
use rusqlite::Connection;
use std::path::Path;

fn entry(id: &str, state: State, received_at: i64) -> Entry {
    Entry {
        id: id.into(),
        event_type: "com.qlik.v1.app.reload.finished".into(),
        tenant_id: "t".into(),
        app_id: Some("app".into()),
        reload_id: Some("r".into()),
        reload_status: Some("error".into()),
        topic: "qscloud/app/reload/t".into(),
        received_at,
        body: b"{}".to_vec(),
        state,
        note: None,
        enrichment: None,
    }
}

/// A state the code does not know (a newer version's, a hand edit) is an error, not taken
/// for another state (before: an unknown event state read as `recorded`, an unknown
/// delivery state as `pending`, so a delivery could be sent again).
#[tokio::test]
async fn an_unknown_state_is_an_error_not_another_state() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.sqlite");
    let j = Journal::open(&path).await.unwrap();
    j.record(entry("e1", State::Pending, 1)).await.unwrap();
    drop(j);
    let raw = rusqlite::Connection::open(&path).unwrap();
    raw.execute("UPDATE events SET state = 'archived' WHERE id = 'e1'", [])
        .unwrap();
    drop(raw);
    let j = Journal::open(&path).await.unwrap();
    let e = j.get("e1").await.unwrap_err().to_string();
    assert!(e.contains("unknown event state \"archived\""), "{e}");
}

/// Only a known id is a duplicate (before: `INSERT OR IGNORE` took any constraint failure,
/// e.g. a column this version does not fill, for one, so every event was acknowledged as
/// "already recorded" and never alerted).
#[tokio::test]
async fn only_a_known_id_is_a_duplicate_other_constraint_failures_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.sqlite");
    let j = Journal::open(&path).await.unwrap();
    assert_eq!(
        j.record(entry("e1", State::Pending, 1)).await.unwrap(),
        Recorded::New
    );
    assert_eq!(
        j.record(entry("e1", State::Pending, 2)).await.unwrap(),
        Recorded::Duplicate
    );
    drop(j);
    let raw = rusqlite::Connection::open(&path).unwrap();
    // A column a later version might add, which this one does not fill.
    raw.execute_batch(
        "CREATE TABLE events2 AS SELECT *, 'eu' AS region FROM events;
         DROP TABLE events;
         CREATE TABLE events (id TEXT NOT NULL, event_type TEXT NOT NULL, tenant_id TEXT NOT NULL,
           app_id TEXT, reload_id TEXT, reload_status TEXT, topic TEXT NOT NULL,
           received_at INTEGER NOT NULL, body BLOB NOT NULL, state TEXT NOT NULL, note TEXT,
           enrichment TEXT, region TEXT NOT NULL);
         INSERT INTO events SELECT * FROM events2; DROP TABLE events2;",
    )
    .unwrap();
    drop(raw);
    let j = Journal::open(&path).await.unwrap();
    let e = j
        .record(entry("e2", State::Pending, 3))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("events.region"), "{e}");
    assert!(j.record_failure().is_some(), "said to /readyz");
}

#[tokio::test]
async fn a_journal_from_a_newer_version_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.sqlite");
    drop(Journal::open(&path).await.unwrap());
    let raw = rusqlite::Connection::open(&path).unwrap();
    let version: i64 = raw
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION, "a new journal says its version");
    raw.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .unwrap();
    drop(raw);
    let e = Journal::open(&path).await.err().unwrap().to_string();
    assert!(
        e.contains(
            "was written by a newer qlik-listener (journal schema 2; this version knows up to 1)"
        ),
        "{e}"
    );
}

#[tokio::test]
async fn records_once_and_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/journal.sqlite");
    let j = Journal::open(&path).await.unwrap();
    assert_eq!(
        j.record(entry("e1", State::Pending, 1)).await.unwrap(),
        Recorded::New
    );
    assert_eq!(
        j.record(entry("e1", State::Pending, 2)).await.unwrap(),
        Recorded::Duplicate
    );
    assert_eq!(
        j.record(entry("e2", State::Recorded, 3)).await.unwrap(),
        Recorded::New
    );
    drop(j);
    let j = Journal::open(&path).await.unwrap();
    let pending = j.pending().await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0], entry("e1", State::Pending, 1));
    j.set_enrichment("e1", "{\"appName\":\"A\"}".into())
        .await
        .unwrap();
    j.set_state("e1", State::Done, None).await.unwrap();
    assert!(j.pending().await.unwrap().is_empty());
    let e1 = j.get("e1").await.unwrap().unwrap();
    assert_eq!(e1.state, State::Done);
    assert_eq!(e1.enrichment.as_deref(), Some("{\"appName\":\"A\"}"));
    assert_eq!(j.recent(0, 10).await.unwrap().len(), 2);
}

#[tokio::test]
async fn calls_made_together_commit_together_and_a_failing_one_undoes_only_itself() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.sqlite");
    let j = Journal::open(&path).await.unwrap();
    let mut calls = Vec::new();
    for i in 0..300 {
        let j = j.clone();
        calls.push(tokio::spawn(async move {
            if i % 50 == 0 {
                // Writes one row, then fails: that row must not stay.
                let failed = j
                    .with(move |c| {
                        c.execute(
                            "INSERT INTO rate_limits (key, last_sent_at) VALUES (?1, 0)",
                            [format!("undone-{i}")],
                        )?;
                        c.execute("INSERT INTO no_such_table VALUES (1)", [])
                    })
                    .await;
                assert!(failed.is_err());
            } else {
                let e = entry(&format!("e{i}"), State::Pending, i);
                assert_eq!(j.record(e).await.unwrap(), Recorded::New);
            }
        }));
    }
    for call in calls {
        call.await.unwrap();
    }
    drop(j);
    let j = Journal::open(&path).await.unwrap();
    assert_eq!(j.pending().await.unwrap().len(), 294);
    let undone: i64 = j
        .with(|c| c.query_row("SELECT COUNT(*) FROM rate_limits", [], |r| r.get(0)))
        .await
        .unwrap();
    assert_eq!(undone, 0);
}

#[tokio::test]
async fn not_writable_while_another_writer_holds_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.sqlite");
    let j = Journal::open(&path).await.unwrap();
    j.check_writable().await.unwrap();
    let other = Connection::open(&path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    // Waits out the busy timeout, then says so.
    let e = j.check_writable().await.unwrap_err();
    assert!(e.to_string().contains("locked"), "{e}");
    other.execute_batch("ROLLBACK").unwrap();
    j.check_writable().await.unwrap();
}

#[tokio::test]
async fn prune_keeps_pending_work() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(&dir.path().join("j.sqlite")).await.unwrap();
    j.record(entry("old-done", State::Done, 10)).await.unwrap();
    j.record(entry("old-pending", State::Pending, 10))
        .await
        .unwrap();
    j.record(entry("new", State::Done, 1000)).await.unwrap();
    assert_eq!(j.prune(500).await.unwrap(), 1);
    assert!(j.get("old-done").await.unwrap().is_none());
    assert!(j.get("old-pending").await.unwrap().is_some());
    assert!(j.get("new").await.unwrap().is_some());
}

#[tokio::test]
async fn refused_messages_do_not_claim_the_event_id() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(&dir.path().join("j.sqlite")).await.unwrap();
    let other_tenant = |mut e: Entry| {
        e.tenant_id = "unconfigured".into();
        e
    };
    // A forged copy and an unknown tenant's event first: recorded, once each.
    for first in [
        entry("e1", State::Rejected, 1),
        other_tenant(entry("e1", State::Skipped, 2)),
    ] {
        assert_eq!(j.record(first.clone()).await.unwrap(), Recorded::New);
        assert_eq!(j.record(first).await.unwrap(), Recorded::Duplicate);
    }
    assert_eq!(j.get("e1").await.unwrap().unwrap().state, State::Skipped);
    // The genuine event is new, and from then on the one `get` finds and updates.
    assert_eq!(
        j.record(entry("e1", State::Pending, 3)).await.unwrap(),
        Recorded::New
    );
    assert_eq!(
        j.record(entry("e1", State::Pending, 4)).await.unwrap(),
        Recorded::Duplicate
    );
    assert_eq!(
        j.record(entry("e1", State::Recorded, 5)).await.unwrap(),
        Recorded::Duplicate,
        "an accepted id is accepted once, whatever the state"
    );
    j.set_state("e1", State::Done, None).await.unwrap();
    assert_eq!(j.get("e1").await.unwrap().unwrap().state, State::Done);
    assert_eq!(j.recent(0, 10).await.unwrap().len(), 3);
    // Pruning the refused rows keeps the accepted event's deliveries.
    let d = Delivery {
        event_id: "e1".into(),
        channel: "teams".into(),
        state: DeliveryState::Sent,
        attempts: 1,
        last_error: None,
    };
    j.set_delivery(d.clone()).await.unwrap();
    assert_eq!(j.prune(3).await.unwrap(), 2);
    assert_eq!(j.deliveries("e1").await.unwrap(), vec![d]);
    assert_eq!(j.prune(10).await.unwrap(), 1);
    assert!(j.deliveries("e1").await.unwrap().is_empty());
}

#[tokio::test]
async fn a_journal_keyed_by_id_alone_is_upgraded_with_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.sqlite");
    {
        // The table as earlier versions created it, with one rejected row.
        let c = Connection::open(&path).unwrap();
        c.execute_batch(
            "CREATE TABLE events (id TEXT PRIMARY KEY, event_type TEXT NOT NULL,
               tenant_id TEXT NOT NULL, app_id TEXT, reload_id TEXT, reload_status TEXT,
               topic TEXT NOT NULL, received_at INTEGER NOT NULL, body BLOB NOT NULL,
               state TEXT NOT NULL, note TEXT, enrichment TEXT);
             CREATE INDEX events_state ON events(state);
             CREATE INDEX events_received ON events(received_at);
             INSERT INTO events VALUES ('e1', 'com.qlik.v1.app.reload.finished', 't', 'app',
               'r', 'error', 'qscloud/app/reload/t', 1, X'7B7D', 'rejected', 'signature', NULL);",
        )
        .unwrap();
    }
    let j = Journal::open(&path).await.unwrap();
    let mut rejected = entry("e1", State::Rejected, 1);
    rejected.note = Some("signature".into());
    assert_eq!(j.get("e1").await.unwrap(), Some(rejected));
    assert_eq!(
        j.record(entry("e1", State::Pending, 2)).await.unwrap(),
        Recorded::New
    );
    drop(j);
    // Opening again changes nothing.
    let j = Journal::open(&path).await.unwrap();
    assert_eq!(j.recent(0, 10).await.unwrap().len(), 2);
    assert_eq!(j.pending().await.unwrap().len(), 1);
}

#[tokio::test]
async fn deliveries_and_rate_slots() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(&dir.path().join("j.sqlite")).await.unwrap();
    assert_eq!(j.delivery("e1", "teams").await.unwrap(), None);
    let d = Delivery {
        event_id: "e1".into(),
        channel: "teams".into(),
        state: DeliveryState::Pending,
        attempts: 1,
        last_error: Some("HTTP 500".into()),
    };
    j.set_delivery(d.clone()).await.unwrap();
    j.set_delivery(Delivery {
        state: DeliveryState::Sent,
        attempts: 2,
        last_error: None,
        ..d.clone()
    })
    .await
    .unwrap();
    let got = j.delivery("e1", "teams").await.unwrap().unwrap();
    assert_eq!(
        (got.state, got.attempts, got.last_error),
        (DeliveryState::Sent, 2, None)
    );
    assert_eq!(j.deliveries("e1").await.unwrap().len(), 1);

    let pending = |event_id: &str| Delivery {
        event_id: event_id.into(),
        channel: "teams".into(),
        state: DeliveryState::Pending,
        attempts: 0,
        last_error: None,
    };
    for e in ["e2", "e3", "e4", "e5"] {
        j.record(entry(e, State::Pending, 5)).await.unwrap();
    }
    let claim = |key: &'static str, window, event_id| {
        let j = j.clone();
        let d = pending(event_id);
        async move { j.claim_rate_slot(key, window, d).await.unwrap() }
    };
    assert!(claim("teams:app1", 60_000, "e2").await);
    assert!(
        !claim("teams:app1", 60_000, "e3").await,
        "within the window"
    );
    assert!(claim("teams:app2", 60_000, "e4").await, "per app");
    assert!(claim("teams:app1", 0, "e5").await, "window passed");
    // The delivery that took a slot was recorded with it; a suppressed one was not.
    for (event_id, recorded) in [("e2", true), ("e3", false), ("e4", true), ("e5", true)] {
        assert_eq!(
            j.delivery(event_id, "teams").await.unwrap(),
            recorded.then(|| pending(event_id)),
            "{event_id}"
        );
    }
}

#[tokio::test]
async fn a_call_that_panics_fails_alone() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(&dir.path().join("journal.sqlite"))
        .await
        .unwrap();
    let panicking = j.run(false, |c| -> Result<(), rusqlite::Error> {
        c.execute("UPDATE events SET note = 'half done'", [])?;
        panic!("a bug in a journal call")
    });
    let e = panicking.await.unwrap_err();
    assert!(matches!(e, JournalError::Panicked), "{e}");
    // The thread goes on: the next calls are served.
    assert_eq!(
        j.record(entry("e1", State::Pending, 1)).await.unwrap(),
        Recorded::New
    );
    assert_eq!(
        j.pending().await.unwrap(),
        vec![entry("e1", State::Pending, 1)]
    );
}

#[tokio::test]
async fn unwritable_path_is_a_clear_error() {
    let e = Journal::open(Path::new("/proc/no/such/dir/journal.sqlite"))
        .await
        .err()
        .unwrap();
    assert!(
        e.to_string()
            .starts_with("journal /proc/no/such/dir/journal.sqlite"),
        "{e}"
    );
}

/// The journal holds alert data and script-log excerpts: created readable by its owner only
/// (before: 0644).
#[cfg(unix)]
#[tokio::test]
async fn a_new_journal_is_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.sqlite");
    let j = Journal::open(&path).await.unwrap();
    j.record(entry("e1", State::Pending, 1)).await.unwrap();
    for file in ["journal.sqlite", "journal.sqlite-wal"] {
        let mode = std::fs::metadata(dir.path().join(file))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{file}: {mode:o}");
    }
}

/// The queries asked for every event use an index, never a scan of the whole table (before:
/// `has_event_type`, asked for each failed attempt while a tenant had sent no final outcome,
/// scanned every event: the listener fell to 173 events/s at 10,000 events, `BENCHMARKS.md`).
#[tokio::test]
async fn per_event_queries_use_an_index() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.sqlite");
    drop(Journal::open(&path).await.unwrap());
    let conn = Connection::open(&path).unwrap();
    for sql in [
        "SELECT EXISTS (SELECT 1 FROM events WHERE tenant_id = 't' AND event_type = 'x' AND topic != 'y' AND state NOT IN ('rejected', 'skipped'))",
        "SELECT * FROM events WHERE tenant_id = 't' AND reload_id = 'r' AND state NOT IN ('rejected', 'skipped') ORDER BY received_at",
        "SELECT * FROM events WHERE id = 'e' ORDER BY state IN ('rejected', 'skipped'), received_at DESC LIMIT 1",
    ] {
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .unwrap()
            .query_map([], |r| r.get::<_, String>(3))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert!(
            plan.iter().all(|step| !step.starts_with("SCAN events")),
            "{sql}: {plan:?}"
        );
    }
}
