//! The example events in `testdata/events`, and signing them as Qlik would.

use qlik_events::Secret;

/// The secret the tests sign with (Qlik's secrets are 32–64 characters).
pub const SECRET: &str = "fixture-secret-0123456789abcdef0123456789";
/// The tenant of every fixture.
pub const TENANT: &str = "Xy2Zq8hT4kLmN0pQrS7uVwA1bC3dE5fG";

/// Each fixture with the topic it must be published on.
pub const FIXTURES: &[(&str, &str)] = &[
    (
        "app-reload-failed.cloudevents.json",
        "qscloud/app/reload/Xy2Zq8hT4kLmN0pQrS7uVwA1bC3dE5fG",
    ),
    (
        "app-reload-failed.legacy-hybrid.json",
        "qscloud/app/reload/Xy2Zq8hT4kLmN0pQrS7uVwA1bC3dE5fG",
    ),
    (
        "app-reload-failed.legacy.json",
        "qscloud/app/reload/Xy2Zq8hT4kLmN0pQrS7uVwA1bC3dE5fG",
    ),
    (
        "app-reload-ok.cloudevents.json",
        "qscloud/app/reload/Xy2Zq8hT4kLmN0pQrS7uVwA1bC3dE5fG",
    ),
    (
        "reload-failed.cloudevents.json",
        "qscloud/event/com.qlik.v1.reload.finished/Xy2Zq8hT4kLmN0pQrS7uVwA1bC3dE5fG",
    ),
    (
        "app-created.cloudevents.json",
        "qscloud/event/com.qlik.app.created/Xy2Zq8hT4kLmN0pQrS7uVwA1bC3dE5fG",
    ),
];

pub fn testdata_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata")
}

/// The bytes of `testdata/events/<name>`.
pub fn event(name: &str) -> Vec<u8> {
    let path = testdata_dir().join("events").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The `Qlik-Signature` for `body` with [`SECRET`].
pub fn sign(body: &[u8]) -> String {
    qlik_events::sign(&Secret::new(SECRET), body)
}

/// A minimal signed-able event with the given id, type and tenant.
pub fn minimal_event(id: &str, event_type: &str, tenant: &str) -> Vec<u8> {
    serde_json::json!({
        "specversion": "1.0.2",
        "id": id,
        "type": event_type,
        "source": "com.qlik/test",
        "time": "2026-11-20T06:14:52Z",
        "tenantid": tenant,
        "data": {"status": "error"}
    })
    .to_string()
    .into_bytes()
}
