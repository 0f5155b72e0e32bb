//! The publish API's body (`PUT /v4/mqttpublishmessage`): whatever arrives, an accepted topic
//! has no wildcard, is not a `$` system topic and lies under an allowed prefix; the message
//! is within the limit.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let allowed = vec!["qliksense/".to_owned()];
    for prefixes in [None, Some(allowed.as_slice())] {
        if let Ok((topic, message)) = qlik_listener::parse::parse_publish(data, prefixes, 1024) {
            assert!(!topic.contains(['+', '#']) && !topic.starts_with('$'), "{topic:?}");
            assert!(!message.is_empty() && message.len() <= 1024);
            if prefixes.is_some() {
                assert!(topic.starts_with("qliksense/"), "{topic:?}");
            }
        }
    }
});
