//! Test harness for the relay: starts real parts on free loopback ports and stands in, over
//! HTTP, for the services we cannot run here (the Lambda Runtime API, the IoT data plane).
//!
//! Everything waits on events with a deadline ([`wait::until`]), never on fixed sleeps, and
//! everything it starts is stopped when its handle is dropped.

pub mod fakes;
pub mod fixtures;
pub mod mosquitto;
pub mod moto;
pub mod mqtt;
pub mod postgres;
pub mod process;
pub mod proxy;
pub mod qlik_cloud;
pub mod qrs;
pub mod smtp;
pub mod tls;
pub mod wait;

/// A free TCP port on 127.0.0.1, outside the range the OS gives sockets bound to port 0.
pub fn free_port() -> u16 {
    // Below the kernel's ephemeral range (32768–60999 by default), where `bind(0)` and every
    // outgoing connection take their ports: a port picked here and released (for a broker to
    // bind, or to bind again after a restart) cannot be taken meanwhile by a client socket of
    // another test; only another pick here could, one chance in thousands, and the bind check
    // rules out a port in use now.
    let (low, high) = ephemeral_range();
    let (from, to) = if low > 20_000 {
        (10_000, low - 1)
    } else {
        (high + 1, 65_000)
    };
    for _ in 0..1000 {
        let port = fastrand::u16(from..=to);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port")
}

/// The kernel's ephemeral port range (Linux's default when it cannot be read).
fn ephemeral_range() -> (u16, u16) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| {
            let mut parts = t.split_whitespace().map(|p| p.parse::<u16>().ok());
            Some((parts.next()??, parts.next()??))
        })
        .unwrap_or((32_768, 60_999))
}

/// An id no other test process uses at the same time (MQTT client ids: a broker disconnects
/// the older of two clients with the same id).
pub fn unique_id(prefix: &str) -> String {
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!(
        "{prefix}-{}-{n}-{:08x}",
        std::process::id(),
        fastrand::u32(..)
    )
}
