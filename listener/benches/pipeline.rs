//! The listener end to end: forwarder → Mosquitto → listener (journal, enrichment from the Qlik
//! Cloud API stand-in, script log on disk) → webhook alert channel, all release builds on this
//! machine.
//!
//! Prints sustained failed-reload events/s (from the first post to the last alert received),
//! the latency from the post (and from the forwarder's 200) to the alert's arrival at the
//! receiver (p50/p99), the listener's CPU time per event and its resident memory idle and at its
//! peak under load.
//!
//! Run: `cargo bench -p qlik-listener --bench pipeline` (BENCH_EVENTS, BENCH_CLIENTS adjust it;
//! BENCH_SCRIPT_LOG_MB=100 gives every reload a 100 MB one-line script log;
//! BENCH_RATE=N posts N events/s instead of as fast as possible, for latency at a sustainable
//! rate). The journal and the script logs go to a temporary folder under `TMPDIR`: with
//! `TMPDIR=/dev/shm` (memory) the figures show the listener without the disk's costs.
//! BENCH_INSTANCES=N (N ≥ 1) runs N listeners sharing a journal in a throw-away PostgreSQL
//! cluster (on this machine, `fsync=off`) instead of one listener on SQLite; CPU and memory are
//! the first listener's.

#[path = "../tests/common/mod.rs"]
mod common;

use common::{Options, Setup};
use relay_tests::fakes::HttpReceiver;
use relay_tests::fixtures::{self, SECRET};
use relay_tests::process::{serve_forwarder, workspace_bin};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Resident memory of `pid` in kB (Linux `/proc`).
fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// CPU time `pid` has used so far in user and in system (kernel) mode, from `/proc/<pid>/stat`.
fn cpu_time(pid: u32) -> (Duration, Duration) {
    let (user, system) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // Fields after the command name (which may hold spaces) in parentheses.
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some((
                f.get(11)?.parse::<u64>().ok()?,
                f.get(12)?.parse::<u64>().ok()?,
            ))
        })
        .unwrap_or((0, 0));
    // Linux reports in clock ticks of 1/100 s (USER_HZ).
    (
        Duration::from_millis(user * 10),
        Duration::from_millis(system * 10),
    )
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1e3
}

