//! Certificates for TLS tests, made fresh by each test with rcgen: a test
//! CA, leaf certificates (ECDSA or RSA, any names, valid or expired), and
//! rustls client configs that trust the CA.

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// An RSA-2048 private key for tests (ring cannot generate RSA keys).
/// It protects nothing: it is only ever used to sign test certificates.
const RSA_KEY: &str = include_str!("../fixtures/rsa-2048-key.pem");

/// A key type for a leaf certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// ECDSA P-256.
    Ecdsa,
    /// RSA 2048.
    Rsa,
}

/// A certificate and its key, as PEM.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The certificate (leaf only).
    pub cert_pem: String,
    /// The private key (PKCS#8).
    pub key_pem: String,
}

impl Issued {
    /// The certificate in DER, to compare with what a server presented.
    pub fn cert_der(&self) -> rustls::pki_types::CertificateDer<'static> {
        use rustls::pki_types::pem::PemObject;
        rustls::pki_types::CertificateDer::from_pem_slice(self.cert_pem.as_bytes())
            .expect("certificate PEM")
    }

    /// A rustls server config presenting this certificate (for TLS backends).
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        use rustls::pki_types::pem::PemObject;
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())
            .expect("key PEM");
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![self.cert_der()], key)
        .expect("server config");
        Arc::new(config)
    }

    /// Writes `NAME.pem` and `NAME.key` in `dir`; returns their paths.
    pub fn write(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let cert = dir.join(format!("{name}.pem"));
        let key = dir.join(format!("{name}.key"));
        std::fs::write(&cert, &self.cert_pem).expect("write certificate");
        std::fs::write(&key, &self.key_pem).expect("write key");
        (cert, key)
    }
}

/// A certificate authority for one test.
pub struct TestCa {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

impl TestCa {
    /// A new CA named `isame test CA`.
    pub fn new() -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "isame test CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA certificate");
        TestCa { cert, key }
    }

    /// The CA certificate as PEM.
    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    /// A leaf certificate for `names` (DNS names or IP addresses), valid now.
    pub fn issue(&self, names: &[&str], kind: KeyKind) -> Issued {
        self.issue_valid(names, kind, (2020, 1, 1), (2100, 1, 1))
    }

    /// A leaf certificate that expired in 2021.
    pub fn issue_expired(&self, names: &[&str]) -> Issued {
        self.issue_valid(names, KeyKind::Ecdsa, (2020, 1, 1), (2021, 1, 1))
    }

    fn issue_valid(
        &self,
        names: &[&str],
        kind: KeyKind,
        not_before: (i32, u8, u8),
        not_after: (i32, u8, u8),
    ) -> Issued {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("params");
        params.not_before = rcgen::date_time_ymd(not_before.0, not_before.1, not_before.2);
        params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().copied().unwrap_or("isame test"),
        );
        let key = match kind {
            KeyKind::Ecdsa => KeyPair::generate().expect("ECDSA key"),
            KeyKind::Rsa => KeyPair::from_pem(RSA_KEY).expect("RSA key"),
        };
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("leaf certificate");
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// A rustls client config that trusts this CA and offers `alpn`.
    pub fn client_config(&self, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
        self.client_config_with(alpn, |b| b.with_safe_default_protocol_versions())
    }

    /// The same with chosen protocol versions (and so cipher suites).
    pub fn client_config_with(
        &self,
        alpn: &[&[u8]],
        versions: impl FnOnce(
            rustls::ConfigBuilder<rustls::ClientConfig, rustls::WantsVersions>,
        ) -> Result<
            rustls::ConfigBuilder<rustls::ClientConfig, rustls::WantsVerifier>,
            rustls::Error,
        >,
    ) -> Arc<rustls::ClientConfig> {
        self.client_config_for(alpn, rustls::crypto::ring::default_provider(), versions)
    }

    /// The same with a chosen crypto provider (to restrict cipher suites).
    pub fn client_config_for(
        &self,
        alpn: &[&[u8]],
        provider: rustls::crypto::CryptoProvider,
        versions: impl FnOnce(
            rustls::ConfigBuilder<rustls::ClientConfig, rustls::WantsVersions>,
        ) -> Result<
            rustls::ConfigBuilder<rustls::ClientConfig, rustls::WantsVerifier>,
            rustls::Error,
        >,
    ) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert.der().clone()).expect("CA certificate");
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(provider));
        let mut config = versions(builder)
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }
}
