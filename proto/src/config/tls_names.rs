//! Cipher-suite names as the seed (and Go's `crypto/tls`) wrote them, mapped
//! to the suites Isame offers.

/// Suites Isame offers, by IANA name, with the TLS version each belongs to.
pub const SUPPORTED: &[(&str, &str)] = &[
    ("TLS_AES_128_GCM_SHA256", "1.3"),
    ("TLS_AES_256_GCM_SHA384", "1.3"),
    ("TLS_CHACHA20_POLY1305_SHA256", "1.3"),
    ("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "1.2"),
    ("TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", "1.2"),
    ("TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256", "1.2"),
    ("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "1.2"),
    ("TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384", "1.2"),
    ("TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256", "1.2"),
];

/// Go's short names for suites that IANA spells with a hash suffix.
const ALIASES: &[(&str, &str)] = &[
    (
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305",
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    ),
    (
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305",
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    ),
];

/// Suites Go knows that are deliberately not offered (CBC, RC4, 3DES, static RSA).
const LEGACY: &[&str] = &[
    "TLS_RSA_WITH_RC4_128_SHA",
    "TLS_RSA_WITH_3DES_EDE_CBC_SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA256",
    "TLS_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_RC4_128_SHA",
    "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
];

/// The IANA name of a suite written by its IANA or Go name; the error says why
/// a name is refused and what is accepted.
pub fn canonical(name: &str) -> Result<&'static str, String> {
    if let Some((iana, _)) = SUPPORTED.iter().find(|(n, _)| *n == name) {
        return Ok(iana);
    }
    if let Some((_, iana)) = ALIASES.iter().find(|(n, _)| *n == name) {
        return Ok(iana);
    }
    let accepted: Vec<&str> = SUPPORTED.iter().map(|(n, _)| *n).collect();
    if LEGACY.contains(&name) {
        return Err(format!(
            "cipher suite {name:?} is a legacy suite (CBC, RC4, 3DES or static RSA) that Isame does not offer; use one of: {}",
            accepted.join(", ")
        ));
    }
    Err(format!(
        "unknown cipher suite {name:?}; expected one of: {}",
        accepted.join(", ")
    ))
}

/// The TLS version (`"1.2"` or `"1.3"`) a supported suite belongs to.
pub fn version_of(iana: &str) -> Option<&'static str> {
    SUPPORTED.iter().find(|(n, _)| *n == iana).map(|(_, v)| *v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_names_map_to_iana() {
        assert_eq!(
            canonical("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"),
            Ok("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256")
        );
        assert_eq!(
            canonical("TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305"),
            Ok("TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256")
        );
        assert_eq!(version_of("TLS_AES_128_GCM_SHA256"), Some("1.3"));
    }

    #[test]
    fn refuses_legacy_and_unknown_names() {
        assert!(canonical("TLS_RSA_WITH_AES_128_CBC_SHA")
            .unwrap_err()
            .contains("legacy"));
        assert!(canonical("TLS_MADE_UP").unwrap_err().contains("unknown"));
    }
}
