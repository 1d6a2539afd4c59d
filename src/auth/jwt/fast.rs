//! Verification with keys parsed once. `jsonwebtoken` rebuilds the public key from the
//! JWK's numbers on every verification (for RSA that is most of the cost); for the
//! algorithms issuers use most (RS256, ES256, EdDSA) the key is parsed when the JWKS is
//! read, the signature is checked with it, and then the claims get exactly the checks
//! `jsonwebtoken::decode` makes with this member's `Validation` (required `exp`/`iss`/`aud`,
//! expiry and not-before with the leeway, issuer, audience). The unit tests hold the two
//! paths to the same verdict on every variant.

use aws_lc_rs::signature::{self, ParsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk};
use serde_json::{Map, Value};

/// The key of `jwk` parsed for the one algorithm the fast path serves with it, if any.
pub fn parsed_key(jwk: &Jwk, algs: &[Algorithm]) -> Option<(Algorithm, ParsedPublicKey)> {
    let b64 = |s: &str| URL_SAFE_NO_PAD.decode(s).ok();
    match &jwk.algorithm {
        AlgorithmParameters::RSA(p) if algs.contains(&Algorithm::RS256) => {
            let der = rsa_public_key_der(&b64(&p.n)?, &b64(&p.e)?);
            let key = ParsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, der).ok()?;
            Some((Algorithm::RS256, key))
        }
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 && algs.contains(&Algorithm::ES256) => {
            let (x, y) = (b64(&p.x)?, b64(&p.y)?);
            if x.len() != 32 || y.len() != 32 {
                return None;
            }
            let mut point = Vec::with_capacity(65);
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            let key = ParsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point).ok()?;
            Some((Algorithm::ES256, key))
        }
        AlgorithmParameters::OctetKeyPair(p)
            if p.curve == EllipticCurve::Ed25519 && algs.contains(&Algorithm::EdDSA) =>
        {
            let key = ParsedPublicKey::new(&signature::ED25519, b64(&p.x)?).ok()?;
            Some((Algorithm::EdDSA, key))
        }
        _ => None,
    }
}

/// DER `RSAPublicKey` (RFC 8017 A.1.1): SEQUENCE { INTEGER n, INTEGER e }.
fn rsa_public_key_der(n: &[u8], e: &[u8]) -> Vec<u8> {
    fn length(out: &mut Vec<u8>, len: usize) {
        if len < 0x80 {
            out.push(len as u8);
        } else {
            let bytes = len.to_be_bytes();
            let skip = bytes.iter().take_while(|b| **b == 0).count();
            out.push(0x80 | (bytes.len() - skip) as u8);
            out.extend_from_slice(&bytes[skip..]);
        }
    }
    fn integer(out: &mut Vec<u8>, magnitude: &[u8]) {
        let trimmed = &magnitude[magnitude.iter().take_while(|b| **b == 0).count()..];
        let pad = trimmed.first().is_none_or(|b| b & 0x80 != 0);
        out.push(0x02);
        length(out, trimmed.len() + usize::from(pad));
        if pad {
            out.push(0);
        }
        out.extend_from_slice(trimmed);
    }
    let mut body = Vec::with_capacity(n.len() + e.len() + 16);
    integer(&mut body, n);
    integer(&mut body, e);
    let mut out = Vec::with_capacity(body.len() + 4);
    out.push(0x30);
    length(&mut out, body.len());
    out.extend_from_slice(&body);
    out
}

/// What the claims must say (this member's `Validation`).
pub struct Expect<'a> {
    pub issuer: &'a str,
    pub audiences: &'a [String],
    pub leeway: u64,
}

/// A claim as `jsonwebtoken` reads it: absent (or null), present in the expected shape, or
/// present in another shape.
enum Claim<T> {
    Absent,
    Parsed(T),
    Malformed,
}

/// `exp`/`nbf`: a non-negative number that fits a u64, fractions rounded.
fn number(v: Option<&Value>) -> Claim<u64> {
    match v {
        None | Some(Value::Null) => Claim::Absent,
        Some(v) => match (v.as_u64(), v.as_f64()) {
            (Some(n), _) => Claim::Parsed(n),
            (None, Some(f)) if v.is_f64() && f.is_finite() && f >= 0.0 && f < u64::MAX as f64 => {
                Claim::Parsed(f.round() as u64)
            }
            _ => Claim::Malformed,
        },
    }
}

