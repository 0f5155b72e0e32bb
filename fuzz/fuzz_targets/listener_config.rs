//! The listener's configuration reader on arbitrary YAML: it returns a config or errors that
//! name a key, and never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let env = |name: &str| (name.len() < 64).then(|| "fuzz-value".to_owned());
    if let Err(errors) =
        qlik_listener::config::Config::parse(Path::new("/nonexistent/fuzz.yaml"), text, &env)
    {
        assert!(!errors.errors.is_empty());
        assert!(errors.errors.iter().all(|e| !e.path.is_empty()));
    }
});
