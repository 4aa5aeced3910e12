//! Checks of a PEM certificate chain and its private key, shared by the data
//! plane (certificate files) and the control plane's certificate store
//! (uploads): both parse, both match the key to the leaf, both refuse a
//! certificate outside its validity period, with the same words.

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};
use std::time::SystemTime;
use x509_parser::extensions::GeneralName;

/// What a certificate says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// DNS names and IP addresses it covers (its subject alternative names,
    /// else its common name), lower case.
    pub names: Vec<String>,
    /// Its subject, e.g. `CN=example.com`.
    pub subject: String,
    /// Its issuer.
    pub issuer: String,
    /// Start of validity, Unix seconds.
    pub not_before: i64,
    /// End of validity, Unix seconds.
    pub not_after: i64,
    /// SHA-256 of the leaf certificate's DER, lower-case hex.
    pub fingerprint_sha256: String,
    /// Number of certificates in the chain, the leaf included.
    pub chain_len: usize,
}

/// A chain and key that passed every check.
#[derive(Debug)]
pub struct Checked {
    /// Ready for rustls.
    pub key: CertifiedKey,
    /// What the leaf says.
    pub info: CertInfo,
}

/// Which half of the pair a problem is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The certificate chain.
    Cert,
    /// The private key.
    Key,
}

/// One reason a pair is refused. The message names neither file nor field:
/// the caller knows where the bytes came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Problem {
    /// The half it is in.
    pub part: Part,
    /// What is wrong.
    pub message: String,
}

impl Problem {
    fn new(part: Part, message: impl Into<String>) -> Self {
        Self {
            part,
            message: message.into(),
        }
    }
}

/// Parses and checks `cert_pem` (the leaf first, then intermediates) and
/// `key_pem` (PKCS#8, PKCS#1 or SEC1) with the key loader of `provider`;
/// every problem found is returned.
pub fn check_pair(
    cert_pem: &[u8],
    key_pem: &[u8],
    provider: &CryptoProvider,
    now: SystemTime,
) -> Result<Checked, Vec<Problem>> {
    let mut problems = Vec::new();
    let chain = match CertificateDer::pem_slice_iter(cert_pem).collect::<Result<Vec<_>, _>>() {
        Ok(c) if c.is_empty() => {
            problems.push(Problem::new(Part::Cert, "holds no PEM certificate"));
            None
        }
        Ok(c) => Some(c),
        Err(e) => {
            problems.push(Problem::new(Part::Cert, format!("is not valid PEM: {e}")));
            None
        }
    };
    let info = chain
        .as_ref()
        .and_then(|c| match describe(&c[0], c.len(), now) {
            Ok(info) => Some(info),
            Err(p) => {
                problems.push(p);
                None
            }
        });
    let key = match PrivateKeyDer::from_pem_slice(key_pem) {
        Ok(der) => match provider.key_provider.load_private_key(der) {
            Ok(k) => Some(k),
            Err(e) => {
                problems.push(Problem::new(
                    Part::Key,
                    format!("unsupported private key ({e})"),
                ));
                None
            }
        },
        Err(_) => {
            problems.push(Problem::new(Part::Key, "holds no PEM private key"));
            None
        }
    };
    let (Some(chain), Some(info), Some(key)) = (chain, info, key) else {
        return Err(problems);
    };
    let certified = CertifiedKey::new(chain, key);
    match certified.keys_match() {
        // A key type whose public half rustls cannot compare is let through:
        // the handshake itself would fail loudly.
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(_) => {
            return Err(vec![Problem::new(
                Part::Key,
                "does not match the certificate",
            )])
        }
    }
    Ok(Checked {
        key: certified,
        info,
    })
}

/// Reads the leaf: validity at `now`, names, subject, issuer, fingerprint.
fn describe(
    leaf: &CertificateDer<'_>,
    chain_len: usize,
    now: SystemTime,
) -> Result<CertInfo, Problem> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).map_err(|e| {
        Problem::new(
            Part::Cert,
            format!("the first certificate does not parse: {e}"),
        )
    })?;
    let now = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    let validity = cert.validity();
    if validity.not_after.timestamp() < now {
        return Err(Problem::new(
            Part::Cert,
            format!("the certificate expired on {}", validity.not_after),
        ));
    }
    if validity.not_before.timestamp() > now {
        return Err(Problem::new(
            Part::Cert,
            format!(
                "the certificate is not valid before {}",
                validity.not_before
            ),
        ));
    }
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                GeneralName::DNSName(d) => names.push(d.to_ascii_lowercase()),
                GeneralName::IPAddress(ip) => {
                    if let Ok(b) = <[u8; 4]>::try_from(*ip) {
                        names.push(std::net::IpAddr::from(b).to_string());
                    } else if let Ok(b) = <[u8; 16]>::try_from(*ip) {
                        names.push(std::net::IpAddr::from(b).to_string());
                    }
                }
                _ => {}
            }
        }
    }
    if names.is_empty() {
        names.extend(
            cert.subject()
                .iter_common_name()
                .filter_map(|cn| cn.as_str().ok())
                .map(str::to_ascii_lowercase),
        );
    }
    let fingerprint = Sha256::digest(leaf.as_ref())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(CertInfo {
        names,
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        not_before: validity.not_before.timestamp(),
        not_after: validity.not_after.timestamp(),
        fingerprint_sha256: fingerprint,
        chain_len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair};
    use std::time::Duration;

    fn provider() -> CryptoProvider {
        rustls::crypto::ring::default_provider()
    }

    fn pair(names: &[&str]) -> (String, String) {
        let key = KeyPair::generate().expect("key");
        let params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("params");
        let cert = params.self_signed(&key).expect("cert");
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn a_good_pair_is_described() {
        let (cert, key) = pair(&["shop.example", "127.0.0.1"]);
        let checked = check_pair(
            cert.as_bytes(),
            key.as_bytes(),
            &provider(),
            SystemTime::now(),
        )
        .expect("valid");
        assert_eq!(checked.info.names, ["shop.example", "127.0.0.1"]);
        assert_eq!(checked.info.chain_len, 1);
        assert_eq!(checked.info.fingerprint_sha256.len(), 64);
        assert!(checked.info.not_before < checked.info.not_after);
    }

    #[test]
    fn every_problem_is_listed_with_its_part() {
        let problems = check_pair(b"not pem", b"nor this", &provider(), SystemTime::now())
            .expect_err("refused");
        assert_eq!(
            problems,
            [
                Problem::new(Part::Cert, "holds no PEM certificate"),
                Problem::new(Part::Key, "holds no PEM private key"),
            ]
        );
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let (cert, _) = pair(&["a.example"]);
        let (_, other_key) = pair(&["b.example"]);
        let problems = check_pair(
            cert.as_bytes(),
            other_key.as_bytes(),
            &provider(),
            SystemTime::now(),
        )
        .expect_err("refused");
        assert_eq!(
            problems,
            [Problem::new(Part::Key, "does not match the certificate")]
        );
    }

    #[test]
    fn an_expired_certificate_is_refused() {
        let (cert, key) = pair(&["a.example"]);
        let far = SystemTime::now() + Duration::from_secs(2200 * 365 * 86_400);
        let problems =
            check_pair(cert.as_bytes(), key.as_bytes(), &provider(), far).expect_err("refused");
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].part, Part::Cert);
        assert!(problems[0]
            .message
            .starts_with("the certificate expired on"));
    }
}