/// `iss`/`aud`: a string or an array of strings.
fn names(v: Option<&Value>) -> Claim<Vec<&str>> {
    match v {
        None | Some(Value::Null) => Claim::Absent,
        Some(Value::String(s)) => Claim::Parsed(vec![s.as_str()]),
        Some(Value::Array(items)) => items
            .iter()
            .map(Value::as_str)
            .collect::<Option<Vec<&str>>>()
            .map_or(Claim::Malformed, Claim::Parsed),
        Some(_) => Claim::Malformed,
    }
}

/// The claims the checks read.
#[derive(serde::Deserialize)]
struct Checked {
    exp: Option<Value>,
    nbf: Option<Value>,
    iss: Option<Value>,
    aud: Option<Value>,
}

/// Verifies `token`'s signature with `key`, then its claims against `expect` at `now`
/// (Unix seconds). Errors are the `ErrorKind`s `jsonwebtoken::decode` gives for the same
/// token.
pub fn decode(
    token: &str,
    key: &ParsedPublicKey,
    expect: &Expect<'_>,
    now: u64,
) -> Result<Map<String, Value>, ErrorKind> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(sig), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ErrorKind::InvalidToken);
    };
    let sig = URL_SAFE_NO_PAD.decode(sig).map_err(|_| ErrorKind::InvalidToken)?;
    let signed = &token.as_bytes()[..header.len() + 1 + payload.len()];
    key.verify_sig(signed, &sig).map_err(|_| ErrorKind::InvalidSignature)?;
    let json = URL_SAFE_NO_PAD.decode(payload).map_err(|_| ErrorKind::InvalidToken)?;
    let claims: Map<String, Value> = serde_json::from_slice(&json).map_err(|_| ErrorKind::InvalidToken)?;
    // Read as fields too, as jsonwebtoken does: a claim given twice is refused, not
    // decided by whichever copy a map keeps.
    let checked: Checked = serde_json::from_slice(&json).map_err(|_| ErrorKind::InvalidToken)?;

    let (exp, nbf) = (number(checked.exp.as_ref()), number(checked.nbf.as_ref()));
    let (iss, aud) = (names(checked.iss.as_ref()), names(checked.aud.as_ref()));
    for (name, present) in [
        ("exp", matches!(exp, Claim::Parsed(_))),
        ("iss", matches!(iss, Claim::Parsed(_))),
        ("aud", matches!(aud, Claim::Parsed(_))),
    ] {
        if !present {
            return Err(ErrorKind::MissingRequiredClaim(name.to_owned()));
        }
    }
    if matches!(nbf, Claim::Malformed) {
        return Err(ErrorKind::InvalidClaimFormat("nbf".to_owned()));
    }
    if let Claim::Parsed(exp) = exp
        && exp < now.saturating_sub(expect.leeway)
    {
        return Err(ErrorKind::ExpiredSignature);
    }
    if let Claim::Parsed(nbf) = nbf
        && nbf > now.saturating_add(expect.leeway)
    {
        return Err(ErrorKind::ImmatureSignature);
    }
    if let Claim::Parsed(iss) = &iss
        && !iss.contains(&expect.issuer)
    {
        return Err(ErrorKind::InvalidIssuer);
    }
    if let Claim::Parsed(aud) = &aud
        && !aud.iter().any(|a| expect.audiences.iter().any(|e| e == a))
    {
        return Err(ErrorKind::InvalidAudience);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{DecodingKey, EncodingKey, Header, Validation};
    use serde_json::json;

    const ISS: &str = "https://idp.example.com";
    const LEEWAY: u64 = 60;

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs()
    }

    fn validation(alg: Algorithm) -> Validation {
        let mut v = Validation::new(alg);
        v.algorithms = vec![alg];
        v.leeway = LEEWAY;
        v.validate_nbf = true;
        v.set_issuer(&[ISS]);
        v.set_audience(&["jira", "jira-dc"]);
        v.set_required_spec_claims(&["exp", "iss", "aud"]);
        v
    }

    struct Pair {
        alg: Algorithm,
        signing: EncodingKey,
        jwk: Jwk,
    }

    fn pairs() -> Vec<Pair> {
        let rsa = rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048).expect("rsa");
        let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("ec");
        let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("ed");
        let rsa_key = EncodingKey::from_rsa_pem(rsa.serialize_pem().as_bytes()).expect("rsa pem");
        let ec_key = EncodingKey::from_ec_pem(ec.serialize_pem().as_bytes()).expect("ec pem");
        let ed_key = EncodingKey::from_ed_pem(ed.serialize_pem().as_bytes()).expect("ed pem");
        let rsa_jwk = Jwk::from_encoding_key(&rsa_key, Algorithm::RS256).expect("jwk");
        let ec_jwk = Jwk::from_encoding_key(&ec_key, Algorithm::ES256).expect("jwk");
        let x = URL_SAFE_NO_PAD.encode(ed.public_key_raw());
        let ed_jwk: Jwk = serde_json::from_value(json!({"kty": "OKP", "crv": "Ed25519", "x": x})).expect("jwk");
        vec![
            Pair {
                alg: Algorithm::RS256,
                signing: rsa_key,
                jwk: rsa_jwk,
            },
            Pair {
                alg: Algorithm::ES256,
                signing: ec_key,
                jwk: ec_jwk,
            },
            Pair {
                alg: Algorithm::EdDSA,
                signing: ed_key,
                jwk: ed_jwk,
            },
        ]
    }

    /// Claim sets around every check: each must get the same verdict from both paths.
    fn variants() -> Vec<Value> {
        let t = now();
        let good = json!({"iss": ISS, "aud": "jira", "sub": "alice", "exp": t + 600});
        let with = |k: &str, v: Value| {
            let mut c = good.clone();
            c[k] = v;
            c
        };
        let without = |k: &str| {
            let mut c = good.clone();
            c.as_object_mut().expect("object").remove(k);
            c
        };
        vec![
            good.clone(),
            with("aud", json!(["other", "jira-dc"])),
            with("aud", json!(["other"])),
            with("aud", json!([])),
            with("aud", json!("other")),
            with("aud", json!(7)),
            with("aud", Value::Null),
            without("aud"),
            with("iss", json!("https://evil.example.com")),
            with("iss", json!([ISS, "x"])),
            with("iss", json!(["x"])),
            with("iss", json!(1)),
            without("iss"),
            without("exp"),
            with("exp", json!(t - 30)),
            with("exp", json!(t - 600)),
            with("exp", json!((t + 600) as f64 + 0.4)),
            with("exp", json!(-5)),
            with("exp", json!("soon")),
            with("exp", Value::Null),
            with("nbf", json!(t + 30)),
            with("nbf", json!(t + 600)),
            with("nbf", json!("later")),
            with("nbf", json!(t - 10)),
            json!([1, 2]),
        ]
    }

    fn verdict<T>(r: Result<T, ErrorKind>) -> String {
        match r {
            Ok(_) => "ok".into(),
            // Which required claim is named first depends on a HashSet's order.
            Err(ErrorKind::MissingRequiredClaim(_)) => "missing".into(),
            // Both are "invalid_token" to the caller.
            Err(ErrorKind::InvalidToken | ErrorKind::Json(_) | ErrorKind::Base64(_)) => "malformed".into(),
            Err(e) => format!("{e:?}"),
        }
    }

    #[test]
    fn the_fast_path_agrees_with_jsonwebtoken_on_every_claim_variant() {
        let expect = Expect {
            issuer: ISS,
            audiences: &["jira".to_owned(), "jira-dc".to_owned()],
            leeway: LEEWAY,
        };
        for pair in pairs() {
            let (alg, key) = parsed_key(&pair.jwk, &[pair.alg]).expect("parsed key");
            assert_eq!(alg, pair.alg);
            let slow = DecodingKey::from_jwk(&pair.jwk).expect("decoding key");
            for claims in variants() {
                let token = jsonwebtoken::encode(&Header::new(pair.alg), &claims, &pair.signing).expect("sign");
                let theirs = jsonwebtoken::decode::<Map<String, Value>>(&token, &slow, &validation(pair.alg))
                    .map(|d| d.claims)
                    .map_err(|e| e.into_kind());
                let ours = decode(&token, &key, &expect, now());
                assert_eq!(verdict(ours), verdict(theirs), "{:?} {claims}", pair.alg);
            }
        }
    }

    #[test]
    fn altered_tokens_and_other_keys_are_refused() {
        let expect = Expect {
            issuer: ISS,
            audiences: &["jira".to_owned()],
            leeway: 0,
        };
        let claims = json!({"iss": ISS, "aud": "jira", "sub": "alice", "exp": now() + 600});
        let pairs = pairs();
        for (i, pair) in pairs.iter().enumerate() {
            let (_, key) = parsed_key(&pair.jwk, &[pair.alg]).expect("parsed key");
            let token = jsonwebtoken::encode(&Header::new(pair.alg), &claims, &pair.signing).expect("sign");
            assert!(decode(&token, &key, &expect, now()).is_ok());
            // Another user in the payload, same signature.
            let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
            let forged = json!({"iss": ISS, "aud": "jira", "sub": "admin", "exp": now() + 600});
            parts[1] = URL_SAFE_NO_PAD.encode(forged.to_string());
            let forged = parts.join(".");
            assert!(matches!(
                decode(&forged, &key, &expect, now()),
                Err(ErrorKind::InvalidSignature)
            ));
            // A flipped signature bit.
            let mut sig = URL_SAFE_NO_PAD
                .decode(token.rsplit('.').next().expect("sig"))
                .expect("b64");
            sig[3] ^= 1;
            let (signed, _) = token.rsplit_once('.').expect("dot");
            let flipped = format!("{signed}.{}", URL_SAFE_NO_PAD.encode(&sig));
            assert!(matches!(
                decode(&flipped, &key, &expect, now()),
                Err(ErrorKind::InvalidSignature)
            ));
            // Signed by the next pair's key (another algorithm and key).
            let other = &pairs[(i + 1) % pairs.len()];
            let theirs = jsonwebtoken::encode(&Header::new(other.alg), &claims, &other.signing).expect("sign");
            assert!(decode(&theirs, &key, &expect, now()).is_err());
            // A claim given twice (a payload the issuer signed that way).
            let twice = format!(
                r#"{{"iss":"{ISS}","aud":"other","aud":"jira","sub":"alice","exp":{}}}"#,
                now() + 600
            );
            let header = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&Header::new(pair.alg)).expect("header"));
            let body = URL_SAFE_NO_PAD.encode(&twice);
            let signed = format!("{header}.{body}");
            let sig = jsonwebtoken::crypto::sign(signed.as_bytes(), &pair.signing, pair.alg).expect("sign");
            let token_twice = format!("{signed}.{sig}");
            let slow = DecodingKey::from_jwk(&pair.jwk).expect("decoding key");
            let mut v = validation(pair.alg);
            v.set_audience(&["jira"]);
            v.leeway = 0;
            assert!(jsonwebtoken::decode::<Map<String, Value>>(&token_twice, &slow, &v).is_err());
            assert!(matches!(
                decode(&token_twice, &key, &expect, now()),
                Err(ErrorKind::InvalidToken)
            ));
            // Not three parts.
            assert!(matches!(
                decode(&format!("{token}.x"), &key, &expect, now()),
                Err(ErrorKind::InvalidToken)
            ));
        }
    }

    #[test]
    fn rsa_der_integers_are_minimal_and_positive() {
        let der = rsa_public_key_der(&[0x00, 0x80, 0x01], &[0x01, 0x00, 0x01]);
        assert_eq!(
            der,
            [0x30, 0x0a, 0x02, 0x03, 0x00, 0x80, 0x01, 0x02, 0x03, 0x01, 0x00, 0x01]
        );
        let long = rsa_public_key_der(&[0xc5; 256], &[1, 0, 1]);
        assert_eq!(&long[..8], &[0x30, 0x82, 0x01, 0x0a, 0x02, 0x82, 0x01, 0x01]);
    }
}
