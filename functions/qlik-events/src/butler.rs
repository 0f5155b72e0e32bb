//! A body Butler v16 can read, made from a CloudEvents 1.0 event.
//!
//! Why: Butler's Qlik Cloud handler only acts on a message whose `eventType` is
//! `com.qlik.v1.app.reload.finished`, and reads the tenant, app, owner and user from the legacy
//! `extensions` object (Butler's `src/lib/qscloud/mqtt_event_app_reload_finished.js`). Qlik sends
//! CloudEvents-only bodies since October 2026, so an unchanged Butler silently ignores them. Adding
//! the legacy envelope fields back makes them readable again (design.md §2 has the field table).
//!
//! Promises:
//! - legacy and hybrid bodies already carry the legacy fields: [`legacy_body`] returns `None` and
//!   they are forwarded as they are;
//! - for a CloudEvents body, the output is the original text with the legacy members appended
//!   inside its top-level object: every original byte, `data` included, stays as it was;
//! - a member the body already has is never written a second time (no duplicate keys), and an
//!   optional field the event does not carry is left out rather than written empty;
//! - the output no longer matches the `Qlik-Signature` of the original: callers must not send
//!   that signature with it (the forwarder marks it with [`REWRITTEN_PROPERTY`] instead).

use crate::event::{Event, Format};
use serde_json::value::RawValue;
use std::collections::HashMap;

/// The MQTT 5 user property that marks a payload rewritten for Butler; its value is
/// [`REWRITTEN_VALUE`]. A message with it carries no `qlik-signature`.
pub const REWRITTEN_PROPERTY: &str = "qlik-relay-rewritten";
/// The value of [`REWRITTEN_PROPERTY`]: the reader the body was made for.
pub const REWRITTEN_VALUE: &str = "butler-v16";

/// `eventTypeVersion` when the event does not say: what Qlik's legacy bodies carried.
const DEFAULT_EVENT_TYPE_VERSION: &str = "1.0.0";

/// The legacy members to add to a CloudEvents body, in the order they are written.
///
/// `source` is the same member in both formats, so it is already there when the event has one.
pub fn legacy_members(event: &Event<'_>, body: &[u8]) -> Vec<(&'static str, serde_json::Value)> {
    use serde_json::Value;
    // The body's own top-level members, values unparsed.
    let present: HashMap<String, &RawValue> = serde_json::from_slice(body).unwrap_or_default();
    // CloudEvents extension attributes are plain top-level strings.
    let attribute = |name: &str| -> Option<String> {
        present
            .get(name)
            .and_then(|raw| serde_json::from_str::<String>(raw.get()).ok())
    };
    let text = |v: &str| Value::String(v.to_owned());
    let extensions: serde_json::Map<String, Value> = [
        ("tenantId", Some(event.tenant_id.as_ref())),
        ("topLevelResourceId", event.top_level_resource_id.as_deref()),
        ("userId", event.user_id.as_deref()),
        ("ownerId", event.owner_id.as_deref()),
        ("spaceId", event.space_id.as_deref()),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.map(|v| (k.to_owned(), text(v))))
    .collect();
    let members: [(&'static str, Option<Value>); 7] = [
        ("cloudEventsVersion", Some(text("0.1"))),
        ("eventId", Some(text(&event.id))),
        ("eventTime", event.time.as_deref().map(text)),
        ("eventType", Some(text(&event.event_type))),
        (
            "eventTypeVersion",
            Some(text(
                &attribute("eventtypeversion")
                    .unwrap_or_else(|| DEFAULT_EVENT_TYPE_VERSION.to_owned()),
            )),
        ),
        (
            "contentType",
            Some(text(
                &attribute("datacontenttype").unwrap_or_else(|| "application/json".to_owned()),
            )),
        ),
        ("extensions", Some(Value::Object(extensions))),
    ];
    members
        .into_iter()
        .filter(|(name, _)| !present.contains_key(*name))
        .filter_map(|(name, value)| value.map(|v| (name, v)))
        .collect()
}

/// The body in a form Butler v16 reads, or `None` when `body` already has the legacy fields
/// (legacy and hybrid events: forward them unchanged). `event` must be `body` parsed.
pub fn legacy_body(event: &Event<'_>, body: &[u8]) -> Option<Vec<u8>> {
    if event.format != Format::CloudEvents {
        return None;
    }
    // A parsed event is a JSON object: its last non-blank byte is the closing brace.
    let end = body.iter().rposition(|b| !b.is_ascii_whitespace())?;
    if body[end] != b'}' {
        return None;
    }
    let before = &body[..end];
    let empty_object = before
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .is_some_and(|i| before[i] == b'{');
    let mut out = Vec::with_capacity(body.len() + 512);
    out.extend_from_slice(before);
    for (i, (name, value)) in legacy_members(event, body).into_iter().enumerate() {
        if i > 0 || !empty_object {
            out.push(b',');
        }
        // Names are constants, values are serde_json values: writing them cannot fail.
        out.extend_from_slice(b"\"");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"\":");
        out.extend_from_slice(value.to_string().as_bytes());
    }
    out.extend_from_slice(&body[end..]);
    Some(out)
}

