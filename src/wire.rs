//! HTTP/1.1 message bodies on the wire (RFC 9112 §6–7), shared by both legs: the
//! caller's request bodies read by the listener, and Jira's answers read by the Jira
//! client. Bodies are cut from a read buffer one piece at a time: a length-delimited
//! body by its remaining length, a chunked one by its chunk-size lines, with chunk
//! extensions skipped and trailer fields read and dropped.

use bytes::{Buf, Bytes, BytesMut};

/// Most bytes a chunked body's trailer section may take.
pub const MAX_TRAILERS: usize = 256 << 10;
/// Longest chunk-size line (with its extensions) accepted.
const MAX_SIZE_LINE: usize = 1024;

/// How a body is delimited, and how far it has been read.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Framing {
    /// Read to its end (or none).
    Done,
    /// This many bytes still to come.
    Length(u64),
    Chunked(Chunk),
    /// Until the peer closes the connection (answers only).
    ToClose,
    /// Broken: nothing more comes.
    Failed,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Chunk {
    /// A chunk-size line next.
    Size,
    /// This many bytes of chunk data still to come.
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// The trailer section after the last chunk; this many bytes of it seen.
    Trailers(usize),
}

/// What the buffer gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    Data(Bytes),
    /// The body's end (`Framing::Done`), or nothing more after a failure.
    End,
    /// The buffer holds too little: read more, then step again.
    More,
}

impl Framing {
    /// The body is read to its end.
    pub fn is_done(self) -> bool {
        matches!(self, Framing::Done | Framing::Length(0))
    }

    /// Takes the next piece of the body off `buf`. A malformed body is an error and
    /// leaves the framing `Failed`.
    pub fn step(&mut self, buf: &mut BytesMut) -> Result<Step, &'static str> {
        let r = self.step_inner(buf);
        if r.is_err() {
            *self = Framing::Failed;
        }
        r
    }

    fn step_inner(&mut self, buf: &mut BytesMut) -> Result<Step, &'static str> {
        loop {
            match *self {
                Framing::Done | Framing::Length(0) => {
                    *self = Framing::Done;
                    return Ok(Step::End);
                }
                Framing::Failed => return Ok(Step::End),
                Framing::Length(left) if !buf.is_empty() => {
                    let data = take(buf, left);
                    *self = Framing::Length(left - data.len() as u64);
                    return Ok(Step::Data(data));
                }
                Framing::ToClose if !buf.is_empty() => return Ok(Step::Data(take(buf, u64::MAX))),
                Framing::Chunked(Chunk::Data(left)) if !buf.is_empty() => {
                    let data = take(buf, left);
                    let left = left - data.len() as u64;
                    *self = Framing::Chunked(if left == 0 { Chunk::DataEnd } else { Chunk::Data(left) });
                    return Ok(Step::Data(data));
                }
                Framing::Chunked(Chunk::Size) => match httparse::parse_chunk_size(buf) {
                    Ok(httparse::Status::Complete((used, size))) => {
                        buf.advance(used);
                        *self = Framing::Chunked(if size == 0 {
                            Chunk::Trailers(0)
                        } else {
                            Chunk::Data(size)
                        });
                    }
                    Ok(httparse::Status::Partial) if buf.len() > MAX_SIZE_LINE => {
                        return Err("a chunk-size line is too long");
                    }
                    Ok(httparse::Status::Partial) => return Ok(Step::More),
                    Err(_) => return Err("a chunk size is malformed"),
                },
                Framing::Chunked(Chunk::DataEnd) if buf.len() >= 2 => {
                    if &buf[..2] != b"\r\n" {
                        return Err("a chunk does not end where its size says");
                    }
                    buf.advance(2);
                    *self = Framing::Chunked(Chunk::Size);
                }
                Framing::Chunked(Chunk::Trailers(seen)) => {
                    // Trailer fields are not forwarded; an empty line ends the body.
                    if let Some(end) = buf.windows(2).position(|w| w == b"\r\n") {
                        buf.advance(end + 2);
                        *self = if end == 0 {
                            Framing::Done
                        } else {
                            Framing::Chunked(Chunk::Trailers(seen + end + 2))
                        };
                        continue;
                    }
                    if seen + buf.len() > MAX_TRAILERS {
                        return Err("the trailer section is too large");
                    }
                    return Ok(Step::More);
                }
                // The buffer is empty (or short).
                Framing::Length(_) | Framing::ToClose | Framing::Chunked(_) => return Ok(Step::More),
            }
        }
    }
}

