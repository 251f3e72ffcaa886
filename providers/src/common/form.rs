//! `application/x-www-form-urlencoded` bodies and query strings (token requests, O2G and
//! operator queries), through the `form_urlencoded` crate that the HTTP stack already builds:
//! the WHATWG byte serialisation (alphanumerics and `*-._` stay, space becomes `+`) — and
//! [`encode_component`] for a value that may also stand in a URL path, where `+` is a plus.

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

/// One value for a URL path segment or a query (an id in `…/subscriptions/{id}`, a login in
/// `?loginName=`): as [`encode_value`], but space is `%20`, which means a space in both places.
pub fn encode_component(v: &str) -> String {
    // `byte_serialize` writes `+` only for a space (a plus is `%2B`).
    encode_value(v).replace('+', "%20")
}

#[cfg(test)]
mod tests {
    #[test]
    fn whatwg_serialisation() {
        assert_eq!(super::encode(&[("grant_type", "client_credentials"), ("scope", "a b/c")]), "grant_type=client_credentials&scope=a+b%2Fc");
        assert_eq!(super::encode_value("Å*-._~"), "%C3%85*-._%7E");
        assert_eq!(super::encode(&[]), "");
    }

    #[test]
    fn components_keep_space_as_percent_20() {
        assert_eq!(super::encode_component("oxe 1+2&3/4~"), "oxe%201%2B2%263%2F4%7E");
        assert_eq!(super::encode_component("eyJhbGciOiJIUzI1NiJ9.x-y_z"), "eyJhbGciOiJIUzI1NiJ9.x-y_z");
    }
}
