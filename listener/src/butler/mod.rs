//! Butler's integration with Qlik Sense Enterprise: task starts from MQTT ([`tasks`]) through
//! the QRS API ([`qrs`]), and the HTTP API with Butler's publish endpoint ([`rest`]).

pub mod qrs;
pub mod rest;
pub mod tasks;
