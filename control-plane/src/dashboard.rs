//! The admin web dashboard: static HTML, CSS and JavaScript modules from
//! `control-plane/web/`, compiled into the binary and served at `/`.
//!
//! The files are static and need no token; every piece of data comes from
//! the REST API, which the page calls with the bearer token the user typed.
//! Each file is answered with its content type, an `ETag` and
//! `Cache-Control: no-cache` (file names carry no version, so a browser
//! revalidates and gets a 304 until the binary changes), and headers that
//! keep the page from running anything but its own scripts: a strict
//! `Content-Security-Policy`, `X-Content-Type-Options: nosniff` and
//! `X-Frame-Options: DENY`. Paths that name no file fall through to the
//! router's JSON 404.

use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use sha2::{Digest, Sha256};

/// Scripts, styles, images and API calls only from this origin; no inline
/// script or style, no plugins, no framing, no `<base>` tricks.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; object-src 'none'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const SVG: &str = "image/svg+xml";

/// One embedded file.
struct Asset {
    /// Where it is served.
    route: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

/// `web/FILE`, served at `/ui/FILE` (or at another route).
macro_rules! asset {
    ($file:literal, $content_type:expr) => {
        asset!(concat!("/ui/", $file), $file, $content_type)
    };
    ($route:expr, $file:literal, $content_type:expr) => {
        Asset {
            route: $route,
            content_type: $content_type,
            body: include_bytes!(concat!("../web/", $file)),
        }
    };
}

/// Every file of the dashboard: the page at `/`, everything it loads under
/// `/ui/`. A unit test checks that each file in `web/` is listed here.
const ASSETS: &[Asset] = &[
    asset!("/", "index.html", HTML),
    asset!("style.css", CSS),
    asset!("favicon.svg", SVG),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("dom.js", JS),
    asset!("fleet.js", JS),
    asset!("upstreams.js", JS),
    asset!("traffic.js", JS),
    asset!("history.js", JS),
    asset!("rollouts.js", JS),
];

/// The dashboard's routes, to be merged into the API router.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    ASSETS.iter().fold(Router::new(), |router, asset| {
        let etag = etag(asset.body);
        router.route(
            asset.route,
            get(move |headers: HeaderMap| std::future::ready(serve(asset, &etag, &headers))),
        )
    })
}

/// A strong validator: the first 128 bits of the file's SHA-256.
fn etag(body: &[u8]) -> HeaderValue {
    let digest = Sha256::digest(body);
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    HeaderValue::from_str(&format!("\"{hex}\"")).expect("hex is a valid header value")
}

fn serve(asset: &'static Asset, etag: &HeaderValue, request: &HeaderMap) -> Response {
    let fresh = request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            let t = t.trim();
            t == "*" || t.trim_start_matches("W/").as_bytes() == etag.as_bytes()
        });
    let headers = [
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        ),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (header::ETAG, etag.clone()),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        (
            HeaderName::from_static("cross-origin-opener-policy"),
            HeaderValue::from_static("same-origin"),
        ),
    ];
    if fresh {
        (StatusCode::NOT_MODIFIED, headers).into_response()
    } else {
        (headers, asset.body).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_in_web_is_served_once() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/web");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .expect("web/ exists")
            .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
            .collect();
        files.sort();
        let mut listed: Vec<String> = ASSETS
            .iter()
            .map(|a| match a.route {
                "/" => "index.html".to_owned(),
                r => r.strip_prefix("/ui/").expect("under /ui/").to_owned(),
            })
            .collect();
        listed.sort();
        assert_eq!(files, listed, "web/ and ASSETS differ");
        let mut routes: Vec<&str> = ASSETS.iter().map(|a| a.route).collect();
        routes.sort_unstable();
        routes.dedup();
        assert_eq!(routes.len(), ASSETS.len(), "a route is served twice");
    }

    #[test]
    fn the_page_has_no_inline_script_or_style() {
        let html = std::str::from_utf8(ASSETS[0].body).expect("utf-8");
        for bad in ["<script>", "style=", "javascript:", "<style"] {
            assert!(
                !html.contains(bad),
                "index.html contains {bad:?}, which the CSP refuses"
            );
        }
        let handler = html
            .split_whitespace()
            .find(|w| w.starts_with("on") && w.contains('='));
        assert_eq!(
            handler, None,
            "inline event handlers are refused by the CSP"
        );
    }

    #[test]
    fn etags_follow_the_content() {
        assert_eq!(etag(b"a"), etag(b"a"));
        assert_ne!(etag(b"a"), etag(b"b"));
    }
}
