//! TLS termination: certificates loaded and checked from the config's files,
//! chosen per connection by the name the client asks for (SNI), with the
//! protocol versions and cipher suites the config allows.
//!
//! Everything here runs when a snapshot is compiled, so a certificate that
//! is missing, unreadable, expired, not yet valid or not matching its key is
//! a config error naming the file, and a reload that fixes or replaces a
//! certificate takes effect for new connections without touching open ones.

use isame_proto::certs::{self, Part};
use isame_proto::config::{tls_names, ConfigError, Tls};
use rustls::crypto::{ring, CryptoProvider};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ServerConfig, SupportedCipherSuite};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

/// Builds the server config for `tls`; `None` when TLS is off.
pub fn server_config(
    tls: &Tls,
    now: SystemTime,
) -> Result<Option<Arc<ServerConfig>>, Vec<ConfigError>> {
    if !tls.enabled {
        return Ok(None);
    }
    let stored = stored_refs(tls);
    if !stored.is_empty() {
        return Err(stored);
    }
    let mut problems = Vec::new();
    let provider = provider(tls).map_err(|e| vec![e])?;
    let default = load_pair("tls", &tls.cert_file, &tls.key_file, &provider, now);
    let extra: Vec<_> = tls
        .certificates
        .iter()
        .enumerate()
        .map(|(i, c)| {
            load_pair(
                &format!("tls.certificates[{i}]"),
                &c.cert_file,
                &c.key_file,
                &provider,
                now,
            )
        })
        .collect();
    let default = match default {
        Ok(d) => Some(d),
        Err(mut e) => {
            problems.append(&mut e);
            None
        }
    };
    let mut loaded = Vec::new();
    for e in extra {
        match e {
            Ok(pair) => loaded.push(pair),
            Err(mut e) => problems.append(&mut e),
        }
    }
    let Some(default) = default else {
        return Err(problems);
    };
    if !problems.is_empty() {
        return Err(problems);
    }
    let resolver = SniResolver::new(default, loaded);
    let versions: Vec<&'static rustls::SupportedProtocolVersion> = [
        (&rustls::version::TLS13, "1.3"),
        (&rustls::version::TLS12, "1.2"),
    ]
    .into_iter()
    .filter(|(_, v)| tls.min_version.as_str() <= *v)
    .filter(|(_, v)| {
        provider.cipher_suites.iter().any(|s| {
            matches!(
                (s, *v),
                (SupportedCipherSuite::Tls13(_), "1.3") | (SupportedCipherSuite::Tls12(_), "1.2")
            )
        })
    })
    .map(|(p, _)| p)
    .collect();
    let mut config = ServerConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&versions)
        .map_err(|e| {
            vec![ConfigError::new(
                "tls.cipher_suites",
                format!("cannot build the TLS settings: {e}"),
            )]
        })?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Some(Arc::new(config)))
}

/// Names of stored certificates are resolved by a subscribed node, which
/// writes the pushed certificates to files before it compiles a snapshot; one
/// left here means the config came from a file.
fn stored_refs(tls: &Tls) -> Vec<ConfigError> {
    let named = std::iter::once(("tls.certificate".to_owned(), &tls.certificate)).chain(
        tls.certificates
            .iter()
            .enumerate()
            .map(|(i, c)| (format!("tls.certificates[{i}].certificate"), &c.certificate)),
    );
    named
        .filter(|(_, name)| !name.is_empty())
        .map(|(path, name)| {
            ConfigError::new(
                &path,
                format!(
                    "{name:?} names a certificate in the control plane's store; \
                     a data plane running from a file needs cert_file and key_file"
                ),
            )
        })
        .collect()
}

