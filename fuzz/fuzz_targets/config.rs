//! The config loader: any text gets a config or a list of errors, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = jira_auth_proxy::config::Config::parse(text, std::path::Path::new("/nonexistent-fuzz-dir"));
});
