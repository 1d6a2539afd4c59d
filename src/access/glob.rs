//! Path globs for access rules, matched segment by segment against the normalised path:
//! `*` is exactly one segment, `**` any number (zero included). A trailing slash does
//! not change what a path matches, so `/x/` cannot dodge a rule written for `/x`.

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Lit(String),
    One,
    Any,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    segs: Vec<Seg>,
}

/// The literal segments a pattern starts with (before its first `*` or `**`): every path
/// it matches starts with them, which is what the rule index keys on.
pub fn literal_prefix(pattern: &str) -> Vec<&str> {
    pattern
        .split('/')
        .filter(|s| !s.is_empty())
        .take_while(|s| !s.contains('*'))
        .collect()
}

impl std::fmt::Display for Glob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.segs.is_empty() {
            return f.write_str("/");
        }
        for s in &self.segs {
            match s {
                Seg::Lit(l) => write!(f, "/{l}")?,
                Seg::One => f.write_str("/*")?,
                Seg::Any => f.write_str("/**")?,
            }
        }
        Ok(())
    }
}

/// Validates a pattern for config errors.
pub fn check(pattern: &str) -> Result<(), String> {
    Glob::compile(pattern).map(|_| ())
}

impl Glob {
    pub fn compile(pattern: &str) -> Result<Glob, String> {
        let Some(rest) = pattern.strip_prefix('/') else {
            return Err(format!("path patterns start with '/': {pattern:?}"));
        };
        let mut segs = Vec::new();
        for s in rest.split('/').filter(|s| !s.is_empty()) {
            segs.push(match s {
                "*" => Seg::One,
                "**" => Seg::Any,
                s if s.contains('*') => {
                    return Err(format!("'*' and '**' must be a whole segment: {pattern:?}"));
                }
                "." | ".." => return Err(format!("dot segments never match a normalised path: {pattern:?}")),
                s => Seg::Lit(s.to_owned()),
            });
        }
        Ok(Glob { segs })
    }

    /// Every path `other` matches, this matches too (certainly; false when unsure).
    pub fn covers(&self, other: &Glob) -> bool {
        if self == other {
            return true;
        }
        // `prefix/**` covers anything starting with the same prefix (literals, or `*` over
        // any single segment).
        match self.segs.split_last() {
            Some((Seg::Any, prefix)) => {
                other.segs.len() >= prefix.len()
                    && prefix.iter().zip(&other.segs).all(|(a, b)| match (a, b) {
                        (Seg::One, Seg::Lit(_) | Seg::One) => true,
                        (a, b) => a == b && *a != Seg::Any,
                    })
            }
            _ => false,
        }
    }

    pub fn matches(&self, path: &str) -> bool {
        let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        match_from(&self.segs, &parts)
    }
}

fn match_from(segs: &[Seg], parts: &[&str]) -> bool {
    match segs.split_first() {
        None => parts.is_empty(),
        Some((Seg::Any, rest)) => (0..=parts.len()).any(|skip| match_from(rest, &parts[skip..])),
        Some((seg, rest)) => match parts.split_first() {
            None => false,
            Some((p, tail)) => {
                let ok = match seg {
                    Seg::Lit(l) => l == p,
                    _ => true,
                };
                ok && match_from(rest, tail)
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, path: &str) -> bool {
        Glob::compile(p).expect("pattern").matches(path)
    }

    #[test]
    fn literal_paths_match_exactly_and_ignore_trailing_slash() {
        assert!(m("/rest/api/2/myself", "/rest/api/2/myself"));
        assert!(m("/rest/api/2/myself", "/rest/api/2/myself/"));
        assert!(!m("/rest/api/2/myself", "/rest/api/2/myselfx"));
        assert!(!m("/rest/api/2/myself", "/rest/api/2/myself/x"));
        assert!(!m("/rest/api/2/myself", "/REST/api/2/myself"));
    }

    #[test]
    fn star_is_one_segment_double_star_any() {
        assert!(m("/rest/*/2/issue", "/rest/api/2/issue"));
        assert!(!m("/rest/*/issue", "/rest/api/2/issue"));
        assert!(m("/secure/admin/**", "/secure/admin"));
        assert!(m("/secure/admin/**", "/secure/admin/a/b/c"));
        assert!(m("/**/attachments", "/rest/api/2/issue/X-1/attachments"));
        assert!(m("/**", "/"));
    }

    #[test]
    fn literal_prefixes_stop_at_the_first_wildcard() {
        assert_eq!(
            literal_prefix("/rest/api/2/issue/*/comment"),
            ["rest", "api", "2", "issue"]
        );
        assert_eq!(literal_prefix("/**/attachments"), Vec::<&str>::new());
        assert_eq!(literal_prefix("/"), Vec::<&str>::new());
    }

    #[test]
    fn a_double_star_tail_covers_longer_patterns_with_its_prefix() {
        let g = |p: &str| Glob::compile(p).expect("pattern");
        assert!(g("/secure/admin/**").covers(&g("/secure/admin/users")));
        assert!(g("/secure/**").covers(&g("/secure/*/x/**")));
        assert!(g("/rest/*/**").covers(&g("/rest/api/2")));
        assert!(!g("/rest/api/*").covers(&g("/rest/api/2")), "unsure is false");
        assert!(!g("/secure/admin/**").covers(&g("/secure/**")));
        assert!(!g("/a/**").covers(&g("/**/a")));
        assert_eq!(g("/a/*/**").to_string(), "/a/*/**");
    }

    #[test]
    fn bad_patterns_are_config_errors() {
        assert!(check("rest/api").is_err());
        assert!(check("/rest/api*").is_err());
        assert!(check("/rest/../admin").is_err());
        assert!(check("/").is_ok());
    }
}
