//! High availability (issue #31): listeners sharing a journal in PostgreSQL act as one.
//!
//! Real processes throughout: a throw-away PostgreSQL cluster, Mosquitto, the forwarder, two or
//! three `qlik-listener` processes (each with its own `instanceId`, MQTT session and
//! `metricsListen`), the Qlik Cloud stand-in and HTTP alert receivers. Each instance receives
//! every event (its own persistent session); the journal keeps one of each, leases each pending
//! event to one instance, and elects one instance for the singleton work.
//!
//! `HA_EVENTS` sets the number of reloads of the kill scenario (default 500, 1,000 events).

mod common;

use common::stream::{arrivals, body, duplicates_within_kills, wait_all_alerted};
use common::{instance_config, Options, Setup, BIN, LIMIT};
use relay_tests::fakes::HttpReceiver;
use relay_tests::fixtures::{self, SECRET};
use relay_tests::postgres::Postgres;
use relay_tests::process::{serve_forwarder, workspace_bin, Running};
use relay_tests::wait;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One listener of the group: its config file, its `/readyz` port, its process.
struct Instance {
    id: String,
    config: PathBuf,
    metrics_port: u16,
    process: Running,
}

impl Instance {
    async fn start(s: &Setup, pg: &Postgres, id: &str) -> Instance {
        let metrics_port = relay_tests::free_port();
        let config = instance_config(
            &s.config,
            id,
            &pg.url(),
            &format!("    metricsListen: 127.0.0.1:{metrics_port}\n"),
        );
        let process = spawn(s, &config, "subscribed").await;
        Instance {
            id: id.to_owned(),
            config,
            metrics_port,
            process,
        }
    }

    /// SIGKILL, as a crash or a host going down would.
    async fn kill(&mut self) {
        self.process.kill().await;
    }

    async fn restart(&mut self, s: &Setup) {
        // Its session is still on the broker: it connects and is not subscribed again.
        self.process = spawn(s, &self.config, "connected to the broker").await;
    }

    fn holds_role(&self) -> bool {
        self.process
            .output()
            .iter()
            .any(|l| l.contains("now holds the singleton role"))
    }

    async fn readyz(&self) -> serde_json::Value {
        let url = format!("http://127.0.0.1:{}/readyz", self.metrics_port);
        reqwest::get(url).await.unwrap().json().await.unwrap()
    }
}

async fn spawn(s: &Setup, config: &std::path::Path, ready: &str) -> Running {
    let mut l = Running::spawn(BIN, &["--config", config.to_str().unwrap()], &s.env());
    l.wait_for_output(ready, 1, LIMIT).await;
    l
}

/// (event id, channel) of the deliveries `instance` had under way (`sending`), per the journal.
fn in_flight(pg: &Postgres, instance: &str) -> Vec<(String, String)> {
    pg.query(&format!(
        "SELECT event_id || '|' || channel FROM deliveries WHERE state = 'sending' AND delivered_by = '{instance}'"
    ))
    .lines()
    .filter_map(|l| l.split_once('|'))
    .map(|(e, c)| (e.to_owned(), c.to_owned()))
    .collect()
}

