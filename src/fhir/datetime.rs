//! FHIR date, dateTime and instant values as millisecond ranges, and the search prefixes'
//! range semantics. INTERFACE (to be implemented).

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

/// Parses a FHIR date, dateTime or instant. Values without a time zone are read as UTC.
/// A time zone offset written with a raw `+` that arrived as a space (`T10:00:00 01:00`)
/// is accepted. `None` when it is not a valid FHIR date/dateTime/instant.
pub fn parse(value: &str) -> Option<DateRange> {
    let _ = value;
    unimplemented!()
}

/// Formats epoch milliseconds as a FHIR instant with millisecond precision in UTC
/// (`2024-03-01T09:00:00.000Z`).
pub fn format_instant(ms: i64) -> String {
    let _ = ms;
    unimplemented!()
}

/// Does a stored value covering `target` match the search `prefix` + `search` range?
/// This is the reference semantics the SQL planner must reproduce.
pub fn matches(prefix: Prefix, search: DateRange, target: DateRange) -> bool {
    let _ = (prefix, search, target);
    unimplemented!()
}
