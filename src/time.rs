//! Time helpers: RFC 3339 timestamps for the audit log without a date crate, the wall
//! time of a request's one clock reading, and deadlines that cannot overflow.

use std::cell::Cell;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

thread_local! {
    /// This thread's last reading of both clocks, for [`wall_at`].
    static ANCHOR: Cell<Option<(Instant, SystemTime)>> = const { Cell::new(None) };
}

/// How long one reading of the wall clock serves [`wall_at`] on a thread.
const ANCHOR_LIFE: Duration = Duration::from_secs(1);

/// `d` after `from`, for a timer: a duration too long for the clock (a configured
/// timeout of centuries) gives a deadline thirty years ahead instead of overflowing.
pub fn deadline(from: Instant, d: Duration) -> tokio::time::Instant {
    let far = Duration::from_secs(86_400 * 365 * 30);
    let at = from.checked_add(d).or_else(|| from.checked_add(far)).unwrap_or(from);
    tokio::time::Instant::from_std(at)
}

/// The wall-clock time at the monotonic instant `at` (a fresh reading): this thread's
/// last wall-clock reading plus the monotonic time since, the wall clock being read again
/// when that reading is a second old. A request thus reads the clock once, not twice
/// (each read costs tens of nanoseconds in a virtual machine); a step of the wall clock
/// shows within a second, and times on one thread never run backwards within it.
pub fn wall_at(at: Instant) -> SystemTime {
    ANCHOR.with(|a| match a.get() {
        Some((i, s)) if at >= i && at - i < ANCHOR_LIFE => s + (at - i),
        _ => {
            let s = SystemTime::now();
            a.set(Some((at, s)));
            s
        }
    })
}

/// Formats `t` as an RFC 3339 UTC timestamp with millisecond precision,
/// e.g. `2026-11-23T10:57:13.042Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let mut out = Vec::with_capacity(24);
    write_rfc3339(&mut out, t);
    String::from_utf8(out).unwrap_or_default()
}

/// Appends `t` as [`rfc3339`] formats it, without formatting machinery (the audit log
/// writes one per request).
pub fn write_rfc3339(out: &mut Vec<u8>, t: SystemTime) {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let secs = since.as_secs();
    // The date and time to the second, worked out once a second per thread.
    let (at, mut text) = SECOND.get();
    if at != secs {
        let (days, rem) = (secs / 86_400, secs % 86_400);
        let (y, m, d) = civil_from_days(days as i64);
        let y = y.clamp(0, 9999) as u32;
        two(&mut text[0..2], y / 100);
        two(&mut text[2..4], y % 100);
        two(&mut text[5..7], m);
        two(&mut text[8..10], d);
        two(&mut text[11..13], (rem / 3600) as u32);
        two(&mut text[14..16], ((rem % 3600) / 60) as u32);
        two(&mut text[17..19], (rem % 60) as u32);
        SECOND.set((secs, text));
    }
    let ms = since.subsec_millis();
    text[20] = b'0' + (ms / 100) as u8;
    two(&mut text[21..23], ms % 100);
    // Filled in place and appended once: one capacity check, not one per byte.
    out.extend_from_slice(&text);
}

thread_local! {
    /// The second [`write_rfc3339`] last wrote on this thread, and its text.
    static SECOND: std::cell::Cell<(u64, [u8; 24])> = const { std::cell::Cell::new((u64::MAX, *b"0000-00-00T00:00:00.000Z")) };
}

/// Writes `v` (below 100) as two digits.
fn two(at: &mut [u8], v: u32) {
    at[0] = b'0' + (v / 10) as u8;
    at[1] = b'0' + (v % 10) as u8;
}

/// Unix seconds as an RFC 3339 UTC timestamp without fractions, e.g. `2026-11-23T10:57:13Z`.
pub fn rfc3339_secs(secs: u64) -> String {
    let full = rfc3339(UNIX_EPOCH + Duration::from_secs(secs));
    format!("{}Z", &full[..full.len() - 5])
}

