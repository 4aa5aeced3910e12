//! `isame-echo`: a small backend for demos and benchmarks. Answers every
//! request with a JSON echo (see `isame_testkit::backend`), or, with
//! `--fast`, with a fixed 2-byte body so that it costs as little as possible;
//! with `--grpc`, serves the test gRPC service over h2c instead (see
//! `isame_testkit::grpc`); with `--ws`, echoes every WebSocket message.

use bytes::Bytes;
use clap::Parser;
use http::Response;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::net::SocketAddr;

#[derive(Parser)]
#[command(name = "isame-echo", about = "A demo and benchmark backend")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:3000")]
    listen: SocketAddr,
    /// Name reported in responses.
    #[arg(long, default_value = "echo")]
    name: String,
    /// Answer "ok" without echoing (for benchmarks).
    #[arg(long)]
    fast: bool,
    /// Serve the gRPC test service (h2c) instead of HTTP.
    #[arg(long, conflicts_with = "fast")]
    grpc: bool,
    /// Accept WebSocket handshakes and echo every message.
    #[arg(long, conflicts_with_all = ["fast", "grpc"])]
    ws: bool,
    /// Worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?;
    rt.block_on(async move {
        if args.grpc {
            let backend = isame_testkit::GrpcBackend::start_on(args.listen, &args.name).await;
            eprintln!(
                "isame-echo {} (gRPC) listening on {}",
                args.name, backend.addr
            );
            tokio::signal::ctrl_c().await?;
            return Ok(());
        }
        if args.ws {
            return ws_echo(args.listen).await;
        }
        if !args.fast {
            let backend = isame_testkit::Backend::start_on(args.listen, &args.name).await;
            eprintln!("isame-echo {} listening on {}", args.name, backend.addr);
            tokio::signal::ctrl_c().await?;
            return Ok(());
        }
        let listener = tokio::net::TcpListener::bind(args.listen).await?;
        eprintln!("isame-echo (fast) listening on {}", listener.local_addr()?);
        let name = Bytes::from(args.name);
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            let name = name.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |_req| {
                    let name = name.clone();
                    async move {
                        let mut r = Response::new(Full::new(Bytes::from_static(b"ok")));
                        if let Ok(v) = http::HeaderValue::from_maybe_shared(name) {
                            r.headers_mut().insert("x-backend", v);
                        }
                        Ok::<_, Infallible>(r)
                    }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    })
}

/// Echoes the messages of every WebSocket connection accepted on `listen`.
async fn ws_echo(listen: SocketAddr) -> anyhow::Result<()> {
    use futures_util::{SinkExt, StreamExt};
    let listener = tokio::net::TcpListener::bind(listen).await?;
    eprintln!(
        "isame-echo (WebSocket) listening on {}",
        listener.local_addr()?
    );
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                return;
            };
            while let Some(Ok(m)) = ws.next().await {
                if (m.is_text() || m.is_binary()) && ws.send(m).await.is_err() {
                    return;
                }
            }
        });
    }
}
