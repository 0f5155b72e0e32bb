//! Serving HTTP/1 so that no client can hold the server up: the forwarder's webhook endpoint and
//! the listener's HTTP API (plain or TLS) and operations endpoints use this one loop.
//!
//! Promises: a TLS handshake must finish within [`HANDSHAKE_TIMEOUT`] and a request head arrive
//! within the header-read timeout (which also closes kept-alive connections idle that long);
//! at most `max_connections` are held ([`crate::admission`]): at the cap the oldest idle one is
//! closed for a new one, and when every held connection is in a request the new one gets 503;
//! accepting never waits for one client (each connection, handshake included, runs on its own
//! task); running out of file descriptors is a warning and a short pause, not a spin. At
//! shutdown idle connections close and requests under way get [`SHUTDOWN_GRACE`] to finish.

use crate::admission::{Admission, Admit, Ticket};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// How long a client has to complete its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long open requests may take to finish at shutdown.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// What one client may hold of the server.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most connections held at once; keep it well below the process's file-descriptor limit.
    pub max_connections: usize,
    /// How long a client may take to send a request head, and a kept-alive connection may sit
    /// idle.
    pub header_read_timeout: Duration,
}

/// Serves `app` on `listener` (with TLS when `tls` is given) until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    app: axum::Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let admission = Admission::new(limits.max_connections);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    let mut warned = Warned::default();
    tokio::pin!(shutdown);
    loop {
        let mut stream = tokio::select! {
            _ = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, or a connection aborted before it was taken:
                    // wait a moment instead of spinning, and say so now and then.
                    if warned.due() {
                        tracing::warn!(error = %e, held = admission.held(), "cannot accept connections");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        crate::set_nodelay(&mut stream);
        match admission.admit() {
            Admit::Yes { ticket, evicted } => {
                if evicted && warned.due() {
                    tracing::warn!(
                        max_connections = limits.max_connections,
                        "too many connections: closing the oldest idle ones to make room"
                    );
                }
                let (http, app, stopped, tls) =
                    (http.clone(), app.clone(), stopped.clone(), tls.clone());
                connections.spawn(async move {
                    match tls {
                        None => connection(http, stream, app, ticket, stopped).await,
                        Some(acceptor) => {
                            let handshake = tokio::select! {
                                done = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)) => done,
                                // Evicted while still saying hello.
                                _ = ticket.evict.notified() => return,
                            };
                            match handshake {
                                Ok(Ok(stream)) => {
                                    connection(http, stream, app, ticket, stopped).await
                                }
                                Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                                Err(_) => tracing::debug!("TLS handshake timed out"),
                            }
                        }
                    }
                });
            }
            Admit::Full => {
                if warned.due() {
                    tracing::warn!(
                        max_connections = limits.max_connections,
                        "too many connections, all busy: new ones are answered 503"
                    );
                }
                // (Over TLS the client sees the connection close: the 503 would need a
                // handshake the server cannot afford now.)
                if tls.is_none() {
                    connections.spawn(shed(stream));
                }
            }
        }
    }
    // Idle connections close now; requests in progress finish within the grace.
    let _ = stop.send(true);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    Ok(())
}

/// Rate-limits a warning to once every 10 s.
#[derive(Default)]
struct Warned(Option<tokio::time::Instant>);

impl Warned {
    fn due(&mut self) -> bool {
        let now = tokio::time::Instant::now();
        let due = self
            .0
            .is_none_or(|at| now.duration_since(at) >= Duration::from_secs(10));
        if due {
            self.0 = Some(now);
        }
        due
    }
}

/// Serves one connection until it closes, is evicted, or the server stops.
async fn connection<S>(
    http: hyper::server::conn::http1::Builder,
    stream: S,
    app: axum::Router,
    ticket: Ticket,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let busy = Arc::clone(&ticket.busy);
    let app = TowerToHyperService::new(app);
    let service = hyper::service::service_fn(move |request| {
        busy.store(true, Ordering::SeqCst);
        let answer = hyper::service::Service::call(&app, request);
        let busy = Arc::clone(&busy);
        async move {
            let response = answer.await;
            busy.store(false, Ordering::SeqCst);
            response
        }
    });
    let conn = http.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let stopping = tokio::select! {
        _ = conn.as_mut() => false,
        // Closed (dropped) to make room for a newer connection; it was not in a request.
        _ = ticket.evict.notified() => false,
        _ = stopped.wait_for(|s| *s) => true,
    };
    if stopping {
        conn.as_mut().graceful_shutdown();
        let _ = conn.await;
    }
    drop(ticket);
}

/// Answers a connection the server cannot hold with 503 and closes it, reading (and dropping) a
/// little of what the client sent so the close does not reset the connection before the answer
/// is read.
async fn shed(mut stream: tokio::net::TcpStream) {
    const BODY: &str = r#"{"error":"too many connections; try again"}"#;
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    let limit = Duration::from_secs(1);
    if tokio::time::timeout(limit, stream.write_all(answer.as_bytes()))
        .await
        .is_err()
    {
        return;
    }
    let _ = stream.shutdown().await;
    let mut buf = [0u8; 8192];
    let mut read = 0usize;
    let _ = tokio::time::timeout(limit, async {
        while read < 64 * 1024 {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => read += n,
            }
        }
    })
    .await;
}
