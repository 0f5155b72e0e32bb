//! Stopping the listener (SIGTERM, a service stop): no new work, alert requests under way
//! finish and are recorded, then it exits.

mod common;

use common::{Options, Setup, LIMIT};
use qlik_listener::journal::{DeliveryState, State};
use relay_tests::fakes::{Fault, HttpReceiver};
use relay_tests::fixtures::{self, FIXTURES};
use std::time::Duration;

/// An alert request in flight at SIGTERM (the receiver takes 3 s to answer) is completed,
/// recorded `sent` and never sent again after a restart (before: the task was aborted
/// mid-request, left `sending`, and the restart sent it a second time).
#[cfg(unix)]
#[tokio::test]
async fn an_alert_in_flight_at_sigterm_is_sent_once_and_recorded() {
    let hook = HttpReceiver::start().await;
    hook.inject(&[Fault::Delay(Duration::from_secs(3))]);
    let tenant = common::webhook_alert(&hook.url("/slow"));
    let s = Setup::with(Options {
        tenant: &tenant,
        listener: common::NO_WAIT,
        ..Options::default()
    })
    .await;
    let mut listener = s.start(true).await;
    let body = fixtures::event(FIXTURES[0].0);
    let id = common::event_id(&body);
    s.publish(FIXTURES[0].1, &body).await;
    let journal = s.journal().await;
    relay_tests::wait::until(LIMIT, "the alert request to be under way", || {
        let journal = journal.clone();
        let id = id.clone();
        async move {
            let d = journal.delivery(&id, "webhook-1").await.unwrap()?;
            (d.state == DeliveryState::Sending).then_some(())
        }
    })
    .await;
    listener.terminate();
    let status = listener.wait_exit(LIMIT).await;
    assert!(status.success(), "{status}: {:?}", listener.output());
    let out = listener.output().join("\n");
    assert!(out.contains("letting alerts under way finish"), "{out}");
    assert_eq!(hook.delivered().len(), 1, "the request under way completed");
    let d = journal.delivery(&id, "webhook-1").await.unwrap().unwrap();
    assert_eq!(d.state, DeliveryState::Sent, "and was recorded: {d:?}");
    assert_eq!(journal.get(&id).await.unwrap().unwrap().state, State::Done);

    // After a restart (which resumes whatever the journal holds as pending), nothing is sent
    // again.
    let mut again = s.start(false).await;
    again.wait_for_output("listener started", 1, LIMIT).await;
    again.terminate();
    again.wait_exit(LIMIT).await;
    assert_eq!(hook.requests().len(), 1, "{:?}", hook.requests());
}
