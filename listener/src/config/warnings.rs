//! What `check-config` warns about: settings that most likely do not do what was meant.

use super::{Config, Target};
use std::path::Path;

/// Keys the listener does not know where it reads every key (its own section, the events
/// broker, a tenant's alert channels): most likely a typo or wrong indentation, so a setting
/// silently does nothing. Butler's other sections are Butler's and are not listed.
pub fn unknown_keys(ignored: &[String]) -> Vec<String> {
    let ours = [
        "Butler.qlikCloudListener.",
        "Butler.mqttConfig.qlikSenseCloud.event.mqttForward.",
    ];
    ignored
        .iter()
        .filter(|path| {
            ours.iter().any(|p| path.starts_with(p))
                || path
                    .split_once(".alert.")
                    .is_some_and(|(tenant, channel)| {
                        tenant.starts_with("Butler.qlikSenseCloud.event.mqtt.tenant")
                            && !channel.contains('.')
                    })
        })
        .map(|path| format!("{path}: not a key the listener knows here (a typo, or wrong indentation?): it does nothing"))
        .collect()
}

/// Paths with a control character in them: a Windows path in double quotes, where YAML reads
/// `\n` in `"C:\new"` as a line break.
pub fn mangled_paths(config: &Config) -> Vec<String> {
    let mut paths: Vec<&Path> = vec![&config.journal_path];
    paths.extend(config.script_log_dir.as_deref());
    for channel in config.tenants.iter().flat_map(|t| &t.channels) {
        if let Target::File(p) = &channel.target {
            paths.push(p);
        }
    }
    paths
        .into_iter()
        .filter(|p| p.to_string_lossy().chars().any(char::is_control))
        .map(|p| format!("the path {:?} holds a control character: a Windows path in double quotes (\"C:\\new\" is C:, a line break and ew)? Write it in single quotes: 'C:\\ProgramData\\qlik-listener'", p.display().to_string()))
        .collect()
}
