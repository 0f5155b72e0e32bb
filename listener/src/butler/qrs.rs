//! Starting Qlik Sense Enterprise tasks through the Repository Service (QRS) API.
//!
//! Promises: HTTPS with the client certificate exported from the QMC and the CA (verified
//! unless `rejectUnauthorized: false`); a fresh 16-character xrfkey in both the query and the
//! `X-Qlik-Xrfkey` header on every call; task ids and names are encoded, so a payload can never
//! change the path or add query parameters; every call is bounded in time.

use crate::config::QrsConfig;
use qlik_events::tls::{self, SettingNames, TlsFiles};
use std::time::Duration;

const TLS_SETTINGS: SettingNames<'static> = SettingNames {
    ca_file: "Butler.cert.clientCertCA",
    cert_file: "Butler.cert.clientCert",
    key_file: "Butler.cert.clientCertKey",
};

/// What to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskRequest {
    Id(String),
    Name(String),
    Many(Vec<String>),
}

/// How a start went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskOutcome {
    /// Started; the execution session id (synchronous start), if the QRS gave one.
    Started(Option<String>),
    /// The QRS answered but did not start it (all-zero session id).
    NotStarted,
    Failed(String),
}

pub struct Qrs {
    http: reqwest::Client,
    base: url::Url,
    headers: Vec<(String, String)>,
}

impl Qrs {
    pub fn new(config: &QrsConfig) -> anyhow::Result<Qrs> {
        if config.accept_invalid_certs {
            tracing::warn!(
                "Butler.configQRS.rejectUnauthorized is false: the QRS certificate is NOT verified"
            );
        }
        let files = TlsFiles {
            ca_file: config.ca_cert.as_deref(),
            client: Some((config.client_cert.as_path(), config.client_key.as_path())),
            insecure_skip_verify: config.accept_invalid_certs,
        };
        let tls = tls::client_config(files, TLS_SETTINGS)?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(Duration::from_secs(60))
            .connect_timeout(Duration::from_secs(10))
            .build()?;
        Ok(Qrs {
            http,
            base: config.base_url.clone(),
            headers: config.headers.clone(),
        })
    }

    pub async fn start(&self, request: &TaskRequest) -> TaskOutcome {
        let key = xrfkey();
        let mut url = self.base.clone();
        let body = match request {
            TaskRequest::Id(id) => {
                url.set_path(&format!("/qrs/task/{id}/start/synchronous"));
                None
            }
            TaskRequest::Name(name) => {
                url.set_path("/qrs/task/start/synchronous");
                url.query_pairs_mut().append_pair("name", name);
                None
            }
            TaskRequest::Many(ids) => {
                url.set_path("/qrs/task/start/many");
                Some(serde_json::to_string(ids).unwrap_or_else(|_| "[]".into()))
            }
        };
        url.query_pairs_mut().append_pair("xrfkey", &key);
        let mut call = self
            .http
            .post(url)
            .header("X-Qlik-Xrfkey", &key)
            .header("Content-Type", "application/json")
            .body(body.unwrap_or_default());
        for (name, value) in &self.headers {
            call = call.header(name, value);
        }
        let response = match call.send().await {
            Ok(r) => r,
            Err(e) => return TaskOutcome::Failed(describe(&e)),
        };
        let status = response.status();
        if !status.is_success() {
            return TaskOutcome::Failed(format!("QRS answered HTTP {}", status.as_u16()));
        }
        if matches!(request, TaskRequest::Many(_)) {
            return TaskOutcome::Started(None);
        }
        // Synchronous starts answer {"value": "<execution session id>"}.
        let session = response
            .json::<serde_json::Value>()
            .await
            .ok()
            .and_then(|v| v["value"].as_str().map(str::to_owned));
        match session {
            Some(s) if s.chars().all(|c| c == '0' || c == '-') => TaskOutcome::NotStarted,
            other => TaskOutcome::Started(other),
        }
    }
}

fn describe(e: &reqwest::Error) -> String {
    // Name the TLS problem (a wrong certificate is the usual one), not just "request failed".
    let mut source: Option<&dyn std::error::Error> = Some(e);
    let mut deepest = String::new();
    while let Some(err) = source {
        deepest = err.to_string();
        source = err.source();
    }
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    format!("QRS: {what}: {deepest}")
}

