//! A stand-in for the Qlik Sense Repository Service (QRS): HTTPS that requires a client
//! certificate signed by the test CA, checks the xrfkey (query == header, 16 alphanumerics)
//! and `X-Qlik-User`, and records task starts.

use crate::tls::{CertFiles, TestCa};
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// A task id this QRS answers "not started" for (all-zero session id).
pub const NOT_STARTED_TASK: &str = "00000000-aaaa-4bbb-8ccc-000000000000";

/// One accepted QRS call.
#[derive(Debug, Clone)]
pub struct QrsCall {
    pub path: String,
    pub query: HashMap<String, String>,
    pub headers: HashMap<String, String>,
    pub body: String,
}

pub struct FakeQrs {
    pub addr: SocketAddr,
    calls: Arc<Mutex<Vec<QrsCall>>>,
    handshake_failures: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeQrs {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeQrs {
    /// Serves with `server`'s certificate and accepts only clients certified by `ca`.
    pub async fn start(ca: &TestCa, server: &CertFiles) -> FakeQrs {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(&ca.ca_file)
            .expect("CA")
            .flatten()
        {
            roots.add(cert).expect("CA cert");
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .expect("client verifier");
        let certs: Vec<_> = CertificateDer::pem_file_iter(&server.cert)
            .expect("cert")
            .flatten()
            .collect();
        let key = PrivateKeyDer::from_pem_file(&server.key).expect("key");
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs, key)
            .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let calls = Arc::new(Mutex::new(Vec::new()));
        let handshake_failures = Arc::new(AtomicUsize::new(0));
        let app = axum::Router::new()
            .fallback(qrs_api)
            .with_state(calls.clone());
        let failures = handshake_failures.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, app, failures) = (acceptor.clone(), app.clone(), failures.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        failures.fetch_add(1, Ordering::SeqCst);
                        return;
                    };
                    let service = hyper_util::service::TowerToHyperService::new(app);
                    let _ = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
                });
            }
        });
        FakeQrs {
            addr,
            calls,
            handshake_failures,
            task,
        }
    }

    pub fn host(&self) -> String {
        "localhost".into()
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn calls(&self) -> Vec<QrsCall> {
        self.calls.lock().unwrap().clone()
    }

    /// TLS handshakes refused (e.g. a client certificate from another CA).
    pub fn handshake_failures(&self) -> usize {
        self.handshake_failures.load(Ordering::SeqCst)
    }
}

async fn qrs_api(State(calls): State<Arc<Mutex<Vec<QrsCall>>>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let query: HashMap<String, String> = url_query(parts.uri.query().unwrap_or_default());
    let headers: HashMap<String, String> = parts
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                v.to_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let key = query.get("xrfkey").cloned().unwrap_or_default();
    let valid_key = key.len() == 16 && key.chars().all(|c| c.is_ascii_alphanumeric());
    if !valid_key || headers.get("x-qlik-xrfkey") != Some(&key) {
        return (StatusCode::BAD_REQUEST, "xrfkey missing or not matching").into_response();
    }
    if !headers.contains_key("x-qlik-user") {
        return (StatusCode::FORBIDDEN, "X-Qlik-User missing").into_response();
    }
    if parts.method != axum::http::Method::POST {
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    }
    let path = parts.uri.path().to_owned();
    calls.lock().unwrap().push(QrsCall {
        path: path.clone(),
        query: query.clone(),
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    let session = |id: &str| {
        let value = if id == NOT_STARTED_TASK {
            "00000000-0000-0000-0000-000000000000".to_owned()
        } else {
            format!(
                "5e55{:0>4}-0000-4000-8000-{:0>12}",
                id.len(),
                calls.lock().unwrap().len()
            )
        };
        (
            StatusCode::CREATED,
            [("content-type", "application/json")],
            serde_json::json!({ "value": value }).to_string(),
        )
            .into_response()
    };
    let segments: Vec<&str> = path.trim_start_matches("/qrs/").split('/').collect();
    match segments.as_slice() {
        ["task", "start", "synchronous"] if query.contains_key("name") => session(&query["name"]),
        ["task", "start", "many"] => StatusCode::NO_CONTENT.into_response(),
        ["task", id, "start", "synchronous"] => session(id),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

fn url_query(q: &str) -> HashMap<String, String> {
    q.split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| {
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(&s.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (decode(k), decode(v))
        })
        .collect()
}
