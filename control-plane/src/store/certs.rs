//! What the store keeps of a certificate: its material (chain and key,
//! addressed by content and never changed) and its name's metadata.

use serde::Serialize;

/// A chain and its key, as uploaded.
#[derive(Clone, PartialEq, Eq)]
pub struct Material {
    /// SHA-256 of the chain and the key (see [`material_id`]).
    pub id: String,
    /// PEM chain, leaf first.
    pub cert_pem: String,
    /// PEM private key.
    pub key_pem: String,
}

impl std::fmt::Debug for Material {
    /// Never the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Material")
            .field("id", &self.id)
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// The content id of a chain and its key.
pub fn material_id(cert_pem: &str, key_pem: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(cert_pem.as_bytes());
    h.update([0]);
    h.update(key_pem.as_bytes());
    crate::tokens::hex(&h.finalize())
}

/// A stored certificate as the API shows it: never the key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CertificateMeta {
    /// Its name, used by `tls.certificate`.
    pub name: String,
    /// Content id of the chain and key; changes when it is replaced.
    pub id: String,
    /// SHA-256 of the leaf certificate (DER), hex.
    pub fingerprint_sha256: String,
    /// The leaf's subject.
    pub subject: String,
    /// The leaf's issuer.
    pub issuer: String,
    /// DNS names and addresses it covers.
    pub names: Vec<String>,
    /// Start of validity, Unix seconds.
    pub not_before: i64,
    /// End of validity, Unix seconds.
    pub not_after: i64,
    /// First upload, Unix milliseconds.
    pub created_at: i64,
    /// Last replacement, Unix milliseconds.
    pub updated_at: i64,
    /// Token name of the last upload.
    pub updated_by: String,
}

/// A certificate to store under a name (new or replacing).
#[derive(Debug, Clone)]
pub struct NewCertificate {
    /// Metadata; `created_at` is kept for a replacement.
    pub meta: CertificateMeta,
    /// The chain and key.
    pub material: Material,
}
