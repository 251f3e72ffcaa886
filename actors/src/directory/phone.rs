//! Phone number and extension normalisation.
//!
//! Presence feeds, PBX call events and HR exports all write the same number
//! differently ("070-123 45 67", "+46 (0)70 123 45 67", "0046701234567",
//! "tel:+46701234567"). Everything that has to *match* numbers goes through
//! [`normalize_phone`], which produces E.164 ("+46701234567") using the
//! installation's [`NumberPlan`]; short internal numbers go through
//! [`normalize_extension`] instead. Both are total functions over arbitrary
//! input: they return `None` rather than guessing or panicking.

use super::NumberPlan;

/// E.164 allows at most 15 digits (country code included).
pub const MAX_E164_DIGITS: usize = 15;

/// A subscriber number must have at least this many digits after the country
/// code; anything shorter is a typo or an internal number, not a phone.
pub const MIN_NATIONAL_DIGITS: usize = 7;

/// Plans with an empty trunk prefix (Norway, Denmark) have fixed 8-digit
/// national numbers, so a longer digit string that starts with the country
/// code is taken to be international with the '+' left out.
const TRUNKLESS_NATIONAL_MAX: usize = 9;

/// Stop collecting digits past this many: nothing valid is that long and it
/// bounds the work done on hostile input.
const SCAN_DIGIT_LIMIT: usize = 24;

/// Strips a `tel:` prefix (any case) and any URI parameters (`;phone-context=…`,
/// `;ext=…`) from `s`.
fn strip_tel(s: &str) -> &str {
    let s = s.trim();
    let s = match s.get(..4) {
        Some(p) if p.eq_ignore_ascii_case("tel:") => &s[4..],
        _ => s,
    };
    match s.find(';') {
        Some(i) => &s[..i],
        None => s,
    }
    .trim()
}

/// Visual separators people put inside numbers.
fn is_separator(c: char) -> bool {
    matches!(
        c,
        '-' | '.' | '/' | '(' | ')' | '\u{2010}' | '\u{2011}' | '\u{2012}' | '\u{2013}' | '\u{2014}'
    ) || c.is_whitespace()
}

/// Length of the country code at the start of `intl` (digits after '+').
/// Uses the plan's own code when it matches; otherwise the ITU assignment
/// rules: "1" and "7" are one digit, a fixed set of codes are two digits and
/// the rest are three.
fn country_code_len(intl: &str, plan: &NumberPlan) -> usize {
    if !plan.country_code.is_empty() && intl.starts_with(plan.country_code.as_str()) {
        return plan.country_code.len();
    }
    const TWO_DIGIT: [&str; 44] = [
        "20", "27", "30", "31", "32", "33", "34", "36", "39", "40", "41", "43", "44", "45", "46",
        "47", "48", "49", "51", "52", "53", "54", "55", "56", "57", "58", "60", "61", "62", "63",
        "64", "65", "66", "81", "82", "84", "86", "90", "91", "92", "93", "94", "95", "98",
    ];
    match intl.as_bytes().first() {
        Some(b'1') | Some(b'7') => 1,
        _ if TWO_DIGIT.iter().any(|cc| intl.starts_with(cc)) => 2,
        _ => 3,
    }
}

