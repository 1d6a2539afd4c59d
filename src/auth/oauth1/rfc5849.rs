//! RFC 5849 (OAuth 1.0) signatures: one module for both directions (verifying what
//! clients send, and later signing what the proxy sends to Jira).
//!
//! - §3.6 percent-encoding: everything but ALPHA / DIGIT / `-` `.` `_` `~`, uppercase hex.
//! - §3.5.1 the `Authorization: OAuth` header: `realm` ignored, names and values
//!   percent-decoded, a repeated parameter refused.
//! - §3.4.1.3 parameters from the query, the header and a form-encoded body; a protocol
//!   parameter given in more than one place is refused; `oauth_signature` excluded;
//!   §3.4.1.3.2 encoded, sorted by name then value, joined.
//! - §3.4.1 base string `METHOD&enc(base URI)&enc(parameters)`.
//! - §3.4.2 HMAC-SHA1, §3.4.3 RSA-SHA1, §3.4.4 PLAINTEXT; comparisons in constant time.

use aws_lc_rs::hmac;
use aws_lc_rs::signature::{ParsedPublicKey, RSA_PKCS1_1024_8192_SHA1_FOR_LEGACY_USE_ONLY};
use base64::Engine;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use subtle::ConstantTimeEq;

/// RFC 3986 unreserved characters stay; everything else is encoded.
const OAUTH: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

pub fn encode(s: &str) -> String {
    utf8_percent_encode(s, OAUTH).to_string()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamError {
    Malformed,
    Duplicated,
}

/// Parses `OAuth k="v", ...`. `None` when the header is another scheme.
pub fn parse_header(value: &str) -> Option<Result<Vec<(String, String)>, ParamError>> {
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("oauth") {
        return None;
    }
    let mut out: Vec<(String, String)> = Vec::new();
    for part in rest.split(',') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let Some((k, v)) = part.split_once('=') else {
            return Some(Err(ParamError::Malformed));
        };
        let k = k.trim();
        let v = v.trim();
        let Some(v) = v.strip_prefix('"').and_then(|v| v.strip_suffix('"')) else {
            return Some(Err(ParamError::Malformed));
        };
        let (Ok(k), Ok(v)) = (percent_decode_str(k).decode_utf8(), percent_decode_str(v).decode_utf8()) else {
            return Some(Err(ParamError::Malformed));
        };
        if k == "realm" {
            continue;
        }
        if out.iter().any(|(n, _)| *n == k) {
            return Some(Err(ParamError::Duplicated));
        }
        out.push((k.into_owned(), v.into_owned()));
    }
    Some(Ok(out))
}

/// Form-decodes a query or body (`+` is a space, §3.4.1.3.1).
pub fn form_pairs(s: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(s.as_bytes()).into_owned().collect()
}

/// All signed parameters: the header's, the query's, the body's. A protocol (`oauth_`)
/// parameter may appear in only one place, once.
pub fn collect(
    header: &[(String, String)],
    query: &[(String, String)],
    body: &[(String, String)],
) -> Result<Vec<(String, String)>, ParamError> {
    let mut seen: Vec<&str> = Vec::new();
    for (k, _) in header.iter().chain(query).chain(body) {
        if k.starts_with("oauth_") {
            if seen.contains(&k.as_str()) {
                return Err(ParamError::Duplicated);
            }
            seen.push(k);
        }
    }
    Ok(header.iter().chain(query).chain(body).cloned().collect())
}

