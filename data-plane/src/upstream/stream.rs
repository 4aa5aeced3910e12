//! The byte stream to a backend: plain TCP, or TLS over TCP for `https://`
//! backends, verified against the system's roots or a configured CA.

use isame_proto::config::{ConfigError, UpstreamProtocol, UpstreamTls};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// How to open TLS to one backend.
#[derive(Debug, Clone)]
pub struct TlsTarget {
    /// Trust and protocol settings (ALPN `http/1.1`).
    pub config: Arc<ClientConfig>,
    /// The same trust offering HTTP/2 (ALPN `h2`, and `http/1.1` after it
    /// for an upstream whose `protocol` is `auto`).
    pub h2: Option<Arc<ClientConfig>>,
    /// The name the backend's certificate must carry.
    pub server_name: ServerName<'static>,
    /// What `config` trusts: a digest of the CA file's contents, or
    /// `system` for the system's roots. Part of the backend's identity, so
    /// that new trust settings never reuse a connection made under the old.
    pub trust: String,
}

/// Client settings for one upstream's `https://` backends, with what they
/// trust (see [`TlsTarget::trust`]).
#[derive(Debug, Clone)]
pub struct ClientTls {
    /// The settings for HTTP/1.1.
    pub config: Arc<ClientConfig>,
    /// The settings offering HTTP/2, for an upstream that may speak it.
    pub h2: Option<Arc<ClientConfig>>,
    /// What they trust.
    pub trust: String,
}

impl TlsTarget {
    /// Everything a connection to the backend depends on besides its
    /// address, for the backend's identity.
    pub fn identity(&self) -> String {
        let name = match &self.server_name {
            ServerName::DnsName(n) => n.as_ref().to_owned(),
            ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
            other => format!("{other:?}"),
        };
        format!("sni={name};trust={}", self.trust)
    }

    /// Runs the handshake over `tcp`, offering HTTP/1.1 only.
    pub async fn connect(&self, tcp: TcpStream) -> io::Result<Stream> {
        self.connect_with(&self.config, tcp).await
    }

    /// Runs the handshake over `tcp` with `config`.
    pub async fn connect_with(
        &self,
        config: &Arc<ClientConfig>,
        tcp: TcpStream,
    ) -> io::Result<Stream> {
        let tls = tokio_rustls::TlsConnector::from(config.clone())
            .connect(self.server_name.clone(), tcp)
            .await?;
        Ok(Stream::Tls(Box::new(tls)))
    }
}

/// A connection's transport.
pub enum Stream {
    /// `http://`.
    Plain(TcpStream),
    /// `https://`.
    Tls(Box<TlsStream<TcpStream>>),
}

impl Stream {
    /// True when TLS negotiated HTTP/2 (ALPN `h2`).
    pub fn negotiated_h2(&self) -> bool {
        match self {
            Stream::Plain(_) => false,
            Stream::Tls(s) => s.get_ref().1.alpn_protocol() == Some(b"h2"),
        }
    }

    /// The TCP socket underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => s.get_ref().0,
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The system's trusted roots, read once.
fn system_roots() -> &'static RootCertStore {
    static ROOTS: OnceLock<RootCertStore> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let mut store = RootCertStore::empty();
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = store.add(cert);
        }
        store
    })
}

/// The client settings for one upstream's `https://` backends, offering
/// HTTP/2 too when `protocol` may speak it. `at` is the config path of the
/// upstream.
pub fn client_config(
    tls: Option<&UpstreamTls>,
    protocol: UpstreamProtocol,
    at: &str,
) -> Result<ClientTls, ConfigError> {
    let ca_file = tls.map(|t| t.ca_file.as_str()).filter(|f| !f.is_empty());
    let mut trust = "system".to_owned();
    let roots = match ca_file {
        Some(file) => {
            let path = format!("{at}.tls.ca_file");
            let pem = std::fs::read(file)
                .map_err(|e| ConfigError::new(&path, format!("cannot read {file}: {e}")))?;
            trust = sha256_hex(&pem);
            let mut store = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| {
                    ConfigError::new(&path, format!("{file} is not valid PEM: {e}"))
                })?;
                store.add(cert).map_err(|e| {
                    ConfigError::new(&path, format!("{file}: unusable CA certificate ({e})"))
                })?;
            }
            if store.is_empty() {
                return Err(ConfigError::new(
                    &path,
                    format!("{file} holds no PEM certificate"),
                ));
            }
            store
        }
        None => {
            let store = system_roots().clone();
            if store.is_empty() {
                return Err(ConfigError::new(
                    at,
                    "https:// backends need trusted CAs: none were found on this system; set tls.ca_file",
                ));
            }
            store
        }
    };
    let base =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| ConfigError::new(at, format!("cannot build TLS settings: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
    let with_alpn = |protocols: &[&[u8]]| {
        let mut c = base.clone();
        c.alpn_protocols = protocols.iter().map(|p| p.to_vec()).collect();
        Arc::new(c)
    };
    let h2 = match protocol {
        UpstreamProtocol::Http1 => None,
        UpstreamProtocol::Http2 => Some(with_alpn(&[b"h2"])),
        UpstreamProtocol::Auto => Some(with_alpn(&[b"h2", b"http/1.1"])),
    };
    Ok(ClientTls {
        config: with_alpn(&[b"http/1.1"]),
        h2,
        trust,
    })
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The name to verify for a backend: the configured one, else the URL's host.
pub fn server_name(
    tls: Option<&UpstreamTls>,
    host: &str,
    at: &str,
) -> Result<ServerName<'static>, ConfigError> {
    let name = tls
        .map(|t| t.server_name.as_str())
        .filter(|n| !n.is_empty())
        .unwrap_or(host);
    ServerName::try_from(name.to_owned()).map_err(|_| {
        ConfigError::new(
            at,
            format!("{name:?} is not a name a certificate can carry"),
        )
    })
}
