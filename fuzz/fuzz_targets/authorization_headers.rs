//! Authorization header parsers (Basic, Bearer, OAuth): never panic on any header value.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = http::HeaderValue::from_bytes(data) else { return };
    let _ = jira_auth_proxy::auth::basic::parse(&value);
    if let Ok(text) = value.to_str() {
        if let Some(Ok(params)) = jira_auth_proxy::auth::oauth1::rfc5849::parse_header(text) {
            // A parsed header names each parameter once.
            let mut names: Vec<&str> = params.iter().map(|(k, _)| k.as_str()).collect();
            names.sort_unstable();
            let before = names.len();
            names.dedup();
            assert_eq!(before, names.len());
        }
    }
    let mut parts = http::Request::new(()).into_parts().0;
    parts.headers.insert(http::header::AUTHORIZATION, value);
    if let Some(token) = jira_auth_proxy::auth::bearer_token(&parts) {
        assert!(!token.is_empty() && !token.starts_with(' '));
    }
});