/// `rate`: events per second to post at (0: as fast as the clients can).
async fn pipeline(events: usize, clients: usize, rate: usize, instances: usize) {
    let hook = HttpReceiver::start().await;
    let tenant = format!(
        "          alert:\n            webhookNotification:\n              reloadAppFailure: {{ enable: true, urls: [\"{}\"] }}\n",
        hook.url("/alerts")
    );
    let s = Setup::with(Options {
        tenant: &tenant,
        persistent_broker: true,
        ..Options::default()
    })
    .await;
    // BENCH_SCRIPT_LOG_MB=N: every reload's script log is one N MB line (a runaway TRACE), for
    // the listener's peak memory with huge logs.
    let log_mb = env_number("BENCH_SCRIPT_LOG_MB", 0);
    if log_mb > 0 {
        s.api.set_script_log("x".repeat(log_mb * 1024 * 1024));
        println!("script log per reload: {log_mb} MB, one line");
    }
    // Only the subscriber's state changes are logged: the per-event info lines would cost the
    // bench's own process (which reads the listener's output) more than the listener.
    let mut env = s.env();
    env.push(("RUST_LOG", "warn,qlik_listener::subscriber=info".to_owned()));
    let postgres = match instances {
        0 => None,
        _ => Some(relay_tests::postgres::Postgres::start().await),
    };
    let configs: Vec<std::path::PathBuf> = match &postgres {
        None => vec![s.config.clone()],
        Some(pg) => (0..instances)
            .map(|i| common::instance_config(&s.config, &format!("bench-{i}"), &pg.url(), ""))
            .collect(),
    };
    let mut listeners = Vec::new();
    for config in &configs {
        let mut listener = relay_tests::process::Running::spawn(
            common::BIN,
            &["--config", config.to_str().expect("path")],
            &env,
        );
        listener
            .wait_for_output("subscribed", 1, common::LIMIT)
            .await;
        listeners.push(listener);
    }
    println!(
        "journal: {}",
        match instances {
            0 => "SQLite, one listener".to_owned(),
            n => format!("PostgreSQL, {n} listener(s) sharing it"),
        }
    );
    let pid = listeners[0].pid().expect("listener pid");
    let forwarder = workspace_bin("qlik-webhook");
    let (_fwd, base) = serve_forwarder(
        forwarder.to_str().expect("path"),
        &[
            ("QLIK_WEBHOOK_SECRET", SECRET.to_owned()),
            ("MQTT_URL", s.broker.url()),
            ("RUST_LOG", "warn".to_owned()),
        ],
    )
    .await;
    // Idle: connected and subscribed, nothing to do.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_kb = rss_kb(pid);

    let url = Arc::new(format!("{base}/webhook"));
    let http = reqwest::Client::new();
    // Per event id: when it was posted, and when its 200 was read.
    let accepted: Arc<Mutex<HashMap<String, (Instant, Instant)>>> = Arc::default();
    let next = Arc::new(AtomicUsize::new(0));
    let peak_kb = Arc::new(std::sync::atomic::AtomicU64::new(idle_kb));
    let sampler = {
        let peak_kb = peak_kb.clone();
        tokio::spawn(async move {
            loop {
                peak_kb.fetch_max(rss_kb(pid), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let cpu_before = cpu_time(pid);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (http, url, accepted, next) =
            (http.clone(), url.clone(), accepted.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= events {
                    break;
                }
                if rate > 0 {
                    let due = started + Duration::from_secs_f64(i as f64 / rate as f64);
                    tokio::time::sleep_until(due.into()).await;
                }
                let (id, body) = common::numbered_failure(i);
                let sig = fixtures::sign(&body);
                let sent = Instant::now();
                let ok = http
                    .post(url.as_str())
                    .header("qlik-signature", sig)
                    .body(body)
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200);
                assert!(ok, "the forwarder refused event {i}");
                accepted.lock().unwrap().insert(id, (sent, Instant::now()));
            }
        }));
    }
    for t in tasks {
        t.await.expect("client");
    }
    let posted = started.elapsed();
    // Wait for every alert (event-driven on the receiver, with a generous deadline).
    relay_tests::wait::until(Duration::from_secs(600), "every alert", || {
        let n = hook.delivered().len();
        async move { (n >= events).then_some(()) }
    })
    .await;
    sampler.abort();
    let (user, system) = cpu_time(pid);
    let (user, system) = (user - cpu_before.0, system - cpu_before.1);
    let cpu = user + system;
    let alerts = hook.delivered();
    let last = alerts.iter().map(|r| r.at).max().expect("alerts");
    let accepted = accepted.lock().unwrap().clone();
    // Two latencies per alert: from the post (includes the forwarder), and from the client
    // reading its 200 (0 when the alert arrived first: the forwarder answers after the
    // broker's PUBACK, so the listener can finish before the client runs again).
    let (mut from_post, mut latencies): (Vec<Duration>, Vec<Duration>) = alerts
        .iter()
        .filter_map(|r| {
            let (sent, ok) = accepted.get(r.headers.get("x-qlik-relay-event-id")?)?;
            Some((
                r.at.saturating_duration_since(*sent),
                r.at.saturating_duration_since(*ok),
            ))
        })
        .unzip();
    from_post.sort();
    latencies.sort();
    let total = last - started;
    println!(
        "listener: {events} failed reloads, {clients} clients, {}: posted in {:.1} s, all {} alerts in {:.1} s: {:.0} events/s end to end",
        if rate > 0 { format!("paced at {rate}/s") } else { "unpaced".to_owned() },
        posted.as_secs_f64(),
        alerts.len(),
        total.as_secs_f64(),
        events as f64 / total.as_secs_f64(),
    );
    println!(
        "listener: post → webhook alert p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(&from_post, 0.5),
        percentile(&from_post, 0.99),
        from_post.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
    );
    println!(
        "listener: forwarder 200 → webhook alert p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
    );
    println!(
        "listener: CPU {:.2} s for {events} events: {:.0} µs per event ({:.0} % in the kernel)",
        cpu.as_secs_f64(),
        cpu.as_secs_f64() * 1e6 / events as f64,
        system.as_secs_f64() * 100.0 / cpu.as_secs_f64().max(1e-9),
    );
    println!(
        "listener: RSS idle {:.1} MB, peak under load {:.1} MB",
        idle_kb as f64 / 1024.0,
        peak_kb.load(Ordering::Relaxed) as f64 / 1024.0
    );
    for mut l in listeners {
        l.kill().await;
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(pipeline(
        env_number("BENCH_EVENTS", 3000),
        env_number("BENCH_CLIENTS", 32),
        env_number("BENCH_RATE", 0),
        env_number("BENCH_INSTANCES", 0),
    ));
}
