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
pub use signature::{sign, Matched, Secret, SignatureError, Verifier};
pub use topic::{topic_for, TopicError};
