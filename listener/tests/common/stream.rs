//! A stream of failed reloads as Qlik sends them (each a failed attempt and a failed final
//! outcome), and how to find which reloads an alert request was about: shared by the fault
//! scenarios (`faults.rs`, `ha.rs`).

use super::numbered_failure;
use relay_tests::fakes::HttpReceiver;
use relay_tests::fixtures;
use std::collections::HashMap;
use std::time::Instant;

/// Reload ids: `f417ed00-reload-<12 digits>`, easy to find in any alert body.
pub const RELOAD_PREFIX: &str = "f417ed00-reload-";

pub fn reload_id(i: usize) -> String {
    format!("{RELOAD_PREFIX}{i:012}")
}

/// The `j`-th body posted: reload `j / 2`'s failed attempt (even `j`) or its failed final
/// outcome (odd `j`).
pub fn body(j: usize) -> Vec<u8> {
    let i = j / 2;
    if j.is_multiple_of(2) {
        let (_, attempt) = numbered_failure(i);
        let mut v: serde_json::Value = serde_json::from_slice(&attempt).unwrap();
        v["data"]["reloadId"] = reload_id(i).into();
        serde_json::to_vec(&v).unwrap()
    } else {
        let mut v: serde_json::Value =
            serde_json::from_slice(&fixtures::event("reload-failed.cloudevents.json")).unwrap();
        v["id"] = format!("f417ed00-final-{i:012}").into();
        v["data"]["id"] = reload_id(i).into();
        serde_json::to_vec(&v).unwrap()
    }
}

/// The reload (its index) of an event id: an attempt, a final outcome or a reconciled event.
pub fn reload_of(event_id: &str) -> Option<usize> {
    let digits = |s: &str| s.get(..12)?.parse().ok();
    if let Some(at) = event_id.find(RELOAD_PREFIX) {
        return digits(&event_id[at + RELOAD_PREFIX.len()..]);
    }
    if let Some(rest) = event_id.strip_prefix("f417ed00-final-") {
        return digits(rest);
    }
    event_id.strip_prefix(super::ID_PREFIX).and_then(digits)
}

/// The reloads an alert request is about (their ids are unique strings, wherever they appear).
pub fn reloads_in(body: &[u8]) -> Vec<usize> {
    let text = String::from_utf8_lossy(body);
    let mut found: Vec<usize> = text
        .match_indices(RELOAD_PREFIX)
        .filter_map(|(at, _)| text.get(at..at + RELOAD_PREFIX.len() + 12))
        .filter_map(reload_of)
        .collect();
    found.sort_unstable();
    found.dedup();
    found
}

/// (reload → arrival times of 2xx-answered requests) for one receiver.
pub fn arrivals(receiver: &HttpReceiver) -> HashMap<usize, Vec<Instant>> {
    let mut map: HashMap<usize, Vec<Instant>> = HashMap::new();
    for r in receiver.delivered() {
        for i in reloads_in(&r.body) {
            map.entry(i).or_default().push(r.at);
        }
    }
    map
}

/// Waits (up to `limit`) until each of reloads `0..n` reached every receiver (`(channel,
/// receiver)`); panics naming a few that did not.
pub async fn wait_all_alerted(
    receivers: &[(&str, &HttpReceiver)],
    n: usize,
    limit: std::time::Duration,
) {
    let deadline = Instant::now() + limit;
    loop {
        let missing: Vec<String> = receivers
            .iter()
            .flat_map(|(name, r)| {
                let got = arrivals(r);
                (0..n)
                    .filter(move |i| !got.contains_key(i))
                    .map(move |i| format!("{name}: {}", reload_id(i)))
            })
            .collect();
        if missing.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} alert(s) never arrived, e.g. {:?}; read the qlik-listener log above and its journal (`qlik-listener history --alert-state failed`)",
            missing.len(),
            &missing[..missing.len().min(5)]
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// Checks that every reload that reached a receiver more than once was in flight on that
/// channel at as many kills (`in_flight`: per kill, the (event id, channel) the journal had
/// `sending`): the at-least-once window, nothing else. Returns how many duplicates there were.
pub fn duplicates_within_kills(
    receivers: &[(&str, &HttpReceiver)],
    in_flight: &[Vec<(String, String)>],
) -> usize {
    let mut duplicated = 0;
    for (channel, r) in receivers {
        for (i, times) in arrivals(r) {
            if times.len() > 1 {
                duplicated += times.len() - 1;
                let caught = in_flight
                    .iter()
                    .filter(|at_kill| {
                        at_kill
                            .iter()
                            .any(|(e, c)| reload_of(e) == Some(i) && c == channel)
                    })
                    .count();
                assert!(
                    times.len() - 1 <= caught,
                    "reload {} reached {channel} {} times, but was in flight at {caught} kill(s)",
                    reload_id(i),
                    times.len()
                );
            }
        }
    }
    duplicated
}
