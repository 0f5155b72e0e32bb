//! The topic contract between the forwarder and the listener (design.md §3).
//!
//! - `com.qlik.v1.app.reload.finished` → `<prefix>/app/reload/<tenantId>` (Butler's topic);
//! - any other type → `<prefix>/event/<type>/<tenantId>`, the type verbatim.
//!
//! Promises: a tenant id or type that could change routing (`+`, `#`, `/`, NUL, other control
//! characters, empty) is refused, and so is a topic longer than [`MAX_TOPIC_BYTES`] (AWS IoT
//! Core's limit, the strictest of the brokers we support). The prefix is checked once, at start-up.

use crate::event::APP_RELOAD_FINISHED;

/// The default topic prefix, as in Butler.
pub const DEFAULT_PREFIX: &str = "qscloud";

/// AWS IoT Core accepts topics of at most 256 bytes; Mosquitto allows more, we allow no more.
pub const MAX_TOPIC_BYTES: usize = 256;

/// Why a value cannot go into a topic. Messages are safe to return to the sender.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("{0} is empty")]
    Empty(&'static str),
    #[error("{what} contains {found}, which would change MQTT routing")]
    Unsafe {
        what: &'static str,
        found: &'static str,
    },
    #[error("topic would be {0} bytes, more than the {MAX_TOPIC_BYTES} allowed")]
    TooLong(usize),
    #[error("topic prefix must not start or end with '/' or contain an empty level")]
    PrefixShape,
}

/// The topic an event is published on.
pub fn topic_for(prefix: &str, event_type: &str, tenant_id: &str) -> Result<String, TopicError> {
    check_level("event type", event_type)?;
    check_level("tenant id", tenant_id)?;
    // Built in one allocation of the exact size: this runs for every request.
    let parts: [&str; 5] = if event_type == APP_RELOAD_FINISHED {
        [prefix, "/app/reload/", tenant_id, "", ""]
    } else {
        [prefix, "/event/", event_type, "/", tenant_id]
    };
    let len: usize = parts.iter().map(|p| p.len()).sum();
    if len > MAX_TOPIC_BYTES {
        return Err(TopicError::TooLong(len));
    }
    let mut topic = String::with_capacity(len);
    parts.iter().for_each(|p| topic.push_str(p));
    Ok(topic)
}

/// Checks a configured prefix: one or more levels, no wildcards, no empty level.
pub fn check_prefix(prefix: &str) -> Result<(), TopicError> {
    if prefix.is_empty() {
        return Err(TopicError::Empty("topic prefix"));
    }
    for level in prefix.split('/') {
        if level.is_empty() {
            return Err(TopicError::PrefixShape);
        }
        check_level("topic prefix", level)?;
    }
    Ok(())
}

/// One topic level taken from an event: non-empty, no separator, wildcard or control character.
pub fn check_level(what: &'static str, value: &str) -> Result<(), TopicError> {
    if value.is_empty() {
        return Err(TopicError::Empty(what));
    }
    // Fast path for the usual ids and types: printable ASCII without a separator or wildcard.
    // Anything else (including any non-ASCII) takes the exact check below. A fold without an
    // early exit, so that the compiler can check many bytes at once.
    let plain = value.bytes().fold(true, |plain, b| {
        plain & (b' '..=b'~').contains(&b) & (b != b'/') & (b != b'+') & (b != b'#')
    });
    if plain {
        return Ok(());
    }
    for c in value.chars() {
        let found = match c {
            '/' => "'/'",
            '+' => "'+'",
            '#' => "'#'",
            '\0' => "NUL",
            c if c.is_control() => "a control character",
            _ => continue,
        };
        return Err(TopicError::Unsafe { what, found });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TENANT: &str = "Xy2Zq8hT4kLmN0pQrS7uVwA1bC3dE5fG";

    #[test]
    fn app_reload_goes_to_butlers_topic() {
        assert_eq!(
            topic_for("qscloud", APP_RELOAD_FINISHED, TENANT).unwrap(),
            format!("qscloud/app/reload/{TENANT}")
        );
    }

    #[test]
    fn other_types_keep_their_name() {
        assert_eq!(
            topic_for("qscloud", "com.qlik.v1.reload.finished", TENANT).unwrap(),
            format!("qscloud/event/com.qlik.v1.reload.finished/{TENANT}")
        );
        assert_eq!(
            topic_for("acme/qlik", "com.qlik.app.created", "t1").unwrap(),
            "acme/qlik/event/com.qlik.app.created/t1"
        );
    }

    #[test]
    fn unsafe_values_are_refused() {
        let cases = [
            ("a/#", "'/'"),
            ("+", "'+'"),
            ("#", "'#'"),
            ("a\0b", "NUL"),
            ("a\nb", "a control character"),
            ("a\u{7f}", "a control character"),
            ("a\u{85}", "a control character"),
        ];
        for (tenant, found) in cases {
            assert_eq!(
                topic_for("qscloud", APP_RELOAD_FINISHED, tenant),
                Err(TopicError::Unsafe {
                    what: "tenant id",
                    found
                }),
                "{tenant:?}"
            );
            assert_eq!(
                topic_for("qscloud", tenant, TENANT),
                Err(TopicError::Unsafe {
                    what: "event type",
                    found
                }),
                "{tenant:?}"
            );
        }
        assert_eq!(
            topic_for("qscloud", "t", ""),
            Err(TopicError::Empty("tenant id"))
        );
        assert_eq!(
            topic_for("qscloud", "", TENANT),
            Err(TopicError::Empty("event type"))
        );
    }

    #[test]
    fn every_ascii_character_is_judged_alike_alone_and_among_others() {
        for b in 0u8..=0x7f {
            let c = char::from(b);
            let refused = c.is_control() || matches!(c, '/' | '+' | '#');
            for value in [c.to_string(), format!("ab{c}cd"), format!("é{c}")] {
                assert_eq!(
                    check_level("tenant id", &value).is_err(),
                    refused,
                    "{value:?}"
                );
            }
        }
    }

    #[test]
    fn unicode_is_allowed() {
        assert_eq!(
            topic_for("q", "type", "tenänt-✓").unwrap(),
            "q/event/type/tenänt-✓"
        );
    }

    #[test]
    fn topic_length_is_capped() {
        let long_type = "t".repeat(MAX_TOPIC_BYTES);
        assert!(matches!(
            topic_for("qscloud", &long_type, TENANT),
            Err(TopicError::TooLong(_))
        ));
        // Exactly at the limit is fine.
        let fixed = "qscloud/event//x".len();
        let fits = "t".repeat(MAX_TOPIC_BYTES - fixed);
        assert_eq!(
            topic_for("qscloud", &fits, "x").unwrap().len(),
            MAX_TOPIC_BYTES
        );
    }

    #[test]
    fn prefixes() {
        assert!(check_prefix("qscloud").is_ok());
        assert!(check_prefix("acme/prod/qscloud").is_ok());
        assert_eq!(check_prefix(""), Err(TopicError::Empty("topic prefix")));
        assert_eq!(check_prefix("/qscloud"), Err(TopicError::PrefixShape));
        assert_eq!(check_prefix("qscloud/"), Err(TopicError::PrefixShape));
        assert_eq!(check_prefix("a//b"), Err(TopicError::PrefixShape));
        assert!(matches!(
            check_prefix("qscloud/#"),
            Err(TopicError::Unsafe { .. })
        ));
        assert!(matches!(check_prefix("q+"), Err(TopicError::Unsafe { .. })));
    }
}
