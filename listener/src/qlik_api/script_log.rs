//! Script logs from the Qlik Cloud API: streamed as they arrive, written whole to a spool file
//! when asked, and only their first and last [`SCRIPT_LOG_KEEP_BYTES`] kept in memory.

use super::{segment, without_url, ApiError, QlikApi};

impl QlikApi {
    /// The reload's script log, read as it arrives: the whole of it is written to `spool` (when
    /// given; the caller renames it into place), and only its first and last
    /// [`SCRIPT_LOG_KEEP_BYTES`] are kept in memory, with a marker between them when something
    /// was left out. So a log of any size costs at most about 1 MiB here.
    pub async fn script_log(
        &self,
        app_id: &str,
        reload_id: &str,
        spool: Option<&std::path::Path>,
    ) -> Result<String, ApiError> {
        use tokio::io::AsyncWriteExt as _;
        let path = format!(
            "/api/v1/apps/{}/reloads/logs/{}",
            segment(app_id),
            segment(reload_id)
        );
        let mut response = self.send(&path, "text/plain").await?;
        let transport = |reason: String| ApiError::Transport {
            path: path.clone(),
            reason,
        };
        let mut file = match spool {
            Some(spool) => {
                if let Some(dir) = spool.parent() {
                    tokio::fs::create_dir_all(dir)
                        .await
                        .map_err(|e| transport(format!("{}: {e}", dir.display())))?;
                }
                let file = tokio::fs::File::create(spool)
                    .await
                    .map_err(|e| transport(format!("{}: {e}", spool.display())))?;
                Some((file, spool))
            }
            None => None,
        };
        let mut kept = HeadAndTail::default();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| transport(without_url(&e)))?
        {
            if let Some((file, spool)) = &mut file {
                file.write_all(&chunk)
                    .await
                    .map_err(|e| transport(format!("{}: {e}", spool.display())))?;
            }
            kept.push(&chunk);
        }
        if let Some((file, spool)) = &mut file {
            file.sync_all()
                .await
                .map_err(|e| transport(format!("{}: {e}", spool.display())))?;
        }
        Ok(kept.text(spool.is_some()))
    }
}

/// How much of a script log's start, and of its end, is kept in memory (and so in the alert
/// data and the journal). Channels use far less (Slack 2,500 characters, Teams 8,000).
pub const SCRIPT_LOG_KEEP_BYTES: usize = 512 * 1024;

/// The first and last [`SCRIPT_LOG_KEEP_BYTES`] of a stream, and how much was left out.
#[derive(Default)]
struct HeadAndTail {
    head: Vec<u8>,
    tail: Vec<u8>,
    /// Bytes dropped between `head` and `tail`.
    skipped: u64,
}

impl HeadAndTail {
    fn push(&mut self, mut chunk: &[u8]) {
        let room = SCRIPT_LOG_KEEP_BYTES - self.head.len();
        let to_head = room.min(chunk.len());
        self.head.extend_from_slice(&chunk[..to_head]);
        chunk = &chunk[to_head..];
        self.tail.extend_from_slice(chunk);
        // Trimmed in steps, so each byte is moved a bounded number of times.
        if self.tail.len() > 2 * SCRIPT_LOG_KEEP_BYTES {
            let drop = self.tail.len() - SCRIPT_LOG_KEEP_BYTES;
            self.tail.drain(..drop);
            self.skipped += drop as u64;
        }
    }

    fn text(mut self, on_disk: bool) -> String {
        if self.tail.len() > SCRIPT_LOG_KEEP_BYTES {
            let drop = self.tail.len() - SCRIPT_LOG_KEEP_BYTES;
            self.tail.drain(..drop);
            self.skipped += drop as u64;
        }
        let head = String::from_utf8_lossy(&self.head);
        let tail = String::from_utf8_lossy(&self.tail);
        if self.skipped == 0 {
            return format!("{head}{tail}");
        }
        let whole = if on_disk {
            "the whole log is in the script log directory"
        } else {
            "the whole log is in Qlik Cloud"
        };
        format!(
            "{head}\n… [{} bytes left out here; {whole}] …\n{tail}",
            self.skipped
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_script_log_keeps_its_head_and_tail_only() {
        let keep = SCRIPT_LOG_KEEP_BYTES;
        // Small: kept whole, however it arrives.
        let mut small = HeadAndTail::default();
        for piece in ["line 1\r\n", "line 2\r\n", "end"] {
            small.push(piece.as_bytes());
        }
        assert_eq!(small.text(false), "line 1\r\nline 2\r\nend");
        // Exactly twice the kept size: still whole.
        let mut full = HeadAndTail::default();
        full.push(&vec![b'a'; keep]);
        full.push(&vec![b'b'; keep]);
        assert_eq!(full.text(true).len(), 2 * keep);
        // 20 MB in 1 KB pieces: the first and the last `keep` bytes, and what was left out.
        let mut big = HeadAndTail::default();
        let total = 20 * 1024 * 1024;
        for i in 0..total / 1024 {
            let c = if i < 8 {
                b'H'
            } else if i >= total / 1024 - 8 {
                b'T'
            } else {
                b'.'
            };
            big.push(&[c; 1024]);
            assert!(
                big.head.len() + big.tail.len() <= 3 * keep,
                "bounded while reading"
            );
        }
        let text = big.text(true);
        let marker = format!(
            "\n… [{} bytes left out here; the whole log is in the script log directory] …\n",
            total - 2 * keep
        );
        assert!(text.starts_with("HHHH"), "head kept");
        assert!(text.ends_with("TTTT"), "tail kept");
        assert!(text.contains(&marker), "{}", &text[keep - 10..keep + 120]);
        assert_eq!(text.len(), 2 * keep + marker.len());
    }
}
