//! Argon2 password hashes: parsing the PHC strings in `[[users]]`, hashing for the
//! `hash-password` command, and verification off the async runtime with bounded
//! concurrency (one verify costs ~30 ms of CPU and ~19 MiB with the default parameters).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use argon2::password_hash::{CustomizedPasswordHasher, PasswordHasher, PasswordVerifier};
use argon2::{Argon2, Params, PasswordHash};
use tokio::sync::Semaphore;

use super::AuthError;

/// Checks that `phc` is an Argon2 PHC string this proxy can verify.
pub fn check_phc(phc: &str) -> Result<(), String> {
    let parsed = PasswordHash::new(phc)
        .map_err(|e| format!("not an argon2 PHC string ({e}); make one with `jira-auth-proxy hash-password`"))?;
    match parsed.algorithm.as_str() {
        "argon2id" | "argon2i" | "argon2d" => {}
        other => return Err(format!("algorithm {other} is not supported; use argon2id")),
    }
    Params::try_from(&parsed).map_err(|e| format!("bad argon2 parameters: {e}"))?;
    Ok(())
}

/// Hashes a password as Argon2id with the OWASP parameters (m=19456 KiB, t=2, p=1).
pub fn hash(password: &[u8]) -> Result<String, String> {
    Argon2::default()
        .hash_password(password)
        .map(|h| h.to_string())
        .map_err(|e| format!("hashing failed: {e}"))
}

/// Hashes with explicit (cheap) parameters; for tests and the demo's throwaway users.
pub fn hash_with(password: &[u8], m_kib: u32, t: u32) -> Result<String, String> {
    let params = Params::new(m_kib, t, 1, None).map_err(|e| e.to_string())?;
    let salt = random_bytes::<16>();
    Argon2::default()
        .hash_password_customized(password, &salt, None, None, params)
        .map(|h| h.to_string())
        .map_err(|e| format!("hashing failed: {e}"))
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    // The system RNG failing is not recoverable for a security product; fall back to
    // zeros would be wrong, so this is the one place a failure aborts start-up loudly.
    aws_lc_rs::rand::fill(&mut out).expect("system random number generator failed");
    out
}

/// Runs argon2 verifications on the blocking pool, at most one per core at a time.
pub struct Verifier {
    permits: Semaphore,
    /// A hash of a random password with the same parameters as the configured users,
    /// verified for unknown users so they cost the same time as known ones.
    dummy: Arc<PasswordHash>,
    verifications: AtomicU64,
}

impl Verifier {
    /// `like` is a configured hash whose parameters the dummy copies.
    pub fn new(like: Option<&PasswordHash>) -> Result<Self, String> {
        // The dummy needs the same parameters and output length as a real hash, not a
        // real hash: a random salt and a random output cost a verification exactly as much
        // (and no password matches them), without an argon2 run at start-up.
        let (algorithm, version, params, len) = match like {
            Some(h) => (
                h.algorithm.as_str().to_owned(),
                h.version.map_or(String::new(), |v| format!("v={v}$")),
                h.params.to_string(),
                h.hash.as_ref().map_or(32, |o| o.len()),
            ),
            None => {
                let p = Params::default();
                let params = format!("m={},t={},p={}", p.m_cost(), p.t_cost(), p.p_cost());
                ("argon2id".to_owned(), "v=19$".to_owned(), params, 32)
            }
        };
        let b64 = |bytes: &[u8]| base64::Engine::encode(&base64::engine::general_purpose::STANDARD_NO_PAD, bytes);
        let output = random_bytes::<64>();
        let phc = format!(
            "${algorithm}${version}{params}${}${}",
            b64(&random_bytes::<16>()),
            b64(&output[..len.clamp(4, 64)])
        );
        let dummy = PasswordHash::new(&phc).map_err(|e| format!("cannot build the timing dummy hash: {e}"))?;
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Ok(Verifier {
            permits: Semaphore::new(cores),
            dummy: Arc::new(dummy),
            verifications: AtomicU64::new(0),
        })
    }

    /// How many argon2 verifications ran (the dummy ones included).
    pub fn verifications(&self) -> u64 {
        self.verifications.load(Ordering::Relaxed)
    }

    /// Verifies `password` against `hash`; with `None` (unknown user) verifies against
    /// the dummy and answers false, taking the same time.
    pub async fn verify(&self, password: &[u8], hash: Option<Arc<PasswordHash>>) -> Result<bool, AuthError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| AuthError::Internal("verifier closed".into()))?;
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| self.dummy.clone());
        let password = password.to_vec();
        self.verifications.fetch_add(1, Ordering::Relaxed);
        let ok = tokio::task::spawn_blocking(move || Argon2::default().verify_password(&password, &*hash).is_ok())
            .await
            .map_err(|e| AuthError::Internal(format!("verify task failed: {e}")))?;
        Ok(known && ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn right_password_verifies_wrong_does_not() {
        let phc = hash_with(b"s3cret:with:colons", 1024, 1).expect("hash");
        check_phc(&phc).expect("valid phc");
        let parsed = Arc::new(PasswordHash::new(&phc).expect("parse"));
        let v = Verifier::new(Some(&parsed)).expect("verifier");
        assert!(v.verify(b"s3cret:with:colons", Some(parsed.clone())).await.expect("ok"));
        assert!(!v.verify(b"s3cret", Some(parsed)).await.expect("ok"));
    }

    #[test]
    fn the_timing_dummy_has_the_users_parameters_and_output_length() {
        let phc = hash_with(b"x", 2048, 3).expect("hash");
        let parsed = PasswordHash::new(&phc).expect("parse");
        let v = Verifier::new(Some(&parsed)).expect("verifier");
        assert_eq!(v.dummy.algorithm, parsed.algorithm);
        assert_eq!(v.dummy.version, parsed.version);
        assert_eq!(
            Params::try_from(&*v.dummy).expect("params"),
            Params::try_from(&parsed).expect("params")
        );
        assert_eq!(v.dummy.hash.map(|h| h.len()), parsed.hash.map(|h| h.len()));
        assert_ne!(v.dummy.salt, parsed.salt);
        // Without users, the parameters `hash-password` writes.
        let v = Verifier::new(None).expect("verifier");
        let (d, p) = (Params::try_from(&*v.dummy).expect("params"), Params::default());
        assert_eq!(
            (d.m_cost(), d.t_cost(), d.p_cost()),
            (p.m_cost(), p.t_cost(), p.p_cost())
        );
        assert_eq!(v.dummy.algorithm.as_str(), "argon2id");
    }

    #[tokio::test]
    async fn unknown_user_still_runs_one_verification() {
        let phc = hash_with(b"x", 1024, 1).expect("hash");
        let parsed = PasswordHash::new(&phc).expect("parse");
        let v = Verifier::new(Some(&parsed)).expect("verifier");
        assert!(!v.verify(b"anything", None).await.expect("ok"));
        assert_eq!(v.verifications(), 1);
    }

    #[test]
    fn non_argon2_hashes_are_refused() {
        assert!(check_phc("$2b$10$abcdefghijklmnopqrstuv").is_err());
        assert!(check_phc("plaintext").is_err());
        assert!(check_phc("$pbkdf2-sha256$i=1000$c2FsdA$aGFzaA").is_err());
    }
}
