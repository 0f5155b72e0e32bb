//! `moto_server` (PyPI `moto[server]`): a local stand-in for AWS APIs, used for SSM Parameter
//! Store and Secrets Manager.

use crate::wait;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

pub struct Moto {
    pub port: u16,
    _child: Child,
}

impl Moto {
    pub async fn start() -> Moto {
        let port = crate::free_port();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start `moto_server` ({e}); install it: pip install 'moto[server]'")
            });
        wait::until(
            Duration::from_secs(60),
            "moto_server to listen",
            || async move { wait::port_open(port).await.then_some(()) },
        )
        .await;
        Moto {
            port,
            _child: child,
        }
    }

    /// The value for `AWS_ENDPOINT_URL`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Calls an AWS JSON 1.1 API action (`AmazonSSM.PutParameter`, `secretsmanager.CreateSecret`).
    /// moto routes by the service named in the credential scope, so that is derived here.
    pub async fn call(&self, target: &str, body: serde_json::Value) -> serde_json::Value {
        let service = match target.split('.').next() {
            Some("AmazonSSM") => "ssm",
            Some(other) => other,
            None => target,
        };
        let response = reqwest::Client::new()
            .post(self.url())
            .header("content-type", "application/x-amz-json-1.1")
            .header("x-amz-target", target)
            .header(
                "authorization",
                format!("AWS4-HMAC-SHA256 Credential=test/20261123/eu-west-1/{service}/aws4_request, SignedHeaders=host, Signature=0"),
            )
            .body(body.to_string())
            .send()
            .await
            .expect("moto request");
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        assert!(status.is_success(), "{target}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null)
    }
}
