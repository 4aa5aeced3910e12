//! Isame's shared contract: the protobuf messages that travel between the
//! control plane and data planes, and the declarative config model (its
//! reader, JSON Schema, validation and diff). No I/O lives here.
#![forbid(unsafe_code)]

#[cfg(feature = "certs")]
pub mod certs;
pub mod config;
pub mod delta;
pub mod latency;

/// Generated protobuf and gRPC code for `isame.v1`.
pub mod pb {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("isame.v1");
}

pub use config::{Config, ConfigError, ConfigErrors};

impl std::fmt::Debug for pb::StoredCertificate {
    /// Everything but the private key, so that a logged snapshot never
    /// carries one.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredCertificate")
            .field("name", &self.name)
            .field("id", &self.id)
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_stored_certificate_never_prints_its_key() {
        let c = super::pb::StoredCertificate {
            name: "main".into(),
            id: "abc".into(),
            cert_pem: "CERT".into(),
            key_pem: "SECRET KEY".into(),
        };
        let shown = format!("{c:?}");
        assert!(
            shown.contains("CERT") && !shown.contains("SECRET"),
            "{shown}"
        );
    }
}
