//! The event contract shared by the forwarder (`qlik-webhook`) and the listener.
//!
//! Pure logic, no I/O: [`signature`] checks `Qlik-Signature`, [`event`] turns legacy, hybrid
//! and CloudEvents 1.0 bodies into one typed [`Event`], [`topic`] maps an event to its MQTT
//! topic, and [`butler`] adds the legacy fields Butler v16 reads to a CloudEvents body.
//! See `design.md` §2–3 for the facts these modules encode.

pub mod butler;
pub mod event;
pub mod signature;
#[cfg(feature = "tls")]
pub mod tls;
pub mod topic;

pub use event::{Event, EventError, Format, Reload, ReloadOutcome};

/// The largest event body the pipeline carries, end to end: the ceiling of the forwarder's
/// `MAX_BODY_BYTES`, and what the listener records. A bigger message that reaches the listener
/// anyway is recorded as rejected and acknowledged. The broker's message size limit must be at
/// least this plus [`MQTT_OVERHEAD_BYTES`] (`infra/mosquitto/mosquitto.conf`).
pub const MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;
/// What an MQTT packet adds to its payload here (fixed header, topic, `qlik-signature` and other
/// properties), with room to spare.
pub const MQTT_OVERHEAD_BYTES: usize = 64 * 1024;
pub use signature::{sign, Matched, Secret, SignatureError, Verifier};
pub use topic::{topic_for, TopicError};
