//! Forwarder throughput and latency, and Lambda cold start, measured against real parts.
//!
//! - serve: the release `qlik-webhook serve` against a local Mosquitto at QoS 1; N concurrent
//!   keep-alive clients post freshly signed events for a fixed time; every 200 must arrive on the
//!   broker. Prints events/s and latency percentiles of the 200s.
//! - cold start: exec of the release binary (as `bootstrap`, secret from the environment) to its
//!   first `GET /2018-06-01/runtime/invocation/next` on a stand-in Runtime API; median of runs.
//!
//! - lambda: the same load through the Lambda adapter in-process (Function URL payloads decoded
//!   by lambda_http, answered by `lambda::handle`), without the Runtime API's HTTP round trip.
//! - scaling: short serve runs with body sizes 1 KB → 256 KB and 1 → 256 clients.
//!
//! Run: `cargo bench -p qlik-webhook --bench serve [-- cold-start|serve|lambda|scaling]`
//! (BENCH_SECONDS, BENCH_CLIENTS adjust serve and lambda).

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

/// What one load run measured.
struct Figures {
    ok: u64,
    failed: u64,
    received: u64,
    elapsed: Duration,
    /// Latencies of the 200s, sorted.
    latencies: Vec<Duration>,
}

impl Figures {
    fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }
    fn ms(&self, p: f64) -> f64 {
        percentile(&self.latencies, p).as_secs_f64() * 1e3
    }
    fn print(&self, what: &str, clients: u64) {
        println!(
            "{what}: {clients} clients, {:.1} s: {} events answered 200 ({:.0} events/s), {} failed, {} received on the broker",
            self.elapsed.as_secs_f64(),
            self.ok,
            self.rate(),
            self.failed,
            self.received,
        );
        println!(
            "{what}: latency of the 200s p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
            self.ms(0.50),
            self.ms(0.99),
            self.ms(0.999),
            self.latencies
                .last()
                .copied()
                .unwrap_or_default()
                .as_secs_f64()
                * 1e3,
        );
    }
}

/// A broker that never drops QoS 1 messages for the bench's own subscriber: Mosquitto's
/// default queue (1000) would, when the subscriber falls behind.
async fn bench_broker() -> Mosquitto {
    Mosquitto::start_with(
        "allow_anonymous true\nmax_queued_messages 0\nmax_inflight_messages 0\nset_tcp_nodelay true\n",
    )
        .await
}

