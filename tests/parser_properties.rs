//! Property tests for every parser that reads untrusted input — the same properties the
//! fuzz targets in `fuzz/` check, run by CI on each change: Authorization headers (Basic,
//! Bearer), cookies, path normalisation and the config loader. (The OAuth 1.0a header and
//! base string have theirs in `src/auth/oauth1/rfc5849.rs`.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use jira_auth_proxy::auth::basic;
use jira_auth_proxy::pipeline::admit::strip_cookies;
use jira_auth_proxy::pipeline::path::normalize;
use proptest::prelude::*;

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn basic_credentials_round_trip_and_split_at_the_first_colon(
        user in "[^:\\p{Cc}]{1,40}",
        password in "(?s).{0,40}",
        control in "\\p{Cc}",
    ) {
        let value = http::HeaderValue::from_str(&format!("Basic {}", b64(format!("{user}:{password}").as_bytes()))).unwrap();
        let parsed = basic::parse(&value).map(|r| r.map(|c| (c.user().to_owned(), c.password().to_owned())));
        prop_assert_eq!(parsed, Some(Ok((user.clone(), password.clone()))));
        // A control character in the user name is refused, never passed on.
        let value = http::HeaderValue::from_str(&format!("Basic {}", b64(format!("{user}{control}:{password}").as_bytes()))).unwrap();
        prop_assert_eq!(basic::parse(&value), Some(Err("malformed_basic")));
    }

    #[test]
    fn basic_parsing_never_panics_and_never_yields_an_empty_user(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        for value in [format!("Basic {}", b64(&bytes)), format!("Basic {}", String::from_utf8_lossy(&bytes))] {
            if let Ok(v) = http::HeaderValue::from_str(&value)
                && let Some(Ok(credential)) = basic::parse(&v)
            {
                let user = credential.user();
                prop_assert!(!user.is_empty() && !user.contains(':'));
            }
        }
    }

    #[test]
    fn bearer_tokens_are_never_empty_or_padded(
        value in prop_oneof!["[ -~]{0,80}", "(Bearer|bearer|BEARER|Basic|Bearers)[ \t]{1,3}[ -~]{0,40}"]
    ) {
        let mut parts = http::Request::new(()).into_parts().0;
        if let Ok(v) = http::HeaderValue::from_str(&value) {
            parts.headers.insert(http::header::AUTHORIZATION, v);
        }
        let token = jira_auth_proxy::auth::bearer_token(&parts);
        if let Some(t) = token {
            prop_assert!(!t.is_empty() && t.trim() == t);
        }
        // RFC 6750 §2.1: the scheme up to the first space, in any case; then the token.
        let expected = value
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, rest)| rest.trim())
            .filter(|t| !t.is_empty());
        prop_assert_eq!(token, expected);
    }

    #[test]
    fn session_cookies_never_survive_the_strip_whatever_the_spelling(
        pairs in proptest::collection::vec(
            (
                prop_oneof![
                    Just("JSESSIONID".to_string()),
                    Just("jsessionid".to_string()),
                    Just("JSessionId".to_string()),
                    Just("seraph.rememberme.cookie".to_string()),
                    Just("JAPSESSION".to_string()),
                    Just("japsession".to_string()),
                    Just("JAPSESSION-XSRF".to_string()),
                    "[a-z]{1,6}",
                ],
                "[A-Za-z0-9]{0,8}",
            ),
            0..8,
        ),
        split in any::<bool>(),
        // RFC 2109's form, which Tomcat reads when a field opens with `$Version`: a comma
        // separates cookies too.
        rfc2109 in any::<bool>(),
    ) {
        let mut headers = http::HeaderMap::new();
        let joined: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let separator = if rfc2109 { ", " } else { "; " };
        if split {
            for p in &joined {
                headers.append(http::header::COOKIE, http::HeaderValue::from_str(p).unwrap());
            }
        } else if !joined.is_empty() {
            let field = if rfc2109 {
                format!("$Version=1; {}", joined.join(separator))
            } else {
                joined.join(separator)
            };
            headers.insert(http::header::COOKIE, http::HeaderValue::from_str(&field).unwrap());
        }
        let fields = headers.get_all(http::header::COOKIE).iter().count();
        let ids = strip_cookies(&mut headers, fields, &["JAPSESSION", "JAPSESSION-XSRF"]);
        if split || !rfc2109 {
            let want: Vec<&String> = pairs.iter().filter(|(k, _)| k == "JAPSESSION").map(|(_, v)| v).collect();
            prop_assert_eq!(ids.iter().collect::<Vec<_>>(), want);
        }
        let kept = headers.get(http::header::COOKIE).map(|v| v.to_str().unwrap().to_ascii_lowercase()).unwrap_or_default();
        for pair in kept.split(';') {
            prop_assert!(!pair.trim().starts_with('$'), "RFC 2109's attributes go: {}", kept);
            for piece in pair.split(',') {
                let name = piece.split('=').next().unwrap_or("").trim();
                prop_assert!(!["jsessionid", "seraph.rememberme.cookie", "japsession", "japsession-xsrf"].contains(&name));
            }
        }
    }

    #[test]
    fn a_normalised_path_has_no_dot_segments_and_normalises_to_itself(
        segs in proptest::collection::vec(prop_oneof![
            "[a-zA-Z0-9_-]{1,6}", Just("..".to_string()), Just(".".to_string()), Just("".to_string()),
            Just("%2e%2e".to_string()), Just("%2e".to_string()), Just("a;b=c".to_string()), Just("%41".to_string()),
            Just("%2F".to_string()), Just("%252F".to_string()), Just("%00".to_string()), Just("%c3%a9".to_string()),
        ], 0..8),
    ) {
        let raw = format!("/{}", segs.join("/"));
        if let Ok(p) = normalize(&raw) {
            prop_assert!(!p.decoded.split('/').any(|s| s == ".." || s == "."), "{}", p.decoded);
            prop_assert!(!p.decoded.contains(';'));
            let again = normalize(p.encoded()).expect("the forwarded path is accepted");
            prop_assert_eq!(again.decoded, p.decoded);
        }
    }

    #[test]
    fn paths_of_any_bytes_never_panic(raw in "\\PC{0,60}") {
        let _ = normalize(&raw);
        let _ = normalize(&format!("/{raw}"));
    }

    #[test]
    fn any_config_text_is_a_config_or_a_list_of_errors(text in "\\PC{0,200}", key in "[a-z_.]{1,12}") {
        let base = std::path::Path::new("/nonexistent-property-dir");
        let _ = jira_auth_proxy::config::Config::parse(&text, base);
        let near = format!("version = 1\n[server]\nlisten = \"127.0.0.1:0\"\n[upstream]\nurl = \"http://127.0.0.1:1\"\n{key} = {text:?}\n");
        if let Err(e) = jira_auth_proxy::config::Config::parse(&near, base) {
            prop_assert!(!e.0.is_empty());
        }
    }
}