/// Days since 1970-01-01 to (year, month, day), Howard Hinnant's civil_from_days.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_and_known_dates_format_exactly() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_709_210_096_789);
        assert_eq!(rfc3339(t), "2024-02-29T12:34:56.789Z");
        let t = UNIX_EPOCH + Duration::from_secs(4_102_444_799);
        assert_eq!(rfc3339(t), "2099-12-31T23:59:59.000Z");
        assert_eq!(rfc3339_secs(4_102_444_799), "2099-12-31T23:59:59Z");
    }

    #[test]
    fn every_field_is_written_with_its_leading_zeros() {
        let t = UNIX_EPOCH + Duration::from_millis(978_397_384_005);
        assert_eq!(rfc3339(t), "2001-01-02T01:03:04.005Z");
        let t = UNIX_EPOCH + Duration::from_millis(253_402_300_799_999);
        assert_eq!(rfc3339(t), "9999-12-31T23:59:59.999Z");
        // A sweep of instants a prime number of milliseconds apart: each reads back as
        // the instant written, and every text has the same shape.
        let mut ms: u64 = 0;
        while ms < 4_102_444_800_000 {
            let t = UNIX_EPOCH + Duration::from_millis(ms);
            let text = rfc3339(t);
            assert_eq!(text.len(), 24, "{text}");
            // The parser keeps whole seconds; the milliseconds are checked as text.
            let whole = UNIX_EPOCH + Duration::from_secs(ms / 1000);
            assert_eq!(parse_rfc3339(&text).expect("parses"), whole, "{text}");
            assert_eq!(text[20..23], format!("{:03}", ms % 1000), "{text}");
            ms += 9_999_991_237;
        }
    }

    #[test]
    fn deadlines_never_overflow() {
        let now = Instant::now();
        assert_eq!(
            deadline(now, Duration::from_secs(5)).into_std(),
            now + Duration::from_secs(5)
        );
        let far = deadline(now, Duration::from_secs(u64::MAX)).into_std();
        assert!(far > now + Duration::from_secs(86_400 * 365));
    }

    #[test]
    fn wall_time_follows_the_monotonic_clock_and_the_wall_clock() {
        let before = SystemTime::now();
        let start = Instant::now();
        let first = wall_at(start);
        // Within the anchor's life, later instants map to later wall times by the
        // monotonic difference exactly.
        let later = start + Duration::from_millis(250);
        assert_eq!(
            wall_at(later).duration_since(first).ok(),
            Some(Duration::from_millis(250))
        );
        // An instant before the anchor, or past its life, reads the wall clock again.
        std::thread::sleep(Duration::from_millis(5));
        let again = wall_at(Instant::now());
        let after = SystemTime::now();
        // The anchor pairs `start` with a wall reading taken just after it, so a later
        // wall time may run ahead of a fresh reading by the time between those two reads
        // (longer only when the thread was preempted there).
        assert!(before <= first && first <= again);
        assert!(again <= after + Duration::from_millis(200), "{again:?} vs {after:?}");
        let past_life = Instant::now() + ANCHOR_LIFE;
        let read = wall_at(past_life);
        assert!(
            read <= SystemTime::now(),
            "a new anchor is a reading, not an extrapolation"
        );
    }
}

