//! Admit: before anyone looks at a request, give it an id, normalise its path once,
//! decide which client address to believe, and strip everything a client must never
//! get to Jira: our identity headers in any spelling, Jira's own session cookies,
//! Seraph's `os_*` login parameters, spoofed forwarding headers, hop-by-hop headers.

use std::net::IpAddr;

use http::header::{AUTHORIZATION, COOKIE, HOST};
use http::request::Parts;
use http::{HeaderMap, HeaderValue};

use super::RequestCtx;
use super::path::normalize;
use crate::error::ProxyError;
use crate::runtime::Runtime;
use crate::upstream::headers::{
    X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO, connection_named, remove_where, same_spelling,
};

/// Identity headers common Jira header authenticators read; stripped whatever the mode,
/// in any letter case and with `_` for `-`. [`classify`] spells these out by length; a
/// test holds the two together.
#[cfg(test)]
const IDENTITY_HEADERS: &[&str] = &[
    "x-forwarded-user",
    "x-remote-user",
    "remote-user",
    "x-webauth-user",
    "x-forwarded-email",
    "x-forwarded-preferred-username",
    "x-ausername",
    "x-authenticated-user",
    "x-auth-request-user",
    "x-auth-request-email",
    "x-auth-user",
    "x-user",
    "x-username",
    "x-forwarded-groups",
    "x-auth-request-groups",
];

/// Forwarding headers we set ourselves (client copies believed only from trusted proxies).
#[cfg(test)]
const FORWARDING_HEADERS: &[&str] = &[
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-server",
    "x-real-ip",
];

/// What `admit` does with a field of the caller's request, by its name.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Field {
    Authorization,
    Host,
    /// Read for the names it lists, then stripped (it is hop-by-hop).
    Connection,
    Cookie,
    RequestId,
    /// A hop-by-hop field (RFC 9110 §7.6.1), `Expect` (the listener's business), or an
    /// identity header ([`IDENTITY_HEADERS`], any spelling): never forwarded.
    Strip,
    /// A forwarding header ([`FORWARDING_HEADERS`]): read from a trusted proxy, then
    /// stripped, as the proxy sets its own.
    Forwarding,
    Other,
}

/// Sorts a field name as `HeaderName` holds it (lower case). Every field of every request
/// goes through this, so it looks at the length first and compares with at most the few
/// names of that length, rather than with every name in the lists.
fn classify(name: &str) -> Field {
    let is = |t: &str| name == t;
    // Identity headers: `_` for `-` too, as some servers and CGI-style readers take them.
    let spelt = |t: &str| same_spelling(name, t);
    let strip = |found: bool| if found { Field::Strip } else { Field::Other };
    match name.len() {
        2 => strip(is("te")),
        4 if is("host") => Field::Host,
        6 if is("cookie") => Field::Cookie,
        6 => strip(is("expect") || spelt("x-user")),
        7 => strip(is("trailer") || is("upgrade")),
        9 if is("forwarded") || is("x-real-ip") => Field::Forwarding,
        10 if is("connection") => Field::Connection,
        10 => strip(is("keep-alive") || spelt("x-username")),
        11 => strip(spelt("remote-user") || spelt("x-ausername") || spelt("x-auth-user")),
        12 if is("x-request-id") => Field::RequestId,
        13 if is("authorization") => Field::Authorization,
        13 => strip(spelt("x-remote-user")),
        14 => strip(is("http2-settings") || spelt("x-webauth-user")),
        15 if is("x-forwarded-for") => Field::Forwarding,
        16 if is("x-forwarded-host") || is("x-forwarded-port") => Field::Forwarding,
        16 => strip(is("proxy-connection") || spelt("x-forwarded-user")),
        17 if is("x-forwarded-proto") => Field::Forwarding,
        17 => strip(is("transfer-encoding") || spelt("x-forwarded-email")),
        18 if is("x-forwarded-server") => Field::Forwarding,
        18 => strip(is("proxy-authenticate") || spelt("x-forwarded-groups")),
        19 => strip(is("proxy-authorization") || spelt("x-auth-request-user")),
        20 => strip(spelt("x-authenticated-user") || spelt("x-auth-request-email")),
        21 => strip(spelt("x-auth-request-groups")),
        30 => strip(spelt("x-forwarded-preferred-username")),
        _ => Field::Other,
    }
}

