//! Whatever a client sends, the answer is a 4xx with a JSON error, never a
//! 5xx, and nothing is applied.

mod common;

use common::*;
use http::Method;
use std::io::{Read, Write};
use std::time::Duration;

/// What is sent, how, and the status expected.
type Case = (
    &'static str,
    Method,
    &'static str,
    &'static str,
    Vec<u8>,
    u16,
);

#[tokio::test]
async fn every_kind_of_bad_body_is_a_4xx_and_changes_nothing() {
    let cp = start().await;
    seed(&cp).await;
    let before = config(&cp).await;
    let deep = format!("{}1{}", "[".repeat(5000), "]".repeat(5000));
    let bomb = "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n\
                c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n\
                e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]\n\
                g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]\nh: [*g, *g, *g, *g, *g, *g, *g, *g, *g]\n";
    // About 50 KB whose aliases would expand to 36 million nodes.
    let wide = format!(
        "a: &a [{}]\nb: [{}]\n",
        vec!["x"; 6_000].join(","),
        vec!["*a"; 6_000].join(",")
    );
    let cases: Vec<Case> = vec![
        (
            "malformed YAML",
            Method::PUT,
            "/api/v1/config",
            "application/yaml",
            b"upstreams: [\n  - name: {".to_vec(),
            400,
        ),
        (
            "malformed JSON",
            Method::PUT,
            "/api/v1/config",
            "application/json",
            b"{\"upstreams\": [".to_vec(),
            400,
        ),
        (
            "YAML sent as JSON",
            Method::PUT,
            "/api/v1/config",
            "application/json",
            base_config().as_bytes().to_vec(),
            400,
        ),
        (
            "invalid UTF-8",
            Method::PUT,
            "/api/v1/config",
            "application/yaml",
            vec![b'a', b':', b' ', 0xff, 0xfe, b'\n'],
            400,
        ),
        (
            "deep nesting",
            Method::PUT,
            "/api/v1/config",
            "application/json",
            deep.clone().into_bytes(),
            400,
        ),
        (
            "deep nesting YAML",
            Method::PUT,
            "/api/v1/config",
            "application/yaml",
            deep.into_bytes(),
            400,
        ),
        (
            "alias bomb",
            Method::PUT,
            "/api/v1/config",
            "application/yaml",
            bomb.as_bytes().to_vec(),
            413,
        ),
        (
            "wide alias bomb",
            Method::PUT,
            "/api/v1/config",
            "application/yaml",
            wide.into_bytes(),
            413,
        ),
        (
            "a name that is a dot segment",
            Method::POST,
            "/api/v1/upstreams",
            "application/yaml",
            b"name: \"..\"\nbackends: [http://127.0.0.1:1]\n".to_vec(),
            422,
        ),
        (
            "not a finite number",
            Method::PUT,
            "/api/v1/config",
            "application/yaml",
            format!("{}retry:\n  budget_percent: .nan\n", base_config()).into_bytes(),
            422,
        ),
        (
            "infinite weight",
            Method::PATCH,
            "/api/v1/upstreams/web/backends/127.0.0.1:3001",
            "application/yaml",
            b"weight: .inf\n".to_vec(),
            422,
        ),
        (
            "YAML tag",
            Method::PUT,
            "/api/v1/config",
            "application/yaml",
            format!("{}version: !secret x\n", base_config()).into_bytes(),
            422,
        ),
        (
            "unknown field",
            Method::PUT,
            "/api/v1/config",
            "application/yaml",
            format!("{}colour: blue\n", base_config()).into_bytes(),
            422,
        ),
        (
            "not a mapping",
            Method::PUT,
            "/api/v1/config",
            "application/json",
            b"[1, 2, 3]".to_vec(),
            422,
        ),
        (
            "a scalar",
            Method::PUT,
            "/api/v1/config",
            "application/json",
            b"42".to_vec(),
            422,
        ),
        (
            "empty body",
            Method::PUT,
            "/api/v1/config",
            "application/yaml",
            Vec::new(),
            422,
        ),
        (
            "unsupported type",
            Method::PUT,
            "/api/v1/config",
            "image/png",
            b"\x89PNG".to_vec(),
            415,
        ),
        (
            "SQL in a name",
            Method::POST,
            "/api/v1/upstreams",
            "application/yaml",
            b"name: \"x'; DROP TABLE upstreams; --\"\nbackends: [http://127.0.0.1:1]\n".to_vec(),
            422,
        ),
        (
            "SQL in a path param",
            Method::DELETE,
            "/api/v1/upstreams/x';%20DROP%20TABLE%20config_versions;--",
            "application/yaml",
            Vec::new(),
            404,
        ),
        (
            "upstream without name",
            Method::POST,
            "/api/v1/upstreams",
            "application/yaml",
            b"backends: [http://127.0.0.1:1]\n".to_vec(),
            422,
        ),
        (
            "upstream as a list",
            Method::PUT,
            "/api/v1/upstreams/web",
            "application/json",
            b"[]".to_vec(),
            422,
        ),
        (
            "backend without url",
            Method::POST,
            "/api/v1/upstreams/web/backends",
            "application/json",
            b"{\"weight\": 2}".to_vec(),
            422,
        ),
        (
            "patch not a mapping",
            Method::PATCH,
            "/api/v1/upstreams/web/backends/127.0.0.1:3001",
            "application/json",
            b"7".to_vec(),
            422,
        ),
        (
            "patch wrong type",
            Method::PATCH,
            "/api/v1/upstreams/web/backends/127.0.0.1:3001",
            "application/json",
            b"{\"weight\": \"heavy\"}".to_vec(),
            422,
        ),
        (
            "rollback body unknown field",
            Method::POST,
            "/api/v1/versions/1/rollback",
            "application/json",
            b"{\"mesage\": \"x\"}".to_vec(),
            400,
        ),
        (
            "bad dry_run",
            Method::PUT,
            "/api/v1/config?dry_run=maybe",
            "application/yaml",
            base_config().as_bytes().to_vec(),
            400,
        ),
        (
            "unknown query",
            Method::PUT,
            "/api/v1/config?force=1",
            "application/yaml",
            base_config().as_bytes().to_vec(),
            400,
        ),
        (
            "bad version",
            Method::GET,
            "/api/v1/versions/abc",
            "",
            Vec::new(),
            400,
        ),
        (
            "negative version",
            Method::GET,
            "/api/v1/versions/-1",
            "",
            Vec::new(),
            400,
        ),
        (
            "huge version",
            Method::GET,
            "/api/v1/versions/99999999999999999999999",
            "",
            Vec::new(),
            400,
        ),
        (
            "bad paging",
            Method::GET,
            "/api/v1/versions?limit=abc",
            "",
            Vec::new(),
            400,
        ),
        (
            "invalid UTF-8 in path",
            Method::GET,
            "/api/v1/upstreams/%FF%FE",
            "",
            Vec::new(),
            400,
        ),
        (
            "unknown endpoint",
            Method::GET,
            "/api/v1/teapots",
            "",
            Vec::new(),
            404,
        ),
        (
            "wrong method",
            Method::DELETE,
            "/api/v1/config",
            "",
            Vec::new(),
            405,
        ),
    ];
    for (what, method, path, ct, body, want) in cases {
        let headers: Vec<(&str, &str)> = if ct.is_empty() {
            vec![]
        } else {
            vec![("content-type", ct)]
        };
        let r = call(cp.addr, method, path, Some(ADMIN), &headers, body).await;
        assert_eq!(r.status.as_u16(), want, "{what}: {}", r.text());
        let body = r.json();
        assert!(
            body["error"].is_string(),
            "{what}: JSON error body, got {body}"
        );
        let text = body.to_string();
        assert!(
            !text.contains("sqlx") && !text.contains("panicked") && !text.contains("src/"),
            "{what}: {text}"
        );
    }
    assert_eq!(cp.version().await, 1);
    assert_eq!(config(&cp).await, before);
    cp.stop().await;
}

