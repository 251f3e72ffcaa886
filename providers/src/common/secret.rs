//! Random secrets (webhook `clientState`, per-subscription keys): 128 bits from the operating
//! system's generator (`getrandom`), hex-encoded. The one source of randomness in providers.

/// 128 random bits as 32 lowercase hex digits.
pub fn random_hex128() -> String {
    let mut b = [0u8; 16];
    fill(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A uniformly random `u64`.
pub fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    fill(&mut b);
    u64::from_le_bytes(b)
}

/// Fills `b` with random bytes (session cookies, PKCE verifiers, CSRF tokens).
pub fn fill(b: &mut [u8]) {
    // The OS generator does not fail on the systems the hub runs on (Linux getrandom(2));
    // were it to, a secret must not be predictable, so stopping is the only safe answer.
    getrandom::getrandom(b).expect("the operating system's random generator is unavailable");
}

#[cfg(test)]
mod tests {
    #[test]
    fn secrets_are_128_bits_of_hex_and_differ() {
        let a = super::random_hex128();
        let b = super::random_hex128();
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(a, b);
    }
}