/// Jira's (Tomcat's and Seraph's) session cookies: a caller must not bring their own
/// Jira session, or Jira would run the request as that session's user.
const JIRA_COOKIES: &[&str] = &["jsessionid", "seraph.rememberme.cookie"];

/// Seraph reads these query parameters as a login; Jira's OAuth 1.0a filter reads
/// `xoauth_requestor_id` as the user to run as. None may come from a client.
const SERAPH_PARAMS: &[&str] = &[
    "os_username",
    "os_password",
    "os_authtype",
    "os_cookie",
    "xoauth_requestor_id",
];

/// OAuth 1.0a protocol parameters (`oauth_*`) are the proxy's business: checked here,
/// never forwarded, so Jira's own OAuth filter never sees a consumer it does not know.
pub fn is_reserved_param(decoded_name: &str) -> bool {
    SERAPH_PARAMS.iter().any(|p| decoded_name.eq_ignore_ascii_case(p))
        || decoded_name.get(..6).is_some_and(|p| p.eq_ignore_ascii_case("oauth_"))
}

/// The path as the caller sent it, for the audit line of a request that ends before its
/// path is normalised (cut at 512 bytes; a URI path is ASCII, anything else being
/// percent-encoded, so bytes are characters).
pub fn as_sent(path: &str) -> String {
    path.get(..512).unwrap_or(path).to_owned()
}

pub fn admit(rt: &Runtime, ctx: &mut RequestCtx, parts: &mut Parts) -> Result<(), ProxyError> {
    // One pass over the fields sorts each by its name, counts and takes what is used
    // below (the first of each field is the one a lookup would give), and notes whether
    // any field must go: most requests have none, and are spared a second pass.
    let asserted = rt.upstream.asserted_headers();
    let (mut authorizations, mut hosts, mut connection, mut cookies) = (0, 0, false, 0usize);
    let (mut strip, mut forwarded) = (false, false);
    let (mut authorization, mut host, mut sent_id) = (None, None, None);
    for (name, value) in parts.headers.iter() {
        match classify(name.as_str()) {
            Field::Authorization => {
                authorizations += 1;
                authorization.get_or_insert(value);
            }
            Field::Host => {
                hosts += 1;
                host.get_or_insert(value);
            }
            Field::Connection => connection = true,
            Field::Cookie => cookies += 1,
            Field::RequestId => {
                sent_id.get_or_insert(value);
            }
            Field::Strip => strip = true,
            Field::Forwarding => forwarded = true,
            Field::Other => {}
        }
        // The fields the proxy asserts, whatever their group (the configuration refuses
        // the names read above, but this check does not rest on that).
        strip = strip || asserted.iter().any(|t| same_spelling(name.as_str(), t.as_str()));
    }
    ctx.id = request_id(sent_id);
    let (mut authorization, mut host) = (authorization.cloned(), host.cloned());
    let path = match normalize(parts.uri.path()) {
        Ok(path) => path,
        Err(e) => {
            ctx.raw_path = as_sent(parts.uri.path());
            return Err(ProxyError::BadRequest(e.message()));
        }
    };
    ctx.path = Some(path);
    ctx.query = parts.uri.query().and_then(filter_query);
    if authorizations > 1 {
        return Err(ProxyError::BadRequest("More than one Authorization header."));
    }
    if hosts > 1 {
        return Err(ProxyError::BadRequest("More than one Host header."));
    }
    // The fields `Connection` names are this hop's and go below: what was taken of them
    // above goes too, so the authenticators and Jira see the same request.
    let named = if connection {
        connection_named(&parts.headers)
    } else {
        Vec::new()
    };
    if named.contains(&AUTHORIZATION) {
        authorization = None;
    }
    if named.contains(&HOST) {
        host = None;
    }
    ctx.authorization = authorization;
    if strip || connection {
        // In one pass: hop-by-hop fields and those `Connection` names, `Expect`, and
        // every spelling of an identity header (the common ones, and those this proxy
        // asserts).
        remove_where(&mut parts.headers, |k| {
            matches!(classify(k.as_str()), Field::Strip | Field::Connection)
                || named.contains(k)
                || asserted.iter().any(|t| same_spelling(k.as_str(), t.as_str()))
        });
    }
    let ours = rt.session.as_ref().map(|s| s.cookie_names());
    if cookies > 0 {
        ctx.session_ids = strip_cookies(&mut parts.headers, cookies, ours.as_ref().map_or(&[][..], |n| &n[..]));
    }
    forwarding(rt, ctx, parts, host, forwarded);
    Ok(())
}

