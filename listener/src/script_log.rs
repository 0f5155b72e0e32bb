//! A failed reload's script log: its lines (head and tail for the alerts), the limits a field
//! of it is cut to, and storing it on disk, as Butler does
//! (`Butler.scriptLog.storeOnDisk.qsCloud.appReloadFailure`), in Butler's layout
//! `<logDirectory>/<YYYY-MM-DD>/<YYYY-MM-DDTHH-MM-SS>_appId=<appId>_reloadId=<reloadId>.log`
//! (the event's time, UTC), or, with `Butler.qlikCloudListener.scriptLogLayout: byTenant`,
//! `<logDirectory>/<tenantId>/<appId>/<reloadId>.log`.
//!
//! Promises: ids from events cannot leave the directory (only `[A-Za-z0-9._-]`, not `.` or
//! `..`); the file appears whole or not at all (written to a temporary name, then renamed); a
//! log of any size is written whole, streamed from the API as it downloads ([`spool`]), so it
//! is never held in memory; a field of it in the alert data holds at most
//! [`SCRIPT_LOG_FIELD_MAX`] characters, cut with a visible [`TRUNCATED`] marker.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{what} {value:?} is not safe as a file name")]
    UnsafeId { what: &'static str, value: String },
    #[error("{what} is missing")]
    Missing { what: &'static str },
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// Where a reload's script log goes: the temporary file it is downloaded into, and the final
/// name [`commit`] gives it.
#[derive(Debug, Clone)]
pub struct Spool {
    pub tmp: PathBuf,
    pub file: PathBuf,
}

pub use crate::config::ScriptLogLayout as Layout;

/// Which reload a log belongs to.
pub struct LogOf<'a> {
    pub tenant_id: &'a str,
    /// The event's time (UTC); Butler's folders and names are made of it.
    pub time: time::OffsetDateTime,
    pub app_id: Option<&'a str>,
    pub reload_id: Option<&'a str>,
}

/// The [`Spool`] for a reload's log under `dir` (nothing is written yet).
pub fn spool(dir: &Path, layout: Layout, of: &LogOf<'_>) -> Result<Spool, StoreError> {
    let app_id = of.app_id.ok_or(StoreError::Missing { what: "app id" })?;
    let reload_id = of
        .reload_id
        .ok_or(StoreError::Missing { what: "reload id" })?;
    let (app_id, reload_id) = (safe("app id", app_id)?, safe("reload id", reload_id)?);
    let (folder, name) = match layout {
        Layout::Butler => {
            let t = of.time.to_offset(time::UtcOffset::UTC);
            let day = format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day());
            let stamp = format!("{day}T{:02}-{:02}-{:02}", t.hour(), t.minute(), t.second());
            (
                dir.join(day),
                format!("{stamp}_appId={app_id}_reloadId={reload_id}"),
            )
        }
        Layout::ByTenant => (
            dir.join(safe("tenant id", of.tenant_id)?).join(app_id),
            reload_id.to_owned(),
        ),
    };
    Ok(Spool {
        tmp: folder.join(format!(".{name}.log.tmp")),
        file: folder.join(format!("{name}.log")),
    })
}

/// Puts a downloaded (and synced) log in place: the file appears whole or not at all.
pub fn commit(spool: &Spool) -> Result<PathBuf, StoreError> {
    std::fs::rename(&spool.tmp, &spool.file).map_err(|source| StoreError::Io {
        path: spool.file.display().to_string(),
        source,
    })?;
    Ok(spool.file.clone())
}

fn safe<'a>(what: &'static str, value: &'a str) -> Result<&'a str, StoreError> {
    let ok = !value.is_empty()
        && value != "."
        && value != ".."
        && value.len() <= 128
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(value)
    } else {
        Err(StoreError::UnsafeId {
            what,
            value: value.chars().take(64).collect(),
        })
    }
}

/// The script log split into lines (CRLF or LF), ready for head/tail per channel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScriptLog {
    lines: Vec<String>,
    /// Its size in bytes, as it came.
    pub bytes: usize,
    /// Butler's size: the characters of the lines, without the line breaks.
    pub characters: usize,
}

impl ScriptLog {
    pub fn new(text: &str) -> ScriptLog {
        let lines: Vec<String> = text
            .lines()
            .map(|l| l.trim_end_matches('\r').to_owned())
            .collect();
        ScriptLog {
            // Butler's: the characters of the lines, without the line breaks.
            characters: lines.iter().map(|l| l.chars().count()).sum(),
            lines,
            bytes: text.len(),
        }
    }