/// Whether Butler v16 can read `body` (the copy it would get): a top-level `eventType` string
/// and an `extensions` object with a `tenantId` string, which its handler reads before anything
/// else. `Err` says what is missing (for the log). Pure.
pub fn butler_can_read(body: &[u8]) -> Result<(), String> {
    // Only the two members Butler needs are parsed; the rest (`data`) stays raw.
    let raw: HashMap<String, &RawValue> =
        serde_json::from_slice(body).map_err(|_| "the body is not a JSON object".to_owned())?;
    let top: HashMap<&str, serde_json::Value> = ["eventType", "extensions"]
        .into_iter()
        .filter_map(|k| Some((k, serde_json::from_str(raw.get(k)?.get()).ok()?)))
        .collect();
    let shape = |v: Option<&serde_json::Value>| match v {
        None => "absent",
        Some(serde_json::Value::Null) => "null",
        Some(serde_json::Value::String(_)) => "text",
        Some(serde_json::Value::Object(_)) => "an object",
        Some(_) => "another kind of value",
    };
    match top.get("eventType") {
        Some(serde_json::Value::String(_)) => {}
        other => return Err(format!("eventType is {}, not text", shape(other))),
    }
    let extensions = top.get("extensions");
    match extensions.and_then(|e| e.get("tenantId")) {
        Some(serde_json::Value::String(_)) => Ok(()),
        None if !matches!(extensions, Some(serde_json::Value::Object(_))) => Err(format!(
            "extensions is {}, not an object with tenantId",
            shape(extensions)
        )),
        other => Err(format!("extensions.tenantId is {}, not text", shape(other))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    const CLOUDEVENTS: &str =
        include_str!("../../../testdata/events/app-reload-failed.cloudevents.json");
    const HYBRID: &str =
        include_str!("../../../testdata/events/app-reload-failed.legacy-hybrid.json");
    const LEGACY: &str = include_str!("../../../testdata/events/app-reload-failed.legacy.json");

    fn rewrite(body: &str) -> Option<Value> {
        let event = Event::parse(body.as_bytes()).unwrap();
        legacy_body(&event, body.as_bytes()).map(|b| {
            // The output parses as an event again, agreeing with itself (a hybrid body).
            let again = Event::parse(&b).expect("the rewritten body is a valid event");
            assert_eq!(again.format, Format::Hybrid);
            assert_eq!(again.id, event.id);
            serde_json::from_slice(&b).unwrap()
        })
    }

    /// Every field Butler v16 reads from the envelope, with the CloudEvents field it comes from.
    #[test]
    fn every_field_butler_reads_comes_from_the_cloudevents_field() {
        let source: Value = serde_json::from_str(CLOUDEVENTS).unwrap();
        let out = rewrite(CLOUDEVENTS).unwrap();
        let table = [
            ("/eventType", "/type"),
            ("/eventId", "/id"),
            ("/eventTime", "/time"),
            ("/source", "/source"),
            ("/contentType", "/datacontenttype"),
            ("/extensions/tenantId", "/tenantid"),
            ("/extensions/topLevelResourceId", "/toplevelresourceid"),
            ("/extensions/userId", "/userid"),
            ("/extensions/ownerId", "/ownerid"),
            ("/extensions/spaceId", "/spaceid"),
            ("/data", "/data"),
        ];
        for (legacy, ce) in table {
            let want = source
                .pointer(ce)
                .unwrap_or_else(|| panic!("fixture has {ce}"));
            assert_eq!(out.pointer(legacy), Some(want), "{legacy} from {ce}");
        }
        assert_eq!(out["cloudEventsVersion"], "0.1");
        assert_eq!(out["eventTypeVersion"], "1.0.0");
        // Butler's handler reads these from `data`: still there.
        for field in ["status", "reloadId", "name", "errors", "peakMemoryBytes"] {
            assert_eq!(out["data"][field], source["data"][field], "data.{field}");
        }
    }

    #[test]
    fn the_original_bytes_stay_as_they_were() {
        let event = Event::parse(CLOUDEVENTS.as_bytes()).unwrap();
        let out = legacy_body(&event, CLOUDEVENTS.as_bytes()).unwrap();
        let end = CLOUDEVENTS.trim_end().len() - 1;
        assert!(out.starts_with(&CLOUDEVENTS.as_bytes()[..end]));
        assert!(out.ends_with(&CLOUDEVENTS.as_bytes()[end..]));
        // So `data` is byte for byte the original's.
        let data = event.data().unwrap().get();
        let count = |hay: &[u8]| {
            hay.windows(data.len())
                .filter(|w| *w == data.as_bytes())
                .count()
        };
        assert_eq!(count(&out), 1);
    }

    #[test]
    fn legacy_and_hybrid_bodies_are_left_alone() {
        assert_eq!(rewrite(HYBRID), None);
        assert_eq!(rewrite(LEGACY), None);
    }

    #[test]
    fn absent_optional_fields_are_left_out() {
        let body =
            r#"{"specversion":"1.0.2","id":"e1","type":"com.qlik.app.created","tenantid":"t1"}"#;
        let out = rewrite(body).unwrap();
        assert_eq!(
            out,
            json!({
                "specversion": "1.0.2", "id": "e1", "type": "com.qlik.app.created", "tenantid": "t1",
                "cloudEventsVersion": "0.1", "eventId": "e1", "eventType": "com.qlik.app.created",
                "eventTypeVersion": "1.0.0", "contentType": "application/json",
                "extensions": { "tenantId": "t1" }
            })
        );
    }

    #[test]
    fn members_already_present_are_not_written_twice() {
        // A CloudEvents body may carry an `eventtypeversion` extension attribute and, oddly, a
        // legacy member of its own: neither is duplicated nor contradicted.
        let body = "{\"id\":\"e1\",\"type\":\"x.y\",\"tenantid\":\"t1\",\"eventtypeversion\":\"2.0.0\",\n\"contentType\":\"text/plain\"}\n";
        let event = Event::parse(body.as_bytes()).unwrap();
        let out = legacy_body(&event, body.as_bytes()).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.matches("\"contentType\"").count(), 1, "{text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["contentType"], "text/plain");
        assert_eq!(v["eventTypeVersion"], "2.0.0");
        assert!(text.ends_with("}\n"), "trailing white space kept: {text:?}");
    }

    #[test]
    fn escaped_values_are_written_escaped() {
        let body = r#"{"id":"e\"1","type":"t","tenantid":"a\\b","userid":"\u00e9"}"#;
        let out = rewrite(body).unwrap();
        assert_eq!(out["eventId"], "e\"1");
        assert_eq!(out["extensions"]["tenantId"], "a\\b");
        assert_eq!(out["extensions"]["userId"], "é");
    }

    #[test]
    fn bodies_butler_cannot_read_are_named() {
        let ok =
            br#"{"eventType":"com.qlik.v1.app.reload.finished","extensions":{"tenantId":"T"}}"#;
        assert_eq!(butler_can_read(ok), Ok(()));
        for (body, says) in [
            (
                &br#"{"eventType":null,"extensions":{"tenantId":"T"}}"#[..],
                "eventType is null",
            ),
            (br#"{"extensions":{"tenantId":"T"}}"#, "eventType is absent"),
            (
                br#"{"eventType":"x","extensions":null}"#,
                "extensions is null",
            ),
            (
                br#"{"eventType":"x","extensions":{}}"#,
                "extensions.tenantId is absent",
            ),
            (br#"{"eventType":"x"}"#, "extensions is absent"),
            (
                br#"{"eventType":"x","extensions":{"tenantId":7}}"#,
                "extensions.tenantId is another kind",
            ),
            (br#"[1]"#, "not a JSON object"),
        ] {
            let e = butler_can_read(body).unwrap_err();
            assert!(e.contains(says), "{e}");
        }
    }
}
