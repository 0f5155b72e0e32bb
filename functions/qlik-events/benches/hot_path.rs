//! The forwarder's per-request work without I/O: verify the signature, normalise the event,
//! map the topic. Compared with a bare HMAC-SHA256 of the same bytes, the floor.
//!
//! Run: `cargo bench -p qlik-events --bench hot_path`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use hmac::{Hmac, Mac};
use qlik_events::{sign, topic_for, Event, Secret, Verifier};
use sha2::Sha256;
use std::hint::black_box;

const SECRET: &str = "bench-secret-0123456789abcdef0123456789";

fn bodies() -> Vec<(String, Vec<u8>)> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/events");
    let mut out: Vec<(String, Vec<u8>)> = [
        "app-reload-failed.cloudevents.json",
        "app-reload-failed.legacy-hybrid.json",
        "reload-failed.cloudevents.json",
    ]
    .iter()
    .map(|name| {
        let body = std::fs::read(format!("{dir}/{name}")).expect("fixture");
        (name.trim_end_matches(".json").to_owned(), body)
    })
    .collect();
    // A 64 KB event: the failed reload with a long error list.
    let mut big: serde_json::Value = serde_json::from_slice(&out[0].1).expect("json");
    big["data"]["errors"] = serde_json::json!(["x".repeat(64 * 1024 - 1200)]);
    out.push(("64KB".to_owned(), serde_json::to_vec(&big).expect("json")));
    out
}

fn hot_path(c: &mut Criterion) {
    let secret = Secret::new(SECRET);
    let verifier = Verifier::new(&secret, None);
    let mut group = c.benchmark_group("forwarder");
    for (name, body) in bodies() {
        let signature = sign(&secret, &body);
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(
            BenchmarkId::new("verify+parse+topic", &name),
            &body,
            |b, body| {
                b.iter(|| {
                    verifier
                        .verify(Some(signature.as_bytes()), black_box(body))
                        .expect("valid");
                    let event = Event::parse(black_box(body)).expect("event");
                    topic_for("qscloud", &event.event_type, &event.tenant_id).expect("topic")
                })
            },
        );
        // The part above the floor, alone.
        group.bench_with_input(BenchmarkId::new("parse+topic", &name), &body, |b, body| {
            b.iter(|| {
                let event = Event::parse(black_box(body)).expect("event");
                topic_for("qscloud", &event.event_type, &event.tenant_id).expect("topic")
            })
        });
        group.bench_with_input(BenchmarkId::new("bare-hmac", &name), &body, |b, body| {
            b.iter(|| {
                let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("key");
                mac.update(black_box(body));
                mac.finalize().into_bytes()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, hot_path);
criterion_main!(benches);