/// A request's id: one the proxy made, held in place, or a caller's own.
#[derive(Clone, PartialEq, Eq)]
pub enum RequestId {
    /// 32 hex digits.
    Made([u8; 32]),
    /// A caller's sane `X-Request-Id`, or a word for "none".
    Sent(HeaderValue),
}

impl RequestId {
    /// Letters, digits and `-_.:` only (see [`request_id`]): nothing to escape anywhere.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            RequestId::Made(hex) => hex,
            RequestId::Sent(v) => v.as_bytes(),
        }
    }

    pub fn to_value(&self) -> HeaderValue {
        match self {
            RequestId::Made(hex) => HeaderValue::from_bytes(hex).unwrap_or_else(|_| HeaderValue::from_static("-")),
            RequestId::Sent(v) => v.clone(),
        }
    }
}

impl std::fmt::Debug for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&String::from_utf8_lossy(self.as_bytes()))
    }
}

/// Accepts a sane client `X-Request-Id` (so ids join across systems), else makes one.
fn request_id(sent: Option<&HeaderValue>) -> RequestId {
    if let Some(v) = sent {
        let b = v.as_bytes();
        let sane = !b.is_empty()
            && b.len() <= 128
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b':'));
        if sane {
            return RequestId::Sent(v.clone());
        }
    }
    let Some(raw) = next_id() else {
        return RequestId::Sent(HeaderValue::from_static("unavailable"));
    };
    let mut hex = [0u8; 32];
    let raw = u128::from_be_bytes(raw);
    hex[..16].copy_from_slice(&hex16((raw >> 64) as u64));
    hex[16..].copy_from_slice(&hex16(raw as u64));
    RequestId::Made(hex)
}

/// Per thread: a random 64-bit prefix, random keys, and a count of ids made.
struct IdSource {
    prefix: u64,
    keys: [u64; 3],
    made: u64,
}

thread_local! {
    static IDS: std::cell::RefCell<Option<IdSource>> = const { std::cell::RefCell::new(None) };
}

/// A fresh 128-bit request id: the thread's random prefix, then its count of ids made
/// through a keyed bijection of 64-bit numbers (so ids never repeat on a thread, and do
/// not show how many requests it served). One random draw per thread, not per request.
fn next_id() -> Option<[u8; 16]> {
    IDS.with(|ids| {
        let mut ids = ids.borrow_mut();
        if ids.is_none() {
            let mut seed = [0u8; 32];
            aws_lc_rs::rand::fill(&mut seed).ok()?;
            let word = |i: usize| {
                let mut w = [0u8; 8];
                w.copy_from_slice(&seed[i * 8..i * 8 + 8]);
                u64::from_le_bytes(w)
            };
            *ids = Some(IdSource {
                prefix: word(0),
                // Odd multipliers: multiplying by one is invertible modulo 2^64.
                keys: [word(1), word(2) | 1, word(3) | 1],
                made: 0,
            });
        }
        let s = ids.as_mut()?;
        s.made = s.made.wrapping_add(1);
        // xor with a key, multiply by an odd key, xor-shift: each step is invertible.
        let mut x = s.made ^ s.keys[0];
        x = x.wrapping_mul(s.keys[1]);
        x ^= x >> 31;
        x = x.wrapping_mul(s.keys[2]);
        x ^= x >> 29;
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&s.prefix.to_be_bytes());
        out[8..].copy_from_slice(&x.to_be_bytes());
        Some(out)
    })
}

/// The 16 lower-case hex digits of `x`, most significant first, eight at a time: each
/// nibble spread to a byte, then `'0'` added, and `'a' - '0' - 10` more where the nibble
/// is 10 or above (where adding 6 carries into the byte's bit 4).
fn hex16(x: u64) -> [u8; 16] {
    const ONES: u64 = 0x0101_0101_0101_0101;
    let mut out = [0u8; 16];
    for (i, half) in [x >> 32, x & 0xffff_ffff].into_iter().enumerate() {
        // Nibble j into byte j, then the bytes reversed: the most significant first.
        let mut n = half;
        n = (n | (n << 16)) & 0x0000_ffff_0000_ffff;
        n = (n | (n << 8)) & 0x00ff_00ff_00ff_00ff;
        n = (n | (n << 4)) & 0x0f0f_0f0f_0f0f_0f0f;
        let n = n.swap_bytes();
        let tens = ((n + 6 * ONES) >> 4) & ONES;
        let text = n + u64::from(b'0') * ONES + tens * u64::from(b'a' - b'0' - 10);
        out[i * 8..i * 8 + 8].copy_from_slice(&text.to_le_bytes());
    }
    out
}

