//! The alert data: what alert templates see (as JSON, with Butler's variable names) and what the
//! journal keeps per event. The contract between the events that build it (`events::alert_data`)
//! and the channels that render and send it (`notify`): neither owns it.

use crate::config::GenericUrl;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What alert templates see (as JSON, with these names), and what the journal keeps per event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AlertData {
    /// The alert's headline: `Qlik Cloud reload failed`, or the webhook watchdog's.
    pub alert_title: String,
    pub app_name: String,
    pub app_id: String,
    pub app_description: String,
    pub app_url: String,
    pub app_tags: Vec<String>,
    pub app_owner_id: String,
    pub app_owner_name: String,
    pub app_owner_email: String,
    pub app_owner_user_id: String,
    /// A URL of the owner's picture.
    pub app_owner_picture: String,
    /// The app's attributes, as Butler names them.
    pub app_has_section_access: bool,
    pub app_is_published: bool,
    pub app_publish_time: String,
    pub app_thumbnail: String,
    /// The app file's size, bytes (`resourceSize.appFile`).
    pub app_file_size: u64,
    pub tenant_id: String,
    pub tenant_url: String,
    pub tenant_comment: String,
    pub event_id: String,
    pub event_type: String,
    /// The legacy format's `eventTypeVersion` (e.g. `1.0.0`).
    pub event_type_version: String,
    pub execution_start_time: StartTime,
    pub execution_stop_time: StopTime,
    pub execution_creation_time: CreationTime,
    pub execution_duration: Duration,
    pub reload_trigger: String,
    pub reload_id: String,
    /// The reload task that started it, when the event says.
    pub task_id: String,
    /// Butler's: the user the event names (`userid`), and the app owner's name.
    pub user_id: String,
    pub user_name: String,
    /// The event's `source` (`com.qlik/engine`, `com.qlik/reloads`).
    pub source: String,
    /// The engine's figures from `app.reload.finished` (Butler's names).
    pub is_direct_query_mode: bool,
    pub is_session_app: bool,
    pub is_skip_store: bool,
    pub row_limit: u64,
    pub size_memory_bytes: u64,
    /// The engine's `duration` of the attempt, milliseconds (Butler's `usageDuration`).
    pub usage_duration: u64,
    /// The event's own `status` (`error`, `FAILED`, …).
    pub status: String,
    /// Always empty in Qlik's events (kept for Butler's templates).
    pub statements: Vec<Value>,
    pub is_partial_reload: bool,
    /// When the reload was requested (`reload.finished`).
    pub creation_time: String,
    pub error_code: String,
    pub error_message: String,
    pub execution_status_text: String,
    pub peak_memory_bytes: u64,
    pub ended_with_memory_constraint: bool,
    #[serde(rename = "qlikSenseQMC")]
    pub qlik_sense_qmc: String,
    pub qlik_sense_hub: String,
    pub log_message: String,
    /// Lines of the script log (Butler's meaning).
    pub script_log_size: usize,
    /// The same, as Butler also names it.
    pub script_log_size_rows: usize,
    /// Characters of the script log's lines, without line breaks (Butler's meaning).
    pub script_log_size_characters: usize,
    /// Bytes of the script log (ours).
    pub script_log_size_bytes: usize,
    pub script_log_line_count: usize,
    pub script_log_head: String,
    pub script_log_head_count: usize,
    pub script_log_tail: String,
    pub script_log_tail_count: usize,
    pub script_log_available: bool,
    pub generic_urls: Vec<GenericUrl>,
    pub enrichment_errors: Vec<String>,
    /// What the reader should know about this alert, e.g. that the reload's final outcome did
    /// not arrive in time (empty: nothing).
    pub alert_note: String,
}

/// The headline of a reload-failure alert.
pub const RELOAD_FAILED: &str = "Qlik Cloud reload failed";

