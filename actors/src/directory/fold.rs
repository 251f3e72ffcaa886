//! Text folding: lower-casing plus diacritic stripping, so that a switchboard
//! operator can type "asa ostberg" and find "Åsa Östberg".
//!
//! We deliberately do not pull in a Unicode normalisation crate: the people in
//! a Nordic company directory are written almost entirely in Latin-1
//! Supplement and Latin Extended-A, so a hand-written table for those two
//! blocks (plus dropping combining marks, which handles NFD input coming from
//! macOS exports) covers the real data at a fraction of the code size.
//! Everything else falls back to [`char::to_lowercase`].

/// Folding of U+00C0..=U+00FF (Latin-1 Supplement letters). An empty string
/// means "not a letter we fold" (× and ÷): those fall back to lower-casing,
/// which leaves them unchanged, so they act as separators in search text.
const LATIN1: [&str; 64] = [
    // U+00C0 À Á Â Ã Ä Å Æ Ç
    "a", "a", "a", "a", "a", "a", "ae", "c", //
    // U+00C8 È É Ê Ë Ì Í Î Ï
    "e", "e", "e", "e", "i", "i", "i", "i", //
    // U+00D0 Ð Ñ Ò Ó Ô Õ Ö ×
    "d", "n", "o", "o", "o", "o", "o", "", //
    // U+00D8 Ø Ù Ú Û Ü Ý Þ ß
    "o", "u", "u", "u", "u", "y", "th", "ss", //
    // U+00E0 à á â ã ä å æ ç
    "a", "a", "a", "a", "a", "a", "ae", "c", //
    // U+00E8 è é ê ë ì í î ï
    "e", "e", "e", "e", "i", "i", "i", "i", //
    // U+00F0 ð ñ ò ó ô õ ö ÷
    "d", "n", "o", "o", "o", "o", "o", "", //
    // U+00F8 ø ù ú û ü ý þ ÿ
    "o", "u", "u", "u", "u", "y", "th", "y",
];

/// Folding of U+0100..=U+017F (Latin Extended-A). Every code point in that
/// block is a letter, so every entry is non-empty. The array length makes the
/// compiler check that no row was dropped.
const LATIN_EXT_A: [&str; 128] = [
    // U+0100 Ā ā Ă ă Ą ą Ć ć
    "a", "a", "a", "a", "a", "a", "c", "c", //
    // U+0108 Ĉ ĉ Ċ ċ Č č Ď ď
    "c", "c", "c", "c", "c", "c", "d", "d", //
    // U+0110 Đ đ Ē ē Ĕ ĕ Ė ė
    "d", "d", "e", "e", "e", "e", "e", "e", //
    // U+0118 Ę ę Ě ě Ĝ ĝ Ğ ğ
    "e", "e", "e", "e", "g", "g", "g", "g", //
    // U+0120 Ġ ġ Ģ ģ Ĥ ĥ Ħ ħ
    "g", "g", "g", "g", "h", "h", "h", "h", //
    // U+0128 Ĩ ĩ Ī ī Ĭ ĭ Į į
    "i", "i", "i", "i", "i", "i", "i", "i", //
    // U+0130 İ ı Ĳ ĳ Ĵ ĵ Ķ ķ
    "i", "i", "ij", "ij", "j", "j", "k", "k", //
    // U+0138 ĸ Ĺ ĺ Ļ ļ Ľ ľ Ŀ
    "k", "l", "l", "l", "l", "l", "l", "l", //
    // U+0140 ŀ Ł ł Ń ń Ņ ņ Ň
    "l", "l", "l", "n", "n", "n", "n", "n", //
    // U+0148 ň ŉ Ŋ ŋ Ō ō Ŏ ŏ
    "n", "n", "n", "n", "o", "o", "o", "o", //
    // U+0150 Ő ő Œ œ Ŕ ŕ Ŗ ŗ
    "o", "o", "oe", "oe", "r", "r", "r", "r", //
    // U+0158 Ř ř Ś ś Ŝ ŝ Ş ş
    "r", "r", "s", "s", "s", "s", "s", "s", //
    // U+0160 Š š Ţ ţ Ť ť Ŧ ŧ
    "s", "s", "t", "t", "t", "t", "t", "t", //
    // U+0168 Ũ ũ Ū ū Ŭ ŭ Ů ů
    "u", "u", "u", "u", "u", "u", "u", "u", //
    // U+0170 Ű ű Ų ų Ŵ ŵ Ŷ ŷ
    "u", "u", "u", "u", "w", "w", "y", "y", //
    // U+0178 Ÿ Ź ź Ż ż Ž ž ſ
    "y", "z", "z", "z", "z", "z", "z", "s",
];