fn filter_query(q: &str) -> Option<String> {
    let kept: Vec<&str> = q
        .split('&')
        .filter(|pair| {
            let name = pair.split('=').next().unwrap_or("");
            let decoded: String = form_urlencoded::parse(name.as_bytes())
                .next()
                .map(|(k, _)| k.into_owned())
                .unwrap_or_default();
            !is_reserved_param(&decoded)
        })
        .collect();
    if kept.is_empty() { None } else { Some(kept.join("&")) }
}

/// Takes Jira's session cookies and the proxy's own (`ours`: the session cookie first)
/// out of the request, with RFC 2109's `$` attributes and any pair that hides one of
/// those cookies behind a comma; returns the values of the proxy's session cookie, in
/// order.
/// `fields` is how many `Cookie` fields the request was seen to carry: with one (the usual
/// case) the field is taken out in one lookup.
pub fn strip_cookies(headers: &mut HeaderMap, fields: usize, ours: &[&str]) -> Vec<String> {
    let mut session = Vec::new();
    // Several fields are collected first. (`HeaderMap::entry` would take them in one
    // lookup, but may grow the map to do so.)
    let (one, several): (Option<HeaderValue>, Vec<HeaderValue>) = if fields == 1 {
        (headers.remove(COOKIE), Vec::new())
    } else {
        let all: Vec<HeaderValue> = headers.get_all(COOKIE).iter().cloned().collect();
        if all.is_empty() {
            return session;
        }
        headers.remove(COOKIE);
        (None, all)
    };
    let single = several.is_empty();
    // The cookies that stay, joined again with "; ".
    let mut kept = String::new();
    // The one field as it came, while nothing in it has gone.
    let mut whole = None;
    let taken = |name: &str| JIRA_COOKIES.iter().chain(ours).any(|c| name.eq_ignore_ascii_case(c));
    for v in one.into_iter().chain(several) {
        // A cookie header we cannot read is dropped whole rather than passed blind.
        let Ok(s) = v.to_str() else { continue };
        let mut cut = false;
        for pair in s.split(';') {
            // A readable value holds visible ASCII, spaces and tabs only: ASCII trimming
            // is all the trimming there is.
            let pair = pair.trim_ascii();
            let (name, value) = name_and_value(pair);
            if ours.first().is_some_and(|c| name == *c) {
                session.push(unquote(value.trim_ascii()).to_owned());
            }
            // RFC 2109's attributes (`$Version`, `$Path`, ...) go, and so does a pair
            // with a comma before a cookie that would be taken: Tomcat parses a field
            // that opens with `$Version` by RFC 2109, where a comma separates cookies
            // too, and would find a Jira session cookie behind it.
            let strip = taken(name)
                || name.starts_with('$')
                || pair.split(',').skip(1).any(|p| taken(name_and_value(p.trim_ascii()).0));
            cut |= strip || pair.is_empty();
            if !pair.is_empty() && !strip {
                if !kept.is_empty() {
                    kept.push_str("; ");
                }
                kept.push_str(pair);
            }
        }
        if single && !cut {
            whole = Some(v);
        }
    }
    if let Some(v) = whole {
        headers.insert(COOKIE, v);
    } else if !kept.is_empty()
        && let Ok(v) = HeaderValue::from_str(&kept)
    {
        headers.insert(COOKIE, v);
    }
    session
}

/// A cookie pair's name (trimmed) and its value (as it follows the `=`, if any).
fn name_and_value(pair: &str) -> (&str, &str) {
    let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
    (name.trim_ascii(), value)
}

/// `s` without the double quotes at its ends (every one, as `trim_matches('"')` takes).
fn unquote(s: &str) -> &str {
    let b = s.as_bytes();
    let start = b.iter().position(|&c| c != b'"').unwrap_or(b.len());
    let end = b.iter().rposition(|&c| c != b'"').map_or(start, |i| i + 1);
    // Both ends are next to an ASCII quote or the string's ends: char boundaries.
    s.get(start..end).unwrap_or("")
}

