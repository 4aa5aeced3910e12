//! Minimal HTTP clients for tests: one keep-alive connection, HTTP/1.1 or
//! HTTP/2 with prior knowledge, and the whole response collected.

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use tokio::net::TcpStream;

/// A complete response.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Status code.
    pub status: StatusCode,
    /// Response headers.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

impl Reply {
    /// The body parsed as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// What a TLS handshake settled on.
#[derive(Debug, Clone)]
pub struct TlsInfo {
    /// The ALPN protocol, if any.
    pub alpn: Option<Vec<u8>>,
    /// The server's leaf certificate.
    pub peer_cert: Option<rustls::pki_types::CertificateDer<'static>>,
    /// The TLS version.
    pub version: Option<rustls::ProtocolVersion>,
    /// The cipher suite.
    pub suite: Option<rustls::CipherSuite>,
}

enum Sender {
    H1(http1::SendRequest<Full<Bytes>>),
    H2(http2::SendRequest<Full<Bytes>>),
}

/// One client connection.
pub struct Client {
    addr: SocketAddr,
    tx: Sender,
}

impl Client {
    /// Opens an HTTP/1.1 keep-alive connection.
    pub async fn http1(addr: SocketAddr) -> std::io::Result<Client> {
        let stream = TcpStream::connect(addr).await?;
        let (tx, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(conn);
        Ok(Client {
            addr,
            tx: Sender::H1(tx),
        })
    }

    /// Opens an HTTP/2 connection with prior knowledge (h2c).
    pub async fn http2(addr: SocketAddr) -> std::io::Result<Client> {
        let stream = TcpStream::connect(addr).await?;
        let (tx, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(conn);
        Ok(Client {
            addr,
            tx: Sender::H2(tx),
        })
    }

    /// Opens a TLS connection (SNI `server_name`) and speaks HTTP/2 or
    /// HTTP/1.1 as ALPN decided; also returns what was negotiated.
    pub async fn https(
        addr: SocketAddr,
        server_name: &str,
        config: std::sync::Arc<rustls::ClientConfig>,
    ) -> std::io::Result<(Client, TlsInfo)> {
        let stream = TcpStream::connect(addr).await?;
        let name = rustls::pki_types::ServerName::try_from(server_name.to_owned())
            .map_err(std::io::Error::other)?;
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, stream)
            .await?;
        let conn = tls.get_ref().1;
        let info = TlsInfo {
            alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
            peer_cert: conn
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| c.clone().into_owned()),
            version: conn.protocol_version(),
            suite: conn.negotiated_cipher_suite().map(|s| s.suite()),
        };
        let tx = if info.alpn.as_deref() == Some(b"h2") {
            let (tx, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .map_err(std::io::Error::other)?;
            tokio::spawn(conn);
            Sender::H2(tx)
        } else {
            let (tx, conn) = http1::handshake(TokioIo::new(tls))
                .await
                .map_err(std::io::Error::other)?;
            tokio::spawn(conn);
            Sender::H1(tx)
        };
        Ok((Client { addr, tx }, info))
    }

    /// Sends a request and collects the response.
    pub async fn send(&mut self, mut req: Request<Full<Bytes>>) -> Result<Reply, hyper::Error> {
        let resp = match &mut self.tx {
            Sender::H1(tx) => {
                if !req.headers().contains_key(http::header::HOST) {
                    let host = self.addr.to_string();
                    if let Ok(v) = host.parse() {
                        req.headers_mut().insert(http::header::HOST, v);
                    }
                }
                tx.ready().await?;
                tx.send_request(req).await?
            }
            Sender::H2(tx) => {
                if req.uri().authority().is_none() {
                    let uri = format!("http://{}{}", self.addr, req.uri());
                    if let Ok(u) = uri.parse() {
                        *req.uri_mut() = u;
                    }
                }
                tx.ready().await?;
                tx.send_request(req).await?
            }
        };
        let (parts, body) = resp.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    /// `GET path`.
    pub async fn get(&mut self, path: &str) -> Result<Reply, hyper::Error> {
        let req = Request::get(path)
            .body(Full::new(Bytes::new()))
            .unwrap_or_default();
        self.send(req).await
    }
}

/// One `GET` on a fresh connection.
pub async fn get(addr: SocketAddr, path: &str) -> std::io::Result<Reply> {
    let mut c = Client::http1(addr).await?;
    c.get(path).await.map_err(std::io::Error::other)
}