/// Up to `max` bytes from the buffer.
fn take(buf: &mut BytesMut, max: u64) -> Bytes {
    let n = usize::try_from(max).unwrap_or(usize::MAX).min(buf.len());
    buf.split_to(n).freeze()
}

/// A `Content-Length` value: digits only, at most 19 of them.
pub fn parse_length(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(digits.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

/// The length a message's `Content-Length` fields give: every item of every field must
/// be the same number (RFC 9110 §8.6); `Ok(None)` without any.
pub fn content_length<'a>(values: impl Iterator<Item = &'a [u8]>) -> Result<Option<u64>, &'static str> {
    let mut length = None;
    for item in values.flat_map(|v| v.split(|b| *b == b',')) {
        let n = parse_length(item.trim_ascii()).ok_or("a Content-Length is malformed")?;
        if length.is_some_and(|l| l != n) {
            return Err("Content-Lengths differ");
        }
        length = Some(n);
    }
    Ok(length)
}

/// `n` in hex and CRLF: a chunk's size line.
pub fn hex_line(mut n: usize, out: &mut [u8; 18]) -> &[u8] {
    let mut i = 16;
    out[16] = b'\r';
    out[17] = b'\n';
    loop {
        i -= 1;
        out[i] = b"0123456789abcdef"[n & 15];
        n >>= 4;
        if n == 0 {
            return &out[i..];
        }
    }
}

/// `n` in decimal.
pub fn itoa(mut n: u64, out: &mut [u8; 20]) -> &[u8] {
    let mut i = out.len();
    loop {
        i -= 1;
        out[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &out[i..];
        }
    }
}

/// True when `text` is `lower` in any letter case, `lower` being lower-case letters,
/// digits and `-` (a field name, or an option such as `keep-alive`), and `text` a field
/// name or value as the parser accepted it. Eight bytes at a time: setting each byte's
/// 0x20 bit turns an upper-case letter into its lower case and leaves `lower`'s bytes as
/// they are; the only other bytes it could turn into one of them (CR, and controls below
/// 0x20) are in no accepted name or value.
pub fn eq_lower(text: &[u8], lower: &[u8]) -> bool {
    const CASE: u64 = 0x2020_2020_2020_2020;
    let word = |b: &[u8]| {
        let mut w = [0u8; 8];
        w.copy_from_slice(b);
        u64::from_le_bytes(w)
    };
    let n = text.len();
    if n != lower.len() {
        return false;
    }
    if n < 8 {
        return text.iter().zip(lower).all(|(t, l)| t | 0x20 == *l);
    }
    let mut i = 0;
    while i + 8 <= n {
        if word(&text[i..i + 8]) | CASE != word(&lower[i..i + 8]) {
            return false;
        }
        i += 8;
    }
    // The last bytes as the last eight, overlapping bytes already compared.
    i == n || word(&text[n - 8..]) | CASE == word(&lower[n - 8..])
}

/// The name and value a span (name start, name end, value start, value end) marks in
/// `head`; empty for a span outside it.
pub fn field<'a>(head: &'a [u8], &[ns, ne, vs, ve]: &[u32; 4]) -> (&'a [u8], &'a [u8]) {
    let at = |a: u32, b: u32| head.get(a as usize..b as usize).unwrap_or_default();
    (at(ns, ne), at(vs, ve))
}