/// §3.4.1.3.2: encode, sort by name then value, join; `oauth_signature` left out.
pub fn normalize(params: &[(String, String)]) -> String {
    let mut enc: Vec<(String, String)> = params
        .iter()
        .filter(|(k, _)| k != "oauth_signature")
        .map(|(k, v)| (encode(k), encode(v)))
        .collect();
    enc.sort();
    enc.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// §3.4.1.2: lowercase scheme and host, default port dropped, no query.
pub fn base_uri(scheme: &str, host: &str, port: Option<u16>, path: &str) -> String {
    let scheme = scheme.to_ascii_lowercase();
    let host = host.to_ascii_lowercase();
    let default = matches!(
        (scheme.as_str(), port),
        ("http", Some(80)) | ("https", Some(443)) | (_, None)
    );
    let path = if path.is_empty() { "/" } else { path };
    if default {
        format!("{scheme}://{host}{path}")
    } else {
        format!("{scheme}://{host}:{}{path}", port.unwrap_or(0))
    }
}

pub fn base_string(method: &str, base_uri: &str, params: &[(String, String)]) -> String {
    format!(
        "{}&{}&{}",
        method.to_ascii_uppercase(),
        encode(base_uri),
        encode(&normalize(params))
    )
}

fn b64(sig: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD.decode(sig).ok()
}

pub fn hmac_sha1_key(consumer_secret: &[u8], token_secret: &[u8]) -> String {
    let cs = String::from_utf8_lossy(consumer_secret);
    let ts = String::from_utf8_lossy(token_secret);
    format!("{}&{}", encode(&cs), encode(&ts))
}

pub fn sign_hmac_sha1(base: &str, consumer_secret: &[u8], token_secret: &[u8]) -> String {
    let key = hmac::Key::new(
        hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        hmac_sha1_key(consumer_secret, token_secret).as_bytes(),
    );
    base64::engine::general_purpose::STANDARD.encode(hmac::sign(&key, base.as_bytes()))
}

/// Constant-time HMAC-SHA1 check.
pub fn verify_hmac_sha1(base: &str, signature: &str, consumer_secret: &[u8], token_secret: &[u8]) -> bool {
    let Some(sig) = b64(signature) else { return false };
    let key = hmac::Key::new(
        hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        hmac_sha1_key(consumer_secret, token_secret).as_bytes(),
    );
    hmac::verify(&key, base.as_bytes(), &sig).is_ok()
}

/// RSA-SHA1 (PKCS#1 v1.5) against a consumer's public key.
pub fn verify_rsa_sha1(base: &str, signature: &str, key: &ParsedPublicKey) -> bool {
    let Some(sig) = b64(signature) else { return false };
    key.verify_sig(base.as_bytes(), &sig).is_ok()
}

/// Parses a consumer's RSA public key (SPKI or PKCS#1 DER).
pub fn rsa_public_key(der: &[u8]) -> Result<ParsedPublicKey, String> {
    ParsedPublicKey::new(&RSA_PKCS1_1024_8192_SHA1_FOR_LEGACY_USE_ONLY, der)
        .map_err(|_| "not an RSA public key (1024 to 8192 bits)".to_string())
}

/// PLAINTEXT (§3.4.4): the signature is the encoded secrets; constant-time compare.
pub fn verify_plaintext(signature: &str, consumer_secret: &[u8], token_secret: &[u8]) -> bool {
    let want = hmac_sha1_key(consumer_secret, token_secret);
    want.as_bytes().ct_eq(signature.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    /// RFC 5849 §3.4.1.1's example, parameter by parameter.
    #[test]
    fn rfc5849_base_string_example() {
        let header = parse_header(
            "OAuth realm=\"Example\", oauth_consumer_key=\"9djdj82h48djs9d2\", oauth_token=\"kkk9d7dh3k39sjv7\", \
             oauth_signature_method=\"HMAC-SHA1\", oauth_timestamp=\"137131201\", oauth_nonce=\"7d8f3e4a\", \
             oauth_signature=\"djosJKDKJSD8743243%2Fjdk33klY%3D\"",
        )
        .expect("oauth")
        .expect("parses");
        let query = form_pairs("b5=%3D%253D&a3=a&c%40=&a2=r%20b");
        let body = form_pairs("c2&a3=2+q");
        let params = collect(&header, &query, &body).expect("no duplicates");
        let base = base_string("POST", &base_uri("http", "Example.com", Some(80), "/request"), &params);
        assert_eq!(
            base,
            "POST&http%3A%2F%2Fexample.com%2Frequest&a2%3Dr%2520b%26a3%3D2%2520q%26a3%3Da%26b5%3D%253D%25253D%26\
             c%2540%3D%26c2%3D%26oauth_consumer_key%3D9djdj82h48djs9d2%26oauth_nonce%3D7d8f3e4a%26\
             oauth_signature_method%3DHMAC-SHA1%26oauth_timestamp%3D137131201%26oauth_token%3Dkkk9d7dh3k39sjv7"
        );
    }

    /// The OAuth Core 1.0 appendix A.5 example (photos.example.net).
    #[test]
    fn oauth_core_hmac_sha1_example_signature() {
        let params = p(&[
            ("file", "vacation.jpg"),
            ("size", "original"),
            ("oauth_consumer_key", "dpf43f3p2l4k3l03"),
            ("oauth_token", "nnch734d00sl2jdk"),
            ("oauth_signature_method", "HMAC-SHA1"),
            ("oauth_timestamp", "1191242096"),
            ("oauth_nonce", "kllo9940pd9333jh"),
            ("oauth_version", "1.0"),
        ]);
        let base = base_string("GET", &base_uri("http", "photos.example.net", None, "/photos"), &params);
        assert_eq!(
            base,
            "GET&http%3A%2F%2Fphotos.example.net%2Fphotos&file%3Dvacation.jpg%26oauth_consumer_key%3Ddpf43f3p2l4k3l03%26\
             oauth_nonce%3Dkllo9940pd9333jh%26oauth_signature_method%3DHMAC-SHA1%26oauth_timestamp%3D1191242096%26\
             oauth_token%3Dnnch734d00sl2jdk%26oauth_version%3D1.0%26size%3Doriginal"
        );
        let sig = sign_hmac_sha1(&base, b"kd94hf93k423kf44", b"pfkkdhi9sl3r4s00");
        assert_eq!(sig, "tR3+Ty81lMeYAr/Fid0kMTYa/WM=");
        assert!(verify_hmac_sha1(&base, &sig, b"kd94hf93k423kf44", b"pfkkdhi9sl3r4s00"));
        assert!(!verify_hmac_sha1(&base, &sig, b"kd94hf93k423kf44", b"wrong"));
        assert!(!verify_hmac_sha1(
            &format!("{base}x"),
            &sig,
            b"kd94hf93k423kf44",
            b"pfkkdhi9sl3r4s00"
        ));
    }

    #[test]
    fn encoding_is_rfc3986_unreserved_only() {
        assert_eq!(encode("abcABC123-._~"), "abcABC123-._~");
        assert_eq!(encode("a b+c/d=e&f*g!"), "a%20b%2Bc%2Fd%3De%26f%2Ag%21");
        assert_eq!(encode("ü"), "%C3%BC");
    }

    #[test]
    fn sorting_is_by_encoded_name_then_encoded_value() {
        // Raw order of "a" vs "A" and of "%" values differs from encoded order.
        let params = p(&[("b", "2"), ("a", "z"), ("a", "Z"), ("a", "%"), ("a1", "x")]);
        assert_eq!(normalize(&params), "a=%25&a=Z&a=z&a1=x&b=2");
    }

    #[test]
    fn duplicated_protocol_parameters_are_refused() {
        assert_eq!(
            parse_header("OAuth oauth_nonce=\"a\", oauth_nonce=\"b\""),
            Some(Err(ParamError::Duplicated))
        );
        let h = p(&[("oauth_nonce", "a")]);
        let q = p(&[("oauth_nonce", "b")]);
        assert_eq!(collect(&h, &q, &[]), Err(ParamError::Duplicated));
        // Ordinary parameters may repeat (they are all signed).
        let q = p(&[("x", "1"), ("x", "2")]);
        assert!(collect(&h, &q, &[]).is_ok());
    }

    #[test]
    fn header_parsing_edge_cases() {
        assert_eq!(parse_header("Basic abc"), None);
        assert_eq!(
            parse_header("OAuth oauth_nonce=unquoted"),
            Some(Err(ParamError::Malformed))
        );
        assert_eq!(parse_header("OAuth oauth_nonce"), Some(Err(ParamError::Malformed)));
        let ok = parse_header("oauth  oauth_token=\"\", oauth_nonce=\"a%20b\"")
            .expect("oauth")
            .expect("ok");
        assert_eq!(ok, p(&[("oauth_token", ""), ("oauth_nonce", "a b")]));
    }

    #[test]
    fn base_uri_keeps_non_default_ports() {
        assert_eq!(
            base_uri("HTTPS", "Jira.Example.com", Some(443), "/rest"),
            "https://jira.example.com/rest"
        );
        assert_eq!(base_uri("https", "jira", Some(8443), "/rest"), "https://jira:8443/rest");
        assert_eq!(base_uri("http", "jira", Some(8080), ""), "http://jira:8080/");
    }

    #[test]
    fn plaintext_compares_the_encoded_secrets() {
        assert!(verify_plaintext("cs%26x&ts", b"cs&x", b"ts"));
        assert!(!verify_plaintext("cs&x&ts", b"cs&x", b"ts"));
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        fn params() -> impl Strategy<Value = Vec<(String, String)>> {
            // Distinct names (a header carries each once), any Unicode values.
            proptest::collection::btree_map(
                "oauth_[a-z_]{1,12}|[a-zA-Z0-9 ._~%&=+,\"-]{1,10}",
                any::<String>(),
                0..8,
            )
            .prop_map(|m| m.into_iter().filter(|(k, _)| k != "realm").collect())
        }

        proptest! {
            #[test]
            fn encoding_leaves_only_unreserved_characters_and_decodes_back(s in any::<String>()) {
                let e = encode(&s);
                prop_assert!(e.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~%".contains(&b)));
                // Hex digits are uppercase (§3.6).
                prop_assert!(!e.split('%').skip(1).any(|h| h.chars().take(2).any(|c| c.is_ascii_lowercase())));
                prop_assert_eq!(percent_decode_str(&e).decode_utf8().expect("utf-8").into_owned(), s);
            }

            #[test]
            fn a_header_we_write_parses_back_to_the_same_parameters(ps in params()) {
                let header = format!(
                    "OAuth realm=\"x\", {}",
                    ps.iter().map(|(k, v)| format!("{}=\"{}\"", encode(k), encode(v))).collect::<Vec<_>>().join(", ")
                );
                prop_assert_eq!(parse_header(&header), Some(Ok(ps)));
            }

            #[test]
            fn a_repeated_parameter_in_a_header_is_refused(k in "oauth_[a-z]{1,8}", a in any::<String>(), b in any::<String>()) {
                let header = format!("OAuth {k}=\"{}\", {k}=\"{}\"", encode(&a), encode(&b));
                prop_assert_eq!(parse_header(&header), Some(Err(ParamError::Duplicated)));
            }

            #[test]
            fn parsers_never_panic_on_arbitrary_input(s in any::<String>(), bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
                let _ = parse_header(&s);
                let _ = parse_header(&format!("OAuth {s}"));
                let _ = form_pairs(&s);
                let _ = form_pairs(&String::from_utf8_lossy(&bytes));
            }

            #[test]
            fn the_base_string_ignores_parameter_order(mut ps in params(), seed in any::<u64>()) {
                let before = base_string("POST", "https://jira.example.com/rest", &ps);
                // A deterministic shuffle.
                let n = ps.len();
                for i in (1..n).rev() {
                    let j = (seed.wrapping_mul(i as u64 + 7) % (i as u64 + 1)) as usize;
                    ps.swap(i, j);
                }
                prop_assert_eq!(base_string("POST", "https://jira.example.com/rest", &ps), before);
            }

            #[test]
            fn a_protocol_parameter_in_two_places_is_refused(v in any::<String>(), w in any::<String>()) {
                let h = vec![("oauth_nonce".to_string(), v)];
                let q = vec![("oauth_nonce".to_string(), w)];
                prop_assert_eq!(collect(&h, &q, &[]), Err(ParamError::Duplicated));
                prop_assert!(collect(&h, &[], &q).is_err());
            }

            #[test]
            fn empty_values_and_names_with_reserved_characters_stay_distinct(k in "[a-z]{1,5}", v in any::<String>()) {
                // "a=" and "a" with an empty value, and names needing encoding, sort on their
                // encoded forms (§3.4.1.3.2).
                let ps = vec![(k.clone(), String::new()), (format!("{k}&"), v.clone())];
                let n = normalize(&ps);
                prop_assert!(n.starts_with(&format!("{k}=&{k}%26=")), "{}", n);
            }
        }
    }
}