/// Normalises a phone number to E.164 (`"+46701234567"`), or `None` if `raw`
/// is not a usable phone number.
///
/// Accepted forms (plan = Sweden): `070-123 45 67`, `08-123 456 78`,
/// `+46 8 123 456 78`, `+46 (0)70-123 45 67`, `0046701234567`,
/// `tel:+46701234567`, and `46701234567` (international without '+', as some
/// PBXes log it). With an empty trunk prefix (Norway) a bare national number
/// such as `912 34 567` gets the plan's country code.
///
/// Returns `None` for: letters or other symbols, numbers of at most
/// `plan.max_extension_len` digits (those are extensions, see
/// [`normalize_extension`]), fewer than [`MIN_NATIONAL_DIGITS`] digits after
/// the country code, more than [`MAX_E164_DIGITS`] digits, and national
/// numbers that lack the trunk prefix in plans that have one.
pub fn normalize_phone(raw: &str, plan: &NumberPlan) -> Option<String> {
    let s = strip_tel(raw);
    let mut digits = String::with_capacity(16);
    let mut plus = false;
    let ip = plan.international_prefix.as_str();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '0'..='9' => {
                digits.push(c);
                if digits.len() > SCAN_DIGIT_LIMIT {
                    return None;
                }
            }
            '+' => {
                // Only one '+', and only before the first digit.
                if plus || !digits.is_empty() {
                    return None;
                }
                plus = true;
            }
            '(' if s[i..].starts_with("(0)")
                && !digits.is_empty()
                && (plus || (!ip.is_empty() && digits.starts_with(ip))) =>
            {
                // "+46 (0)70…": the bracketed trunk zero is for national
                // callers only and must not end up in the E.164 form.
                chars.next();
                chars.next();
            }
            c if is_separator(c) => {}
            _ => return None,
        }
    }
    if digits.is_empty() {
        return None;
    }

    let cc = plan.country_code.as_str();
    let tp = plan.trunk_prefix.as_str();
    let intl: String = if plus {
        digits
    } else if !ip.is_empty() && digits.starts_with(ip) {
        digits[ip.len()..].to_string()
    } else if digits.len() <= plan.max_extension_len {
        return None; // an extension, not a phone number
    } else if !tp.is_empty() {
        if let Some(national) = digits.strip_prefix(tp) {
            format!("{cc}{national}")
        } else if !cc.is_empty() && digits.starts_with(cc) {
            digits // international without '+'
        } else {
            return None;
        }
    } else if !cc.is_empty() && digits.starts_with(cc) && digits.len() > TRUNKLESS_NATIONAL_MAX {
        digits
    } else {
        format!("{cc}{digits}")
    };

    if intl.is_empty() || intl.starts_with('0') || intl.len() > MAX_E164_DIGITS {
        return None;
    }
    if intl.len() < country_code_len(&intl, plan) + MIN_NATIONAL_DIGITS {
        return None;
    }
    let mut out = String::with_capacity(intl.len() + 1);
    out.push('+');
    out.push_str(&intl);
    Some(out)
}

/// Normalises an internal extension using the default plan's length limit
/// (2 to 6 digits). See [`normalize_extension_for`] to honour another plan.
pub fn normalize_extension(raw: &str) -> Option<String> {
    normalize_extension_with_max(raw, NumberPlan::DEFAULT_MAX_EXTENSION_LEN)
}

/// Normalises an internal extension: `"1234"`, `" 1234 "` or `"tel:1234"` →
/// `"1234"`. Only ASCII digits, 2..=`plan.max_extension_len` of them.
pub fn normalize_extension_for(raw: &str, plan: &NumberPlan) -> Option<String> {
    normalize_extension_with_max(raw, plan.max_extension_len)
}

fn normalize_extension_with_max(raw: &str, max_len: usize) -> Option<String> {
    let s = strip_tel(raw);
    if s.len() < 2 || s.len() > max_len || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(s.to_string())
}

