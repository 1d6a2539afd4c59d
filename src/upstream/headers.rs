//! Header hygiene shared by both directions: hop-by-hop headers (RFC 9110 §7.6.1),
//! including every header a `Connection` header names, never cross the proxy.

use http::HeaderMap;
use http::header::{CONNECTION, HeaderName};

const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
    "proxy-authenticate",
    "http2-settings",
];

/// Removes hop-by-hop headers and the headers `Connection` names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(*name);
    }
}

/// True when `name` is `target` written with any case or with `_` for `-`, spellings
/// that some servers (and Jira plugins reading CGI-style variables) treat as the same.
pub fn same_header(name: &HeaderName, target: &HeaderName) -> bool {
    let (a, b) = (name.as_str().as_bytes(), target.as_str().as_bytes());
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y || (*x == b'_' && *y == b'-'))
}

/// Removes every spelling of `target` (see [`same_header`]).
pub fn strip_spellings(headers: &mut HeaderMap, target: &HeaderName) {
    let doomed: Vec<HeaderName> = headers.keys().filter(|k| same_header(k, target)).cloned().collect();
    for k in doomed {
        headers.remove(k);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn connection_named_headers_are_removed_with_the_fixed_set() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, X-Forwarded-User , x-custom"),
        );
        h.insert("x-forwarded-user", HeaderValue::from_static("admin"));
        h.insert("x-custom", HeaderValue::from_static("1"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("upgrade", HeaderValue::from_static("h2c"));
        h.insert("accept", HeaderValue::from_static("application/json"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("accept"));
    }

    #[test]
    fn underscore_and_case_spellings_of_identity_header_are_stripped() {
        let target = HeaderName::from_static("x-forwarded-user");
        let mut h = HeaderMap::new();
        h.append("X-Forwarded-User", HeaderValue::from_static("a"));
        h.append("x-forwarded-user", HeaderValue::from_static("b"));
        h.append("x_forwarded_user", HeaderValue::from_static("c"));
        h.append("X_Forwarded-User", HeaderValue::from_static("d"));
        h.append("x-forwarded-users", HeaderValue::from_static("keep"));
        strip_spellings(&mut h, &target);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-forwarded-users"));
    }
}