/// 16 characters from `[0-9a-zA-Z]`: Qlik's CSRF token, fresh per call.
pub fn xrfkey() -> String {
    (0..16).map(|_| fastrand::alphanumeric()).collect()
}

/// Reads a task-start message: a task id (as Butler), or JSON `{"taskId": …}`,
/// `{"taskName": …}`, `{"taskIds": […]}` or `[…ids]`. `Err` says why it is not one.
pub fn parse_request(payload: &[u8]) -> Result<TaskRequest, String> {
    let text = std::str::from_utf8(payload)
        .map_err(|_| "payload is not UTF-8".to_owned())?
        .trim();
    if is_uuid(text) {
        return Ok(TaskRequest::Id(text.to_ascii_lowercase()));
    }
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|_| "payload is neither a task id (UUID) nor JSON".to_owned())?;
    let ids = |items: &Vec<serde_json::Value>| -> Result<Vec<String>, String> {
        if items.is_empty() || items.len() > 100 {
            return Err("a list of 1 to 100 task ids is expected".into());
        }
        items
            .iter()
            .map(|v| match v.as_str() {
                Some(s) if is_uuid(s) => Ok(s.to_ascii_lowercase()),
                _ => Err("every task id must be a UUID".to_owned()),
            })
            .collect()
    };
    match &value {
        serde_json::Value::Array(items) => ids(items).map(TaskRequest::Many),
        serde_json::Value::Object(o) => {
            if let Some(id) = o.get("taskId") {
                match id.as_str() {
                    Some(s) if is_uuid(s) => Ok(TaskRequest::Id(s.to_ascii_lowercase())),
                    _ => Err("taskId must be a UUID".into()),
                }
            } else if let Some(name) = o.get("taskName") {
                match name.as_str().map(str::trim) {
                    Some(n)
                        if !n.is_empty() && n.len() <= 256 && !n.chars().any(char::is_control) =>
                    {
                        Ok(TaskRequest::Name(n.to_owned()))
                    }
                    _ => Err("taskName must be a non-empty name without control characters".into()),
                }
            } else if let Some(serde_json::Value::Array(items)) = o.get("taskIds") {
                ids(items).map(TaskRequest::Many)
            } else {
                Err("JSON payload needs taskId, taskName or taskIds".into())
            }
        }
        _ => Err("payload is neither a task id (UUID) nor a JSON object or list".into()),
    }
}

fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "f1a3e5b7-1c2d-4e5f-8a9b-0c1d2e3f4a5b";

    #[test]
    fn task_start_payloads() {
        assert_eq!(parse_request(ID.as_bytes()), Ok(TaskRequest::Id(ID.into())));
        assert_eq!(
            parse_request(format!(" {}\n", ID.to_uppercase()).as_bytes()),
            Ok(TaskRequest::Id(ID.into()))
        );
        assert_eq!(
            parse_request(format!(r#"{{"taskId":"{ID}"}}"#).as_bytes()),
            Ok(TaskRequest::Id(ID.into()))
        );
        assert_eq!(
            parse_request(br#"{"taskName":"Reload sales"}"#),
            Ok(TaskRequest::Name("Reload sales".into()))
        );
        assert_eq!(
            parse_request(format!(r#"["{ID}","{ID}"]"#).as_bytes()),
            Ok(TaskRequest::Many(vec![ID.into(), ID.into()]))
        );
        assert_eq!(
            parse_request(format!(r#"{{"taskIds":["{ID}"]}}"#).as_bytes()),
            Ok(TaskRequest::Many(vec![ID.into()]))
        );
        for bad in [
            &b""[..],
            b"not a task",
            b"../../qrs/about",
            b"f1a3e5b7-1c2d-4e5f-8a9b-0c1d2e3f4a5b?name=x",
            b"f1a3e5b7/1c2d-4e5f-8a9b-0c1d2e3f4a5b",
            br#"{"taskId":"../x"}"#,
            br#"{"taskName":""}"#,
            br#"{"taskName":"a\nb"}"#,
            br#"{"other":1}"#,
            b"[]",
            br#"["x"]"#,
            b"42",
            &[0xff, 0xfe],
        ] {
            assert!(
                parse_request(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn xrfkeys_are_16_alphanumerics_and_fresh() {
        let a = xrfkey();
        let b = xrfkey();
        assert_eq!(a.len(), 16);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
    }
}
