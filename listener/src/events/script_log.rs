//! Storing a failed reload's script log on disk, as Butler does
//! (`Butler.scriptLog.storeOnDisk.qsCloud.appReloadFailure`):
//! `<logDirectory>/<tenantId>/<appId>/<reloadId>.log`.
//!
//! Promises: ids from events cannot leave the directory (only `[A-Za-z0-9._-]`, not `.` or
//! `..`); the file appears whole or not at all (written to a temporary name, then renamed); a
//! log of any size is written whole, streamed from the API as it downloads ([`spool`]), so it
//! is never held in memory.

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

/// The [`Spool`] for a reload's log under `dir` (nothing is written yet).
pub fn spool(
    dir: &Path,
    tenant_id: &str,
    app_id: Option<&str>,
    reload_id: Option<&str>,
) -> Result<Spool, StoreError> {
    let app_id = app_id.ok_or(StoreError::Missing { what: "app id" })?;
    let reload_id = reload_id.ok_or(StoreError::Missing { what: "reload id" })?;
    let (tenant_id, app_id) = (safe("tenant id", tenant_id)?, safe("app id", app_id)?);
    let reload_id = safe("reload id", reload_id)?;
    let folder = dir.join(tenant_id).join(app_id);
    Ok(Spool {
        tmp: folder.join(format!(".{reload_id}.log.tmp")),
        file: folder.join(format!("{reload_id}.log")),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spooled_log_is_put_in_place_whole() {
        let dir = tempfile::tempdir().unwrap();
        let spool = spool(dir.path(), "T1", Some("app-1"), Some("r1")).unwrap();
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
            let e = spool(dir.path(), tenant, Some(app), Some(reload)).unwrap_err();
            assert!(
                matches!(e, StoreError::UnsafeId { .. }),
                "{tenant} {app} {reload}: {e}"
            );
        }
        assert!(matches!(
            spool(dir.path(), "t", None, Some("r")),
            Err(StoreError::Missing { .. })
        ));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
