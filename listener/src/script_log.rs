//! Storing a failed reload's script log on disk, as Butler does
//! (`Butler.scriptLog.storeOnDisk.qsCloud.appReloadFailure`):
//! `<logDirectory>/<tenantId>/<appId>/<reloadId>.log`.
//!
//! Promises: ids from events cannot leave the directory (only `[A-Za-z0-9._-]`, not `.` or
//! `..`); the file appears whole or not at all (written to a temporary name, then renamed).

use std::io::Write as _;
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

pub fn store(
    dir: &Path,
    tenant_id: &str,
    app_id: Option<&str>,
    reload_id: Option<&str>,
    log: &str,
) -> Result<PathBuf, StoreError> {
    let app_id = app_id.ok_or(StoreError::Missing { what: "app id" })?;
    let reload_id = reload_id.ok_or(StoreError::Missing { what: "reload id" })?;
    let (tenant_id, app_id) = (safe("tenant id", tenant_id)?, safe("app id", app_id)?);
    let reload_id = safe("reload id", reload_id)?;
    let folder = dir.join(tenant_id).join(app_id);
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| StoreError::Io { path, source }
    };
    std::fs::create_dir_all(&folder).map_err(io(&folder))?;
    let file = folder.join(format!("{reload_id}.log"));
    let tmp = folder.join(format!(".{reload_id}.log.tmp"));
    let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(log.as_bytes()).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, &file).map_err(io(&file))?;
    Ok(file)
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
    fn stores_under_tenant_app_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = store(
            dir.path(),
            "T1",
            Some("app-1"),
            Some("r1"),
            "line1\r\nline2",
        )
        .unwrap();
        assert_eq!(path, dir.path().join("T1/app-1/r1.log"));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "line1\r\nline2");
        // Storing again replaces the file whole.
        store(dir.path(), "T1", Some("app-1"), Some("r1"), "new").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
        let names: Vec<_> = std::fs::read_dir(dir.path().join("T1/app-1"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names,
            vec![std::ffi::OsString::from("r1.log")],
            "no temporary file left"
        );
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
            let e = store(dir.path(), tenant, Some(app), Some(reload), "x").unwrap_err();
            assert!(
                matches!(e, StoreError::UnsafeId { .. }),
                "{tenant} {app} {reload}: {e}"
            );
        }
        assert!(matches!(
            store(dir.path(), "t", None, Some("r"), "x"),
            Err(StoreError::Missing { .. })
        ));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
