//! Dates for DQL: ISO-8601 / RFC 3339 text and Unix milliseconds, in UTC.
//!
//! Written here (Howard Hinnant's days-from-civil algorithms) rather than
//! taken from a date library: the engine stays small and free of a time-zone
//! database, which DQL does not need because a date is an instant. Offsets in
//! the text are applied, results are rendered in UTC, and parts are read in
//! UTC. Only years 0000 to 9999 exist: that is what the four-digit text form
//! can hold, and the bound keeps all arithmetic far from overflow.
//!
//! Accepted text: `YYYY-MM-DD` (midnight UTC), or
//! `YYYY-MM-DDTHH:MM:SS[.f...](Z|+HH:MM|-HH:MM)` where `T` may be `t` or a
//! space, the fraction has 1 to 9 digits (kept to the millisecond), and a
//! time without a zone is read as UTC.

use crate::value::Value;
use std::fmt::Write;

const DAY_MS: i64 = 86_400_000;
/// 0000-01-01T00:00:00Z
const MIN_MS: i64 = days_from_civil(0, 1, 1) * DAY_MS;
/// 9999-12-31T23:59:59.999Z
const MAX_MS: i64 = days_from_civil(10_000, 1, 1) * DAY_MS - 1;

/// A unit of `date_add` / `date_diff`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Unit {
    Millisecond,
    Second,
    Minute,
    Hour,
    Day,
    Week,
    Month,
    Year,
}

impl Unit {
    /// Length in milliseconds, for the units of fixed length.
    fn fixed_ms(self) -> Option<i64> {
        Some(match self {
            Unit::Millisecond => 1,
            Unit::Second => 1_000,
            Unit::Minute => 60_000,
            Unit::Hour => 3_600_000,
            Unit::Day => DAY_MS,
            Unit::Week => 7 * DAY_MS,
            Unit::Month | Unit::Year => return None,
        })
    }
}

/// A unit by name: singular or plural, any case.
pub(super) fn unit(name: &str) -> Option<Unit> {
    let lower = name.to_ascii_lowercase();
    Some(match lower.strip_suffix('s').unwrap_or(&lower) {
        "millisecond" => Unit::Millisecond,
        "second" => Unit::Second,
        "minute" => Unit::Minute,
        "hour" => Unit::Hour,
        "day" => Unit::Day,
        "week" => Unit::Week,
        "month" => Unit::Month,
        "year" => Unit::Year,
        _ => return None,
    })
}

/// What `date_part` extracts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Part {
    Year,
    Month,
    Day,
    Hour,
    Minute,
    Second,
    Millisecond,
    /// 0 = Sunday.
    Weekday,
    /// 1 = January 1st.
    DayOfYear,
}

/// A part by name, any case.
pub(super) fn part_named(name: &str) -> Option<Part> {
    Some(match name.to_ascii_lowercase().as_str() {
        "year" => Part::Year,
        "month" => Part::Month,
        "day" => Part::Day,
        "hour" => Part::Hour,
        "minute" => Part::Minute,
        "second" => Part::Second,
        "millisecond" => Part::Millisecond,
        "weekday" => Part::Weekday,
        "dayofyear" => Part::DayOfYear,
        _ => return None,
    })
}

const fn is_leap(y: i64) -> bool {
    y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)
}

const fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
const fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// (year, month, day) of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn in_range(ms: i64) -> Option<i64> {
    (MIN_MS..=MAX_MS).contains(&ms).then_some(ms)
}

/// Milliseconds since the Unix epoch of a date value: text, or a number of
/// milliseconds (a float is floored). `None` for anything else.
pub(super) fn from_value(v: &Value) -> Option<i64> {
    match v {
        Value::String(s) => parse(s),
        Value::Int(ms) => in_range(*ms),
        // The range check on the float keeps the cast exact.
        Value::Float(f) if (MIN_MS as f64..=MAX_MS as f64).contains(&f.floor()) => Some(f.floor() as i64),
        _ => None,
    }
}

/// `n` ASCII digits at `at`, as a number.
fn digits(b: &[u8], at: usize, n: usize) -> Option<i64> {
    let s = b.get(at..at + n)?;
    s.iter().try_fold(0i64, |acc, c| {
        c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0'))
    })
}

fn expect(b: &[u8], at: usize, c: u8) -> Option<()> {
    (b.get(at) == Some(&c)).then_some(())
}

/// Parses date text (see the module comment) to UTC milliseconds.
pub(super) fn parse(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let (y, m, d) = (digits(b, 0, 4)?, digits(b, 5, 2)?, digits(b, 8, 2)?);
    expect(b, 4, b'-')?;
    expect(b, 7, b'-')?;
    if !(1..=12).contains(&m) || !(1..=days_in_month(y, m)).contains(&d) {
        return None;
    }
    let day_ms = days_from_civil(y, m, d) * DAY_MS;
    if b.len() == 10 {
        return in_range(day_ms);
    }
    if !matches!(b.get(10), Some(b'T' | b't' | b' ')) {
        return None;
    }
    let (h, mi, sec) = (digits(b, 11, 2)?, digits(b, 14, 2)?, digits(b, 17, 2)?);
    expect(b, 13, b':')?;
    expect(b, 16, b':')?;
    if h > 23 || mi > 59 || sec > 59 {
        return None;
    }
    let (millis, rest) = fraction(b, 19)?;
    let local = day_ms + ((h * 60 + mi) * 60 + sec) * 1000 + millis;
    in_range(local - offset_minutes(b, rest)? * 60_000)
}

