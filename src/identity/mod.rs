//! Principal → Jira username: domain strip, lowercase, static map, then a check that
//! the result is a name Jira (and the identity header) can carry unambiguously.

pub mod groups;

use crate::auth::Principal;
use crate::config::IdentityRules;

/// Longest username Jira stores.
const MAX_LEN: usize = 255;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("the mapped username is empty")]
    Empty,
    #[error("the mapped username is longer than 255 characters")]
    TooLong,
    #[error("the mapped username contains whitespace, a control character or a comma")]
    Unsafe,
}

impl IdentityError {
    pub fn code(&self) -> &'static str {
        match self {
            IdentityError::Empty => "username_empty",
            IdentityError::TooLong => "username_too_long",
            IdentityError::Unsafe => "username_unsafe",
        }
    }
}

pub struct IdentityMap {
    rules: IdentityRules,
}

impl IdentityMap {
    pub fn new(rules: IdentityRules) -> Self {
        IdentityMap { rules }
    }

    pub fn resolve(&self, p: &Principal) -> Result<String, IdentityError> {
        self.map_name(p.subject())
    }

    pub fn map_name(&self, subject: &str) -> Result<String, IdentityError> {
        let mut name = subject.to_owned();
        if let Some((local, domain)) = name.rsplit_once('@')
            && self.rules.strip_domains.iter().any(|d| d.eq_ignore_ascii_case(domain))
        {
            name = local.to_owned();
        }
        if self.rules.lowercase {
            name = name.to_lowercase();
        }
        if let Some(mapped) = self.rules.map.get(&name) {
            name = mapped.clone();
        }
        validate(&name)?;
        Ok(name)
    }
}

/// Refuses names that could be read two ways: whitespace (trimmed by some Jira code
/// paths), control characters (header injection), commas (header lists).
pub fn validate(name: &str) -> Result<(), IdentityError> {
    if name.is_empty() {
        return Err(IdentityError::Empty);
    }
    if name.is_ascii() {
        // Most names: one byte a character, and only the ASCII cases below apply.
        if name.len() > MAX_LEN {
            return Err(IdentityError::TooLong);
        }
        if name
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control() || b == b',')
        {
            return Err(IdentityError::Unsafe);
        }
        return Ok(());
    }
    by_chars(name)
}

/// [`validate`]'s rule for a non-empty name, one character at a time.
fn by_chars(name: &str) -> Result<(), IdentityError> {
    if name.chars().count() > MAX_LEN {
        return Err(IdentityError::TooLong);
    }
    if name
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == ',' || is_invisible(c))
    {
        return Err(IdentityError::Unsafe);
    }
    Ok(())
}

/// Zero-width and bidi-control characters that make two names look the same.
fn is_invisible(c: char) -> bool {
    matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2064}' | '\u{FEFF}')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::AuthKind;
    use std::collections::HashMap;

    #[test]
    fn ascii_names_are_judged_as_every_other_name() {
        let mut names = vec!["a".repeat(MAX_LEN), "a".repeat(MAX_LEN + 1)];
        for b in 0u8..128 {
            let c = char::from(b);
            names.extend([format!("{c}"), format!("al{c}ce"), format!("alice{c}")]);
        }
        for name in &names {
            assert_eq!(validate(name), by_chars(name), "{name:?}");
        }
    }

    fn map(lowercase: bool) -> IdentityMap {
        IdentityMap::new(IdentityRules {
            lowercase,
            strip_domains: vec!["example.com".into()],
            map: HashMap::from([("svc-jenkins".to_string(), "jenkins".to_string())]),
            groups_from_jira: None,
        })
    }

    #[test]
    fn email_in_stripped_domain_becomes_local_part() {
        let p = Principal::for_tests(AuthKind::Basic, "Alice@Example.COM", &[]);
        assert_eq!(map(true).resolve(&p), Ok("alice".into()));
        assert_eq!(map(false).resolve(&p), Ok("Alice".into()));
    }

    #[test]
    fn other_domains_are_kept() {
        assert_eq!(map(true).map_name("bob@other.org"), Ok("bob@other.org".into()));
    }

    #[test]
    fn static_map_applies_after_lowercase() {
        assert_eq!(map(true).map_name("SVC-Jenkins"), Ok("jenkins".into()));
    }

    #[test]
    fn unsafe_usernames_are_refused() {
        let m = map(false);
        for bad in [
            "al ice",
            "alice\t",
            "a,b",
            "x\r\nX-Evil: 1",
            "al\u{200B}ice",
            "\u{0085}x",
        ] {
            assert_eq!(m.map_name(bad), Err(IdentityError::Unsafe), "{bad:?}");
        }
        assert_eq!(m.map_name(""), Err(IdentityError::Empty));
        assert_eq!(m.map_name(&"a".repeat(256)), Err(IdentityError::TooLong));
        assert_eq!(m.map_name("jürgen.o'brien"), Ok("jürgen.o'brien".into()));
    }
}
