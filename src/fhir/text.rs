//! String normalisation for string search and matching.

use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

/// Lower-case, accents removed (NFD, combining marks dropped), punctuation other than
/// letters/digits/space replaced by a space, runs of whitespace collapsed, trimmed.
pub fn normalize(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    // Set when a separator was seen since the last pushed character; a single space is
    // written lazily before the next kept character, which collapses runs and trims.
    let mut pending_space = false;
    let mut push = |c: char, out: &mut String| {
        if c.is_alphanumeric() {
            if pending_space && !out.is_empty() {
                out.push(' ');
            }
            pending_space = false;
            out.push(c);
        } else {
            pending_space = true;
        }
    };
    if value.is_ascii() {
        // Fast path: ASCII has no combining marks and a trivial lower-case mapping.
        for b in value.bytes() {
            push(char::from(b.to_ascii_lowercase()), &mut out);
        }
        return out;
    }
    for c in value.nfd() {
        if is_combining_mark(c) {
            continue;
        }
        for lc in c.to_lowercase() {
            if !is_combining_mark(lc) {
                push(lc, &mut out);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn accents_are_removed() {
        assert_eq!(normalize("José"), "jose");
        assert_eq!(normalize("Müller-Lüdenscheidt"), "muller ludenscheidt");
        assert_eq!(normalize("ÅNGSTRÖM"), "angstrom");
    }

    #[test]
    fn punctuation_becomes_space_and_collapses() {
        assert_eq!(normalize("Smith-Jones"), "smith jones");
        assert_eq!(normalize("  O'Brien,   Jr. "), "o brien jr");
        assert_eq!(normalize("a\t\nb"), "a b");
        assert_eq!(normalize("---"), "");
        assert_eq!(normalize(""), "");
    }

    #[test]
    fn case_is_folded() {
        assert_eq!(normalize("SMITH"), "smith");
        assert_eq!(normalize("McDonald"), "mcdonald");
        assert_eq!(normalize("ΣΊΣΥΦΟΣ"), "σισυφοσ");
    }

    #[test]
    fn digits_are_kept() {
        assert_eq!(normalize("Apt. 4B"), "apt 4b");
    }
}