/// The optional `.fff...` at `at`: milliseconds, and the index after it.
fn fraction(b: &[u8], at: usize) -> Option<(i64, usize)> {
    if b.get(at) != Some(&b'.') {
        return Some((0, at));
    }
    let n = b.get(at + 1..)?.iter().take_while(|c| c.is_ascii_digit()).count();
    if !(1..=9).contains(&n) {
        return None;
    }
    let kept = n.min(3);
    let ms = digits(b, at + 1, kept)? * [100, 10, 1][kept - 1];
    Some((ms, at + 1 + n))
}

/// The zone suffix starting at `at` (nothing, `Z`, `+HH:MM`, `-HH:MM`),
/// in minutes east of UTC. Nothing may follow it.
fn offset_minutes(b: &[u8], at: usize) -> Option<i64> {
    match b.get(at..)? {
        [] | [b'Z' | b'z'] => Some(0),
        [sign @ (b'+' | b'-'), rest @ ..] if rest.len() == 5 => {
            let (h, m) = (digits(rest, 0, 2)?, digits(rest, 3, 2)?);
            expect(rest, 2, b':')?;
            if h > 23 || m > 59 {
                return None;
            }
            let minutes = h * 60 + m;
            Some(if *sign == b'-' { -minutes } else { minutes })
        }
        _ => None,
    }
}

/// UTC text of an instant: `YYYY-MM-DDTHH:MM:SSZ`, with `.fff` before the
/// `Z` only when there are milliseconds. `None` outside years 0000-9999.
pub(super) fn format(ms: i64) -> Option<String> {
    let ms = in_range(ms)?;
    let (y, m, d) = civil_from_days(ms.div_euclid(DAY_MS));
    let tod = ms.rem_euclid(DAY_MS);
    let (h, mi, s, milli) = (tod / 3_600_000, tod / 60_000 % 60, tod / 1_000 % 60, tod % 1_000);
    let mut out = format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}");
    if milli != 0 {
        let _ = write!(out, ".{milli:03}");
    }
    out.push('Z');
    Some(out)
}

/// `ms` plus `n` units; months and years keep the time of day and clamp the
/// day to the target month's length (Jan 31 + 1 month = Feb 28 or 29).
pub(super) fn add(ms: i64, n: i64, unit: Unit) -> Option<i64> {
    match (unit.fixed_ms(), unit) {
        (Some(u), _) => in_range(ms.checked_add(n.checked_mul(u)?)?),
        (None, Unit::Year) => add_months(ms, n.checked_mul(12)?),
        (None, _) => add_months(ms, n),
    }
}

fn add_months(ms: i64, n: i64) -> Option<i64> {
    let (y, m, d) = civil_from_days(ms.div_euclid(DAY_MS));
    let total = (y * 12 + m - 1).checked_add(n)?;
    let (ny, nm) = (total.div_euclid(12), total.rem_euclid(12) + 1);
    if !(0..=9999).contains(&ny) {
        return None;
    }
    let day = days_from_civil(ny, nm, d.min(days_in_month(ny, nm)));
    in_range(day * DAY_MS + ms.rem_euclid(DAY_MS))
}

/// Whole units from `a` to `b` (`b - a`), truncated toward zero. Months
/// count like [`add`]: the result is the largest `k` (in magnitude) with
/// `add(a, k)` not past `b`, so `date_diff` undoes `date_add`.
pub(super) fn diff(a: i64, b: i64, unit: Unit) -> Option<i64> {
    match (unit.fixed_ms(), unit) {
        (Some(u), _) => Some((b - a) / u),
        (None, Unit::Year) => Some(month_diff(a, b)? / 12),
        (None, _) => month_diff(a, b),
    }
}

fn month_diff(a: i64, b: i64) -> Option<i64> {
    let (ya, ma, _) = civil_from_days(a.div_euclid(DAY_MS));
    let (yb, mb, _) = civil_from_days(b.div_euclid(DAY_MS));
    let k = (yb * 12 + mb) - (ya * 12 + ma);
    let landed = add_months(a, k)?;
    Some(if b >= a && landed > b {
        k - 1
    } else if b < a && landed < b {
        k + 1
    } else {
        k
    })
}

/// One part of an instant, in UTC.
pub(super) fn part(ms: i64, part: Part) -> i64 {
    let days = ms.div_euclid(DAY_MS);
    let tod = ms.rem_euclid(DAY_MS);
    let (y, m, d) = civil_from_days(days);
    match part {
        Part::Year => y,
        Part::Month => m,
        Part::Day => d,
        Part::Hour => tod / 3_600_000,
        Part::Minute => tod / 60_000 % 60,
        Part::Second => tod / 1_000 % 60,
        Part::Millisecond => tod % 1_000,
        // 1970-01-01 was a Thursday (4).
        Part::Weekday => (days + 4).rem_euclid(7),
        Part::DayOfYear => days - days_from_civil(y, 1, 1) + 1,
    }
}
