//! The test stand-in for the Qlik Cloud REST API as a program, for the demo: serves a sample
//! app, owner and script log for any app id until stopped.
//!
//! Environment: `FAKE_QLIK_TENANT_ID` (the tenant id it reports), `FAKE_QLIK_TOKEN` (the bearer
//! token it accepts), `FAKE_QLIK_FAILED_RELOADS` (comma-separated reload ids the reloads API
//! lists as failed a minute ago: reloads whose events never arrived, for reconciliation to
//! find). Prints `fake Qlik Cloud API on http://127.0.0.1:<port>` when ready.

use relay_tests::fakes::FakeQlikCloud;

#[tokio::main]
async fn main() {
    let tenant = std::env::var("FAKE_QLIK_TENANT_ID")
        .unwrap_or_else(|_| relay_tests::fixtures::TENANT.to_owned());
    let token = std::env::var("FAKE_QLIK_TOKEN").unwrap_or_else(|_| "demo-api-key".to_owned());
    let api = FakeQlikCloud::start(&tenant, &token).await;
    let a_minute_ago = (time::OffsetDateTime::now_utc() - time::Duration::minutes(1))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    for id in std::env::var("FAKE_QLIK_FAILED_RELOADS")
        .unwrap_or_default()
        .split(',')
        .filter(|id| !id.is_empty())
    {
        api.add_reload(serde_json::json!({
            "id": id, "appId": "5e4d3c2b-1a09-4f8e-b7d6-c5b4a3928170", "tenantId": tenant,
            "type": "chronos", "status": "FAILED", "partial": false,
            "creationTime": a_minute_ago, "startTime": a_minute_ago, "endTime": a_minute_ago,
            "errorCode": "EngineReloadFailed", "errorMessage": "Connection to 'ERP' timed out",
        }));
    }
    println!("fake Qlik Cloud API on {}", api.url());
    let _ = tokio::signal::ctrl_c().await;
}
