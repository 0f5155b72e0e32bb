//! The test stand-in for the Qlik Cloud REST API as a program, for the demo: serves a sample
//! app, owner and script log for any app id until stopped.
//!
//! Environment: `FAKE_QLIK_TENANT_ID` (the tenant id it reports), `FAKE_QLIK_TOKEN` (the bearer
//! token it accepts). Prints `fake Qlik Cloud API on http://127.0.0.1:<port>` when ready.

use relay_tests::fakes::FakeQlikCloud;

#[tokio::main]
async fn main() {
    let tenant = std::env::var("FAKE_QLIK_TENANT_ID")
        .unwrap_or_else(|_| relay_tests::fixtures::TENANT.to_owned());
    let token = std::env::var("FAKE_QLIK_TOKEN").unwrap_or_else(|_| "demo-api-key".to_owned());
    let api = FakeQlikCloud::start(&tenant, &token).await;
    println!("fake Qlik Cloud API on {}", api.url());
    let _ = tokio::signal::ctrl_c().await;
}