/// Looks `c` up in the hand-written tables. `None` means "use the generic
/// lower-casing fallback".
#[inline]
fn table_fold(c: char) -> Option<&'static str> {
    let cp = c as u32;
    let folded = match cp {
        0xC0..=0xFF => LATIN1[(cp - 0xC0) as usize],
        0x100..=0x17F => LATIN_EXT_A[(cp - 0x100) as usize],
        // A few Latin Extended-B letters that show up in European names
        // (Romanian ș/ț, both comma and cedilla forms).
        0x218 | 0x219 => "s",
        0x21A | 0x21B => "t",
        _ => return None,
    };
    if folded.is_empty() {
        None
    } else {
        Some(folded)
    }
}

/// True for combining diacritical marks (U+0300..=U+036F). They are dropped
/// so that decomposed (NFD) input folds the same as precomposed input.
#[inline]
fn is_combining_mark(c: char) -> bool {
    matches!(c as u32, 0x300..=0x36F)
}

/// Calls `emit` with each folded character of `c` (zero, one or more).
#[inline]
fn fold_char(c: char, mut emit: impl FnMut(char)) {
    if c.is_ascii() {
        emit(c.to_ascii_lowercase());
    } else if let Some(s) = table_fold(c) {
        s.chars().for_each(emit);
    } else if is_combining_mark(c) {
        // dropped: a diacritic on the previous letter
    } else {
        c.to_lowercase().for_each(emit);
    }
}

/// Folds `s` (lower-case, diacritics stripped), keeping punctuation and
/// whitespace as they are.
///
/// `"Åsa Östberg"` → `"asa ostberg"`, `"Straße"` → `"strasse"`.
pub fn fold(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    fold_into(s, &mut out);
    out
}

/// Appends the folding of `s` to `out` (it does not clear `out`, so callers
/// can build arenas without intermediate allocations).
pub fn fold_into(s: &str, out: &mut String) {
    for c in s.chars() {
        fold_char(c, |f| out.push(f));
    }
}

/// Appends the *search text* of `s` to `out`: folded, with every run of
/// non-alphanumeric characters collapsed to one ASCII space, and no leading
/// or trailing space. "Anna-Karin  Öberg (HR)" becomes "anna karin oberg hr".
///
/// The search index and the query parser both use this, which is what makes
/// a query word line up with the indexed words byte for byte.
pub fn fold_search_text(s: &str, out: &mut String) {
    let start = out.len();
    let mut pending_space = false;
    for c in s.chars() {
        fold_char(c, |f| {
            if f.is_alphanumeric() {
                if pending_space && out.len() > start {
                    out.push(' ');
                }
                pending_space = false;
                out.push(f);
            } else {
                pending_space = true;
            }
        });
    }
}

/// Convenience wrapper around [`fold_search_text`] returning a new string.
pub fn search_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    fold_search_text(s, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_nordic_and_european_names() {
        let cases = [
            ("Åsa", "asa"),
            ("Östberg", "ostberg"),
            ("Ørjan", "orjan"),
            ("Bækkelund", "baekkelund"),
            ("Müller", "muller"),
            ("José", "jose"),
            ("Straße", "strasse"),
            ("Łukasz", "lukasz"),
            ("Ærø", "aero"),
            ("ÅÄÖ åäö ØÆ øæ", "aao aao oae oae"),
            ("Þórður", "thordur"),
            ("Şerban Țurcanu", "serban turcanu"),
            ("Œuvre", "oeuvre"),
            ("İstanbul", "istanbul"),
        ];
        for (input, want) in cases {
            assert_eq!(fold(input), want, "fold({input:?})");
        }
    }

    #[test]
    fn keeps_punctuation_and_other_scripts() {
        assert_eq!(fold("Anna-Karin O'Brien"), "anna-karin o'brien");
        assert_eq!(fold("3 × 4 ÷ 2"), "3 × 4 ÷ 2");
        assert_eq!(fold("ΑΘΗΝΑ"), "αθηνα");
        assert_eq!(fold("Иван"), "иван");
        assert_eq!(fold(""), "");
    }

    #[test]
    fn decomposed_input_folds_like_precomposed() {
        // "Åsa" written as A + COMBINING RING ABOVE.
        assert_eq!(fold("A\u{30A}sa O\u{308}stberg"), "asa ostberg");
    }

    #[test]
    fn fold_into_appends() {
        let mut s = String::from("x:");
        fold_into("ÅB", &mut s);
        assert_eq!(s, "x:ab");
    }

    #[test]
    fn search_text_collapses_separators() {
        assert_eq!(search_text("  Anna-Karin  Öberg (HR) "), "anna karin oberg hr");
        assert_eq!(search_text("--"), "");
        assert_eq!(search_text("070-123 45 67"), "070 123 45 67");
        let mut s = String::from("abc");
        fold_search_text(" Åsa ", &mut s);
        // Appending starts a new "field": no separator is invented.
        assert_eq!(s, "abcasa");
    }

    #[test]
    fn every_table_entry_is_ascii_lowercase() {
        for s in LATIN1.iter().chain(LATIN_EXT_A.iter()) {
            assert!(s.bytes().all(|b| b.is_ascii_lowercase()), "{s:?}");
        }
        // Latin Extended-A is all letters: no holes.
        assert!(LATIN_EXT_A.iter().all(|s| !s.is_empty()));
    }
}
