//! The forwarder's hot path on arbitrary bytes: signature check, event normalisation, topic.
//! The first byte picks the signature: a correct one (so parsing is reached with any body) or
//! the next 64 bytes as the header. Nothing may panic; an accepted topic must be safe.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qlik_events::{sign, topic_for, Event, Secret, Verifier};

const SECRET: &str = "fuzz-secret-0123456789abcdef0123456789";

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let secret = Secret::new(SECRET);
    let verifier = Verifier::new(&secret, None);
    let (header, body) = if mode % 2 == 0 {
        (sign(&secret, rest).into_bytes(), rest)
    } else {
        let cut = rest.len().min(64);
        (rest[..cut].to_vec(), &rest[cut..])
    };
    let verified = verifier.verify(Some(&header), body).is_ok();
    if mode % 2 == 0 {
        assert!(verified, "a correct signature must verify");
    }
    if let Ok(event) = Event::parse(body) {
        let _ = event.timestamp();
        let _ = event.app_id();
        let _ = event.reload();
        if let Ok(topic) = topic_for("qscloud", &event.event_type, &event.tenant_id) {
            assert!(topic.starts_with("qscloud/"));
            assert!(!topic.contains(['+', '#', '\0']), "{topic:?}");
            assert!(topic.len() <= qlik_events::topic::MAX_TOPIC_BYTES);
        }
    }
});