fn alert_channels(teams: &HttpReceiver, hook: &HttpReceiver) -> String {
    format!(
        "          alert:
            teamsNotification:
              reloadAppFailure: {{ enable: true, webhookURL: \"{}\", rateLimit: 0 }}
            webhookNotification:
              reloadAppFailure: {{ enable: true, urls: [\"{}\"] }}
",
        teams.url("/workflows/teams"),
        hook.url("/qlik-alerts"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_listeners_alert_every_reload_once_while_instances_are_killed() {
    let n: usize = std::env::var("HA_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let pg = Postgres::start().await;
    let teams = HttpReceiver::start().await;
    let hook = HttpReceiver::start().await;
    let s = Setup::with(Options {
        tenant: &alert_channels(&teams, &hook),
        listener: "    alerts:\n      retryBaseMilliseconds: 50\n",
        persistent_broker: true,
        ..Options::default()
    })
    .await;
    let mut group = Vec::new();
    for id in ["alpha", "bravo", "charlie"] {
        group.push(Instance::start(&s, &pg, id).await);
    }
    let (forwarder, base) = serve_forwarder(
        workspace_bin("qlik-webhook").to_str().unwrap(),
        &[
            ("QLIK_WEBHOOK_SECRET", SECRET.to_owned()),
            ("MQTT_URL", s.broker.url()),
        ],
    )
    .await;
    let url = format!("{base}/webhook");
    let http = reqwest::Client::new();

    // The stream: each reload's failed attempt and failed final outcome, signed, through the
    // forwarder, up to 16 in flight; what is not accepted is posted again (Qlik's resend).
    let posted = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let posts = 2 * n;
    let stream = {
        let (posted, refused) = (posted.clone(), refused.clone());
        tokio::spawn(async move {
            let gate = Arc::new(tokio::sync::Semaphore::new(16));
            let mut tasks = Vec::new();
            for j in 0..posts {
                let permit = gate.clone().acquire_owned().await.unwrap();
                let (http, url, posted, refused) =
                    (http.clone(), url.clone(), posted.clone(), refused.clone());
                tasks.push(tokio::spawn(async move {
                    let body = body(j);
                    loop {
                        let answer = http
                            .post(&url)
                            .header("content-type", "application/json")
                            .header("Qlik-Signature", fixtures::sign(&body))
                            .body(body.clone())
                            .timeout(Duration::from_secs(10))
                            .send()
                            .await;
                        if answer.is_ok_and(|r| r.status().is_success()) {
                            break;
                        }
                        refused.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    posted.fetch_add(1, Ordering::SeqCst);
                    drop(permit);
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
        })
    };

    // Three SIGKILLs of an instance picked at random, each restarted at once.
    let mut caught: Vec<Vec<(String, String)>> = Vec::new();
    let mut killed = Vec::new();
    let mut logs = Vec::new();
    for percent in [25, 50, 75] {
        let point = posts * percent / 100;
        wait::until(LIMIT * 6, &format!("{point} posts accepted"), || {
            let done = posted.load(Ordering::SeqCst);
            async move { (done >= point).then_some(()) }
        })
        .await;
        let victim = &mut group[fastrand::usize(0..3)];
        victim.kill().await;
        // Nothing of the victim's writes the journal now: what it has `sending` was in flight.
        caught.push(in_flight(&pg, &victim.id));
        killed.push(victim.id.clone());
        logs.extend(victim.process.output());
        victim.restart(&s).await;
        eprintln!("[ha] at post {point}: killed and restarted {}", victim.id);
    }
    stream.await.unwrap();

    // Every reload reaches both receivers.
    let receivers = [("teams", &teams), ("webhook-1", &hook)];
    wait_all_alerted(&receivers, n, Duration::from_secs(180)).await;
    // The journal agrees: every reload claimed once, its alert sent on both channels.
    let sent = wait::until(LIMIT, "every claimed alert to be recorded as sent", || {
        let rows = pg.query(
            "SELECT COUNT(*) FROM reload_alerts r JOIN deliveries d ON d.event_id = r.event_id WHERE d.state = 'sent'",
        );
        async move { (rows == (2 * n).to_string()).then_some(rows) }
    })
    .await;
    assert_eq!(
        pg.query("SELECT COUNT(*) FROM reload_alerts"),
        n.to_string()
    );

    // Duplicates only inside the at-least-once window: a delivery in flight at a kill.
    let duplicated = duplicates_within_kills(&receivers, &caught);
    // The work was shared: more than one listener recorded events and sent alerts (which ones
    // depends on who receives each event first).
    let recorders = pg.query("SELECT DISTINCT recorded_by FROM events ORDER BY 1");
    let deliverers = pg.query("SELECT DISTINCT delivered_by FROM deliveries ORDER BY 1");
    assert!(recorders.lines().count() >= 2, "recorded by {recorders:?}");
    assert!(
        deliverers.lines().count() >= 2,
        "delivered by {deliverers:?}"
    );
    // `history` says which listener recorded each event and sent each alert.
    let (code, history) = relay_tests::process::run(
        BIN,
        &[
            "history",
            "--config",
            group[0].config.to_str().unwrap(),
            "--alert-state",
            "sent",
            "--limit",
            "5",
        ],
        &s.env(),
    )
    .await;
    assert_eq!(code, Some(0), "{history}");
    assert!(
        history.contains("5 event(s)") && history.contains("mqtt@") && history.contains(":sent@"),
        "{history}"
    );
    eprintln!(
        "ha: {n} reloads ({posts} events, {} re-posted) to 3 listeners, SIGKILLed {killed:?}; {sent} alerts recorded sent; \
         lost 0, duplicated {duplicated} (each in flight at a kill); Teams {} requests, webhook {}",
        refused.load(Ordering::SeqCst),
        teams.delivered().len(),
        hook.delivered().len(),
    );
    logs.extend(forwarder.output());
    for i in &group {
        logs.extend(i.process.output());
    }
    assert!(
        !logs.iter().any(|l| l.contains(SECRET)),
        "no secret in any log"
    );
}

/// A failed reload known only to Qlik Cloud's reloads API (its webhook event never came).
fn list_failure(s: &Setup, reload: &str) {
    let ended = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    (s.api.reload_recorder())(serde_json::json!({
        "id": reload, "appId": "4f2c9d1e-7a6b-4c3d-9e8f-000000000001",
        "tenantId": fixtures::TENANT, "type": "chronos", "status": "FAILED",
        "creationTime": ended, "startTime": ended, "endTime": ended,
        "errorCode": "EngineReloadFailed", "errorMessage": "Table 'Orders' not found",
    }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_singleton_role_moves_when_its_holder_is_killed() {
    let pg = Postgres::start().await;
    let teams = HttpReceiver::start().await;
    let hook = HttpReceiver::start().await;
    let s = Setup::with(Options {
        tenant: &alert_channels(&teams, &hook),
        reconcile: "      intervalSeconds: 1\n      graceSeconds: 0\n      lookBackHours: 1\n",
        ..Options::default()
    })
    .await;
    let mut group = [
        Instance::start(&s, &pg, "alpha").await,
        Instance::start(&s, &pg, "bravo").await,
    ];
    let holder = wait::until(LIMIT, "one instance to hold the role", || {
        let found = group.iter().position(Instance::holds_role);
        async move { found }
    })
    .await;
    let other = 1 - holder;
    let ready = group[holder].readyz().await;
    assert_eq!(ready["holdsRole"], true, "{ready}");
    assert_eq!(ready["instance"], group[holder].id.as_str());

    // Reconciliation runs on the holder only: a failure the webhook never brought is alerted once.
    list_failure(&s, "f417ed00-reload-000000000001");
    wait::until(
        LIMIT,
        "the first reconciled failure to be alerted and recorded sent",
        || {
            let sent = pg.query("SELECT COUNT(*) FROM deliveries WHERE state = 'sent'");
            async move { (sent == "2").then_some(()) }
        },
    )
    .await;
    assert!(!group[other].holds_role(), "only one holds the role");

    group[holder].kill().await;
    let killed_at = Instant::now();
    wait::until(LIMIT, "the other instance to take the role", || {
        let took = group[other].holds_role();
        async move { took.then_some(()) }
    })
    .await;
    let took_after = killed_at.elapsed();
    // The lease is 3 s; the election runs every second, and PostgreSQL ends the dead holder's
    // session (and its lock) when its connection drops: about a second (5 s allows for a
    // loaded machine).
    assert!(
        took_after < Duration::from_secs(5),
        "the role moved within a few seconds, not {took_after:?}"
    );

    // The new holder reconciles: a second failure only Qlik knows of is alerted, once.
    list_failure(&s, "f417ed00-reload-000000000002");
    wait::until(LIMIT, "the second reconciled failure to be alerted", || {
        let got = arrivals(&hook).len();
        async move { (got == 2).then_some(()) }
    })
    .await;
    // Two more reconciliation runs (two more list calls) and still one alert each.
    let listed = || {
        s.api
            .calls()
            .iter()
            .filter(|c| c.path_and_query.starts_with("/api/v1/reloads?"))
            .count()
    };
    let before = listed();
    wait::until(LIMIT, "two more reconciliation runs", || {
        let now = listed();
        async move { (now >= before + 2).then_some(()) }
    })
    .await;
    for (name, r) in [("teams", &teams), ("webhook", &hook)] {
        let got = arrivals(r);
        assert_eq!(got.len(), 2, "{name}: both failures");
        assert!(got.values().all(|t| t.len() == 1), "{name}: each once");
    }
    let ready = group[other].readyz().await;
    assert_eq!(ready["holdsRole"], true, "{ready}");
    eprintln!("ha: the role moved {took_after:?} after its holder was SIGKILLed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_postgres_restart_mid_burst_loses_and_doubles_nothing() {
    let n = 200;
    let mut pg = Postgres::start().await;
    let teams = HttpReceiver::start().await;
    let hook = HttpReceiver::start().await;
    let s = Setup::with(Options {
        tenant: &alert_channels(&teams, &hook),
        listener:
            "    alerts:\n      retryBaseMilliseconds: 50\n      waitForFinalOutcome: never\n",
        persistent_broker: true,
        ..Options::default()
    })
    .await;
    let group = [
        Instance::start(&s, &pg, "alpha").await,
        Instance::start(&s, &pg, "bravo").await,
    ];
    for i in 0..n {
        if i == n / 2 {
            pg.stop();
            // The instances notice: events are held, `/readyz` says why.
            let why = wait::until(LIMIT, "/readyz to say the journal is down", || {
                let ready = group[0].readyz();
                async move {
                    let r = ready.await;
                    (r["ready"] == false).then_some(r["problems"].to_string())
                }
            })
            .await;
            assert!(why.contains("journal"), "{why}");
        }
        if i == n / 2 + 20 {
            pg.restart().await;
        }
        s.publish("qscloud/app/reload", &body(2 * i)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let got = (arrivals(&teams).len(), arrivals(&hook).len());
        if got == (n, n) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "alerts for {got:?} of {n} reloads"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for (name, r) in [("teams", &teams), ("webhook", &hook)] {
        let doubled: Vec<usize> = arrivals(r)
            .into_iter()
            .filter(|(_, t)| t.len() > 1)
            .map(|(i, _)| i)
            .collect();
        assert!(
            doubled.is_empty(),
            "{name}: reloads alerted twice: {doubled:?}"
        );
    }
    wait::until(LIMIT, "/readyz to be ready again", || {
        let ready = group[1].readyz();
        async move { (ready.await["ready"] == true).then_some(()) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_listeners_of_one_name_are_told_apart_by_their_config() {
    // The instance id ends the MQTT client id: two instances never share a broker session
    // (which would make the broker disconnect one, and split the events between them).
    let pg = Postgres::start().await;
    let s = Setup::new("").await;
    let a = instance_config(&s.config, "alpha", &pg.url(), "");
    let out = relay_tests::process::run(
        BIN,
        &["check-config", "--config", a.to_str().unwrap()],
        &s.env(),
    )
    .await;
    assert_eq!(out.0, Some(0), "{}", out.1);
    assert!(
        out.1.contains("-alpha"),
        "the client id names the instance: {}",
        out.1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn journal_migrate_moves_pending_work_without_resending() {
    let pg = Postgres::start().await;
    let teams = HttpReceiver::start().await;
    let hook = HttpReceiver::start().await;
    let s = Setup::with(Options {
        tenant: &alert_channels(&teams, &hook),
        listener:
            "    alerts:\n      retryBaseMilliseconds: 50\n      waitForFinalOutcome: never\n",
        persistent_broker: true,
        ..Options::default()
    })
    .await;
    // One listener alone on SQLite: reload 0 is alerted; reloads 1 and 2 cannot be (the
    // receivers are down) when it is stopped.
    let mut alone = s.start(true).await;
    s.publish("qscloud/app/reload", &body(0)).await;
    wait::until(LIMIT, "reload 0 alerted on both", || {
        let got = (arrivals(&teams).len(), arrivals(&hook).len());
        async move { (got == (1, 1)).then_some(()) }
    })
    .await;
    teams.set_down(true);
    hook.set_down(true);
    for j in [2, 4] {
        s.publish("qscloud/app/reload", &body(j)).await;
    }
    let journal = s.journal().await;
    wait::until(LIMIT, "reloads 1 and 2 to be tried and refused", || {
        let journal = journal.clone();
        async move {
            let mut tried = 0;
            for i in [1, 2] {
                let id = common::event_id(&body(2 * i));
                tried += journal
                    .deliveries(&id)
                    .await
                    .unwrap()
                    .iter()
                    .filter(|d| d.attempts > 0 && !d.state.is_final())
                    .count();
            }
            (tried == 4).then_some(())
        }
    })
    .await;
    drop(journal);
    alone.terminate();
    assert!(alone.wait_exit(LIMIT).await.success());

    let config = s.config.to_str().unwrap();
    let (code, out) = relay_tests::process::run(
        BIN,
        &["journal", "migrate", "--to", &pg.url(), "--config", config],
        &s.env(),
    )
    .await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("3 of 3 events"), "{out}");
    // Run again: nothing more.
    let (code, again) = relay_tests::process::run(
        BIN,
        &["journal", "migrate", "--to", &pg.url(), "--config", config],
        &s.env(),
    )
    .await;
    assert_eq!(code, Some(0), "{again}");
    assert!(again.contains("0 of 3 events"), "{again}");

    // A listener of the group takes the pending work: reloads 1 and 2 once each, 0 not again.
    teams.set_down(false);
    hook.set_down(false);
    let _group = Instance::start(&s, &pg, "alpha").await;
    wait::until(LIMIT, "nothing pending in the shared journal", || {
        let left = pg.query("SELECT COUNT(*) FROM events WHERE state = 'pending'");
        async move { (left == "0").then_some(()) }
    })
    .await;
    for (name, r) in [("teams", &teams), ("webhook", &hook)] {
        let got = arrivals(r);
        assert_eq!(got.len(), 3, "{name}: {got:?}");
        assert!(
            got.values().all(|t| t.len() == 1),
            "{name}: each once: {got:?}"
        );
    }
}

/// A persistent MQTT 5 session (`client_id`) subscribed to `filters` at QoS 1; what it receives
/// goes to the returned channel. Dropping the task drops the connection without a DISCONNECT.
async fn session(
    port: u16,
    client_id: &str,
    filters: &[&str],
) -> (
    tokio::sync::mpsc::UnboundedReceiver<String>,
    tokio::task::JoinHandle<()>,
) {
    use rumqttc::v5::mqttbytes::v5::Packet;
    use rumqttc::v5::{AsyncClient, Event, MqttOptions};
    let mut opts = MqttOptions::new(client_id, "127.0.0.1", port);
    opts.set_clean_start(false)
        .set_session_expiry_interval(Some(3600));
    let (client, mut eventloop) = AsyncClient::new(opts, 100);
    for f in filters {
        client
            .subscribe(*f, rumqttc::v5::mqttbytes::QoS::AtLeastOnce)
            .await
            .unwrap();
    }
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let wanted = filters.len();
    let task = tokio::spawn(async move {
        let _client = client;
        let mut ready = Some(ready_tx);
        let mut acks = 0;
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    acks += 1;
                    if acks == wanted {
                        if let Some(r) = ready.take() {
                            let _ = r.send(());
                        }
                    }
                }
                Ok(Event::Incoming(Packet::ConnAck(c))) if c.session_present => {
                    if let Some(r) = ready.take() {
                        let _ = r.send(());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let _ = tx.send(String::from_utf8_lossy(&p.payload).into_owned());
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    });
    tokio::time::timeout(LIMIT, ready_rx)
        .await
        .unwrap()
        .unwrap();
    (rx, task)
}

/// Why each listener keeps its own session rather than sharing one subscription: with an MQTT 5
/// shared subscription (`$share/<group>/…`), Mosquitto keeps handing messages to a member whose
/// persistent session is offline and holds them until it returns. While one listener is down,
/// its share of the events would wait for it instead of reaching the one that is up.
#[tokio::test]
async fn a_shared_subscription_holds_an_absent_members_share_of_the_events() {
    let broker = relay_tests::mosquitto::Mosquitto::start_logged().await;
    let port = broker.port;
    // The member that stays up also takes a plain `marker` topic: the broker serves one
    // connection in order, so the marker comes after whatever was routed to it before.
    let (mut up, _up_task) =
        session(port, "share-up", &["$share/listeners/qscloud/#", "marker"]).await;
    let (_, away_task) = session(port, "share-away", &["$share/listeners/qscloud/#"]).await;
    away_task.abort();
    wait::until(LIMIT, "the broker to see the member go", || {
        let gone = broker.log().contains("share-away closed its connection")
            || broker.log().contains("Client share-away disconnected");
        async move { gone.then_some(()) }
    })
    .await;
    for i in 0..20 {
        let event = format!("event-{i}");
        relay_tests::mqtt::publish(port, "qscloud/app/reload", event.as_bytes(), None).await;
    }
    relay_tests::mqtt::publish(port, "marker", b"done", None).await;
    let mut got_up = 0;
    loop {
        let m = tokio::time::timeout(LIMIT, up.recv())
            .await
            .unwrap()
            .unwrap();
        if m == "done" {
            break;
        }
        got_up += 1;
    }
    // The absent member returns (same client id, its session kept): the rest is there.
    let (mut back, _back_task) = session(port, "share-away", &[]).await;
    let mut got_back = 0;
    while got_up + got_back < 20 {
        let m = tokio::time::timeout(LIMIT, back.recv()).await;
        assert!(
            m.is_ok(),
            "{got_up} reached the member that was up, {got_back} the returning one: {} lost",
            20 - got_up - got_back
        );
        got_back += 1;
    }
    eprintln!("mosquitto $share with one member offline: {got_up} of 20 reached the member that was up, {got_back} waited for the absent one");
    assert!(
        got_back > 0,
        "Mosquitto held part of the share for the absent member ({got_up} reached the member that was up)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_listener_started_before_postgres_waits_for_it() {
    let mut pg = Postgres::start().await;
    let hook = HttpReceiver::start().await;
    let s = Setup::with(Options {
        tenant: &common::webhook_alert(&hook.url("/alerts")),
        listener: common::NO_WAIT,
        ..Options::default()
    })
    .await;
    pg.stop();
    let config = instance_config(&s.config, "alpha", &pg.url(), "");
    let mut l = Running::spawn(BIN, &["--config", config.to_str().unwrap()], &s.env());
    l.wait_for_output("retrying until it can be reached", 1, LIMIT)
        .await;
    pg.restart().await;
    l.wait_for_output("subscribed", 1, LIMIT).await;
    s.publish("qscloud/app/reload", &body(0)).await;
    wait::until(LIMIT, "the alert", || {
        let n = hook.delivered().len();
        async move { (n == 1).then_some(()) }
    })
    .await;
}