/// Parses an RFC 3339 timestamp (`2027-06-30T00:00:00Z`, `2027-06-30T02:00:00+02:00`,
/// fractional seconds allowed) or a bare date (`2027-06-30`, midnight UTC).
pub fn parse_rfc3339(s: &str) -> Result<SystemTime, String> {
    let bad = || format!("not an RFC 3339 time: {s:?} (e.g. \"2027-06-30T00:00:00Z\")");
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Result<i64, String> {
        let t = s.get(r).ok_or_else(bad)?;
        if t.bytes().all(|c| c.is_ascii_digit()) {
            t.parse().map_err(|_| bad())
        } else {
            Err(bad())
        }
    };
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return Err(bad());
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let mut secs = 0i64;
    let mut offset = 0i64;
    if b.len() > 10 {
        if !matches!(b[10], b'T' | b't' | b' ') || b.len() < 20 || b[13] != b':' || b[16] != b':' {
            return Err(bad());
        }
        let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
        if h > 23 || mi > 59 || se > 60 {
            return Err(bad());
        }
        secs = h * 3600 + mi * 60 + se;
        let mut rest = &s[19..];
        if let Some(frac) = rest.strip_prefix('.') {
            let n = frac.bytes().take_while(u8::is_ascii_digit).count();
            if n == 0 {
                return Err(bad());
            }
            rest = &frac[n..];
        }
        offset = match rest {
            "Z" | "z" => 0,
            tz if tz.len() == 6 && (tz.starts_with('+') || tz.starts_with('-')) && &tz[3..4] == ":" => {
                let h: i64 = tz[1..3].parse().map_err(|_| bad())?;
                let m: i64 = tz[4..6].parse().map_err(|_| bad())?;
                let o = h * 3600 + m * 60;
                if tz.starts_with('-') { -o } else { o }
            }
            _ => return Err(bad()),
        };
    }
    if !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) {
        return Err(bad());
    }
    let total = days_from_civil(y, mo, d) * 86_400 + secs - offset;
    u64::try_from(total)
        .map(|t| UNIX_EPOCH + Duration::from_secs(t))
        .map_err(|_| bad())
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// (year, month, day) to days since 1970-01-01, Howard Hinnant's days_from_civil.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod parse_tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips_and_offsets_apply() {
        for s in [
            "1970-01-01T00:00:00.000Z",
            "2024-02-29T12:34:56.000Z",
            "2099-12-31T23:59:59.000Z",
        ] {
            assert_eq!(rfc3339(parse_rfc3339(s).expect(s)), s);
        }
        let a = parse_rfc3339("2027-06-30T02:00:00+02:00").expect("offset");
        assert_eq!(a, parse_rfc3339("2027-06-30T00:00:00Z").expect("z"));
        assert_eq!(
            parse_rfc3339("2027-06-30").expect("date"),
            parse_rfc3339("2027-06-30T00:00:00Z").expect("z")
        );
        assert!(parse_rfc3339("2027-06-30T00:00:00.123456Z").is_ok());
    }

    #[test]
    fn timestamps_in_the_same_second_and_across_seconds_and_days_are_each_right() {
        // The date and time to the second are kept per thread: every write must still
        // show its own time, whatever the thread wrote before.
        let base = parse_rfc3339("2026-12-31T23:59:59Z").expect("base");
        for (t, want) in [
            (base, "2026-12-31T23:59:59.000Z"),
            (base + Duration::from_millis(7), "2026-12-31T23:59:59.007Z"),
            (base + Duration::from_millis(999), "2026-12-31T23:59:59.999Z"),
            (base + Duration::from_millis(1_000), "2027-01-01T00:00:00.000Z"),
            (base + Duration::from_millis(1_042), "2027-01-01T00:00:00.042Z"),
            (base, "2026-12-31T23:59:59.000Z"),
            (UNIX_EPOCH, "1970-01-01T00:00:00.000Z"),
            (base + Duration::from_millis(86_400_123), "2027-01-01T23:59:59.123Z"),
        ] {
            let mut out = b"x".to_vec();
            write_rfc3339(&mut out, t);
            assert_eq!(std::str::from_utf8(&out[1..]), Ok(want));
        }
    }

    #[test]
    fn rfc3339_malformed_is_refused() {
        for s in [
            "",
            "2027",
            "2027-13-01",
            "2027-02-30",
            "2027-06-30T25:00:00Z",
            "2027-06-30T00:00:00",
            "2027-06-30T00:00Z",
            "yyyy-mm-dd",
        ] {
            assert!(parse_rfc3339(s).is_err(), "{s}");
        }
    }
}