/// Header fields of an answer passed on as the peer wrote them. Each name and value lies
/// in `head`, already checked by the parser (RFC 9110 §5.1, §5.5), so nothing is copied,
/// lower-cased or hashed on the way through. The listener writes them after the fields of
/// the answer's `HeaderMap` (HTTP/1.1), or turns them into map entries (HTTP/2).
#[derive(Clone, Debug, Default)]
pub struct HeaderLines {
    head: Bytes,
    /// Name start, name end, value start, value end, in `head`.
    spans: Vec<[u32; 4]>,
    /// A `Date` is among them.
    pub dated: bool,
}

impl HeaderLines {
    /// `dated`: a `Date` is among the fields (noted by the caller as it sorted them).
    pub fn new(head: Bytes, spans: Vec<[u32; 4]>, dated: bool) -> Self {
        HeaderLines { head, spans, dated }
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Each field's name (as written) and value.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.spans.iter().map(|s| field(&self.head, s))
    }

    /// The first value of the field `name` (any letter case).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }

    /// Appends each field as an HTTP/1.1 field line. Lines already written as
    /// `name: value\r\n`, one after another in the head, go out in one copy.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let head = &self.head[..];
        let mut run: Option<(usize, usize)> = None;
        for &[ns, ne, vs, ve] in &self.spans {
            let (ns, ne, vs, ve) = (ns as usize, ne as usize, vs as usize, ve as usize);
            let plain = head.get(ne..vs) == Some(b": ") && head.get(ve..ve + 2) == Some(b"\r\n");
            match run {
                Some((start, end)) if plain && end == ns => run = Some((start, ve + 2)),
                _ => {
                    if let Some((start, end)) = run.take() {
                        out.extend_from_slice(head.get(start..end).unwrap_or_default());
                    }
                    if plain {
                        run = Some((ns, ve + 2));
                    } else {
                        out.extend_from_slice(head.get(ns..ne).unwrap_or_default());
                        out.extend_from_slice(b": ");
                        out.extend_from_slice(head.get(vs..ve).unwrap_or_default());
                        out.extend_from_slice(b"\r\n");
                    }
                }
            }
        }
        if let Some((start, end)) = run {
            out.extend_from_slice(head.get(start..end).unwrap_or_default());
        }
    }

    /// Appends the fields to `map`, names in lower case, values sharing `head`.
    pub fn into_map(self, map: &mut http::HeaderMap) {
        for &[ns, ne, vs, ve] in &self.spans {
            let (vs, ve) = (vs as usize, ve as usize);
            if vs > ve || ve > self.head.len() {
                continue;
            }
            let name = http::HeaderName::from_bytes(self.head.get(ns as usize..ne as usize).unwrap_or_default());
            let value = http::HeaderValue::from_maybe_shared(self.head.slice(vs..ve));
            // The parser let through only what these accept; anything else is left out.
            if let (Ok(name), Ok(value)) = (name, value) {
                map.append(name, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eq_lower_agrees_with_a_case_blind_comparison_on_every_accepted_byte() {
        // Bytes a field name or value may hold once parsed: HTAB, SP, visible ASCII, obs-text.
        let accepted: Vec<u8> = std::iter::once(b'\t').chain(0x20..=0x7e).chain(0x80..=0xff).collect();
        for lower in [
            &b"te"[..],
            b"date",
            b"close",
            b"chunked",
            b"keep-alive",
            b"x-ratelimit-",
            b"content-length",
            b"transfer-encoding",
            b"x-authentication-denied-reason",
        ] {
            assert!(eq_lower(&lower.to_ascii_uppercase(), lower));
            assert!(!eq_lower(&lower[1..], lower), "shorter");
            for at in 0..lower.len() {
                for &b in &accepted {
                    let mut text = lower.to_vec();
                    text[at] = b;
                    assert_eq!(
                        eq_lower(&text, lower),
                        text.eq_ignore_ascii_case(lower),
                        "{:?} against {:?}",
                        String::from_utf8_lossy(&text),
                        String::from_utf8_lossy(lower)
                    );
                }
            }
        }
    }

    /// Steps through `wire` fed `at_a_time` bytes at a time; the body's bytes, and the
    /// bytes after its end.
    fn read(mut framing: Framing, wire: &[u8], at_a_time: usize) -> Result<(Vec<u8>, Vec<u8>), &'static str> {
        let mut buf = BytesMut::new();
        let mut fed = 0;
        let mut body = Vec::new();
        loop {
            match framing.step(&mut buf)? {
                Step::Data(d) => body.extend_from_slice(&d),
                Step::End => return Ok((body, [&buf[..], &wire[fed..]].concat())),
                Step::More if fed == wire.len() => return Err("more wanted after the end of input"),
                Step::More => {
                    let n = at_a_time.min(wire.len() - fed);
                    buf.extend_from_slice(&wire[fed..fed + n]);
                    fed += n;
                }
            }
        }
    }

    #[test]
    fn bodies_are_cut_by_length_and_by_chunks_however_they_arrive() {
        let chunked = b"5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\nNEXT";
        for at_a_time in [1, 2, 3, 7, 1000] {
            assert_eq!(
                read(Framing::Chunked(Chunk::Size), chunked, at_a_time),
                Ok((b"hello, world".to_vec(), b"NEXT".to_vec())),
                "{at_a_time} at a time"
            );
            assert_eq!(
                read(Framing::Length(5), b"helloNEXT", at_a_time).map(|(b, _)| b),
                Ok(b"hello".to_vec())
            );
        }
        assert_eq!(read(Framing::Length(0), b"NEXT", 4), Ok((vec![], b"NEXT".to_vec())));
    }

    #[test]
    fn malformed_chunks_fail_and_stay_failed() {
        for wire in [
            &b"zz\r\nhello\r\n0\r\n\r\n"[..],
            b"5\r\nhelloXX0\r\n\r\n",
            b"ffffffffffffffffffff\r\n",
        ] {
            let mut framing = Framing::Chunked(Chunk::Size);
            assert!(read(framing, wire, 1000).is_err(), "{wire:?}");
            let mut buf = BytesMut::from(wire);
            while let Ok(Step::Data(_)) = framing.step(&mut buf) {}
            assert_eq!(framing.step(&mut buf), Ok(Step::End), "nothing more after a failure");
            assert_eq!(framing, Framing::Failed);
        }
        let long_line = format!("1;{}\r\n", "x".repeat(2000));
        assert!(read(Framing::Chunked(Chunk::Size), long_line.as_bytes(), 4096).is_err());
    }

    #[test]
    fn content_lengths_must_agree() {
        let one = |v: &'static [u8]| content_length([v].into_iter());
        assert_eq!(one(b"12"), Ok(Some(12)));
        assert_eq!(content_length([&b"12, 12"[..], b"12"].into_iter()), Ok(Some(12)));
        assert_eq!(content_length(std::iter::empty()), Ok(None));
        assert!(content_length([&b"12"[..], b"13"].into_iter()).is_err());
        for bad in [&b"+5"[..], b"", b"1 2", b"99999999999999999999", b"-1"] {
            assert!(one(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn numbers_are_written_for_the_wire() {
        assert_eq!(itoa(0, &mut [0; 20]), b"0");
        assert_eq!(itoa(u64::MAX, &mut [0; 20]), b"18446744073709551615");
        assert_eq!(hex_line(0, &mut [0; 18]), b"0\r\n");
        assert_eq!(hex_line(0x1f3a, &mut [0; 18]), b"1f3a\r\n");
        assert_eq!(parse_length(b"0012"), Some(12));
        assert_eq!(parse_length(b""), None);
        assert_eq!(parse_length(b"1 2"), None);
    }
}
