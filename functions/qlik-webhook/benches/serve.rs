//! Forwarder throughput and latency, and Lambda cold start, measured against real parts.
//!
//! - serve: the release `qlik-webhook serve` against a local Mosquitto at QoS 1; N concurrent
//!   keep-alive clients post freshly signed events for a fixed time; every 200 must arrive on the
//!   broker. Prints events/s and latency percentiles of the 200s.
//! - cold start: exec of the release binary (as `bootstrap`, secret from the environment) to its
//!   first `GET /2018-06-01/runtime/invocation/next` on a stand-in Runtime API; median of runs.
//!
//! Run: `cargo bench -p qlik-webhook --bench serve` (BENCH_SECONDS, BENCH_CLIENTS adjust it).

use relay_tests::fakes::FakeRuntime;
use relay_tests::fixtures::{self, SECRET};
use relay_tests::mosquitto::Mosquitto;
use relay_tests::mqtt::Subscriber;
use relay_tests::process::{self, Running};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_qlik-webhook");

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

async fn serve(clients: u64, seconds: u64) {
    // Unlimited queue: Mosquitto's default (1000) drops QoS 1 messages for a subscriber that
    // falls behind, which would be the bench's subscriber, not the forwarder, losing them.
    let broker = Mosquitto::start_with(
        "allow_anonymous true\nmax_queued_messages 0\nmax_inflight_messages 0\n",
    )
    .await;
    let mut sub = Subscriber::connect(broker.port, "qscloud/#").await;
    let env = vec![
        ("QLIK_WEBHOOK_SECRET", SECRET.to_owned()),
        ("MQTT_URL", broker.url()),
        ("RUST_LOG", "warn".to_owned()),
    ];
    let (_fwd, base) = process::serve_forwarder(BIN, &env).await;
    let url = Arc::new(format!("{base}/webhook"));
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(clients as usize)
        .build()
        .expect("client");
    let template: serde_json::Value =
        serde_json::from_slice(&fixtures::event("app-reload-failed.cloudevents.json"))
            .expect("fixture");
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (http, url, ok, failed, mut event) = (
            http.clone(),
            url.clone(),
            ok.clone(),
            failed.clone(),
            template.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut n = 0u64;
            while Instant::now() < deadline {
                n += 1;
                event["id"] = serde_json::json!(format!("bench-{c}-{n}"));
                let body = serde_json::to_vec(&event).expect("json");
                let signature = fixtures::sign(&body);
                let sent = Instant::now();
                let status = http
                    .post(url.as_str())
                    .header("qlik-signature", signature)
                    .body(body)
                    .send()
                    .await
                    .map(|r| r.status().as_u16());
                if matches!(status, Ok(200)) {
                    latencies.push(sent.elapsed());
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.expect("client task"));
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let ok = ok.load(Ordering::Relaxed);
    // Every acknowledged event is on the broker.
    let mut received = 0u64;
    while received < ok {
        match sub.next(Duration::from_secs(10)).await {
            Some(_) => received += 1,
            None => break,
        }
    }
    println!(
        "serve: {clients} clients, {:.1} s: {ok} events answered 200 ({:.0} events/s), {} failed, {received} received on the broker",
        elapsed.as_secs_f64(),
        ok as f64 / elapsed.as_secs_f64(),
        failed.load(Ordering::Relaxed),
    );
    println!(
        "serve: latency of the 200s p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
        percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        percentile(&latencies, 0.999).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
}

async fn cold_start(runs: u64) {
    let broker = Mosquitto::start().await;
    let mut times = Vec::new();
    for _ in 0..runs {
        let runtime = FakeRuntime::start().await;
        let env = vec![
            ("AWS_LAMBDA_RUNTIME_API", runtime.api()),
            ("AWS_LAMBDA_FUNCTION_NAME", "qlik-webhook".to_owned()),
            ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".to_owned()),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128".to_owned()),
            (
                "AWS_LAMBDA_LOG_GROUP_NAME",
                "/aws/lambda/qlik-webhook".to_owned(),
            ),
            ("AWS_LAMBDA_LOG_STREAM_NAME", "bench".to_owned()),
            ("QLIK_WEBHOOK_SECRET", SECRET.to_owned()),
            ("MQTT_URL", broker.url()),
            ("RUST_LOG", "warn".to_owned()),
        ];
        let started = Instant::now();
        let mut lambda = Running::spawn(BIN, &[], &env);
        let first = loop {
            if let Some(t) = runtime.first_next() {
                break t;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "no invocation/next within 30 s"
            );
            tokio::time::sleep(Duration::from_micros(200)).await;
        };
        times.push(first - started);
        lambda.kill().await;
    }
    times.sort();
    println!(
        "cold start (exec → first invocation/next, MQTT connection included): median {:.1} ms, min {:.1} ms, max {:.1} ms over {runs} runs",
        percentile(&times, 0.5).as_secs_f64() * 1e3,
        times[0].as_secs_f64() * 1e3,
        times[times.len() - 1].as_secs_f64() * 1e3,
    );
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument picks one part.
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let wants = |name: &str| filter.as_deref().is_none_or(|f| name.contains(f));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        if wants("cold-start") {
            cold_start(env_number("BENCH_RUNS", 20)).await;
        }
        if wants("serve") {
            serve(
                env_number("BENCH_CLIENTS", 64),
                env_number("BENCH_SECONDS", 10),
            )
            .await;
        }
    });
}
