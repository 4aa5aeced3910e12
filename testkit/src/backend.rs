//! An echo backend on a real socket.
//!
//! `GET /health` answers 200 (see [`Backend::set_health`]) and is counted
//! apart, as health probes. Any other request is answered, by default, with
//! `200` and a JSON description of the request it got
//! (its own name, method, path, headers, body size). A test steers it either
//! for one request, through query parameters, or for all requests, through
//! [`Backend::set_mode`]:
//!
//! | query | effect |
//! |---|---|
//! | `status=N` | answer with status N |
//! | `delay_ms=N` | wait N ms before answering |
//! | `bytes=N` | answer with an N-byte body, streamed in 16 KiB chunks |
//! | `trickle_ms=N` | with `bytes`, wait N ms between chunks |
//! | `early=1` | answer at once, without reading the request body |
//! | `hop=1` | add hop-by-hop headers to the response |

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{json, Map, Value};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU8, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// What the backend does with every request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Answer normally.
    Echo,
    /// Accept the request and never answer.
    Hang,
    /// Close the connection without answering.
    Close,
    /// Answer with this status.
    Status(u16),
}

struct State {
    name: String,
    hits: AtomicUsize,
    open: AtomicUsize,
    accepted: AtomicUsize,
    mode: AtomicU8,
    status: AtomicU16,
    health: AtomicU16,
    probes: AtomicUsize,
}

/// A running echo backend; it stops when dropped.
pub struct Backend {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<State>,
    stop: watch::Sender<bool>,
    tls: bool,
}

type RespBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

impl Backend {
    /// Starts a backend named `name` on `127.0.0.1:0` in the current runtime.
    pub async fn start(name: &str) -> Backend {
        Self::start_on("127.0.0.1:0".parse().expect("literal address"), name).await
    }

    /// Starts a backend on `addr`.
    pub async fn start_on(addr: SocketAddr, name: &str) -> Backend {
        Self::start_with(addr, name, None).await
    }

    /// Starts an HTTPS backend on `127.0.0.1:0` presenting `tls`.
    pub async fn start_tls(name: &str, tls: Arc<rustls::ServerConfig>) -> Backend {
        let addr = "127.0.0.1:0".parse().expect("literal address");
        Self::start_with(addr, name, Some(tokio_rustls::TlsAcceptor::from(tls))).await
    }

    async fn start_with(
        addr: SocketAddr,
        name: &str,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> Backend {
        let listener = TcpListener::bind(addr).await.expect("bind backend");
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(State {
            name: name.to_owned(),
            hits: AtomicUsize::new(0),
            open: AtomicUsize::new(0),
            accepted: AtomicUsize::new(0),
            mode: AtomicU8::new(0),
            status: AtomicU16::new(200),
            health: AtomicU16::new(200),
            probes: AtomicUsize::new(0),
        });
        let (stop, mut stopped) = watch::channel(false);
        let tls_on = tls.is_some();
        let st = state.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    _ = stopped.changed() => return,
                    a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
                };
                let st = st.clone();
                let mut stopped = stopped.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    st.open.fetch_add(1, SeqCst);
                    st.accepted.fetch_add(1, SeqCst);
                    let svc_state = st.clone();
                    let svc = service_fn(move |req| handle(req, svc_state.clone()));
                    let builder = auto::Builder::new(TokioExecutor::new());
                    match tls {
                        None => {
                            let conn = builder.serve_connection(TokioIo::new(stream), svc);
                            tokio::select! {
                                _ = conn => {}
                                _ = stopped.changed() => {}
                            }
                        }
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                let conn = builder.serve_connection(TokioIo::new(stream), svc);
                                tokio::select! {
                                    _ = conn => {}
                                    _ = stopped.changed() => {}
                                }
                            }
                        }
                    }
                    st.open.fetch_sub(1, SeqCst);
                });
            }
        });
        let tls = tls_on;
        Backend {
            addr,
            state,
            stop,
            tls,
        }
    }

    /// `http://127.0.0.1:PORT` (`https://` for a TLS backend).
    pub fn url(&self) -> String {
        format!(
            "{}://{}",
            if self.tls { "https" } else { "http" },
            self.addr
        )
    }

    /// Requests received so far.
    pub fn hits(&self) -> usize {
        self.state.hits.load(SeqCst)
    }

    /// Client connections currently open to this backend.
    pub fn open_connections(&self) -> usize {
        self.state.open.load(SeqCst)
    }

    /// Client connections accepted since start.
    pub fn accepted(&self) -> usize {
        self.state.accepted.load(SeqCst)
    }

    /// The status `GET /health` answers with (200 unless set); health
    /// probes are counted apart from other requests.
    pub fn set_health(&self, status: u16) {
        self.state.health.store(status, SeqCst);
    }

    /// Health probes (`GET /health`) received so far.
    pub fn probes(&self) -> usize {
        self.state.probes.load(SeqCst)
    }

    /// Changes what the backend does with every following request.
    pub fn set_mode(&self, mode: Mode) {
        let (m, status) = match mode {
            Mode::Echo => (0, 200),
            Mode::Hang => (1, 200),
            Mode::Close => (2, 200),
            Mode::Status(s) => (3, s),
        };
        self.state.status.store(status, SeqCst);
        self.state.mode.store(m, SeqCst);
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

fn query(req: &Request<Incoming>, key: &str) -> Option<u64> {
    req.uri().query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| v.parse().ok()).flatten()
    })
}

