//! FHIR date, dateTime and instant values as millisecond ranges, and the search prefixes'
//! range semantics.

/// The instants a FHIR date/dateTime/instant covers: `2024` covers the whole year,
/// `2024-03-01T10:00:00+01:00` one second. Epoch milliseconds, both ends inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateRange {
    pub low: i64,
    pub high: i64,
}

/// Search prefixes (FHIR R4 search §3.1.1.4.6 / 2.1.1.4.6 "prefixes").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Prefix {
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
    Sa,
    Eb,
    Ap,
}

const MS_PER_MINUTE: i64 = 60_000;
const MS_PER_DAY: i64 = 86_400_000;

/// Days since 1970-01-01 of a proleptic Gregorian civil date (H. Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Inverse of [`days_from_civil`].
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Reads exactly `n` ASCII digits at `*pos`.
fn digits(b: &[u8], pos: &mut usize, n: usize) -> Option<u32> {
    let s = b.get(*pos..*pos + n)?;
    let mut v = 0u32;
    for &c in s {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u32::from(c - b'0');
    }
    *pos += n;
    Some(v)
}

impl Prefix {
    /// Every prefix with the two letters that name it in a search value.
    pub const ALL: [(&'static str, Prefix); 9] = [
        ("eq", Prefix::Eq),
        ("ne", Prefix::Ne),
        ("gt", Prefix::Gt),
        ("lt", Prefix::Lt),
        ("ge", Prefix::Ge),
        ("le", Prefix::Le),
        ("sa", Prefix::Sa),
        ("eb", Prefix::Eb),
        ("ap", Prefix::Ap),
    ];
}

/// Parses a FHIR date, dateTime or instant. Values without a time zone are read as UTC.
/// A time zone offset written with a raw `+` that arrived as a space (`T10:00:00 01:00`)
/// is accepted. `None` when it is not a valid FHIR date/dateTime/instant.
pub fn parse(value: &str) -> Option<DateRange> {
    let b = value.as_bytes();
    let mut pos = 0;
    let year = i64::from(digits(b, &mut pos, 4)?);
    if pos == b.len() {
        let low = days_from_civil(year, 1, 1) * MS_PER_DAY;
        let high = days_from_civil(year + 1, 1, 1) * MS_PER_DAY - 1;
        return Some(DateRange { low, high });
    }
    if b[pos] != b'-' {
        return None;
    }
    pos += 1;
    let month = digits(b, &mut pos, 2)?;
    if !(1..=12).contains(&month) {
        return None;
    }
    if pos == b.len() {
        let low = days_from_civil(year, month, 1) * MS_PER_DAY;
        let high = low + i64::from(days_in_month(year, month)) * MS_PER_DAY - 1;
        return Some(DateRange { low, high });
    }
    if b[pos] != b'-' {
        return None;
    }
    pos += 1;
    let day = digits(b, &mut pos, 2)?;
    if day < 1 || day > days_in_month(year, month) {
        return None;
    }
    let day_start = days_from_civil(year, month, day) * MS_PER_DAY;
    if pos == b.len() {
        return Some(DateRange {
            low: day_start,
            high: day_start + MS_PER_DAY - 1,
        });
    }
    if b[pos] != b'T' {
        return None;
    }
    pos += 1;
    let hour = digits(b, &mut pos, 2)?;
    if b.get(pos) != Some(&b':') {
        return None;
    }
    pos += 1;
    let minute = digits(b, &mut pos, 2)?;
    if hour > 23 || minute > 59 {
        return None;
    }
    let mut low = day_start + i64::from(hour) * 3_600_000 + i64::from(minute) * MS_PER_MINUTE;
    // Width of the covered period minus one, by precision.
    let mut span = MS_PER_MINUTE - 1;
    if b.get(pos) == Some(&b':') {
        pos += 1;
        let second = digits(b, &mut pos, 2)?;
        if second > 59 {
            return None;
        }
        low += i64::from(second) * 1000;
        span = 999;
        if b.get(pos) == Some(&b'.') {
            pos += 1;
            let start = pos;
            while pos < b.len() && b[pos].is_ascii_digit() {
                pos += 1;
            }
            let frac = &b[start..pos];
            if frac.is_empty() {
                return None;
            }
            // Up to three digits give the precision (.5 covers 500–599 ms); more digits
            // are truncated to the millisecond.
            let mut ms = 0i64;
            for i in 0..3 {
                ms = ms * 10 + frac.get(i).map_or(0, |d| i64::from(d - b'0'));
            }
            low += ms;
            span = match frac.len() {
                1 => 99,
                2 => 9,
                _ => 0,
            };
        }
    }
    let offset_ms = match b.get(pos) {
        None => 0,
        Some(b'Z') => {
            pos += 1;
            0
        }
        Some(&sign @ (b'+' | b'-' | b' ')) => {
            pos += 1;
            let oh = digits(b, &mut pos, 2)?;
            if b.get(pos) != Some(&b':') {
                return None;
            }
            pos += 1;
            let om = digits(b, &mut pos, 2)?;
            if oh > 14 || om > 59 {
                return None;
            }
            let off = i64::from(oh) * 3_600_000 + i64::from(om) * MS_PER_MINUTE;
            if sign == b'-' { -off } else { off }
        }
        Some(_) => return None,
    };
    if pos != b.len() {
        return None;
    }
    let low = low - offset_ms;
    Some(DateRange {
        low,
        high: low + span,
    })
}

/// Formats epoch milliseconds as a FHIR instant with millisecond precision in UTC
/// (`2024-03-01T09:00:00.000Z`).
pub fn format_instant(ms: i64) -> String {
    let days = ms.div_euclid(MS_PER_DAY);
    let rem = ms.rem_euclid(MS_PER_DAY);
    let (y, m, d) = civil_from_days(days);
    let h = rem / 3_600_000;
    let mi = (rem / MS_PER_MINUTE) % 60;
    let s = (rem / 1000) % 60;
    let frac = rem % 1000;
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{frac:03}Z")
}

/// Does a stored value covering `target` match the search `prefix` + `search` range?
/// This is the reference semantics the SQL planner must reproduce.
///
/// `ap` is evaluated against the current time; see [`matches_at`].
pub fn matches(prefix: Prefix, search: DateRange, target: DateRange) -> bool {
    matches_at(
        prefix,
        search,
        target,
        chrono::Utc::now().timestamp_millis(),
    )
}

/// The range `ap` (approximately) compares with: the search range widened on both sides by
/// 10% of the distance between now and the search range (the R4 spec's recommendation for
/// dates), and by at least one day so that `ap` with a value near now is still approximate.
pub fn approximate_range(search: DateRange, now_ms: i64) -> DateRange {
    let gap = if now_ms < search.low {
        search.low - now_ms
    } else if now_ms > search.high {
        now_ms - search.high
    } else {
        0
    };
    let margin = (gap / 10).max(MS_PER_DAY);
    DateRange {
        low: search.low.saturating_sub(margin),
        high: search.high.saturating_add(margin),
    }
}

/// [`matches`] with an explicit "now" (epoch ms) for `ap`.
///
/// Following the R4 "prefixes" table, with S the search range and T the target range:
/// * `eq`: S fully contains T; `ne`: not `eq`;
/// * `gt`: the range above S overlaps T (T.high > S.high); `lt`: T.low < S.low;
/// * `ge`: `gt` or `eq`; `le`: `lt` or `eq`;
/// * `sa`: T lies entirely above S (T.low > S.high); `eb`: T.high < S.low;
/// * `ap`: T overlaps [`approximate_range`] of S.
pub fn matches_at(prefix: Prefix, search: DateRange, target: DateRange, now_ms: i64) -> bool {
    let eq = search.low <= target.low && target.high <= search.high;
    match prefix {
        Prefix::Eq => eq,
        Prefix::Ne => !eq,
        Prefix::Gt => target.high > search.high,
        Prefix::Lt => target.low < search.low,
        Prefix::Ge => eq || target.high > search.high,
        Prefix::Le => eq || target.low < search.low,
        Prefix::Sa => target.low > search.high,
        Prefix::Eb => target.high < search.low,
        Prefix::Ap => {
            let a = approximate_range(search, now_ms);
            target.low <= a.high && target.high >= a.low
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(s: &str) -> DateRange {
        parse(s).unwrap_or_else(|| panic!("{s} should parse"))
    }

    #[test]
    fn year_month_day_ranges() {
        let y = p("2024");
        assert_eq!(format_instant(y.low), "2024-01-01T00:00:00.000Z");
        assert_eq!(format_instant(y.high), "2024-12-31T23:59:59.999Z");
        let m = p("2024-02");
        assert_eq!(format_instant(m.low), "2024-02-01T00:00:00.000Z");
        assert_eq!(format_instant(m.high), "2024-02-29T23:59:59.999Z");
        let m = p("2023-02");
        assert_eq!(format_instant(m.high), "2023-02-28T23:59:59.999Z");
        let d = p("2024-03-01");
        assert_eq!(format_instant(d.low), "2024-03-01T00:00:00.000Z");
        assert_eq!(format_instant(d.high), "2024-03-01T23:59:59.999Z");
    }

    #[test]
    fn times_and_zones() {
        let r = p("2024-03-01T10:00:00+01:00");
        assert_eq!(format_instant(r.low), "2024-03-01T09:00:00.000Z");
        assert_eq!(format_instant(r.high), "2024-03-01T09:00:00.999Z");
        assert_eq!(p("2024-03-01T10:00:00 01:00"), r);
        let r = p("2024-03-01T10:00-05:00");
        assert_eq!(format_instant(r.low), "2024-03-01T15:00:00.000Z");
        assert_eq!(format_instant(r.high), "2024-03-01T15:00:59.999Z");
        let r = p("2024-03-01T10:00:00Z");
        assert_eq!(format_instant(r.low), "2024-03-01T10:00:00.000Z");
        let r = p("2024-03-01T10:00:00");
        assert_eq!(format_instant(r.low), "2024-03-01T10:00:00.000Z");
        let r = p("2024-03-01T10:00:00.123456789Z");
        assert_eq!((r.low, r.high), (r.low, r.low));
        assert_eq!(format_instant(r.low), "2024-03-01T10:00:00.123Z");
        let r = p("2024-03-01T10:00:00.5Z");
        assert_eq!(format_instant(r.low), "2024-03-01T10:00:00.500Z");
        assert_eq!(format_instant(r.high), "2024-03-01T10:00:00.599Z");
        let r = p("1969-12-31T23:59:59.999Z");
        assert_eq!(r.low, -1);
    }

    #[test]
    fn invalid_values() {
        for s in [
            "",
            "20",
            "2024-13",
            "2024-00",
            "2023-02-29",
            "2024-04-31",
            "2024-01-01T",
            "2024-01-01T24:00",
            "2024-01-01T10",
            "2024-01-01T10:00:00.",
            "2024-01-01T10:00:00+1:00",
            "2024-01-01T10:00:00X",
            "2024-01-01 10:00:00",
            "2024/01/01",
            "２０２４",
        ] {
            assert_eq!(parse(s), None, "{s}");
        }
        assert!(parse("2024-02-29").is_some());
        assert!(parse("2000-02-29").is_some());
        assert!(parse("1900-02-29").is_none());
    }

    #[test]
    fn prefixes() {
        let s = p("2024-03");
        let inside = p("2024-03-10");
        let later = p("2024-05-01");
        let earlier = p("2024-01-01");
        let straddle = DateRange {
            low: p("2024-02-20").low,
            high: p("2024-03-05").high,
        };
        assert!(matches_at(Prefix::Eq, s, inside, 0));
        assert!(!matches_at(Prefix::Eq, s, straddle, 0));
        assert!(matches_at(Prefix::Ne, s, straddle, 0));
        assert!(matches_at(Prefix::Gt, s, later, 0));
        assert!(!matches_at(Prefix::Gt, s, inside, 0));
        assert!(matches_at(Prefix::Ge, s, inside, 0));
        assert!(matches_at(Prefix::Lt, s, earlier, 0));
        assert!(matches_at(Prefix::Lt, s, straddle, 0));
        assert!(matches_at(Prefix::Le, s, inside, 0));
        assert!(matches_at(Prefix::Sa, s, later, 0));
        assert!(!matches_at(Prefix::Sa, s, inside, 0));
        assert!(matches_at(Prefix::Eb, s, earlier, 0));
        assert!(!matches_at(Prefix::Eb, s, straddle, 0));
        let now = p("2024-03-15").low;
        assert!(matches_at(Prefix::Ap, s, p("2024-04-01"), now));
        assert!(!matches_at(Prefix::Ap, s, p("2024-06-01"), now));
        // Far from now the margin grows: 10 years away widens by about a year.
        let old = p("2014-03");
        assert!(matches_at(Prefix::Ap, old, p("2014-10-01"), now));
    }

    fn arb_range() -> impl Strategy<Value = DateRange> {
        (
            -10_000_000_000_000i64..10_000_000_000_000,
            0i64..1_000_000_000_000,
        )
            .prop_map(|(low, w)| DateRange { low, high: low + w })
    }

    /// A random valid partial date string and its more precise refinements.
    fn arb_datetime() -> impl Strategy<Value = Vec<String>> {
        (
            1i64..=9999,
            1u32..=12,
            1u32..=31,
            0u32..24,
            0u32..60,
            0u32..60,
            0u32..1000,
            -14i32..=14,
        )
            .prop_map(|(y, m, d, h, mi, s, ms, tz)| {
                let d = d.min(days_in_month(y, m));
                let tz = if tz == 0 {
                    "Z".to_string()
                } else {
                    format!("{}{:02}:00", if tz < 0 { '-' } else { '+' }, tz.abs())
                };
                vec![
                    format!("{y:04}"),
                    format!("{y:04}-{m:02}"),
                    format!("{y:04}-{m:02}-{d:02}"),
                    format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}"),
                    format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}"),
                    format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}"),
                    format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}{tz}"),
                ]
            })
    }

    proptest! {
        #[test]
        fn instant_round_trip(ms in -62_135_596_800_000i64..253_402_300_799_999) {
            let s = format_instant(ms);
            let r = parse(&s).unwrap();
            prop_assert_eq!(r.low, ms);
            prop_assert_eq!(r.high, ms);
        }

        #[test]
        fn low_not_above_high(values in arb_datetime()) {
            for v in &values {
                let r = parse(v).unwrap();
                prop_assert!(r.low <= r.high, "{}", v);
            }
        }

        #[test]
        fn refinements_are_contained(values in arb_datetime()) {
            // The first six share the UTC reading, so each contains the next ones.
            let ranges: Vec<DateRange> = values[..6].iter().map(|v| parse(v).unwrap()).collect();
            for i in 0..ranges.len() {
                for j in i + 1..ranges.len() {
                    prop_assert!(ranges[i].low <= ranges[j].low && ranges[j].high <= ranges[i].high,
                        "{} should contain {}", values[i], values[j]);
                    prop_assert!(matches_at(Prefix::Eq, ranges[i], ranges[j], 0));
                }
            }
        }

        #[test]
        fn prefix_relations(s in arb_range(), t in arb_range(), now in -1_000_000_000_000i64..2_000_000_000_000) {
            let m = |p| matches_at(p, s, t, now);
            prop_assert_eq!(m(Prefix::Ne), !m(Prefix::Eq));
            if m(Prefix::Sa) { prop_assert!(m(Prefix::Gt)); }
            if m(Prefix::Eb) { prop_assert!(m(Prefix::Lt)); }
            if m(Prefix::Gt) || m(Prefix::Eq) { prop_assert!(m(Prefix::Ge)); }
            if m(Prefix::Lt) || m(Prefix::Eq) { prop_assert!(m(Prefix::Le)); }
            if m(Prefix::Eq) { prop_assert!(m(Prefix::Ap)); }
            prop_assert!(!(m(Prefix::Sa) && m(Prefix::Eb)));
        }
    }
}
