//! A gRPC backend on a real socket: the `isame.test.v1.Echo` service
//! (`proto/isame/test/v1/echo.proto`) and the standard health service
//! (`grpc.health.v1.Health`), served by tonic over h2c or over TLS with
//! ALPN `h2`. It counts the TCP connections it accepts, so a test can tell
//! how many requests shared one.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::transport::server::Connected;
use tonic::{Request, Response, Status, Streaming};
use tonic_health::ServingStatus;

/// The generated messages, client and server of the test service.
pub mod pb {
    tonic::include_proto!("isame.test.v1");
}

use pb::echo_server::{Echo, EchoServer};
use pb::{EchoReply, EchoRequest, ExpandRequest};

/// The service name health checks ask about.
pub const SERVICE: &str = "isame.test.v1.Echo";

struct State {
    name: String,
    accepted: AtomicUsize,
    open: AtomicUsize,
    calls: AtomicUsize,
    /// Every call fails with UNAVAILABLE.
    unavailable: AtomicBool,
}

/// A running gRPC backend; it stops when dropped.
pub struct GrpcBackend {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<State>,
    health: tonic_health::server::HealthReporter,
    tls: bool,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for GrpcBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl GrpcBackend {
    /// Starts a backend named `name` speaking h2c on `127.0.0.1:0`.
    pub async fn start(name: &str) -> GrpcBackend {
        Self::start_with(local(), name, None).await
    }

    /// Starts a backend speaking h2c on `addr`.
    pub async fn start_on(addr: SocketAddr, name: &str) -> GrpcBackend {
        Self::start_with(addr, name, None).await
    }

    /// Starts a backend presenting `tls` (its ALPN is set to `h2`).
    pub async fn start_tls(name: &str, tls: Arc<rustls::ServerConfig>) -> GrpcBackend {
        let mut config = (*tls).clone();
        config.alpn_protocols = vec![b"h2".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        Self::start_with(local(), name, Some(acceptor)).await
    }

    async fn start_with(
        addr: SocketAddr,
        name: &str,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> GrpcBackend {
        let listener = TcpListener::bind(addr).await.expect("bind backend");
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(State {
            name: name.to_owned(),
            accepted: AtomicUsize::new(0),
            open: AtomicUsize::new(0),
            calls: AtomicUsize::new(0),
            unavailable: AtomicBool::new(false),
        });
        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_serving::<EchoServer<Service>>().await;
        let (tx, rx) = mpsc::channel::<std::io::Result<Counted>>(64);
        let st = state.clone();
        let tls_on = tls.is_some();
        let accept = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let _ = tcp.set_nodelay(true);
                st.accepted.fetch_add(1, SeqCst);
                let (tx, st, tls) = (tx.clone(), st.clone(), tls.clone());
                tokio::spawn(async move {
                    let io: Box<dyn Io> = match tls {
                        None => Box::new(tcp),
                        Some(acceptor) => match acceptor.accept(tcp).await {
                            Ok(s) => Box::new(s),
                            Err(_) => return,
                        },
                    };
                    st.open.fetch_add(1, SeqCst);
                    let counted = Counted {
                        io,
                        state: st.clone(),
                    };
                    let _ = tx.send(Ok(counted)).await;
                });
            }
        });
        let service = Service(state.clone());
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(health_service)
                .add_service(EchoServer::new(service).max_decoding_message_size(64 << 20))
                .serve_with_incoming(ReceiverStream::new(rx))
                .await;
            accept.abort();
        });
        GrpcBackend {
            addr,
            state,
            health,
            tls: tls_on,
            task,
        }
    }

    /// Its URL: `h2c://` or `https://`.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "h2c" };
        format!("{scheme}://{}", self.addr)
    }

    /// TCP connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.state.accepted.load(SeqCst)
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.state.open.load(SeqCst)
    }

    /// Echo calls received so far.
    pub fn calls(&self) -> usize {
        self.state.calls.load(SeqCst)
    }

    /// Makes every call fail with UNAVAILABLE (trailers-only), or not.
    pub fn set_unavailable(&self, on: bool) {
        self.state.unavailable.store(on, SeqCst);
    }

    /// What the health service says of the server and of [`SERVICE`].
    pub async fn set_serving(&self, serving: bool) {
        let status = if serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        self.health.set_service_status("", status).await;
        self.health.set_service_status(SERVICE, status).await;
    }
}

