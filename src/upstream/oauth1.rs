//! The `oauth1` identity mode: every forwarded request is signed as two-legged OAuth 1.0a
//! with impersonation, the way Atlassian application links call each other: RSA-SHA1, an
//! empty `oauth_token`, and `xoauth_requestor_id=<jira user>` in the query (and so in the
//! signature). Stock Jira runs such a request as that user when the application link's
//! consumer allows two-legged impersonation; its `X-AUSERNAME` answer is then checked.
//!
//! RSA-SHA1 signing uses the `rsa` crate with blinding (`sign_with_rng`). Its advisory
//! RUSTSEC-2023-0071 (Marvin) is a timing side channel on *decryption and signing* observed
//! by an attacker who can submit many chosen inputs and time them precisely; here the
//! proxy signs base strings of its own requests to its own Jira, never attacker-chosen
//! ciphertexts, and blinding is on. The base strings and key never leave the process.

use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::DecodePrivateKey;
use rsa::{Pkcs1v15Sign, RsaPrivateKey};
use sha1::{Digest, Sha1};

use crate::auth::oauth1::rfc5849;

pub struct Signer {
    consumer_key: String,
    key: RsaPrivateKey,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("consumer_key", &self.consumer_key)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// A PKCS#8 (`PRIVATE KEY`) or PKCS#1 (`RSA PRIVATE KEY`) PEM.
    pub fn from_pem(consumer_key: &str, pem: &str) -> Result<Signer, String> {
        let key = RsaPrivateKey::from_pkcs8_pem(pem)
            .or_else(|_| RsaPrivateKey::from_pkcs1_pem(pem))
            .map_err(|_| "not an RSA private key in PEM (PKCS#8 or PKCS#1)".to_string())?;
        Ok(Signer {
            consumer_key: consumer_key.to_owned(),
            key,
        })
    }

    /// The `Authorization` header for a request to `base_uri` (scheme://host[:port]/path,
    /// as Jira sees it) with these query parameters (`xoauth_requestor_id` among them).
    pub fn authorization(
        &self,
        method: &str,
        base_uri: &str,
        query: &[(String, String)],
        timestamp: u64,
    ) -> Result<String, String> {
        let nonce = crate::auth::oauth1::tokens::random_token().map_err(|e| e.to_string())?;
        let mut oauth: Vec<(String, String)> = vec![
            ("oauth_consumer_key".into(), self.consumer_key.clone()),
            ("oauth_token".into(), String::new()),
            ("oauth_signature_method".into(), "RSA-SHA1".into()),
            ("oauth_timestamp".into(), timestamp.to_string()),
            ("oauth_nonce".into(), nonce),
            ("oauth_version".into(), "1.0".into()),
        ];
        let all: Vec<(String, String)> = oauth.iter().chain(query).cloned().collect();
        let base = rfc5849::base_string(method, base_uri, &all);
        let digest = Sha1::digest(base.as_bytes());
        let sig = self
            .key
            .sign_with_rng(&mut rsa::rand_core::OsRng, Pkcs1v15Sign::new::<Sha1>(), &digest)
            .map_err(|e| format!("signing failed: {e}"))?;
        oauth.push((
            "oauth_signature".into(),
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, sig),
        ));
        let parts: Vec<String> = oauth
            .iter()
            .map(|(k, v)| format!("{}=\"{}\"", rfc5849::encode(k), rfc5849::encode(v)))
            .collect();
        Ok(format!("OAuth {}", parts.join(", ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_with_the_public_key_through_the_shared_base_string() {
        let kp = rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048).expect("key");
        let signer = Signer::from_pem("jira-auth-proxy", &kp.serialize_pem()).expect("pem");
        let query = vec![
            ("jql".to_string(), "project = X".to_string()),
            ("xoauth_requestor_id".to_string(), "alice".to_string()),
        ];
        let header = signer
            .authorization("GET", "http://jira:8080/rest/api/2/search", &query, 1_700_000_000)
            .expect("sign");
        let params = rfc5849::parse_header(&header).expect("oauth").expect("parses");
        let all = rfc5849::collect(&params, &query, &[]).expect("no duplicates");
        let sig = params
            .iter()
            .find(|(k, _)| k == "oauth_signature")
            .map(|(_, v)| v.clone())
            .expect("signature");
        let base = rfc5849::base_string("GET", "http://jira:8080/rest/api/2/search", &all);
        use rustls_pki_types::pem::PemObject;
        let spki =
            rustls_pki_types::SubjectPublicKeyInfoDer::from_pem_slice(kp.public_key_pem().as_bytes()).expect("spki");
        let key = rfc5849::rsa_public_key(spki.as_ref()).expect("public key");
        assert!(rfc5849::verify_rsa_sha1(&base, &sig, &key));
        let tampered = rfc5849::base_string("GET", "http://jira:8080/rest/api/2/search?x", &all);
        assert!(!rfc5849::verify_rsa_sha1(&tampered, &sig, &key));
        assert!(!format!("{signer:?}").contains("PRIVATE"));
    }
}