async fn handle(
    req: Request<Incoming>,
    st: Arc<State>,
) -> Result<Response<RespBody>, std::io::Error> {
    if req.uri().path() == "/health" {
        st.probes.fetch_add(1, SeqCst);
        let mut r = Response::new(BodyExt::boxed(Full::new(Bytes::from_static(b"health"))));
        *r.status_mut() = StatusCode::from_u16(st.health.load(SeqCst)).unwrap_or(StatusCode::OK);
        return Ok(r);
    }
    st.hits.fetch_add(1, SeqCst);
    let mut status = StatusCode::OK;
    match st.mode.load(SeqCst) {
        1 => std::future::pending::<()>().await,
        2 => return Err(std::io::Error::other("closing as asked")),
        3 => {
            status = StatusCode::from_u16(st.status.load(SeqCst))
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
        }
        _ => {}
    }
    if let Some(s) = query(&req, "status") {
        status = u16::try_from(s)
            .ok()
            .and_then(|s| StatusCode::from_u16(s).ok())
            .unwrap_or(StatusCode::BAD_REQUEST);
    }
    if let Some(ms) = query(&req, "delay_ms") {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let stream_bytes = query(&req, "bytes");
    let trickle = Duration::from_millis(query(&req, "trickle_ms").unwrap_or(0));
    if query(&req, "early") == Some(1) {
        let mut r = Response::new(BodyExt::boxed(Full::new(Bytes::from_static(b"early"))));
        r.headers_mut().insert("x-backend", header(&st.name));
        return Ok(r);
    }
    let hop = query(&req, "hop") == Some(1);
    let mut headers = Map::new();
    for (k, v) in req.headers() {
        let v = Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned());
        match headers.get_mut(k.as_str()) {
            Some(Value::Array(a)) => a.push(v),
            Some(existing) => *existing = Value::Array(vec![existing.clone(), v]),
            None => {
                headers.insert(k.as_str().to_owned(), v);
            }
        }
    }
    let method = req.method().to_string();
    let path = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let version = format!("{:?}", req.version());
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();

    let mut resp = match stream_bytes {
        Some(n) => {
            let chunks = n.div_ceil(16_384);
            let stream = futures_util::stream::unfold(0u64, move |i| async move {
                if i >= chunks {
                    return None;
                }
                if i > 0 && !trickle.is_zero() {
                    tokio::time::sleep(trickle).await;
                }
                let len = (n - i * 16_384).min(16_384) as usize;
                Some((
                    Ok::<_, Infallible>(Frame::data(Bytes::from(vec![b'x'; len]))),
                    i + 1,
                ))
            });
            let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
            r.headers_mut().insert("x-backend", header(&st.name));
            r
        }
        None => {
            let echo = json!({
                "backend": st.name,
                "method": method,
                "path": path,
                "version": version,
                "headers": headers,
                "body_len": body.len(),
            });
            let mut r = Response::new(BodyExt::boxed(Full::new(Bytes::from(echo.to_string()))));
            r.headers_mut()
                .insert("content-type", HeaderValue::from_static("application/json"));
            r.headers_mut().insert("x-backend", header(&st.name));
            r
        }
    };
    *resp.status_mut() = status;
    if hop {
        let h = resp.headers_mut();
        h.insert("connection", HeaderValue::from_static("x-hop-custom"));
        h.insert("x-hop-custom", HeaderValue::from_static("secret"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            "proxy-authenticate",
            HeaderValue::from_static("Basic realm=\"x\""),
        );
        h.insert("x-end-to-end", HeaderValue::from_static("kept"));
    }
    Ok(resp)
}

fn header(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}
