//! Header hygiene shared by both directions: hop-by-hop headers (RFC 9110 §7.6.1),
//! including every header a `Connection` header names, never cross the proxy.

use http::header::{CONNECTION, HeaderName};
use http::{HeaderMap, HeaderValue};

/// Header names used on every request, parsed once at compile time.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub const X_AUSERNAME: HeaderName = HeaderName::from_static("x-ausername");

/// The fixed hop-by-hop fields (RFC 9110 §7.6.1, and those of older drafts and HTTP/2's
/// upgrade); `admit` sorts a request's by length, and a test holds it to this list.
pub(crate) const HOP_BY_HOP: &[&str] = &[
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

/// True for the fixed hop-by-hop headers.
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(&name.as_str())
}

/// Fields of Jira's answers that the proxy reads, takes out or replaces: the user Jira ran
/// a request as, Jira's session cookies, the request ids, the password check's verdict
/// fields, and the rate-limit fields the proxy sets. Kept in the answer's `HeaderMap`;
/// every other field is passed on as Jira wrote it. [`classify_answer_field`] spells
/// these out by length; a test holds the two together.
#[cfg(test)]
const READ_BY_PROXY: &[&str] = &[
    "set-cookie",
    "x-ausername",
    "x-arequestid",
    "x-request-id",
    "x-seraph-loginreason",
    "x-authentication-denied-reason",
];

/// What the proxy does with a field of Jira's answer, by its name.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum AnswerField {
    /// `Transfer-Encoding`: read for the framing, not passed on.
    TransferEncoding,
    /// `Connection`: read for its options and the names it lists, not passed on.
    Connection,
    /// Another hop-by-hop field ([`HOP_BY_HOP`]): dropped.
    HopByHop,
    /// `Content-Length`: read for the framing.
    ContentLength,
    /// A field the proxy reads, takes out or replaces (the user Jira ran a request as,
    /// Jira's session cookies, the request ids, the password check's verdict fields) or
    /// a rate-limit field the proxy sets: kept in the answer's map.
    ReadByProxy,
    /// `Date`: passed on as Jira wrote it (the listener adds one only when it is absent).
    Date,
    /// Any other field: passed on as Jira wrote it.
    Other,
}

/// Sorts a field name as written on the wire (any letter case). Each answer field goes
/// through this, so it looks at the name's length first and compares with at most the
/// few names of that length, rather than with every name in the lists.
pub fn classify_answer_field(name: &[u8]) -> AnswerField {
    let is = |n: &str| crate::wire::eq_lower(name, n.as_bytes());
    let hop = |found: bool| {
        if found {
            AnswerField::HopByHop
        } else {
            AnswerField::Other
        }
    };
    let class = match name.len() {
        2 => hop(is("te")),
        4 if is("date") => AnswerField::Date,
        7 => hop(is("trailer") || is("upgrade")),
        10 if is("connection") => AnswerField::Connection,
        10 if is("set-cookie") => AnswerField::ReadByProxy,
        10 => hop(is("keep-alive")),
        11 if is("x-ausername") => AnswerField::ReadByProxy,
        12 if is("x-arequestid") || is("x-request-id") => AnswerField::ReadByProxy,
        14 if is("content-length") => AnswerField::ContentLength,
        14 => hop(is("http2-settings")),
        16 => hop(is("proxy-connection")),
        17 if is("transfer-encoding") => AnswerField::TransferEncoding,
        18 => hop(is("proxy-authenticate")),
        19 => hop(is("proxy-authorization")),
        20 if is("x-seraph-loginreason") => AnswerField::ReadByProxy,
        30 if is("x-authentication-denied-reason") => AnswerField::ReadByProxy,
        _ => AnswerField::Other,
    };
    if class == AnswerField::Other
        && name
            .get(..12)
            .is_some_and(|p| crate::wire::eq_lower(p, b"x-ratelimit-"))
    {
        return AnswerField::ReadByProxy;
    }
    class
}

/// The header names a `Connection` header lists (none, and no allocation, without one).
/// The options `close` and `keep-alive` (a hop-by-hop header anyway) are no names to look
/// for, which spares the common `Connection: keep-alive` any work.
pub fn connection_named(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(CONNECTION)
        .iter()
        .filter(|v| v.to_str().is_ok())
        .flat_map(|v| list_items(v.as_bytes()))
        .filter(|t| !crate::wire::eq_lower(t, b"keep-alive") && !crate::wire::eq_lower(t, b"close"))
        .filter_map(|t| HeaderName::from_bytes(t).ok())
        .collect()
}

