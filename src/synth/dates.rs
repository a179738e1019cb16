//! Calendar arithmetic on day numbers (days since 1970-01-01) and FHIR date/instant strings.
//! No clock is ever consulted: the data set is anchored to the fixed `AS_OF` date, not to today.

/// The data set's "today": output never depends on the wall clock.
pub const AS_OF: (i32, u32, u32) = (2026, 11, 1);

/// Days since 1970-01-01 of a civil date (the one calendar implementation lives in
/// `fhir::datetime`).
pub fn days_from_civil(y: i32, m: u32, d: u32) -> i64 {
    crate::fhir::datetime::days_from_civil(i64::from(y), m, d)
}

/// The civil date of a day number.
pub fn civil_from_days(z: i64) -> (i32, u32, u32) {
    let (y, m, d) = crate::fhir::datetime::civil_from_days(z);
    (y as i32, m, d)
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
