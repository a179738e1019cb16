//! String normalisation for string search and matching. INTERFACE (to be implemented).

/// Lower-case, accents removed (NFD, combining marks dropped), punctuation other than
/// letters/digits/space replaced by a space, runs of whitespace collapsed, trimmed.
pub fn normalize(value: &str) -> String {
    let _ = value;
    unimplemented!()
}