impl Default for AlertData {
    fn default() -> AlertData {
        AlertData {
            alert_title: RELOAD_FAILED.to_owned(),
            app_name: String::new(),
            app_id: String::new(),
            app_description: String::new(),
            app_url: String::new(),
            app_tags: Vec::new(),
            app_owner_id: String::new(),
            app_owner_name: String::new(),
            app_owner_email: String::new(),
            app_owner_user_id: String::new(),
            app_owner_picture: String::new(),
            app_has_section_access: false,
            app_is_published: false,
            app_publish_time: String::new(),
            app_thumbnail: String::new(),
            app_file_size: 0,
            tenant_id: String::new(),
            tenant_url: String::new(),
            tenant_comment: String::new(),
            event_id: String::new(),
            event_type: String::new(),
            event_type_version: String::new(),
            execution_start_time: StartTime::default(),
            execution_stop_time: StopTime::default(),
            execution_creation_time: CreationTime::default(),
            execution_duration: Duration::default(),
            reload_trigger: String::new(),
            reload_id: String::new(),
            task_id: String::new(),
            user_id: String::new(),
            user_name: String::new(),
            source: String::new(),
            is_direct_query_mode: false,
            is_session_app: false,
            is_skip_store: false,
            row_limit: 0,
            size_memory_bytes: 0,
            usage_duration: 0,
            status: String::new(),
            statements: Vec::new(),
            is_partial_reload: false,
            creation_time: String::new(),
            error_code: String::new(),
            error_message: String::new(),
            execution_status_text: String::new(),
            peak_memory_bytes: 0,
            ended_with_memory_constraint: false,
            qlik_sense_qmc: String::new(),
            qlik_sense_hub: String::new(),
            log_message: String::new(),
            script_log_size: 0,
            script_log_size_rows: 0,
            script_log_size_characters: 0,
            script_log_size_bytes: 0,
            script_log_line_count: 0,
            script_log_head: String::new(),
            script_log_head_count: 0,
            script_log_tail: String::new(),
            script_log_tail_count: 0,
            script_log_available: false,
            generic_urls: Vec::new(),
            enrichment_errors: Vec::new(),
            alert_note: String::new(),
        }
    }
}

/// `executionStartTime`: Butler's `startTimeUTC` and `startTimeLocal1`–`5` (see `events::local_time`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StartTime {
    #[serde(rename = "startTimeUTC")]
    pub utc: String,
    #[serde(rename = "startTimeLocal1")]
    pub local1: String,
    #[serde(rename = "startTimeLocal2")]
    pub local2: String,
    #[serde(rename = "startTimeLocal3")]
    pub local3: String,
    #[serde(rename = "startTimeLocal4")]
    pub local4: String,
    #[serde(rename = "startTimeLocal5")]
    pub local5: String,
}

/// `executionStopTime`, as [`StartTime`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StopTime {
    #[serde(rename = "stopTimeUTC")]
    pub utc: String,
    #[serde(rename = "stopTimeLocal1")]
    pub local1: String,
    #[serde(rename = "stopTimeLocal2")]
    pub local2: String,
    #[serde(rename = "stopTimeLocal3")]
    pub local3: String,
    #[serde(rename = "stopTimeLocal4")]
    pub local4: String,
    #[serde(rename = "stopTimeLocal5")]
    pub local5: String,
}

/// `executionCreationTime`: when the reload was requested, as [`StartTime`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CreationTime {
    #[serde(rename = "creationTimeUTC")]
    pub utc: String,
    #[serde(rename = "creationTimeLocal1")]
    pub local1: String,
    #[serde(rename = "creationTimeLocal2")]
    pub local2: String,
    #[serde(rename = "creationTimeLocal3")]
    pub local3: String,
    #[serde(rename = "creationTimeLocal4")]
    pub local4: String,
    #[serde(rename = "creationTimeLocal5")]
    pub local5: String,
}

/// `executionDuration`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Duration {
    pub hours: u64,
    pub minutes: u64,
    pub seconds: u64,
    /// Unknown: `null`.
    pub total_seconds: Option<u64>,
}