/// Appends `ip` as text (`Display`'s form).
pub fn write_ip(out: &mut Vec<u8>, ip: IpAddr) {
    out.extend_from_slice(IpText::new(ip).as_ref());
}

/// The decimal digits of every octet value, and how many of them there are.
static OCTETS: [([u8; 3], u8); 256] = {
    let mut table = [([0u8; 3], 0u8); 256];
    let mut i = 0;
    while i < 256 {
        let v = i as u8;
        table[i] = if v >= 100 {
            ([b'0' + v / 100, b'0' + v / 10 % 10, b'0' + v % 10], 3)
        } else if v >= 10 {
            ([b'0' + v / 10, b'0' + v % 10, 0], 2)
        } else {
            ([b'0' + v, 0, 0], 1)
        };
        i += 1;
    }
    table
};

/// An address as text (`Display`'s form), held inline: an IPv4 address is written
/// without formatting machinery, and the text can back a header value with no copy.
pub struct IpText {
    text: [u8; 45],
    len: u8,
}

impl IpText {
    pub fn new(ip: IpAddr) -> IpText {
        let mut text = [0u8; 45];
        let mut n = 0;
        match ip {
            IpAddr::V4(v4) => {
                // Each octet's digits from a table (written for every request, two or
                // three times: the forwarded address, the audit line, a lockout key).
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    let (digits, len) = OCTETS[usize::from(octet)];
                    let at = n + usize::from(i > 0);
                    text[n] = b'.';
                    text[at..at + 3].copy_from_slice(&digits);
                    n = at + usize::from(len);
                }
            }
            IpAddr::V6(v6) => {
                // `Display` writes at most 39 characters; 45 is the most any IPv6 text takes.
                let mut rest = &mut text[..];
                let _ = std::io::Write::write_fmt(&mut rest, format_args!("{v6}"));
                n = 45 - rest.len();
            }
        }
        IpText { text, len: n as u8 }
    }
}

impl AsRef<[u8]> for IpText {
    fn as_ref(&self) -> &[u8] {
        &self.text[..usize::from(self.len)]
    }
}

/// The `X-Forwarded-For` to send upstream.
pub enum ForwardedFor {
    None,
    /// The peer's address alone (the peer is not a trusted proxy, or sent no list).
    Peer(IpText),
    /// A trusted proxy's list with the peer's address appended.
    Listed(HeaderValue),
}

impl ForwardedFor {
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            ForwardedFor::None => None,
            ForwardedFor::Peer(ip) => Some(ip.as_ref()),
            ForwardedFor::Listed(v) => Some(v.as_bytes()),
        }
    }
}