/// ring's provider, limited to the configured cipher suites.
fn provider(tls: &Tls) -> Result<CryptoProvider, ConfigError> {
    let mut provider = ring::default_provider();
    if tls.cipher_suites.is_empty() {
        return Ok(provider);
    }
    let mut suites = Vec::new();
    for (i, name) in tls.cipher_suites.iter().enumerate() {
        let iana = tls_names::canonical(name)
            .map_err(|e| ConfigError::new(format!("tls.cipher_suites[{i}]"), e))?;
        let suite = by_iana(iana).ok_or_else(|| {
            ConfigError::new(
                format!("tls.cipher_suites[{i}]"),
                format!("{iana} is not available in this build"),
            )
        })?;
        suites.push(suite);
    }
    provider.cipher_suites = suites;
    Ok(provider)
}

/// ring's implementation of a suite by its IANA name.
fn by_iana(iana: &str) -> Option<SupportedCipherSuite> {
    use ring::cipher_suite as cs;
    Some(match iana {
        "TLS_AES_128_GCM_SHA256" => cs::TLS13_AES_128_GCM_SHA256,
        "TLS_AES_256_GCM_SHA384" => cs::TLS13_AES_256_GCM_SHA384,
        "TLS_CHACHA20_POLY1305_SHA256" => cs::TLS13_CHACHA20_POLY1305_SHA256,
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256" => cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384" => cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256" => {
            cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
        }
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256" => cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384" => cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256" => {
            cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
        }
        _ => return None,
    })
}

/// A certificate ready to serve, with the names it is valid for.
struct Pair {
    key: Arc<CertifiedKey>,
    names: Vec<String>,
}

/// Reads and checks one certificate chain and its key. `at` is the config
/// path of the section (`tls`, `tls.certificates[0]`).
fn load_pair(
    at: &str,
    cert_file: &str,
    key_file: &str,
    provider: &CryptoProvider,
    now: SystemTime,
) -> Result<Pair, Vec<ConfigError>> {
    let cert_path = format!("{at}.cert_file");
    let key_path = format!("{at}.key_file");
    let cert = read(cert_file).map_err(|e| ConfigError::new(&cert_path, e));
    let key = read(key_file).map_err(|e| ConfigError::new(&key_path, e));
    let (cert, key) = match (cert, key) {
        (Ok(c), Ok(k)) => (c, k),
        (c, k) => return Err(c.err().into_iter().chain(k.err()).collect()),
    };
    match certs::check_pair(&cert, &key, provider, now) {
        Ok(checked) => Ok(Pair {
            key: Arc::new(checked.key),
            names: checked.info.names,
        }),
        Err(problems) => Err(problems
            .into_iter()
            .map(|p| match p.part {
                Part::Cert => ConfigError::new(&cert_path, format!("{cert_file}: {p}")),
                Part::Key if p.message.starts_with("does not match") => {
                    ConfigError::new(&key_path, format!("{key_file} {p} in {cert_file}"))
                }
                Part::Key => ConfigError::new(&key_path, format!("{key_file}: {p}")),
            })
            .collect()),
    }
}

fn read(file: &str) -> Result<Vec<u8>, String> {
    std::fs::read(file).map_err(|e| format!("cannot read {file}: {e}"))
}

/// Chooses a certificate by SNI: exact names first, then wildcards
/// (`*.example.com` covers one label), else the default.
#[derive(Debug)]
struct SniResolver {
    exact: HashMap<String, Arc<CertifiedKey>>,
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
}

impl SniResolver {
    fn new(default: Pair, extra: Vec<Pair>) -> Self {
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        // Later certificates do not take names the earlier ones hold.
        for pair in std::iter::once(&default).chain(&extra) {
            for name in &pair.names {
                match name.strip_prefix("*.") {
                    Some(suffix) => wildcard.entry(suffix.to_owned()),
                    None => exact.entry(name.clone()),
                }
                .or_insert_with(|| pair.key.clone());
            }
        }
        Self {
            exact,
            wildcard,
            default: default.key,
        }
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = hello.server_name() else {
            return Some(self.default.clone());
        };
        let name = name.to_ascii_lowercase();
        if let Some(k) = self.exact.get(&name) {
            return Some(k.clone());
        }
        if let Some((_, parent)) = name.split_once('.') {
            if let Some(k) = self.wildcard.get(parent) {
                return Some(k.clone());
            }
        }
        Some(self.default.clone())
    }
}
