//! `isame-wsload`: a WebSocket load generator for benchmarks. Opens
//! `--connections` WebSockets to `--url`, and on each sends a text message
//! of `--size` bytes, waits for its echo, and sends the next, for
//! `--duration`. Prints `messages=N seconds=S errors=E`: N echoes received
//! in all, over S seconds.

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

#[derive(Parser)]
#[command(name = "isame-wsload", about = "WebSocket echo load for benchmarks")]
struct Args {
    /// `ws://host:port/path` to connect to.
    #[arg(long)]
    url: String,
    /// WebSockets open at once.
    #[arg(long, default_value_t = 50)]
    connections: usize,
    /// Bytes per message.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// How long to send, in seconds.
    #[arg(long, default_value_t = 4.0)]
    duration: f64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let mut sockets = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        let (ws, _) = tokio_tungstenite::connect_async(args.url.as_str()).await?;
        if let tokio_tungstenite::MaybeTlsStream::Plain(tcp) = ws.get_ref() {
            let _ = tcp.set_nodelay(true);
        }
        sockets.push(ws);
    }
    let messages = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let payload = "x".repeat(args.size);
    let duration = Duration::from_secs_f64(args.duration);
    let start = tokio::time::Instant::now();
    let deadline = start + duration;
    let tasks: Vec<_> = sockets
        .into_iter()
        .map(|mut ws| {
            let (messages, errors, payload) = (messages.clone(), errors.clone(), payload.clone());
            tokio::spawn(async move {
                while tokio::time::Instant::now() < deadline {
                    if ws.send(Message::text(payload.as_str())).await.is_err() {
                        errors.fetch_add(1, Relaxed);
                        return;
                    }
                    match ws.next().await {
                        Some(Ok(m)) if m.len() == payload.len() => {
                            messages.fetch_add(1, Relaxed);
                        }
                        _ => {
                            errors.fetch_add(1, Relaxed);
                            return;
                        }
                    }
                }
                let _ = ws.close(None).await;
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "messages={} seconds={secs:.3} errors={}",
        messages.load(Relaxed),
        errors.load(Relaxed)
    );
    Ok(())
}
