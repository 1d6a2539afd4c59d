//! RFC 6238 time-based one-time passwords, as authenticator apps make them: HMAC-SHA1,
//! 30-second steps, 6 digits, secrets in base32 (RFC 4648). A code is accepted for the
//! current step and one step either side (clock drift); the caller makes each accepted
//! step single-use.

use aws_lc_rs::hmac;
use subtle::ConstantTimeEq;

pub const STEP_SECS: u64 = 30;
const DIGITS: u32 = 6;

/// Decodes RFC 4648 base32 (case-insensitive; spaces, dashes and `=` padding ignored).
pub fn base32_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let (mut buffer, mut bits) = (0u32, 0u32);
    for c in text.chars() {
        if matches!(c, ' ' | '-' | '=') {
            continue;
        }
        let v = match c.to_ascii_uppercase() {
            c @ 'A'..='Z' => c as u32 - 'A' as u32,
            c @ '2'..='7' => c as u32 - '2' as u32 + 26,
            _ => return None,
        };
        buffer = (buffer << 5) | v;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// The code for one time step (RFC 4226 dynamic truncation).
pub fn code_at(secret: &[u8], step: u64) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret);
    let tag = hmac::sign(&key, &step.to_be_bytes());
    let h = tag.as_ref();
    let offset = (h[h.len() - 1] & 0x0f) as usize;
    let bin = (u32::from(h[offset]) & 0x7f) << 24
        | u32::from(h[offset + 1]) << 16
        | u32::from(h[offset + 2]) << 8
        | u32::from(h[offset + 3]);
    format!("{:0width$}", bin % 10u32.pow(DIGITS), width = DIGITS as usize)
}

/// The time step `code` is valid for at `unix_secs` (this step or one either side).
pub fn verify(secret: &[u8], code: &str, unix_secs: u64) -> Option<u64> {
    let code = code.trim();
    if code.len() != DIGITS as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let now = unix_secs / STEP_SECS;
    let mut found = None;
    // Every candidate is compared, in constant time, whatever matches.
    for step in [now.saturating_sub(1), now, now + 1] {
        if bool::from(code_at(secret, step).as_bytes().ct_eq(code.as_bytes())) {
            found = Some(step);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 Appendix B, SHA-1 (the 8-digit values, last 6 digits).
    #[test]
    fn rfc6238_test_vectors() {
        let secret = b"12345678901234567890";
        for (t, eight) in [
            (59u64, "94287082"),
            (1_111_111_109, "07081804"),
            (1_111_111_111, "14050471"),
            (1_234_567_890, "89005924"),
            (2_000_000_000, "69279037"),
            (20_000_000_000, "65353130"),
        ] {
            assert_eq!(code_at(secret, t / STEP_SECS), eight[2..], "t = {t}");
        }
    }

    #[test]
    fn base32_decodes_rfc4648_and_authenticator_spellings() {
        assert_eq!(
            base32_decode("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ").expect("base32"),
            b"12345678901234567890"
        );
        assert_eq!(base32_decode("gezd gnbv-gy3t qojq").expect("base32"), b"1234567890");
        assert_eq!(base32_decode("MZXW6===").expect("base32"), b"foo");
        assert_eq!(base32_decode("MZXW1"), None);
    }

    #[test]
    fn codes_are_accepted_one_step_either_side_only() {
        let secret = b"12345678901234567890";
        let t = 1_234_567_890;
        let code = code_at(secret, t / STEP_SECS);
        assert_eq!(verify(secret, &code, t), Some(t / STEP_SECS));
        assert!(verify(secret, &code, t + STEP_SECS).is_some());
        assert!(verify(secret, &code, t - STEP_SECS).is_some());
        assert_eq!(verify(secret, &code, t + 3 * STEP_SECS), None);
        assert_eq!(verify(secret, "12345", t), None);
        assert_eq!(verify(secret, "abcdef", t), None);
    }
}