/// Decides the client address and the forwarding headers to send. A client's own
/// `X-Forwarded-*` is believed only when the peer is a configured trusted proxy.
/// `forwarded`: the request has a forwarding header (to read from a trusted proxy, and
/// to strip).
fn forwarding(rt: &Runtime, ctx: &mut RequestCtx, parts: &mut Parts, host: Option<HeaderValue>, forwarded: bool) {
    let peer = ctx.conn.peer.ip().to_canonical();
    let trusted = |ip: &IpAddr| rt.trusted_proxies.iter().any(|n| n.contains(ip));
    ctx.client_ip = peer;
    // Written in place: the field sent on borrows it.
    ctx.forwarded_for = ForwardedFor::Peer(IpText::new(peer));
    ctx.host = host.or_else(|| {
        parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    if !forwarded {
        return;
    }
    if trusted(&peer) {
        let listed: Vec<String> = parts
            .headers
            .get_all(X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|s| s.trim().to_owned())
            .collect();
        let ips: Option<Vec<IpAddr>> = listed.iter().map(|s| s.parse::<IpAddr>().ok()).collect();
        if let Some(ips) = ips.filter(|v| !v.is_empty()) {
            let ips: Vec<IpAddr> = ips.into_iter().map(|i| i.to_canonical()).collect();
            ctx.client_ip = ips.iter().rev().find(|ip| !trusted(ip)).copied().unwrap_or(ips[0]);
            ctx.forwarded_for = match HeaderValue::from_str(&format!("{}, {peer}", listed.join(", "))) {
                Ok(v) => ForwardedFor::Listed(v),
                Err(_) => ForwardedFor::None,
            };
        }
        match parts.headers.get(X_FORWARDED_PROTO).map(HeaderValue::as_bytes) {
            Some(b"https") => ctx.forwarded_proto = "https",
            Some(b"http") => ctx.forwarded_proto = "http",
            _ => {}
        }
        if let Some(h) = parts.headers.get(X_FORWARDED_HOST) {
            ctx.host = Some(h.clone());
        }
    }
    remove_where(&mut parts.headers, |k| classify(k.as_str()) == Field::Forwarding);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `classify` must answer, from the lists it spells out.
    fn listed(name: &str) -> Field {
        let hop = crate::upstream::headers::HOP_BY_HOP.contains(&name);
        match name {
            "authorization" => Field::Authorization,
            "host" => Field::Host,
            "connection" => Field::Connection,
            "cookie" => Field::Cookie,
            "x-request-id" => Field::RequestId,
            _ if hop || name == "expect" || IDENTITY_HEADERS.iter().any(|t| same_spelling(name, t)) => Field::Strip,
            _ if FORWARDING_HEADERS.contains(&name) => Field::Forwarding,
            _ => Field::Other,
        }
    }

    #[test]
    fn fields_are_sorted_by_length_as_the_lists_say_and_near_misses_are_other_fields() {
        let hop_by_hop = crate::upstream::headers::HOP_BY_HOP;
        let special = [
            "authorization",
            "host",
            "connection",
            "cookie",
            "x-request-id",
            "expect",
        ];
        let others = [
            "accept",
            "content-type",
            "user-agent",
            "x-atlassian-token",
            "origin",
            "referer",
        ];
        let mut names: Vec<String> = [hop_by_hop, &special, &others, IDENTITY_HEADERS, FORWARDING_HEADERS]
            .concat()
            .into_iter()
            .map(str::to_owned)
            .collect();
        // Every name changed in one place (a letter, `-`, `_` or nothing put in, taken
        // out or swapped), and every identity header with each `-` written `_`.
        let seeds = names.clone();
        for seed in &seeds {
            let b = seed.as_bytes();
            for i in 0..=b.len() {
                for c in [b'-', b'_', b'a', b'x', b's'] {
                    let mut put = b.to_vec();
                    put.insert(i, c);
                    names.push(String::from_utf8(put).expect("ascii"));
                    if i < b.len() {
                        let mut swapped = b.to_vec();
                        swapped[i] = c;
                        names.push(String::from_utf8(swapped).expect("ascii"));
                    }
                }
                if i < b.len() {
                    let mut cut = b.to_vec();
                    cut.remove(i);
                    names.push(String::from_utf8(cut).expect("ascii"));
                }
            }
        }
        for id in IDENTITY_HEADERS {
            names.push(id.replace('-', "_"));
        }
        for name in &names {
            assert_eq!(classify(name), listed(name), "{name}");
        }
        assert_eq!(classify("x_forwarded_user"), Field::Strip);
        assert_eq!(
            classify("x_forwarded_for"),
            Field::Other,
            "only identity headers in any spelling"
        );
        assert_eq!(classify("x-forwarded-users"), Field::Other);
        assert_eq!(classify("te"), Field::Strip);
        assert_eq!(classify("x-real-ip"), Field::Forwarding);
    }

    #[test]
    fn seraph_login_params_are_removed_in_any_spelling() {
        assert_eq!(
            filter_query("os_username=admin&os_password=x&jql=a"),
            Some("jql=a".into())
        );
        assert_eq!(filter_query("OS_AUTHTYPE=basic&os%5Fusername=a&os_cookie=true"), None);
        assert_eq!(
            filter_query("jql=project%3DX&maxResults=5"),
            Some("jql=project%3DX&maxResults=5".into())
        );
        assert_eq!(filter_query("os_usernamex=1"), Some("os_usernamex=1".into()));
    }

    #[test]
    fn jira_session_cookies_are_removed_others_kept() {
        let mut h = HeaderMap::new();
        h.append(COOKIE, HeaderValue::from_static("JSESSIONID=abc; theme=dark"));
        h.append(
            COOKIE,
            HeaderValue::from_static("seraph.rememberme.cookie=1; jsessionid=x; atlassian.xsrf.token=t"),
        );
        assert!(strip_cookies(&mut h, 2, &[]).is_empty());
        assert_eq!(h.get_all(COOKIE).iter().count(), 1);
        assert_eq!(
            h.get(COOKIE).map(|v| v.as_bytes()),
            Some(&b"theme=dark; atlassian.xsrf.token=t"[..])
        );
        let mut only = HeaderMap::new();
        only.insert(COOKIE, HeaderValue::from_static("JSESSIONID=abc"));
        strip_cookies(&mut only, 1, &[]);
        assert!(only.get(COOKIE).is_none());
    }

    #[test]
    fn the_proxys_cookies_are_taken_out_and_its_session_ids_kept_in_order() {
        let mut h = HeaderMap::new();
        h.append(
            COOKIE,
            HeaderValue::from_static("JAPSESSION=one; theme=dark; JAPSESSION-XSRF=t"),
        );
        h.append(COOKIE, HeaderValue::from_static("japsession=lower; JAPSESSION=\"two\""));
        let ids = strip_cookies(&mut h, 2, &["JAPSESSION", "JAPSESSION-XSRF"]);
        assert_eq!(ids, ["one", "two"], "only the exact name is a session id");
        assert_eq!(h.get(COOKIE).map(|v| v.as_bytes()), Some(&b"theme=dark"[..]));
    }

    /// A request's fields: one `Cookie` field of `value`.
    fn one_field(value: HeaderValue) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(COOKIE, value);
        h
    }

    #[test]
    fn a_cookie_field_with_nothing_to_take_goes_on_as_sent_and_an_unreadable_one_not_at_all() {
        let mut h = one_field(HeaderValue::from_static(" theme=dark;lang=en ;\tx=\"q\""));
        assert!(strip_cookies(&mut h, 1, &["JAPSESSION"]).is_empty());
        assert_eq!(
            h.get(COOKIE).map(|v| v.as_bytes()),
            Some(&b" theme=dark;lang=en ;\tx=\"q\""[..])
        );
        // An empty pair is tidied away, as when a cookie is taken.
        let mut h = one_field(HeaderValue::from_static("a=1;; b=2"));
        strip_cookies(&mut h, 1, &[]);
        assert_eq!(h.get(COOKIE).map(|v| v.as_bytes()), Some(&b"a=1; b=2"[..]));
        let mut h = one_field(HeaderValue::from_bytes(b"JAPSESSION=id; caf\xc3\xa9=1").expect("opaque"));
        assert!(strip_cookies(&mut h, 1, &["JAPSESSION"]).is_empty(), "not read at all");
        assert!(h.get(COOKIE).is_none(), "dropped whole");
        // A count that is stale (the field went as hop-by-hop) finds nothing to take.
        let mut h = HeaderMap::new();
        assert!(strip_cookies(&mut h, 1, &["JAPSESSION"]).is_empty());
        assert!(strip_cookies(&mut h, 2, &["JAPSESSION"]).is_empty());
        assert!(h.is_empty());
    }

    #[test]
    fn no_jira_session_cookie_hides_behind_rfc_2109s_commas() {
        let ours = ["JAPSESSION", "JAPSESSION-XSRF"];
        for (sent, forwarded, ids) in [
            // Tomcat reads this field by RFC 2109 (it opens with `$Version`), where the
            // comma ends a cookie: JSESSIONID would reach it.
            ("$Version=1; a=b, JSESSIONID=evil", None, &[][..]),
            ("$Version=1, JSESSIONID=evil; a=b", Some("a=b"), &[][..]),
            ("$Version=\"1\"; a=b; $Path=/", Some("a=b"), &[][..]),
            ("a=b, seraph.rememberme.cookie=x; c=d", Some("c=d"), &[][..]),
            ("a=b ,\tJapSession-Xsrf=t; c=d", Some("c=d"), &[][..]),
            ("JAPSESSION=id, jsessionid=x", None, &["id, jsessionid=x"][..]),
            // Commas in a value are passed on when nothing taken follows them.
            ("pref=a,b; list=x, y", Some("pref=a,b; list=x, y"), &[][..]),
            // The proxy's XSRF cookie alone, and names in odd spellings and spacing.
            ("JAPSESSION-XSRF=t", None, &[][..]),
            ("\tjSessionId =x; a=b", Some("a=b"), &[][..]),
            ("a=b;  JAPSESSION = \"s\" ", Some("a=b"), &["s"][..]),
        ] {
            let mut h = one_field(HeaderValue::from_static(sent));
            assert_eq!(strip_cookies(&mut h, 1, &ours), ids, "{sent:?}");
            assert_eq!(h.get(COOKIE).map(|v| v.to_str().expect("ascii")), forwarded, "{sent:?}");
        }
    }

    #[test]
    fn session_ids_lose_every_quote_at_their_ends_and_only_there() {
        for (value, id) in [
            ("abc", "abc"),
            ("\"abc\"", "abc"),
            ("\"\"a\"b\"\"\"", "a\"b"),
            ("\"", ""),
            ("", ""),
            (" \"x y\" ", "x y"),
        ] {
            let mut h = one_field(HeaderValue::from_str(&format!("JAPSESSION={value}")).expect("value"));
            assert_eq!(strip_cookies(&mut h, 1, &["JAPSESSION"]), [id], "{value:?}");
            assert_eq!(unquote(value.trim()), value.trim().trim_matches('"'));
        }
    }

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        for ip in [
            "0.0.0.0",
            "10.0.0.1",
            "127.0.0.1",
            "192.168.100.9",
            "255.255.255.255",
            "::1",
            "2001:db8::8a2e:370:7334",
            // The longest texts: eight full groups (39 characters), a form that could be
            // written with a dotted quad, and the IPv4-mapped form.
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "ffff:ffff:ffff:ffff:ffff:fffe:255.255.255.255",
            "::ffff:255.255.255.255",
        ] {
            let ip: IpAddr = ip.parse().expect("ip");
            let mut out = Vec::new();
            write_ip(&mut out, ip);
            assert_eq!(String::from_utf8(out).expect("utf-8"), ip.to_string());
        }
        // Every octet value, in every position.
        for v in 0..=255u8 {
            for ip in [[v, 0, 0, 0], [1, v, 2, 3], [10, 200, v, 9], [255, 9, 99, v], [v; 4]] {
                let ip = IpAddr::from(ip);
                assert_eq!(IpText::new(ip).as_ref(), ip.to_string().as_bytes());
            }
        }
    }

    #[test]
    fn request_id_accepts_sane_and_replaces_hostile() {
        let sane = request_id(Some(&HeaderValue::from_static("abc-123.x:y")));
        assert_eq!(sane.as_bytes(), b"abc-123.x:y");
        assert_eq!(sane.to_value(), "abc-123.x:y");
        let generated = request_id(Some(&HeaderValue::from_static("<script>")));
        assert_eq!(generated.as_bytes().len(), 32);
        assert!(generated.as_bytes().iter().all(u8::is_ascii_hexdigit));
        assert_eq!(generated.to_value().as_bytes(), generated.as_bytes());
        assert_eq!(format!("{generated:?}").as_bytes(), generated.as_bytes());
        assert_ne!(generated, request_id(None), "ids are random");
    }

    #[test]
    fn hex_digits_are_written_as_format_writes_them() {
        let mut x: u64 = 0x0123_4567_89ab_cdef;
        for _ in 0..10_000 {
            assert_eq!(&hex16(x)[..], format!("{x:016x}").as_bytes());
            x = x.rotate_left(7).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0xa5;
        }
        for x in [0, u64::MAX, 0xa, 0x9, 0xf0f0_f0f0_0a0a_0a0a] {
            assert_eq!(&hex16(x)[..], format!("{x:016x}").as_bytes());
        }
    }

    #[test]
    fn made_ids_never_repeat_and_do_not_count_openly() {
        let ids: Vec<[u8; 16]> = (0..50_000).map(|_| next_id().expect("an id")).collect();
        let distinct: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len());
        let low = |id: &[u8; 16]| u64::from_be_bytes(id[8..].try_into().expect("8 bytes"));
        let stepping_by_one = ids
            .windows(2)
            .filter(|w| low(&w[1]) == low(&w[0]).wrapping_add(1))
            .count();
        assert_eq!(stepping_by_one, 0, "consecutive ids do not give away the count");
        let other = std::thread::spawn(|| next_id().expect("an id")).join().expect("thread");
        assert_ne!(other[..8], ids[0][..8], "each thread has its own random prefix");
    }
}
