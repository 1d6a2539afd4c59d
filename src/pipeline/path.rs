//! Path normalisation, done once, the way Jira's Tomcat reads a path: strip `;params`
//! from every segment, percent-decode once, then resolve dot segments and empty segments.
//! Rules match the decoded form; Jira is sent the re-encoded form of the SAME path, so
//! the two can never disagree. Ambiguous input is refused instead of guessed at:
//! an encoded `/` (`%2F`) or `\` (`%5C`), a raw `\`, NUL or other control characters,
//! malformed escapes, invalid UTF-8, and `..` climbing above the root.

use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};

/// What we re-encode in a segment: everything but unreserved characters and the
/// sub-delimiters Tomcat reads literally (RFC 3986 §3.3 `pchar`, minus `;`).
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b';')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalPath {
    /// Decoded, for rules and logs: `/rest/api/2/issue/ABC-1`.
    pub decoded: String,
    /// Re-encoded, when that differs from `decoded` (see [`NormalPath::encoded`]).
    reencoded: Option<String>,
}

impl NormalPath {
    /// Re-encoded, for the upstream request line. A path that was already normal (most)
    /// is its own encoding, kept once.
    pub fn encoded(&self) -> &str {
        self.reencoded.as_deref().unwrap_or(&self.decoded)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    NotOriginForm,
    EncodedSlash,
    Backslash,
    ControlCharacter,
    BadEscape,
    NotUtf8,
    AboveRoot,
}

impl PathError {
    pub fn message(self) -> &'static str {
        match self {
            PathError::NotOriginForm => "The request path must start with '/'.",
            PathError::EncodedSlash => "Encoded '/' or '\\' in the path is not allowed.",
            PathError::Backslash => "'\\' in the path is not allowed.",
            PathError::ControlCharacter => "Control characters in the path are not allowed.",
            PathError::BadEscape => "Malformed percent-encoding in the path.",
            PathError::NotUtf8 => "The path is not valid UTF-8 after decoding.",
            PathError::AboveRoot => "The path climbs above the root.",
        }
    }
}

fn decode_segment(raw: &str) -> Result<String, PathError> {
    let bytes = raw.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'%' {
            let ok = bytes.len() > i + 2 && bytes[i + 1].is_ascii_hexdigit() && bytes[i + 2].is_ascii_hexdigit();
            if !ok {
                return Err(PathError::BadEscape);
            }
        }
    }
    let decoded: Vec<u8> = percent_decode_str(raw).collect();
    for b in &decoded {
        match b {
            // A raw '/' splits segments and a raw '\\' was refused earlier, so these
            // can only come from `%2F` / `%5C`.
            b'/' | b'\\' => return Err(PathError::EncodedSlash),
            0..=0x1f | 0x7f => return Err(PathError::ControlCharacter),
            _ => {}
        }
    }
    String::from_utf8(decoded).map_err(|_| PathError::NotUtf8)
}

/// The bytes a path segment holds as they are (RFC 3986 §3.3 `pchar` less `%` and `;`,
/// which start an escape and a path parameter): letters, digits and `-._~!$&'()*+,=:@`,
/// one lookup each.
static PLAIN: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = (b as u8).is_ascii_alphanumeric();
        b += 1;
    }
    let others = b"-._~!$&'()*+,=:@";
    let mut i = 0;
    while i < others.len() {
        table[others[i] as usize] = true;
        i += 1;
    }
    table
};

/// True when normalising `raw` would give `raw` back: only characters that need no
/// decoding or encoding, and no empty, `.` or `..` segment (a final empty one, the
/// trailing slash, is kept as it is). Most requests are such paths.
fn already_normal(raw: &str) -> bool {
    let Some(rest) = raw.as_bytes().strip_prefix(b"/") else {
        return false;
    };
    // One pass over the bytes: every byte plain, and no segment empty (but the last),
    // `.` or `..`.
    let odd = |seg: &[u8]| seg == b"." || seg == b"..";
    let mut start = 0;
    for (i, &b) in rest.iter().enumerate() {
        if b == b'/' {
            let seg = &rest[start..i];
            if seg.is_empty() || odd(seg) {
                return false;
            }
            start = i + 1;
        } else if !PLAIN[usize::from(b)] {
            return false;
        }
    }
    !odd(&rest[start..])
}

/// Normalises a raw request path (no query).
pub fn normalize(raw: &str) -> Result<NormalPath, PathError> {
    if already_normal(raw) {
        return Ok(NormalPath {
            decoded: raw.to_owned(),
            reencoded: None,
        });
    }
    normalize_in_full(raw)
}

