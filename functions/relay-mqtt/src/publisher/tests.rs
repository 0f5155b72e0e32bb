use super::*;

fn waiter(t: &mut AckTracker) -> oneshot::Receiver<AckResult> {
    let (tx, rx) = oneshot::channel();
    t.queued(tx);
    rx
}

#[test]
fn acks_reach_the_right_publisher_even_out_of_order() {
    let mut t = AckTracker::default();
    let mut a = waiter(&mut t);
    let mut b = waiter(&mut t);
    let mut c = waiter(&mut t);
    t.sent(7);
    t.sent(8);
    t.sent(9);
    t.acked(8, Ok(()));
    assert_eq!(b.try_recv(), Ok(Ok(())));
    assert!(a.try_recv().is_err() && c.try_recv().is_err());
    t.acked(9, Err(PublishError::Refused("NotAuthorized".into())));
    assert_eq!(
        c.try_recv(),
        Ok(Err(PublishError::Refused("NotAuthorized".into())))
    );
    t.acked(7, Ok(()));
    assert_eq!(a.try_recv(), Ok(Ok(())));
    assert!(t.is_empty());
}

#[test]
fn held_back_publish_is_matched_when_finally_sent() {
    let mut t = AckTracker::default();
    let mut a = waiter(&mut t);
    let mut b = waiter(&mut t);
    let mut c = waiter(&mut t);
    t.sent(1);
    // b collides with packet id 1, which is still in flight.
    t.held_back(1);
    t.acked(1, Ok(()));
    assert_eq!(a.try_recv(), Ok(Ok(())));
    t.sent(1); // b, resent after the collision cleared
    t.sent(2); // c
    t.acked(2, Ok(()));
    assert_eq!(c.try_recv(), Ok(Ok(())));
    assert!(b.try_recv().is_err());
    t.acked(1, Ok(()));
    assert_eq!(b.try_recv(), Ok(Ok(())));
    assert!(t.is_empty());
}

#[test]
fn unknown_acks_are_ignored_and_a_lost_connection_fails_everything() {
    let mut t = AckTracker::default();
    let mut a = waiter(&mut t);
    let mut b = waiter(&mut t);
    let mut c = waiter(&mut t);
    t.acked(42, Ok(()));
    t.sent(1);
    t.held_back(1);
    let lost = PublishError::Unavailable("connection reset".into());
    t.fail_all(&lost);
    for rx in [&mut a, &mut b, &mut c] {
        assert_eq!(rx.try_recv(), Ok(Err(lost.clone())));
    }
    assert!(t.is_empty());
    // A publish queued after the failure is refused at once, not left waiting.
    assert_eq!(t.check_open(), Err(lost.clone()));
    let mut late = waiter(&mut t);
    assert_eq!(late.try_recv(), Ok(Err(lost)));
    assert!(t.is_empty());
}

#[test]
fn a_timed_out_requester_does_not_break_the_others() {
    let mut t = AckTracker::default();
    let a = waiter(&mut t);
    let mut b = waiter(&mut t);
    drop(a);
    t.sent(1);
    t.sent(2);
    t.acked(1, Ok(()));
    t.acked(2, Ok(()));
    assert_eq!(b.try_recv(), Ok(Ok(())));
}

/// Issue #33 item 6: hints name the setting in its own file's terms (the forwarder's URL, the
/// listener's YAML), and TLS to a plain port is not called a certificate problem.
#[test]
fn hints_speak_the_settings_own_terms() {
    let url = Setting::Url("MQTT_URL".into());
    let yaml = Setting::Yaml("Butler.mqttConfig.qlikSenseCloud.event.mqttForward.broker".into());
    let closed = |s: &Setting| Failure::ClosedEarly.hint(s, 8883, false, false).unwrap();
    assert!(closed(&url).contains("write mqtts:// (not mqtt://) in MQTT_URL"));
    assert!(closed(&yaml).contains("set tls.enable: true in Butler.mqttConfig"));
    assert!(!closed(&yaml).contains("mqtts"));
    let plain = |s: &Setting| Failure::NotTls.hint(s, 1883, true, false).unwrap();
    assert!(plain(&url).starts_with("port 1883 does not answer in TLS"));
    assert!(plain(&url).contains("write mqtt:// (not mqtts://) in MQTT_URL"));
    assert!(plain(&yaml).contains("set tls.enable: false in Butler"));
    // How rustls and rumqttc say it (the first seen against Mosquitto's plain port).
    assert_eq!(
        Failure::of_tls("I/O: Connection reset by peer (os error 104)"),
        Failure::NotTls
    );
    assert_eq!(Failure::of_tls("I/O: tls handshake eof"), Failure::NotTls);
    assert_eq!(
        Failure::of_tls("TLS: received corrupt message of type InvalidContentType"),
        Failure::NotTls
    );
    assert_eq!(
        Failure::of_tls("TLS: invalid peer certificate: UnknownIssuer"),
        Failure::Tls
    );
}
