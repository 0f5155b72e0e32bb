//! From a received event to an alert: the [`pipeline`] records, decides and works through the
//! journal's events; [`enrich`] asks the Qlik Cloud API about a failed reload; [`alert_data`]
//! builds what templates render; [`one_alert`] makes it one alert per reload, not per event;
//! [`reconcile`] finds failed reloads that never arrived; [`script_log`] stores the reload's log
//! on disk.

pub mod alert_data;
pub mod enrich;
pub mod local_time;
pub mod one_alert;
pub mod pipeline;
pub mod reconcile;
