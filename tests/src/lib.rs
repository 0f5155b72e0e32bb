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
pub mod process;
pub mod qrs;
pub mod smtp;
pub mod tls;
pub mod wait;

/// Asks the OS for a free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port")
}
