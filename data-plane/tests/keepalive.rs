//! `upstreams[].keepalive_timeout`: an idle connection to a backend is
//! reused within it and closed after it; `0s` uses each connection once.

mod common;

use common::*;
use isame_testkit::{Backend, Client};
use std::time::Duration;

async fn accepted_after(keepalive: Option<&str>, pause: Duration) -> usize {
    let b = Backend::start("b").await;
    let mut block = upstream("web", "round_robin", &[(&b, 1)]);
    if let Some(k) = keepalive {
        block.push_str(&format!("    keepalive_timeout: {k}\n"));
    }
    let proxy = start(&config(&[block], ""));
    let mut client = Client::http1(proxy.proxy_addr).await.expect("connect");
    for _ in 0..2 {
        assert_eq!(client.get("/").await.expect("request").status, 200);
    }
    tokio::time::sleep(pause).await;
    assert_eq!(client.get("/").await.expect("request").status, 200);
    let n = b.accepted();
    stop(proxy).await;
    n
}

#[tokio::test]
async fn idle_backend_connections_live_as_long_as_the_upstream_says() {
    let pause = Duration::from_millis(600);
    assert_eq!(
        accepted_after(None, pause).await,
        1,
        "the default (30s) reuses one connection"
    );
    assert_eq!(
        accepted_after(Some("300ms"), pause).await,
        2,
        "past keepalive_timeout a new connection is opened"
    );
    assert_eq!(
        accepted_after(Some("0s"), Duration::ZERO).await,
        3,
        "0s: one request per connection"
    );
}
