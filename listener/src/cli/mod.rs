//! What the binary's subcommands other than `run` do: `history` (the journal for operators),
//! `webhook` (the Qlik Cloud webhook that feeds the forwarder), `preview` (what each alert
//! channel would send), `service` (the listener as a Windows service) and `broker` (an embedded MQTT
//! broker for trying things on one machine).

#[cfg(feature = "embedded-broker")]
pub mod broker;
pub mod history;
pub mod preview;
pub mod service;
pub mod webhooks;