/// The national form of an E.164 number under `plan` ("+46701234567" →
/// "0701234567"), or `None` if it belongs to another country.
pub fn national_form(e164: &str, plan: &NumberPlan) -> Option<String> {
    let rest = e164.strip_prefix('+')?.strip_prefix(plan.country_code.as_str())?;
    if plan.country_code.is_empty() || rest.is_empty() {
        return None;
    }
    Some(format!("{}{}", plan.trunk_prefix, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn se() -> NumberPlan {
        NumberPlan::default()
    }

    fn no() -> NumberPlan {
        NumberPlan {
            country_code: "47".into(),
            trunk_prefix: String::new(),
            international_prefix: "00".into(),
            max_extension_len: 6,
        }
    }

    #[test]
    fn swedish_formats() {
        let p = se();
        for raw in [
            "070-123 45 67",
            "0701234567",
            "070 123 45 67",
            "070/123 45 67",
            "070.123.45.67",
            "+46701234567",
            "+46 70 123 45 67",
            "+46 (0)70-123 45 67",
            "+46(0)701234567",
            "0046701234567",
            "0046 (0)70 123 45 67",
            "tel:+46701234567",
            "TEL:+46-70-123-45-67",
            "tel:+46701234567;phone-context=example.se",
            "46701234567",
            "070\u{a0}123\u{a0}45\u{a0}67",
            "070–123 45 67",
        ] {
            assert_eq!(normalize_phone(raw, &p).as_deref(), Some("+46701234567"), "{raw:?}");
        }
        assert_eq!(normalize_phone("08-123 456 78", &p).as_deref(), Some("+46812345678"));
        assert_eq!(normalize_phone("+46 8 123 456 78", &p).as_deref(), Some("+46812345678"));
        assert_eq!(normalize_phone("(08) 123 456 78", &p).as_deref(), Some("+46812345678"));
        // A foreign number stays as it is.
        assert_eq!(normalize_phone("+47 912 34 567", &p).as_deref(), Some("+4791234567"));
        assert_eq!(normalize_phone("+1 (555) 123-4567", &p).as_deref(), Some("+15551234567"));
    }

    #[test]
    fn norwegian_plan() {
        let p = no();
        assert_eq!(normalize_phone("912 34 567", &p).as_deref(), Some("+4791234567"));
        assert_eq!(normalize_phone("+47 912 34 567", &p).as_deref(), Some("+4791234567"));
        assert_eq!(normalize_phone("0047 912 34 567", &p).as_deref(), Some("+4791234567"));
        assert_eq!(normalize_phone("4791234567", &p).as_deref(), Some("+4791234567"));
        assert_eq!(normalize_phone("22 12 34 56", &p).as_deref(), Some("+4722123456"));
        // An 8-digit national number that happens to start with 47.
        assert_eq!(normalize_phone("471 23 456", &p).as_deref(), Some("+4747123456"));
        assert_eq!(normalize_phone("+46 70 123 45 67", &p).as_deref(), Some("+46701234567"));
    }

    #[test]
    fn rejects_junk() {
        let p = se();
        for raw in [
            "",
            " ",
            "tel:",
            "+",
            "abc",
            "070-123 45 67 ext 12",
            "070-CALL-ME",
            "1234",
            "123456",
            "+46 70",
            "+46 12345",
            "08-123 45",
            "++46701234567",
            "46+701234567",
            "+46 70 123 45 67 89 01 23",
            "0701234567890123456789",
            "+0701234567",
            "7012345678",
            "070-123 45 67#",
            "00",
            "0046",
        ] {
            assert_eq!(normalize_phone(raw, &p), None, "{raw:?}");
        }
    }

    #[test]
    fn extensions() {
        assert_eq!(normalize_extension("1234").as_deref(), Some("1234"));
        assert_eq!(normalize_extension(" 12 ").as_deref(), Some("12"));
        assert_eq!(normalize_extension("tel:1234").as_deref(), Some("1234"));
        assert_eq!(normalize_extension("123456").as_deref(), Some("123456"));
        assert_eq!(normalize_extension("1234567"), None);
        assert_eq!(normalize_extension("1"), None);
        assert_eq!(normalize_extension("12a4"), None);
        assert_eq!(normalize_extension("+1234"), None);
        assert_eq!(normalize_extension(""), None);
        let mut p = se();
        p.max_extension_len = 4;
        assert_eq!(normalize_extension_for("12345", &p), None);
        assert_eq!(normalize_extension_for("1234", &p).as_deref(), Some("1234"));
    }

    #[test]
    fn national_forms() {
        assert_eq!(national_form("+46701234567", &se()).as_deref(), Some("0701234567"));
        assert_eq!(national_form("+4791234567", &no()).as_deref(), Some("91234567"));
        assert_eq!(national_form("+4791234567", &se()), None);
    }
}
