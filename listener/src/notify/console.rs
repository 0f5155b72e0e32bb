//! The console channel: the alert's text on the listener's standard output.

use super::AttemptError;

pub fn print(text: &str) -> Result<(), AttemptError> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")
        .and_then(|()| out.flush())
        .map_err(|e| AttemptError::Retry(format!("cannot write to stdout: {e}")))
}