fn normalize_in_full(raw: &str) -> Result<NormalPath, PathError> {
    let Some(rest) = raw.strip_prefix('/') else {
        return Err(PathError::NotOriginForm);
    };
    if raw.contains('\\') {
        return Err(PathError::Backslash);
    }
    let mut segs: Vec<String> = Vec::new();
    let mut trailing_slash = false;
    for raw_seg in rest.split('/') {
        // Tomcat strips path parameters (`;jsessionid=...`, `..;x`) before decoding.
        let without_params = raw_seg.split(';').next().unwrap_or("");
        let seg = decode_segment(without_params)?;
        trailing_slash = true;
        match seg.as_str() {
            "" | "." => {}
            ".." => {
                if segs.pop().is_none() {
                    return Err(PathError::AboveRoot);
                }
            }
            _ => {
                segs.push(seg);
                trailing_slash = false;
            }
        }
    }
    let mut decoded = String::with_capacity(raw.len());
    let mut encoded = String::with_capacity(raw.len());
    for s in &segs {
        decoded.push('/');
        decoded.push_str(s);
        encoded.push('/');
        encoded.extend(utf8_percent_encode(s, SEGMENT));
    }
    if trailing_slash || segs.is_empty() {
        decoded.push('/');
        encoded.push('/');
    }
    let reencoded = (encoded != decoded).then_some(encoded);
    Ok(NormalPath { decoded, reencoded })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(raw: &str) -> (String, String) {
        let n = normalize(raw).unwrap_or_else(|e| panic!("{raw}: {e:?}"));
        let encoded = n.encoded().to_owned();
        (n.decoded, encoded)
    }

    fn d(raw: &str) -> String {
        ok(raw).0
    }

    #[test]
    fn the_shortcut_for_normal_paths_agrees_with_the_full_normalisation() {
        let pieces = [
            "a",
            "rest",
            ".",
            "..",
            "",
            "x.y",
            "~!$&'()*+,=:@",
            "%41",
            "a;b",
            "%2F",
            "é",
            "a b",
            "-_",
        ];
        let mut paths = vec![String::from("/")];
        // Every ASCII byte alone in a segment, and every byte above as the second of a
        // two-byte sequence (valid UTF-8 for 0x80-0xBF, not for the rest).
        for b in 0..=255u8 {
            let text = if b < 0x80 {
                char::from(b).to_string()
            } else {
                String::from_utf8_lossy(&[0xc2, b]).into_owned()
            };
            paths.push(format!("/x{text}y/z"));
        }
        for a in pieces {
            for b in pieces {
                for c in ["", "/", "/c", "/../"] {
                    paths.push(format!("/{a}/{b}{c}"));
                    paths.push(format!("/{a}{c}"));
                }
            }
        }
        let mut shortcuts = 0;
        for p in &paths {
            if already_normal(p) {
                shortcuts += 1;
            }
            assert_eq!(normalize(p), normalize_in_full(p), "{p}");
        }
        assert!(shortcuts > 50, "the shortcut is taken for plain paths ({shortcuts})");
    }

    #[test]
    fn plain_paths_are_unchanged() {
        assert_eq!(
            ok("/rest/api/2/myself"),
            ("/rest/api/2/myself".into(), "/rest/api/2/myself".into())
        );
        assert_eq!(d("/"), "/");
        assert_eq!(d("/rest/api/2/"), "/rest/api/2/");
    }

    #[test]
    fn dot_segments_resolve_like_tomcat() {
        assert_eq!(d("/rest/api/2/../../secure/admin"), "/rest/secure/admin");
        assert_eq!(d("/rest/./api"), "/rest/api");
        assert_eq!(d("/rest/api/.."), "/rest/");
        assert_eq!(d("/rest/%2e%2e/secure"), "/secure");
        assert_eq!(d("/rest/%2E./secure"), "/secure");
    }

    #[test]
    fn path_parameters_are_stripped_per_segment() {
        assert_eq!(d("/secure/..;/admin"), "/admin");
        assert_eq!(d("/rest;jsessionid=ABC/api/2/myself"), "/rest/api/2/myself");
        assert_eq!(d("/rest/api/2/myself;"), "/rest/api/2/myself");
        assert_eq!(d("/s/.;x/admin"), "/s/admin");
    }

    #[test]
    fn empty_segments_collapse() {
        assert_eq!(d("//rest///api//2"), "/rest/api/2");
    }

    #[test]
    fn decoded_once_and_reencoded_for_upstream() {
        assert_eq!(ok("/a%20b/%41"), ("/a b/A".into(), "/a%20b/A".into()));
        assert_eq!(ok("/x%3By"), ("/x;y".into(), "/x%3By".into()));
        assert_eq!(ok("/x%253B"), ("/x%3B".into(), "/x%253B".into()));
        assert_eq!(ok("/j%C3%BCrgen"), ("/jürgen".into(), "/j%C3%BCrgen".into()));
        assert_eq!(ok("/a:b@c+d=e&f"), ("/a:b@c+d=e&f".into(), "/a:b@c+d=e&f".into()));
    }

    #[test]
    fn ambiguous_paths_are_refused() {
        assert_eq!(normalize("/rest/api%2F2"), Err(PathError::EncodedSlash));
        assert_eq!(normalize("/rest/api%2f2"), Err(PathError::EncodedSlash));
        assert_eq!(normalize("/rest%5Capi"), Err(PathError::EncodedSlash));
        assert_eq!(normalize("/rest\\api"), Err(PathError::Backslash));
        assert_eq!(normalize("/rest%00/api"), Err(PathError::ControlCharacter));
        assert_eq!(normalize("/rest%0d%0a"), Err(PathError::ControlCharacter));
        assert_eq!(normalize("/rest%zz"), Err(PathError::BadEscape));
        assert_eq!(normalize("/rest%4"), Err(PathError::BadEscape));
        assert_eq!(normalize("/%ff%fe"), Err(PathError::NotUtf8));
        assert_eq!(normalize("/.."), Err(PathError::AboveRoot));
        assert_eq!(normalize("/rest/../../etc"), Err(PathError::AboveRoot));
        assert_eq!(normalize("/%2e%2e/x"), Err(PathError::AboveRoot));
        assert_eq!(normalize("*"), Err(PathError::NotOriginForm));
    }

    #[test]
    fn encoding_the_decoded_path_is_a_fixed_point() {
        for raw in ["/a%20b/c%3Bd/%25/j%C3%BCrgen", "/rest/api/2/search", "/x/"] {
            let once = normalize(raw).expect("once");
            let twice = normalize(once.encoded()).expect("twice");
            assert_eq!(once, twice, "{raw}");
        }
    }
}
