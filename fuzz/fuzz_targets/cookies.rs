//! Cookie headers: the proxy's and Jira's session cookies never survive, whatever the shape.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut headers = http::HeaderMap::new();
    for line in data.split(|b| *b == b'\n') {
        if let Ok(v) = http::HeaderValue::from_bytes(line) {
            headers.append(http::header::COOKIE, v);
        }
    }
    let ids = jira_auth_proxy::pipeline::admit::strip_cookies(&mut headers, &["JAPSESSION", "JAPSESSION-XSRF"]);
    assert!(ids.len() <= data.len());
    for v in headers.get_all(http::header::COOKIE) {
        let text = v.to_str().unwrap_or("").to_ascii_lowercase();
        for pair in text.split(';') {
            let name = pair.split('=').next().unwrap_or("").trim();
            assert!(!["jsessionid", "seraph.rememberme.cookie", "japsession", "japsession-xsrf"].contains(&name));
        }
    }
});
