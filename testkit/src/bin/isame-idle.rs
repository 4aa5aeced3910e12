//! `isame-idle`: opens many client connections to a proxy and leaves them
//! idle, for measuring what an idle connection costs the proxy
//! (`bench/idle_memory.sh`).
//!
//! Modes: `http1` sends one request on each connection and keeps it open
//! (keep-alive); `silent` connects and sends nothing; `http2` sends one
//! request over HTTP/2 with prior knowledge and keeps the connection open.
//! Prints `ready N` once every connection is in place, then holds them
//! until killed or `--hold` passes.

use bytes::Bytes;
use clap::{Parser, ValueEnum};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;

#[derive(Clone, Copy, ValueEnum)]
enum Mode {
    Http1,
    Silent,
    Http2,
}

#[derive(Parser)]
#[command(name = "isame-idle", about = "Holds many idle client connections open")]
struct Args {
    /// The proxy to connect to.
    #[arg(long)]
    target: SocketAddr,
    /// How many connections.
    #[arg(long, default_value_t = 1000)]
    connections: usize,
    /// What each connection does before it idles.
    #[arg(long, value_enum, default_value = "http1")]
    mode: Mode,
    /// Seconds to hold the connections.
    #[arg(long, default_value_t = 600)]
    hold: u64,
}

/// What keeps one connection open.
enum Held {
    Tcp(#[allow(dead_code)] TcpStream),
    Http1(#[allow(dead_code)] hyper::client::conn::http1::SendRequest<Empty<Bytes>>),
    Http2(#[allow(dead_code)] hyper::client::conn::http2::SendRequest<Empty<Bytes>>),
}

async fn open(target: SocketAddr, mode: Mode) -> anyhow::Result<Held> {
    let tcp = TcpStream::connect(target).await?;
    let req = || {
        http::Request::get(format!("http://{target}/"))
            .header("host", target.to_string())
            .body(Empty::<Bytes>::new())
    };
    Ok(match mode {
        Mode::Silent => Held::Tcp(tcp),
        Mode::Http1 => {
            let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
            tokio::spawn(conn);
            let mut r = req()?;
            *r.uri_mut() = "/".parse()?;
            let resp = tx.send_request(r).await?;
            anyhow::ensure!(resp.status().is_success(), "status {}", resp.status());
            resp.into_body().collect().await?;
            Held::Http1(tx)
        }
        Mode::Http2 => {
            let (mut tx, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                    .await?;
            tokio::spawn(conn);
            let resp = tx.send_request(req()?).await?;
            anyhow::ensure!(resp.status().is_success(), "status {}", resp.status());
            resp.into_body().collect().await?;
            Held::Http2(tx)
        }
    })
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let mut held = Vec::with_capacity(args.connections);
        // A few at a time, so the proxy's accept queue never overflows.
        for chunk in (0..args.connections).collect::<Vec<_>>().chunks(64) {
            let opened =
                futures_util::future::join_all(chunk.iter().map(|_| open(args.target, args.mode)))
                    .await;
            for c in opened {
                held.push(c?);
            }
        }
        println!("ready {}", held.len());
        std::io::stdout().flush()?;
        tokio::time::sleep(Duration::from_secs(args.hold)).await;
        drop(held);
        Ok(())
    })
}
