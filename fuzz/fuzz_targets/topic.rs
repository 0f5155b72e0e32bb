//! Topic mapping on arbitrary type and tenant strings (split at the first 0x01 byte): an
//! accepted topic has exactly the prefix's levels plus safe ones, never a wildcard or NUL.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (event_type, tenant) = text.split_once('\u{1}').unwrap_or((text, "tenant"));
    if let Ok(topic) = qlik_events::topic_for("qscloud", event_type, tenant) {
        assert!(topic.starts_with("qscloud/"), "{topic:?}");
        assert!(!topic.contains(['+', '#', '\0']), "{topic:?}");
        assert!(topic.ends_with(tenant), "{topic:?}");
        assert!(!tenant.contains('/') && !tenant.is_empty(), "{tenant:?}");
        assert!(topic.len() <= qlik_events::topic::MAX_TOPIC_BYTES);
    }
});