fn local() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// An accepted connection, counted while open.
struct Counted {
    io: Box<dyn Io>,
    state: Arc<State>,
}

trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

impl Drop for Counted {
    fn drop(&mut self) {
        self.state.open.fetch_sub(1, SeqCst);
    }
}

impl Connected for Counted {
    type ConnectInfo = ();
    fn connect_info(&self) {}
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

struct Service(Arc<State>);

/// The status a request asks to end with, with its `x-trailer`.
fn failure(code: u32, message: &str, trailer: &str) -> Option<Status> {
    if code == 0 {
        return None;
    }
    let code = tonic::Code::from(i32::try_from(code).unwrap_or(2));
    let mut meta = tonic::metadata::MetadataMap::new();
    if let Ok(v) = trailer.parse() {
        if !trailer.is_empty() {
            meta.insert("x-trailer", v);
        }
    }
    Some(Status::with_metadata(code, message, meta))
}

fn metadata_of<T>(req: &Request<T>) -> std::collections::HashMap<String, String> {
    req.metadata()
        .clone()
        .into_headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

impl Service {
    fn reply(&self, payload: Vec<u8>) -> EchoReply {
        EchoReply {
            payload,
            served_by: self.0.name.clone(),
            ..EchoReply::default()
        }
    }

    fn begin(&self) -> Result<(), Status> {
        self.0.calls.fetch_add(1, SeqCst);
        if self.0.unavailable.load(SeqCst) {
            return Err(Status::unavailable("backend unavailable"));
        }
        Ok(())
    }
}

type ReplyStream = Pin<Box<dyn Stream<Item = Result<EchoReply, Status>> + Send>>;

#[tonic::async_trait]
impl Echo for Service {
    async fn unary(&self, req: Request<EchoRequest>) -> Result<Response<EchoReply>, Status> {
        self.begin()?;
        let metadata = metadata_of(&req);
        let r = req.into_inner();
        if r.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(r.delay_ms.into())).await;
        }
        if let Some(s) = failure(r.fail_code, &r.fail_message, &r.trailer) {
            return Err(s);
        }
        let mut reply = self.reply(r.payload);
        reply.metadata = metadata;
        Ok(Response::new(reply))
    }

    type ExpandStream = ReplyStream;

    async fn expand(&self, req: Request<ExpandRequest>) -> Result<Response<ReplyStream>, Status> {
        self.begin()?;
        let r = req.into_inner();
        let name = self.0.name.clone();
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            for i in 0..r.count {
                if r.interval_ms > 0 {
                    tokio::time::sleep(Duration::from_millis(r.interval_ms.into())).await;
                }
                let size = usize::try_from(r.size).unwrap_or(0);
                let byte = u8::try_from(i % 251).unwrap_or(0);
                let reply = EchoReply {
                    payload: vec![byte; size],
                    served_by: name.clone(),
                    ..EchoReply::default()
                };
                if tx.send(Ok(reply)).await.is_err() {
                    return;
                }
            }
            if let Some(s) = failure(r.fail_code, &r.fail_message, &r.trailer) {
                let _ = tx.send(Err(s)).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn collect(
        &self,
        req: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<EchoReply>, Status> {
        self.begin()?;
        let mut stream = req.into_inner();
        let mut received = 0u64;
        while let Some(m) = stream.next().await {
            received += m?.payload.len() as u64;
        }
        let mut reply = self.reply(Vec::new());
        reply.received = received;
        Ok(Response::new(reply))
    }

    type ChatStream = ReplyStream;

    async fn chat(
        &self,
        req: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<ReplyStream>, Status> {
        self.begin()?;
        let name = self.0.name.clone();
        let mut stream = req.into_inner();
        let out = async_stream(move |tx| async move {
            while let Some(m) = stream.next().await {
                let reply = m.map(|m| EchoReply {
                    payload: m.payload,
                    served_by: name.clone(),
                    ..EchoReply::default()
                });
                if tx.send(reply).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(out))
    }
}

/// A stream fed by a task running `f` with the sending half.
fn async_stream<F, Fut>(f: F) -> ReplyStream
where
    F: FnOnce(mpsc::Sender<Result<EchoReply, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(f(tx));
    Box::pin(ReceiverStream::new(rx))
}
