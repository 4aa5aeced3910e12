//! A scripted backend that speaks raw bytes, for testing how the proxy
//! copes with unusual or broken HTTP/1.1 from backends: chunked and
//! close-delimited bodies, interim responses, malformed heads, connections
//! that close at awkward moments.
//!
//! For each request it reads the head and the body (by `Content-Length` or
//! chunked framing), records both, and asks the script what to do.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One request as the backend received it.
#[derive(Debug, Clone)]
pub struct RawRequest {
    /// The head, request line included, as text.
    pub head: String,
    /// The body, de-chunked.
    pub body: Vec<u8>,
    /// Whether the body came chunked.
    pub chunked: bool,
    /// Which connection it came on (0-based, in accept order).
    pub connection: usize,
    /// False when the script is asked right after the head, true once the
    /// body was read.
    pub body_read: bool,
}

impl RawRequest {
    /// The value of a header (case-insensitive name), if present.
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    }
}

/// What the backend does with a request.
pub enum Reply {
    /// Write these bytes and keep the connection for the next request.
    Send(Vec<u8>),
    /// Write these bytes, then close.
    SendAndClose(Vec<u8>),
    /// Write the parts with pauses in between, then keep the connection.
    Paced(Vec<(Vec<u8>, Duration)>),
    /// Close without answering.
    Close,
    /// Never answer. Asked right after the head, also never read the body.
    Hang,
    /// Answer right after the head, without reading the body, then close.
    EarlyAndClose(Vec<u8>),
    /// Right after the head, write these bytes (an interim response such as
    /// `100 Continue`), then read the body and ask the script again.
    Interim(Vec<u8>),
}

type Script = dyn Fn(&RawRequest) -> Reply + Send + Sync;

/// A running scripted backend; stops when dropped.
pub struct RawBackend {
    /// Where it listens.
    pub addr: std::net::SocketAddr,
    requests: Arc<Mutex<Vec<RawRequest>>>,
    accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl RawBackend {
    /// Starts a backend on `127.0.0.1:0` that answers with `script`.
    pub async fn start(
        script: impl Fn(&RawRequest) -> Reply + Send + Sync + 'static,
    ) -> RawBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let script: Arc<Script> = Arc::new(script);
        let requests = Arc::new(Mutex::new(Vec::new()));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (reqs, acc) = (requests.clone(), accepted.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let n = acc.fetch_add(1, SeqCst);
                tokio::spawn(serve(stream, n, script.clone(), reqs.clone()));
            }
        });
        RawBackend {
            addr,
            requests,
            accepted,
            task,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests received so far.
    pub fn requests(&self) -> Vec<RawRequest> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(SeqCst)
    }
}

impl Drop for RawBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    mut s: TcpStream,
    connection: usize,
    script: Arc<Script>,
    log: Arc<Mutex<Vec<RawRequest>>>,
) {
    let mut buf = Vec::new();
    loop {
        let Some(head_end) = read_until(&mut s, &mut buf, b"\r\n\r\n").await else {
            return;
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        buf.drain(..head_end + 4);
        let mut req = RawRequest {
            head,
            body: Vec::new(),
            chunked: false,
            connection,
            body_read: false,
        };
        match script(&req) {
            Reply::EarlyAndClose(bytes) => {
                log.lock().map(|mut l| l.push(req)).ok();
                let _ = s.write_all(&bytes).await;
                return;
            }
            Reply::Interim(bytes) if s.write_all(&bytes).await.is_err() => return,
            // Take the head, then never read another byte.
            Reply::Hang => {
                log.lock().map(|mut l| l.push(req)).ok();
                return std::future::pending::<()>().await;
            }
            _ => {}
        }
        if let Some(len) = req
            .header("content-length")
            .and_then(|v| v.parse::<usize>().ok())
        {
            while buf.len() < len {
                if !fill(&mut s, &mut buf).await {
                    return;
                }
            }
            req.body = buf.drain(..len).collect();
        } else if req
            .header("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
        {
            req.chunked = true;
            loop {
                let Some(line_end) = read_until(&mut s, &mut buf, b"\r\n").await else {
                    return;
                };
                let size =
                    usize::from_str_radix(String::from_utf8_lossy(&buf[..line_end]).trim(), 16)
                        .unwrap_or(0);
                buf.drain(..line_end + 2);
                while buf.len() < size + 2 {
                    if !fill(&mut s, &mut buf).await {
                        return;
                    }
                }
                req.body.extend(buf.drain(..size));
                buf.drain(..2);
                if size == 0 {
                    break;
                }
            }
        }
        req.body_read = true;
        let reply = script(&req);
        log.lock().map(|mut l| l.push(req)).ok();
        match reply {
            Reply::Send(bytes) => {
                if s.write_all(&bytes).await.is_err() {
                    return;
                }
            }
            Reply::SendAndClose(bytes) | Reply::EarlyAndClose(bytes) | Reply::Interim(bytes) => {
                let _ = s.write_all(&bytes).await;
                return;
            }
            Reply::Paced(parts) => {
                for (bytes, pause) in parts {
                    if s.write_all(&bytes).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(pause).await;
                }
            }
            Reply::Close => return,
            Reply::Hang => {
                std::future::pending::<()>().await;
            }
        }
    }
}

async fn fill(s: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 8192];
    match s.read(&mut chunk).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
    }
}

async fn read_until(s: &mut TcpStream, buf: &mut Vec<u8>, pat: &[u8]) -> Option<usize> {
    loop {
        if let Some(i) = buf.windows(pat.len()).position(|w| w == pat) {
            return Some(i);
        }
        if !fill(s, buf).await {
            return None;
        }
    }
}
