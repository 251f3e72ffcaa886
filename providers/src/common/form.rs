//! `application/x-www-form-urlencoded` bodies and query strings (token requests, O2G and
//! operator queries), through the `form_urlencoded` crate that the HTTP stack already builds:
//! the WHATWG byte serialisation (alphanumerics and `*-._` stay, space becomes `+`).

/// `k1=v1&k2=v2…`, each name and value encoded.
pub fn encode(pairs: &[(&str, &str)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

/// One value encoded (for a value placed into a URL template).
pub fn encode_value(v: &str) -> String {
    form_urlencoded::byte_serialize(v.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn whatwg_serialisation() {
        assert_eq!(super::encode(&[("grant_type", "client_credentials"), ("scope", "a b/c")]), "grant_type=client_credentials&scope=a+b%2Fc");
        assert_eq!(super::encode_value("Å*-._~"), "%C3%85*-._%7E");
        assert_eq!(super::encode(&[]), "");
    }
}
