//! A task-start message as Butler's MQTT integration receives it: a task id (UUID) or JSON.
//! Accepted ids are UUIDs only, so nothing else reaches a QRS URL path; names (sent in a
//! URL-encoded filter) are trimmed, short and free of control characters.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qlik_listener::parse::TaskRequest;

fuzz_target!(|data: &[u8]| {
    let uuid = |s: &str| {
        s.len() == 36
            && s.chars()
                .enumerate()
                .all(|(i, c)| matches!(i, 8 | 13 | 18 | 23) == (c == '-') && (c == '-' || c.is_ascii_hexdigit()))
    };
    match qlik_listener::parse::parse_request(data) {
        Ok(TaskRequest::Id(id)) => assert!(uuid(&id), "{id:?}"),
        Ok(TaskRequest::Many(ids)) => {
            assert!((1..=100).contains(&ids.len()));
            assert!(ids.iter().all(|id| uuid(id)), "{ids:?}");
        }
        Ok(TaskRequest::Name(name)) => {
            assert!(!name.is_empty() && name.len() <= 256 && name.trim() == name);
            assert!(!name.chars().any(char::is_control), "{name:?}");
        }
        Err(_) => {}
    }
});
