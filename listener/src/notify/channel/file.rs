//! The file channel: each alert's JSON document appended as one line.
//!
//! Promises: one writer at a time, so concurrent alerts never interleave within a line; a line
//! counts as sent only once synced to disk.

use crate::notify::AttemptError;
use std::path::Path;

/// Appends `body` as one line to `path`. `turn` serialises the writers.
pub async fn append(
    turn: &tokio::sync::Mutex<()>,
    path: &Path,
    body: &str,
) -> Result<(), AttemptError> {
    use std::io::Write as _;
    let _turn = turn.lock().await;
    let mut line = String::with_capacity(body.len() + 1);
    line.push_str(body);
    line.push('\n');
    let file_path = path.to_owned();
    let written = tokio::task::spawn_blocking(move || {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&file_path)?;
        file.write_all(line.as_bytes())?;
        file.sync_data()
    })
    .await;
    match written {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(AttemptError::Retry(format!(
            "cannot append to {}: {e}",
            path.display()
        ))),
        Err(e) => Err(AttemptError::Retry(format!("file writer failed: {e}"))),
    }
}