/// `clients` concurrent senders post freshly signed events of about `body_bytes` for
/// `seconds`; `send` returns whether the answer was 200. Then every 200 must be on the broker.
async fn drive<F, Fut>(
    sub: &mut Subscriber,
    clients: u64,
    seconds: f64,
    body_bytes: usize,
    send: F,
) -> Figures
where
    F: Fn(Vec<u8>, String) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let mut template: serde_json::Value =
        serde_json::from_slice(&fixtures::event("app-reload-failed.cloudevents.json"))
            .expect("fixture");
    let base = serde_json::to_vec(&template).expect("json").len();
    template["data"]["padding"] = "x".repeat(body_bytes.saturating_sub(base + 14)).into();
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (ok, failed, mut event, send) =
            (ok.clone(), failed.clone(), template.clone(), send.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut n = 0u64;
            while Instant::now() < deadline {
                n += 1;
                event["id"] = serde_json::json!(format!("bench-{c}-{n}"));
                let body = serde_json::to_vec(&event).expect("json");
                let signature = fixtures::sign(&body);
                let sent = Instant::now();
                if send(body, signature).await {
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
    let mut received = 0u64;
    while received < ok {
        match sub.next(Duration::from_secs(10)).await {
            Some(_) => received += 1,
            None => break,
        }
    }
    Figures {
        ok,
        failed: failed.load(Ordering::Relaxed),
        received,
        elapsed,
        latencies,
    }
}

/// The release `qlik-webhook serve` over HTTP keep-alive.
async fn serve(broker: &Mosquitto, clients: u64, seconds: f64, body_bytes: usize) -> Figures {
    let mut sub = Subscriber::connect(broker.port, "qscloud/#").await;
    let env = vec![
        ("QLIK_WEBHOOK_SECRET", SECRET.to_owned()),
        ("MQTT_URL", broker.url()),
        ("MAX_BODY_BYTES", "1048576".to_owned()),
        ("RUST_LOG", "warn".to_owned()),
    ];
    let (_fwd, base) = process::serve_forwarder(BIN, &env).await;
    let url = Arc::new(format!("{base}/webhook"));
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(clients as usize)
        .build()
        .expect("client");
    drive(
        &mut sub,
        clients,
        seconds,
        body_bytes,
        move |body, signature| {
            let (http, url) = (http.clone(), url.clone());
            async move {
                let status = http
                    .post(url.as_str())
                    .header("qlik-signature", signature)
                    .body(body)
                    .send()
                    .await
                    .map(|r| r.status().as_u16());
                matches!(status, Ok(200))
            }
        },
    )
    .await
}

/// The Lambda adapter in-process: each event is a Function URL payload (JSON, body base64)
/// turned into a request by lambda_http and answered by `lambda::handle`, publishing to the
/// broker; no Runtime API round trip.
async fn lambda_in_process(broker: &Mosquitto, clients: u64, seconds: f64) -> Figures {
    let mut sub = Subscriber::connect(broker.port, "qscloud/#").await;
    let config = qlik_webhook::config::Config::from_lookup(|name| match name {
        "QLIK_WEBHOOK_SECRET" => Some(SECRET.to_owned()),
        "MQTT_URL" => Some(broker.url()),
        _ => None,
    })
    .expect("config");
    let forwarder = Arc::new(qlik_webhook::build(config).await.expect("forwarder"));
    drive(&mut sub, clients, seconds, 0, move |body, signature| {
        let forwarder = forwarder.clone();
        async move {
            let payload = relay_tests::fakes::function_url_event(
                "POST",
                "/",
                &[
                    ("content-type", "application/json"),
                    ("qlik-signature", &signature),
                ],
                &body,
                true,
            )
            .to_string();
            let Ok(request) = lambda_http::request::from_str(&payload) else {
                return false;
            };
            let response = qlik_webhook::lambda::handle(&forwarder, request).await;
            response.status() == 200
        }
    })
    .await
}

/// How cost grows with body size and with concurrent clients: one short run per row.
async fn scaling(seconds: f64) {
    let broker = bench_broker().await;
    println!("scaling: body size, 16 clients, {seconds} s each");
    println!("scaling: | body | events/s | MB/s | p50 ms | p99 ms |");
    for kb in [1usize, 4, 16, 64, 256] {
        let f = serve(&broker, 16, seconds, kb * 1024).await;
        println!(
            "scaling: | {kb} KB | {:.0} | {:.1} | {:.2} | {:.2} |{}",
            f.rate(),
            f.rate() * (kb * 1024) as f64 / 1e6,
            f.ms(0.5),
            f.ms(0.99),
            if f.received == f.ok && f.failed == 0 {
                ""
            } else {
                " (losses!)"
            }
        );
    }
    println!("scaling: clients, the 1 KB fixture, {seconds} s each");
    println!("scaling: | clients | events/s | p50 ms | p99 ms |");
    for clients in [1u64, 4, 16, 64, 256] {
        let f = serve(&broker, clients, seconds, 0).await;
        println!(
            "scaling: | {clients} | {:.0} | {:.2} | {:.2} |{}",
            f.rate(),
            f.ms(0.5),
            f.ms(0.99),
            if f.received == f.ok && f.failed == 0 {
                ""
            } else {
                " (losses!)"
            }
        );
    }
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
        let clients = env_number("BENCH_CLIENTS", 64);
        let seconds = env_number("BENCH_SECONDS", 10) as f64;
        if wants("serve") {
            let broker = bench_broker().await;
            serve(&broker, clients, seconds, 0)
                .await
                .print("serve", clients);
        }
        if wants("lambda") {
            let broker = bench_broker().await;
            lambda_in_process(&broker, clients, seconds)
                .await
                .print("lambda (in-process)", clients);
        }
        if wants("scaling") {
            scaling(3.0).await;
        }
    });
}