    /// The first `n` lines, joined with `\n`.
    pub fn head(&self, n: usize) -> String {
        self.lines
            .iter()
            .take(n)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The last `n` lines, joined with `\n`.
    pub fn tail(&self, n: usize) -> String {
        let start = self.lines.len().saturating_sub(n);
        self.lines[start..].join("\n")
    }

    pub fn line_count(&self) -> usize {
        self.lines.len()
    }
}

/// What marks a cut field.
pub const TRUNCATED: &str = "… [truncated]";

/// The most any channel takes of a script-log field; the alert data (and the journal) keep no
/// more than this.
pub const SCRIPT_LOG_FIELD_MAX: usize = 64_000;

pub fn first_lines(text: &str, n: usize) -> String {
    text.lines().take(n).collect::<Vec<_>>().join("\n")
}

pub fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Keeps the start of `text` within `max` characters.
pub fn cut_end(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let kept: String = text
        .chars()
        .take(max.saturating_sub(TRUNCATED.chars().count()))
        .collect();
    format!("{kept}{TRUNCATED}")
}

/// Keeps the end of `text` (the interesting part of a tail) within `max` characters.
pub fn cut_start(text: &str, max: usize) -> String {
    let count = text.chars().count();
    if count <= max {
        return text.to_owned();
    }
    let keep = max.saturating_sub(TRUNCATED.chars().count());
    let kept: String = text.chars().skip(count - keep).collect();
    format!("{TRUNCATED}{kept}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_log_head_and_tail() {
        let log = ScriptLog::new("a\r\nb\r\nc\nd");
        assert_eq!(log.head(2), "a\nb");
        assert_eq!(log.tail(2), "c\nd");
        assert_eq!(log.tail(10), "a\nb\nc\nd");
        assert_eq!(log.head(0), "");
        assert_eq!(ScriptLog::new("").tail(3), "");
    }

    fn at(t: &str) -> time::OffsetDateTime {
        time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).unwrap()
    }

    fn of<'a>(tenant_id: &'a str, app: Option<&'a str>, reload: Option<&'a str>) -> LogOf<'a> {
        LogOf {
            tenant_id,
            time: at("2026-11-20T06:14:52.301Z"),
            app_id: app,
            reload_id: reload,
        }
    }

    #[test]
    fn butlers_layout_by_day_and_time() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = of("T1", Some("app-1"), Some("r1"));
        // An event time with an offset is filed by its UTC day.
        log.time = at("2026-11-21T00:30:05+01:00");
        let spool = spool(dir.path(), Layout::Butler, &log).unwrap();
        assert_eq!(
            spool.file,
            dir.path()
                .join("2026-11-20/2026-11-20T23-30-05_appId=app-1_reloadId=r1.log")
        );
        assert_eq!(
            spool.tmp,
            dir.path()
                .join("2026-11-20/.2026-11-20T23-30-05_appId=app-1_reloadId=r1.log.tmp")
        );
    }

    #[test]
    fn a_spooled_log_is_put_in_place_whole() {
        let dir = tempfile::tempdir().unwrap();
        let spool = spool(
            dir.path(),
            Layout::ByTenant,
            &of("T1", Some("app-1"), Some("r1")),
        )
        .unwrap();
        assert_eq!(spool.file, dir.path().join("T1/app-1/r1.log"));
        std::fs::create_dir_all(spool.tmp.parent().unwrap()).unwrap();
        std::fs::write(&spool.tmp, "line1\r\nline2").unwrap();
        assert!(!spool.file.exists(), "not in place before the commit");
        assert_eq!(commit(&spool).unwrap(), spool.file);
        assert_eq!(
            std::fs::read_to_string(&spool.file).unwrap(),
            "line1\r\nline2"
        );
        // Again: the file is replaced whole, no temporary file is left.
        std::fs::write(&spool.tmp, "new").unwrap();
        commit(&spool).unwrap();
        assert_eq!(std::fs::read_to_string(&spool.file).unwrap(), "new");
        let names: Vec<_> = std::fs::read_dir(dir.path().join("T1/app-1"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("r1.log")]);
    }

    #[test]
    fn ids_cannot_traverse() {
        let dir = tempfile::tempdir().unwrap();
        for (tenant, app, reload) in [
            ("..", "a", "r"),
            ("t", "../../etc", "r"),
            ("t", "a", "../passwd"),
            ("t/x", "a", "r"),
            ("t", "a", ""),
            ("t", "a\0", "r"),
        ] {
            for layout in [Layout::Butler, Layout::ByTenant] {
                if layout == Layout::Butler && tenant != "t" {
                    continue; // Butler's layout does not use the tenant id
                }
                let e =
                    spool(dir.path(), layout, &of(tenant, Some(app), Some(reload))).unwrap_err();
                assert!(
                    matches!(e, StoreError::UnsafeId { .. }),
                    "{layout:?} {tenant} {app} {reload}: {e}"
                );
            }
        }
        assert!(matches!(
            spool(dir.path(), Layout::Butler, &of("t", None, Some("r"))),
            Err(StoreError::Missing { .. })
        ));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
