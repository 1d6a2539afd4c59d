//! Path normalisation: never panics; what it accepts is stable (normalising the path it
//! forwards gives the same path back), so rules and Jira read one path.
#![no_main]
use jira_auth_proxy::pipeline::path::normalize;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else { return };
    if let Ok(p) = normalize(raw) {
        let again = normalize(&p.encoded).expect("a normalised path normalises");
        assert_eq!(again.decoded, p.decoded);
        assert!(!p.decoded.split('/').any(|s| s == ".." || s == "."));
    }
});
