//! Defaults for provider config fields, so a config says the value where it declares the field
//! — `#[serde(default = "defaults::u64_::<300>")]` — instead of a one-line function per field
//! and provider; and [`check_range`], the check of a field's range in a provider's `validate`.

/// `N` (seconds, counts, limits).
pub fn u64_<const N: u64>() -> u64 {
    N
}

/// `N`.
pub fn u32_<const N: u32>() -> u32 {
    N
}

/// `N` (sizes in bytes).
pub fn usize_<const N: usize>() -> usize {
    N
}

/// `true`.
pub fn yes() -> bool {
    true
}

/// `Err("{field} must be {min}-{max}")` unless `value` lies in `range` (a provider's
/// `validate` adds its name).
pub fn check_range<T>(field: &str, value: T, range: std::ops::RangeInclusive<T>) -> Result<(), String>
where
    T: PartialOrd + std::fmt::Display,
{
    if range.contains(&value) {
        return Ok(());
    }
    Err(format!("{field} must be {}-{}", range.start(), range.end()))
}

/// Microsoft's identity platform.
pub fn microsoft_authority() -> String {
    "https://login.microsoftonline.com".into()
}

/// Microsoft Graph v1.0.
pub fn graph_url() -> String {
    "https://graph.microsoft.com/v1.0".into()
}

#[cfg(test)]
mod tests {
    #[derive(serde::Deserialize)]
    struct C {
        #[serde(default = "super::u64_::<300>")]
        a: u64,
        #[serde(default = "super::u32_::<2>")]
        b: u32,
        #[serde(default = "super::yes")]
        c: bool,
        #[serde(default = "super::usize_::<{ 4 * 1024 }>")]
        d: usize,
    }

    #[test]
    fn ranges_name_the_field_and_the_bounds() {
        assert_eq!(super::check_range("poll_wait_secs", 1u64, 1..=300), Ok(()));
        assert_eq!(super::check_range("poll_wait_secs", 300u64, 1..=300), Ok(()));
        assert_eq!(super::check_range("poll_wait_secs", 0u64, 1..=300), Err("poll_wait_secs must be 1-300".into()));
        assert_eq!(super::check_range("f", 101u32, 1..=100), Err("f must be 1-100".into()));
    }

    #[test]
    fn defaults_fill_absent_fields() {
        let c: C = serde_json::from_str("{}").unwrap();
        assert_eq!((c.a, c.b, c.c, c.d), (300, 2, true, 4096));
        let c: C = serde_json::from_str(r#"{"a":1,"b":1,"c":false,"d":1}"#).unwrap();
        assert_eq!((c.a, c.b, c.c, c.d), (1, 1, false, 1));
    }
}