#[tokio::test]
async fn headers_that_cannot_be_read_are_4xx() {
    let cp = start().await;
    seed(&cp).await;
    let r = call(
        cp.addr,
        Method::PUT,
        "/api/v1/config",
        Some(ADMIN),
        &[("if-match", "\"abc\"")],
        base_config(),
    )
    .await;
    assert_eq!(r.status, 400);
    let long = "m".repeat(2000);
    let r = call(
        cp.addr,
        Method::PUT,
        "/api/v1/config",
        Some(ADMIN),
        &[("x-isame-message", &long)],
        base_config(),
    )
    .await;
    assert_eq!(r.status, 400);
    // SQL in a message is kept as text.
    let msg = "'); DELETE FROM config_versions; --";
    let changed = base_config().replace("3002", "3003");
    let r = call(
        cp.addr,
        Method::PUT,
        "/api/v1/config",
        Some(ADMIN),
        &[("x-isame-message", msg)],
        changed,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(cp.get("/api/v1/versions/2").await.json()["message"], msg);
    assert_eq!(cp.version().await, 2);
    // Raw bytes that are not valid header text.
    let raw =
        b"PUT /api/v1/config HTTP/1.1\r\nhost: x\r\nauthorization: Bearer test-admin-token-0123456789abcdef0123\r\n\
                x-isame-message: caf\xc3\xa9\r\ncontent-length: 0\r\n\r\n";
    let reply = raw_exchange(cp.addr, raw).await;
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    let raw = b"GET /api/v1/config HTTP/1.1\r\nhost: x\r\nauthorization: Bearer \xff\xfe\r\n\r\n";
    let reply = raw_exchange(cp.addr, raw).await;
    assert!(reply.starts_with("HTTP/1.1 401"), "{reply}");
    cp.stop().await;
}

#[tokio::test]
async fn bodies_over_the_limit_are_413() {
    let cp = start().await;
    seed(&cp).await;
    let limit = isame_control_plane::api::DEFAULT_MAX_BODY_BYTES;
    // Declared length over the limit: refused before reading.
    let head = format!(
        "PUT /api/v1/config HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {ADMIN}\r\ncontent-length: {}\r\n\r\n",
        limit + 1
    );
    let reply = raw_exchange(cp.addr, head.as_bytes()).await;
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    assert!(reply.contains("\"error\""), "{reply}");
    // Chunked, no declared length: cut off at the limit.
    let cp_addr = cp.addr;
    let reply = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(cp_addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        let head = format!(
            "PUT /api/v1/config HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {ADMIN}\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        s.write_all(head.as_bytes()).expect("head");
        let chunk = vec![b'#'; 1 << 20];
        for _ in 0..(limit >> 20) + 2 {
            if s.write_all(format!("{:x}\r\n", chunk.len()).as_bytes()).is_err()
                || s.write_all(&chunk).is_err()
                || s.write_all(b"\r\n").is_err()
            {
                break;
            }
        }
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    })
    .await
    .expect("client");
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    assert_eq!(cp.version().await, 1);
    cp.stop().await;
}

/// Sends raw bytes and reads the reply until the server closes or goes quiet.
async fn raw_exchange(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let request = request.to_vec();
    tokio::task::spawn_blocking(move || raw_exchange_blocking(addr, &request))
        .await
        .expect("client")
}

fn raw_exchange_blocking(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    s.write_all(request).expect("write");
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
        if out.windows(4).any(|w| w == b"\r\n\r\n") && out.ends_with(b"}") {
            break;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
