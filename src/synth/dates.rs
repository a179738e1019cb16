//! Calendar arithmetic on day numbers (days since 1970-01-01) and FHIR date/instant strings.
//! Hand-written (Howard Hinnant's civil algorithms) so that no clock is ever consulted: the data
//! set is anchored to the fixed `AS_OF` date, not to today.

/// The data set's "today": output never depends on the wall clock.
pub const AS_OF: (i32, u32, u32) = (2026, 11, 1);

pub fn days_from_civil(y: i32, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y } as i64;
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

pub fn civil_from_days(z: i64) -> (i32, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    ((if m <= 2 { y + 1 } else { y }) as i32, m, d)
}

pub fn as_of_day() -> i64 {
    days_from_civil(AS_OF.0, AS_OF.1, AS_OF.2)
}

/// `YYYY-MM-DD`
pub fn date(day: i64) -> String {
    let (y, m, d) = civil_from_days(day);
    format!("{y:04}-{m:02}-{d:02}")
}

/// `YYYY-MM-DDThh:mm:ssZ` at `secs` seconds into `day`.
pub fn instant(day: i64, secs: u32) -> String {
    let (y, m, d) = civil_from_days(day);
    let s = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// Whole years between two days (age).
pub fn years_between(from: i64, to: i64) -> i64 {
    let (y1, m1, d1) = civil_from_days(from);
    let (y2, m2, d2) = civil_from_days(to);
    let mut y = (y2 - y1) as i64;
    if (m2, d2) < (m1, d1) {
        y -= 1;
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for day in [-25_000, -1, 0, 1, 10_957, 20_000, 20_758] {
            let (y, m, d) = civil_from_days(day);
            assert_eq!(days_from_civil(y, m, d), day);
        }
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(date(days_from_civil(1974, 12, 25)), "1974-12-25");
        assert_eq!(
            instant(days_from_civil(2024, 2, 29), 3_661),
            "2024-02-29T01:01:01Z"
        );
        assert_eq!(
            years_between(days_from_civil(2000, 3, 1), days_from_civil(2026, 2, 28)),
            25
        );
    }
}