/// The items of a comma-separated header value (RFC 9110 §5.6.1): trimmed, and the empty
/// ones skipped.
pub fn list_items(value: &[u8]) -> impl DoubleEndedIterator<Item = &[u8]> {
    value
        .split(|b| *b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// Removes every header whose name `doomed` picks, in one pass over the names.
pub fn remove_where(headers: &mut HeaderMap, doomed: impl Fn(&HeaderName) -> bool) {
    let names: Vec<HeaderName> = headers.keys().filter(|k| doomed(k)).cloned().collect();
    for name in names {
        headers.remove(name);
    }
}

/// Jira's own session cookies: the proxy decides who calls, so Jira's session never
/// reaches a client, where it could stand in for that decision.
const JIRA_SET_COOKIES: &[&str] = &["jsessionid", "seraph.rememberme.cookie", "atlassian.xsrf.token"];

/// Removes the `Set-Cookie`s of Jira's session cookies from a response. Returns Jira's
/// `JSESSIONID` as a `JSESSIONID=value` pair when Jira set a non-empty one.
pub fn take_jira_cookies(headers: &mut HeaderMap) -> Option<HeaderValue> {
    use http::header::SET_COOKIE;
    if !headers.contains_key(SET_COOKIE) {
        return None;
    }
    let mut session = None;
    let all: Vec<HeaderValue> = headers.get_all(SET_COOKIE).iter().cloned().collect();
    headers.remove(SET_COOKIE);
    for v in all {
        let pair = v.as_bytes().split(|b| *b == b';').next().unwrap_or(b"");
        let name = pair.split(|b| *b == b'=').next().unwrap_or(b"");
        let name = String::from_utf8_lossy(name).trim().to_ascii_lowercase();
        if !JIRA_SET_COOKIES.contains(&name.as_str()) {
            headers.append(SET_COOKIE, v);
            continue;
        }
        let value = pair.splitn(2, |b| *b == b'=').nth(1).unwrap_or(b"");
        if name == "jsessionid" && !value.is_empty() {
            let mut cookie = Vec::with_capacity(11 + value.len());
            cookie.extend_from_slice(b"JSESSIONID=");
            cookie.extend_from_slice(value);
            session = HeaderValue::from_bytes(&cookie).ok().map(|mut c| {
                c.set_sensitive(true);
                c
            });
        }
    }
    session
}

/// True when the `Content-Type` is `media_type` (parameters and letter case ignored).
pub fn media_type_is(headers: &HeaderMap, media_type: &str) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case(media_type)
        })
}

/// True when `name` (as `HeaderName::as_str` gives it) is the lower-case `target` written
/// with any case or with `_` for `-`, spellings that some servers (and Jira plugins
/// reading CGI-style variables) treat as the same.
pub fn same_spelling(name: &str, target: &str) -> bool {
    let (a, b) = (name.as_bytes(), target.as_bytes());
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y || (*x == b'_' && *y == b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answer_fields_are_sorted_as_the_lists_say_in_any_letter_case() {
        let expect = |name: &str| {
            let lower = name.to_ascii_lowercase();
            match lower.as_str() {
                "transfer-encoding" => AnswerField::TransferEncoding,
                "connection" => AnswerField::Connection,
                "content-length" => AnswerField::ContentLength,
                "date" => AnswerField::Date,
                n if HOP_BY_HOP.contains(&n) => AnswerField::HopByHop,
                n if READ_BY_PROXY.contains(&n) || n.starts_with("x-ratelimit-") => AnswerField::ReadByProxy,
                _ => AnswerField::Other,
            }
        };
        let mut names: Vec<String> = HOP_BY_HOP.iter().chain(READ_BY_PROXY).map(|n| n.to_string()).collect();
        names.extend(
            [
                "content-length",
                "x-ratelimit-",
                "X-RateLimit-Remaining",
                "x-ratelimit",
                "Content-Type",
                "Server",
                "Date",
                "Vary",
                "x-arequestie",
                "set-cookies",
                "tf",
                "trailers",
                "Keep_Alive",
                "X-ASESSIONID",
                "x-authentication-denied-reasons",
                "",
                "x",
                "x-ausernamE",
            ]
            .map(String::from),
        );
        // Each name also with one letter changed, and in upper case.
        for n in names.clone() {
            names.push(n.to_ascii_uppercase());
            if let Some(last) = n.len().checked_sub(1) {
                names.push(format!("{}q", &n[..last]));
            }
        }
        for n in &names {
            assert_eq!(classify_answer_field(n.as_bytes()), expect(n), "{n:?}");
        }
        assert_eq!(
            classify_answer_field(b"Transfer-Encoding"),
            AnswerField::TransferEncoding
        );
        assert_eq!(classify_answer_field(b"Proxy-Authenticate"), AnswerField::HopByHop);
        assert_eq!(classify_answer_field(b"X-Seraph-LoginReason"), AnswerField::ReadByProxy);
        assert_eq!(classify_answer_field(b"X-Frame-Options"), AnswerField::Other);
    }

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
        let named = connection_named(&h);
        remove_where(&mut h, |k| is_hop_by_hop(k) || named.contains(k));
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
        remove_where(&mut h, |k| same_spelling(k.as_str(), target.as_str()));
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-forwarded-users"));
    }

    #[test]
    fn jira_session_cookies_are_taken_out_of_responses_and_others_kept() {
        let mut h = HeaderMap::new();
        h.append(
            "set-cookie",
            HeaderValue::from_static("JSESSIONID=ABC123; Path=/; HttpOnly"),
        );
        h.append(
            "set-cookie",
            HeaderValue::from_static("atlassian.xsrf.token=BXYZ|lin; Path=/"),
        );
        h.append(
            "set-cookie",
            HeaderValue::from_static("Seraph.RememberMe.Cookie=1; Max-Age=0"),
        );
        h.append("set-cookie", HeaderValue::from_static("theme=dark; Path=/"));
        let session = take_jira_cookies(&mut h).expect("session");
        assert_eq!(session.as_bytes(), b"JSESSIONID=ABC123");
        assert!(session.is_sensitive());
        let left: Vec<_> = h.get_all("set-cookie").iter().collect();
        assert_eq!(left, [&HeaderValue::from_static("theme=dark; Path=/")]);
        // An expiring (empty) JSESSIONID is removed but not taken as a session.
        let mut h = HeaderMap::new();
        h.append("set-cookie", HeaderValue::from_static("JSESSIONID=; Max-Age=0"));
        assert!(take_jira_cookies(&mut h).is_none());
        assert!(h.is_empty());
    }
}
