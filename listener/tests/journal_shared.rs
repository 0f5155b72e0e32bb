//! The shared journal (PostgreSQL) keeps the journal's promises with several writers: two
//! listeners' handles on one real database (a throw-away cluster per test), as two instances
//! of a group would hold them.

use qlik_listener::journal::postgres::Settings;
use qlik_listener::journal::{Delivery, DeliveryState, Entry, Journal, Recorded, State};
use relay_tests::postgres::Postgres;
use std::time::Duration;

fn settings(pg: &Postgres, instance: &str, lease: Duration) -> Settings {
    Settings {
        url: pg.url(),
        password: None,
        ca_file: None,
        lease,
        instance: instance.to_owned(),
    }
}

fn entry(id: &str, reload: &str) -> Entry {
    Entry {
        id: id.to_owned(),
        event_type: "com.qlik.v1.app.reload.finished".into(),
        tenant_id: "tenant-1".into(),
        app_id: Some("app-1".into()),
        reload_id: Some(reload.to_owned()),
        reload_status: Some("failed".into()),
        topic: "qscloud/app/reload".into(),
        received_at: qlik_listener::journal::now_ms(),
        body: b"{}".to_vec(),
        state: State::Pending,
        note: None,
        enrichment: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writers_record_claim_and_lease_once() {
    let pg = Postgres::start().await;
    let lease = Duration::from_secs(3);
    // Both start at once: the schema is created once (the second waits for the first).
    let (sa, sb) = (settings(&pg, "a", lease), settings(&pg, "b", lease));
    let (a, b) = tokio::join!(Journal::open_postgres(&sa), Journal::open_postgres(&sb));
    let (a, b) = (a.unwrap(), b.unwrap());

    // The same 200 events recorded by both at once: each id once, by exactly one of them.
    let entries: Vec<Entry> = (0..200)
        .map(|i| entry(&format!("event-{i}"), &format!("reload-{i}")))
        .collect();
    let mut tasks = Vec::new();
    for e in entries.iter().cloned() {
        let (a, b) = (a.clone(), b.clone());
        tasks.push(tokio::spawn(async move {
            let (ra, rb) = tokio::join!(a.record(e.clone()), b.record(e));
            (ra.unwrap(), rb.unwrap())
        }));
    }
    for t in tasks {
        let (ra, rb) = t.await.unwrap();
        assert!(
            (ra == Recorded::New) != (rb == Recorded::New),
            "exactly one writer records an event: {ra:?} {rb:?}"
        );
    }
    assert_eq!(pg.query("SELECT COUNT(*) FROM events"), "200");
    // `history resend` given the start of an id (`_` and `%` are not wildcards).
    assert_eq!(
        b.ids_starting_with("event-19", 5).await.unwrap(),
        [
            "event-19",
            "event-190",
            "event-191",
            "event-192",
            "event-193"
        ]
    );
    assert!(b.ids_starting_with("event_1", 5).await.unwrap().is_empty());
    assert!(b.ids_starting_with("event-%", 5).await.unwrap().is_empty());

    // A reload is claimed by one event, whoever asks.
    let (ca, cb) = tokio::join!(
        a.claim_reload("tenant-1", "reload-7", "event-7"),
        b.claim_reload("tenant-1", "reload-7", "other-event"),
    );
    assert_eq!(ca.unwrap(), cb.unwrap(), "both are told the same holder");

    // Each pending event is held by the instance that recorded it; the other cannot take it
    // while the lease runs.
    let held_by_a: Vec<String> = a
        .pending()
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    let held_by_b: Vec<String> = b
        .pending()
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(
        held_by_a.len() + held_by_b.len(),
        200,
        "every pending event is held by one"
    );
    assert!(held_by_a.iter().all(|id| !held_by_b.contains(id)));
    let one_of_a = &held_by_a[0];
    assert!(
        !b.take(one_of_a).await.unwrap(),
        "a live lease is not taken"
    );
    assert!(a.take(one_of_a).await.unwrap(), "the holder keeps it");

    // A dies (no more heartbeats): after the lease, b takes over all of its events.
    drop(a);
    tokio::time::sleep(lease + Duration::from_millis(200)).await;
    let taken: Vec<String> = b
        .pending()
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(taken.len(), 200, "b now holds every pending event");

    // A rate slot (and a task start) is taken by one of two asking at once.
    let c = Journal::open_postgres(&settings(&pg, "c", lease))
        .await
        .unwrap();
    let d = |id: &str| Delivery {
        event_id: id.into(),
        channel: "teams".into(),
        state: DeliveryState::Pending,
        attempts: 0,
        last_error: None,
    };
    let (sb, sc) = tokio::join!(
        b.claim_rate_slot("teams|app-1", 60_000, d("event-1")),
        c.claim_rate_slot("teams|app-1", 60_000, d("event-2")),
    );
    assert!(sb.unwrap() != sc.unwrap(), "one of two takes the slot");
    let (tb, tc) = tokio::join!(
        b.claim_slot("task-start:x", 60_000),
        c.claim_slot("task-start:x", 60_000)
    );
    assert!(tb.unwrap() != tc.unwrap(), "one of two starts the task");

    // Who recorded and delivered what is kept.
    b.set_delivery(Delivery {
        state: DeliveryState::Sent,
        ..d("event-3")
    })
    .await
    .unwrap();
    assert_eq!(
        pg.query("SELECT delivered_by FROM deliveries WHERE event_id = 'event-3'"),
        "b"
    );
    let recorders = pg.query("SELECT DISTINCT recorded_by FROM events ORDER BY 1");
    assert_eq!(recorders, "a\nb", "both recorded some");
}

#[tokio::test]
async fn a_newer_schema_is_refused_and_a_password_in_the_url_too() {
    let pg = Postgres::start().await;
    let lease = Duration::from_secs(30);
    Journal::open_postgres(&settings(&pg, "a", lease))
        .await
        .unwrap();
    pg.query("UPDATE schema_version SET version = version + 1");
    let err = Journal::open_postgres(&settings(&pg, "a", lease))
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("newer qlik-listener"), "{err}");

    let mut with_password = settings(&pg, "a", lease);
    with_password.url = with_password.url.replace("postgres@", "postgres:hunter2@");
    let err = Journal::open_postgres(&with_password)
        .await
        .err()
        .expect("refused");
    let text = err.to_string();
    assert!(text.contains("journal.password"), "{text}");
    assert!(
        !text.contains("hunter2"),
        "the password is not repeated: {text}"
    );
}
