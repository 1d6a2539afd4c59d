//! The OAuth 1.0a signature base string: any method, URI and parameters; the result is
//! deterministic and independent of parameter order.
#![no_main]
use jira_auth_proxy::auth::oauth1::rfc5849;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut pieces = text.splitn(3, '\n');
    let (method, path, query) = (
        pieces.next().unwrap_or(""),
        pieces.next().unwrap_or(""),
        pieces.next().unwrap_or(""),
    );
    // Requests carry a method token (http::Method); anything else never gets this far.
    let Ok(method) = http::Method::from_bytes(method.as_bytes()) else { return };
    let method = method.as_str();
    let params = rfc5849::form_pairs(query);
    let Ok(all) = rfc5849::collect(&[], &params, &[]) else { return };
    let uri = rfc5849::base_uri("https", "jira.example.com", Some(8443), path);
    let base = rfc5849::base_string(method, &uri, &all);
    let mut reversed = all.clone();
    reversed.reverse();
    assert_eq!(base, rfc5849::base_string(method, &uri, &reversed));
    assert!(base.is_ascii(), "base strings are percent-encoded ASCII");
});
