//! Defaults for provider config fields, so a config says the value where it declares the field
//! — `#[serde(default = "defaults::u64_::<300>")]` — instead of a one-line function per field
//! and provider.

/// `N` (seconds, counts, limits).
pub fn u64_<const N: u64>() -> u64 {
    N
}

/// `N`.
pub fn u32_<const N: u32>() -> u32 {
    N
}

/// `true`.
pub fn yes() -> bool {
    true
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
    }

    #[test]
    fn defaults_fill_absent_fields() {
        let c: C = serde_json::from_str("{}").unwrap();
        assert_eq!((c.a, c.b, c.c), (300, 2, true));
        let c: C = serde_json::from_str(r#"{"a":1,"b":1,"c":false}"#).unwrap();
        assert_eq!((c.a, c.b, c.c), (1, 1, false));
    }
}
