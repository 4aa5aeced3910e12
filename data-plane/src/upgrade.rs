//! HTTP/1.1 protocol upgrades (`Connection: upgrade` + `Upgrade: websocket`):
//! which ones a request asks for that its upstream allows. The headers are
//! hop-by-hop, so a request that asks for none of them allowed goes to the
//! backend as a plain request, without them (the backend then answers as it
//! would to any client that cannot upgrade).

use http::header::{HeaderMap, HeaderValue, CONNECTION, UPGRADE};
use http::Version;

/// The protocols of `Upgrade` that `allowed` (lowercase tokens) names, in
/// the client's order, when the request asks for an upgrade; `None`
/// otherwise. `h2c` is never among them: the proxy's own HTTP/2 is the way
/// to a backend's HTTP/2.
pub fn requested(version: Version, headers: &HeaderMap, allowed: &[String]) -> Option<HeaderValue> {
    if version != Version::HTTP_11 || allowed.is_empty() || !headers.contains_key(UPGRADE) {
        return None;
    }
    let asks = headers
        .get_all(CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"upgrade"));
    if !asks {
        return None;
    }
    let mut out: Vec<u8> = Vec::new();
    for offered in headers
        .get_all(UPGRADE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
    {
        if is_allowed(offered, allowed) {
            if !out.is_empty() {
                out.extend_from_slice(b", ");
            }
            out.extend_from_slice(offered);
        }
    }
    if out.is_empty() {
        return None;
    }
    HeaderValue::from_bytes(&out).ok()
}

/// True when `offered` (`name` or `name/version`) is one `allowed` names:
/// the same token, or the same name when the allowed one has no version.
fn is_allowed(offered: &[u8], allowed: &[String]) -> bool {
    let name = offered.split(|&b| b == b'/').next().unwrap_or(offered);
    if name.eq_ignore_ascii_case(b"h2c") {
        return false;
    }
    allowed.iter().any(|a| {
        let a = a.as_bytes();
        offered.eq_ignore_ascii_case(a) || (!a.contains(&b'/') && name.eq_ignore_ascii_case(a))
    })
}

/// True when a backend's `Upgrade` answer (one protocol) is among those the
/// request asked for.
pub fn answers(asked: &HeaderValue, chosen: &HeaderValue) -> bool {
    let chosen = chosen.as_bytes().trim_ascii();
    !chosen.is_empty()
        && !chosen.contains(&b',')
        && asked
            .as_bytes()
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(chosen))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    fn ws() -> Vec<String> {
        vec!["websocket".into()]
    }

    #[test]
    fn a_websocket_handshake_is_an_upgrade() {
        let h = headers(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "WebSocket"),
        ]);
        assert_eq!(
            requested(Version::HTTP_11, &h, &ws()).expect("upgrade"),
            "WebSocket"
        );
    }

    #[test]
    fn only_allowed_protocols_are_asked_for() {
        let h = headers(&[
            ("connection", "upgrade"),
            ("upgrade", "h2c, foo/2, websocket"),
        ]);
        assert_eq!(
            requested(Version::HTTP_11, &h, &ws()).expect("upgrade"),
            "websocket"
        );
        assert!(requested(Version::HTTP_11, &h, &["bar".into()]).is_none());
        assert_eq!(
            requested(Version::HTTP_11, &h, &["foo".into()]).expect("by name"),
            "foo/2"
        );
        assert!(requested(Version::HTTP_11, &h, &["foo/3".into()]).is_none());
        assert!(requested(Version::HTTP_11, &h, &[]).is_none());
    }

    #[test]
    fn h2c_is_never_asked_for() {
        let h = headers(&[
            ("connection", "Upgrade, HTTP2-Settings"),
            ("upgrade", "h2c"),
        ]);
        assert!(requested(Version::HTTP_11, &h, &["h2c".into()]).is_none());
    }

    #[test]
    fn an_upgrade_needs_connection_upgrade_and_http11() {
        let h = headers(&[("upgrade", "websocket")]);
        assert!(requested(Version::HTTP_11, &h, &ws()).is_none());
        let h = headers(&[("connection", "upgrade"), ("upgrade", "websocket")]);
        assert!(requested(Version::HTTP_10, &h, &ws()).is_none());
        assert!(requested(Version::HTTP_2, &h, &ws()).is_none());
    }

    #[test]
    fn the_answer_must_be_one_protocol_asked_for() {
        let asked = HeaderValue::from_static("websocket, foo");
        assert!(answers(&asked, &HeaderValue::from_static("WebSocket")));
        assert!(!answers(&asked, &HeaderValue::from_static("bar")));
        assert!(!answers(
            &asked,
            &HeaderValue::from_static("websocket, foo")
        ));
        assert!(!answers(&asked, &HeaderValue::from_static("")));
    }
}
