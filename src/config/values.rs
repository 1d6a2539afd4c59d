//! Typed leaf values parsed from config strings: durations (`"5m"`), secrets
//! (`inline | env:NAME | file:PATH`) and byte sizes.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use subtle::ConstantTimeEq;

/// Parses `"500ms"`, `"30s"`, `"5m"`, `"12h"`, `"1825d"` and sums like `"1h30m"`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty duration; write e.g. \"30s\", \"5m\", \"12h\"".into());
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!("not a duration: {s:?}; write e.g. \"30s\", \"5m\", \"12h\""));
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("number too large in {s:?}"))?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit_secs = match &rest[..unit_len] {
            "ms" => {
                total += Duration::from_millis(n);
                rest = &rest[unit_len..];
                continue;
            }
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            "" => return Err(format!("missing unit in {s:?} (ms, s, m, h or d)")),
            u => return Err(format!("unknown unit {u:?} in {s:?} (ms, s, m, h or d)")),
        };
        let secs = n
            .checked_mul(unit_secs)
            .ok_or_else(|| format!("duration too large: {s:?}"))?;
        total += Duration::from_secs(secs);
        rest = &rest[unit_len..];
    }
    Ok(total)
}

/// A secret from config. Its `Debug` never shows the value.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// `env:NAME` reads an environment variable, `file:PATH` a file (trailing newline
    /// trimmed, relative to the config file's folder), `inline:VALUE` or any other string
    /// is the value itself.
    pub fn resolve(spec: &str, base: &Path) -> Result<Secret, String> {
        if let Some(name) = spec.strip_prefix("env:") {
            return std::env::var(name)
                .map(|v| Secret(v.into_bytes()))
                .map_err(|_| format!("environment variable {name} is not set"));
        }
        if let Some(path) = spec.strip_prefix("file:") {
            let path = base.join(path);
            let mut bytes = std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                bytes.pop();
            }
            return Ok(Secret(bytes));
        }
        let value = spec.strip_prefix("inline:").unwrap_or(spec);
        Ok(Secret(value.as_bytes().to_vec()))
    }

    pub fn from_bytes(bytes: Vec<u8>) -> Secret {
        Secret(bytes)
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Constant-time equality (for equal lengths; the length itself is not secret).
    pub fn ct_eq(&self, other: &[u8]) -> bool {
        self.0.ct_eq(other).into()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_every_unit_and_sums() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("12h"), Ok(Duration::from_secs(43_200)));
        assert_eq!(parse_duration("1825d"), Ok(Duration::from_secs(157_680_000)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
    }

    #[test]
    fn durations_malformed_are_errors() {
        for bad in ["", "5", "m", "5x", "-5s", "5 m", "99999999999999999999s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should fail");
        }
    }

    #[test]
    fn secret_debug_is_redacted_and_sources_resolve() {
        let s = Secret::resolve("hunter2", Path::new(".")).expect("inline");
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
        assert!(s.ct_eq(b"hunter2"));
        assert!(!s.ct_eq(b"hunter3"));
        let s = Secret::resolve("inline:env:literal", Path::new(".")).expect("inline prefix");
        assert_eq!(s.expose(), b"env:literal");
        assert!(Secret::resolve("env:JAP_SURELY_UNSET_VARIABLE", Path::new(".")).is_err());
        let dir = std::env::temp_dir().join(format!("jap-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("s.txt"), "from-file\n").expect("write");
        let s = Secret::resolve("file:s.txt", &dir).expect("file");
        assert_eq!(s.expose(), b"from-file");
        std::fs::remove_dir_all(&dir).ok();
    }
}
