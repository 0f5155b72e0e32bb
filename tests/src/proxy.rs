//! A TCP proxy in front of a real broker that can drop a healthy connection at the worst
//! moment: when the client's next MQTT PUBLISH arrives (the publish is not passed on, and both
//! sides of that connection are closed). The broker itself stays up, so what a test sees is the
//! client's own recovery: a new connection, the publish sent again.
//!
//! Client-to-broker bytes are read packet by packet (MQTT's fixed header and remaining length);
//! broker-to-client bytes are copied as they come.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub struct TcpProxy {
    pub port: u16,
    state: Arc<ProxyState>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct ProxyState {
    connections: AtomicUsize,
    drop_next_publish: AtomicBool,
    publishes_dropped: AtomicUsize,
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TcpProxy {
    /// Listens on a free loopback port and passes connections on to `127.0.0.1:target`.
    pub async fn start(target: u16) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let state = Arc::new(ProxyState::default());
        let shared = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                shared.connections.fetch_add(1, Ordering::SeqCst);
                let state = shared.clone();
                tokio::spawn(async move {
                    if let Ok(broker) = TcpStream::connect(("127.0.0.1", target)).await {
                        relay(client, broker, state).await;
                    }
                });
            }
        });
        TcpProxy { port, state, task }
    }

    /// The next PUBLISH from any client drops its connection instead of reaching the broker.
    pub fn drop_next_publish(&self) {
        self.state.drop_next_publish.store(true, Ordering::SeqCst);
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// PUBLISH packets dropped (with their connection) so far.
    pub fn publishes_dropped(&self) -> usize {
        self.state.publishes_dropped.load(Ordering::SeqCst)
    }
}

async fn relay(client: TcpStream, broker: TcpStream, state: Arc<ProxyState>) {
    let (mut client_rx, mut client_tx) = client.into_split();
    let (mut broker_rx, mut broker_tx) = broker.into_split();
    let down = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut broker_rx, &mut client_tx).await;
        let _ = client_tx.shutdown().await;
    });
    // Client to broker, a packet at a time.
    loop {
        let Some(packet) = read_packet(&mut client_rx).await else {
            break;
        };
        let is_publish = packet[0] >> 4 == 3;
        if is_publish && state.drop_next_publish.swap(false, Ordering::SeqCst) {
            state.publishes_dropped.fetch_add(1, Ordering::SeqCst);
            break;
        }
        if broker_tx.write_all(&packet).await.is_err() {
            break;
        }
    }
    down.abort();
    // Dropping both halves closes both connections.
}

/// One MQTT packet (fixed header, remaining length, body), or `None` at the end.
async fn read_packet(rx: &mut tokio::net::tcp::OwnedReadHalf) -> Option<Vec<u8>> {
    let mut packet = vec![rx.read_u8().await.ok()?];
    let mut length = 0usize;
    for shift in [0, 7, 14, 21] {
        let byte = rx.read_u8().await.ok()?;
        packet.push(byte);
        length |= usize::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            break;
        }
    }
    let start = packet.len();
    packet.resize(start + length, 0);
    rx.read_exact(&mut packet[start..]).await.ok()?;
    Some(packet)
}
