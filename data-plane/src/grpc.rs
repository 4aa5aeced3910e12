//! What the proxy knows of gRPC: how a call is recognised, its deadline
//! (`grpc-timeout`), the gRPC-shaped answers the proxy gives itself, the
//! `isame_lb_grpc_responses_total` counters, and the messages of the
//! standard health service (`grpc.health.v1`).

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use http::StatusCode;
use prometheus::{IntCounter, IntCounterVec};
use std::sync::OnceLock;
use std::time::Duration;

/// `grpc-status`.
pub static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
/// `grpc-message`.
pub static GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
/// `grpc-timeout`.
pub static GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// `OK`.
pub const OK: u32 = 0;
/// `DEADLINE_EXCEEDED`.
pub const DEADLINE_EXCEEDED: u32 = 4;
/// `UNAVAILABLE`: the status that breakers count and retries resend.
pub const UNAVAILABLE: u32 = 14;

/// What the proxy needs to know of a gRPC call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Call {
    /// The client's deadline (`grpc-timeout`), when it set one.
    pub timeout: Option<Duration>,
}

/// The gRPC call a request is, if it is one: `content-type` is
/// `application/grpc`, alone or followed by `+` (a codec) or `;`
/// (parameters). gRPC-Web (`application/grpc-web`) is plain HTTP to the
/// proxy.
pub fn call(headers: &HeaderMap) -> Option<Call> {
    let ct = headers.get(CONTENT_TYPE)?.as_bytes();
    if !ct
        .get(..16)
        .is_some_and(|p| p.eq_ignore_ascii_case(b"application/grpc"))
        || !matches!(ct.get(16), None | Some(b'+' | b';'))
    {
        return None;
    }
    Some(Call {
        timeout: headers
            .get(&GRPC_TIMEOUT)
            .and_then(|v| parse_timeout(v.as_bytes())),
    })
}

/// Parses a `grpc-timeout` value: 1 to 8 digits and a unit (`H`, `M`,
/// `S`, `m`, `u`, `n`).
pub fn parse_timeout(v: &[u8]) -> Option<Duration> {
    let (&unit, digits) = v.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The gRPC status for an HTTP status the proxy answers with, as gRPC's
/// HTTP-to-gRPC mapping has it, except that the proxy's own timeouts are
/// `DEADLINE_EXCEEDED` and its rate limit `RESOURCE_EXHAUSTED`.
pub fn code_for(status: StatusCode) -> u32 {
    match status.as_u16() {
        401 => 16,
        403 => 7,
        404 => 12,
        408 | 504 => DEADLINE_EXCEEDED,
        429 => 8,
        502 | 503 => UNAVAILABLE,
        _ => 13,
    }
}

/// What `grpc-message` escapes besides non-ASCII bytes: controls and `%`
/// (everything outside `' '..='~'`, and the escape character itself).
const MESSAGE_ESCAPES: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS.add(b'%');

/// The headers of a trailers-only gRPC answer: HTTP 200, the gRPC status
/// and a message (percent-encoded where it must be).
pub fn answer_headers(code: u32, message: &str) -> HeaderMap {
    let mut h = HeaderMap::with_capacity(3);
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    h.insert(GRPC_STATUS.clone(), HeaderValue::from(code));
    let encoded = percent_encoding::utf8_percent_encode(message, MESSAGE_ESCAPES).to_string();
    if let Ok(v) = HeaderValue::try_from(encoded) {
        h.insert(GRPC_MESSAGE.clone(), v);
    }
    h
}

/// The gRPC status a header map carries, if any.
pub fn status_of(h: &HeaderMap) -> Option<u32> {
    std::str::from_utf8(h.get(&GRPC_STATUS)?.as_bytes())
        .ok()?
        .parse()
        .ok()
}

/// Every `grpc_status` label value: the 17 codes, `other` and `none`.
pub const STATUS_LABELS: [&str; 19] = [
    "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16",
    "other", "none",
];

/// Index in [`STATUS_LABELS`] of a status outside 0–16.
const OTHER_STATUS: usize = 17;
/// Index in [`STATUS_LABELS`] of a call that ended without a status.
const NO_STATUS: usize = 18;

fn label_index(code: u32) -> usize {
    usize::try_from(code)
        .ok()
        .filter(|&c| c <= 16)
        .unwrap_or(OTHER_STATUS)
}

/// Counts in `vec` an answer with `code` the proxy gave for `upstream`
/// when it has no [`Statuses`] at hand.
pub fn count_code(vec: &IntCounterVec, upstream: &str, code: u32) {
    vec.with_label_values(&[upstream, STATUS_LABELS[label_index(code)]])
        .inc();
}

/// One upstream's `isame_lb_grpc_responses_total` series, made when first
/// counted.
#[derive(Debug)]
pub struct Statuses {
    vec: IntCounterVec,
    upstream: String,
    cells: [OnceLock<IntCounter>; 19],
}

impl Statuses {
    /// The series of `upstream` in `vec`.
    pub fn new(vec: IntCounterVec, upstream: &str) -> Self {
        Self {
            vec,
            upstream: upstream.to_owned(),
            cells: Default::default(),
        }
    }

    /// Counts a call that ended with `status` (`None`: without one).
    pub fn count(&self, status: Option<&HeaderValue>) {
        let i = match status {
            None => NO_STATUS,
            Some(v) => std::str::from_utf8(v.as_bytes())
                .ok()
                .and_then(|s| s.parse::<u32>().ok())
                .map_or(OTHER_STATUS, label_index),
        };
        self.count_index(i);
    }

    /// Counts a call the proxy answered itself with `code`.
    pub fn count_code(&self, code: u32) {
        self.count_index(label_index(code));
    }

    fn count_index(&self, i: usize) {
        self.cells[i]
            .get_or_init(|| {
                self.vec
                    .with_label_values(&[self.upstream.as_str(), STATUS_LABELS[i]])
            })
            .inc();
    }
}

/// `grpc.health.v1.HealthCheckRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HealthCheckRequest {
    /// The service asked about; empty: the server.
    #[prost(string, tag = "1")]
    pub service: String,
}

/// `grpc.health.v1.HealthCheckResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HealthCheckResponse {
    /// `SERVING` is 1.
    #[prost(int32, tag = "1")]
    pub status: i32,
}

/// `HealthCheckResponse.ServingStatus.SERVING`.
pub const SERVING: i32 = 1;

/// The path of the health check method.
pub const HEALTH_CHECK_PATH: &str = "/grpc.health.v1.Health/Check";

/// Largest health response read.
const MAX_HEALTH_MESSAGE: usize = 64 * 1024;

/// `msg` as one uncompressed gRPC message (flag, length, bytes).
pub fn frame(msg: &impl prost::Message) -> Bytes {
    let len = msg.encoded_len();
    let mut out = BytesMut::with_capacity(5 + len);
    out.put_u8(0);
    out.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
    // Encoding into a buffer with room for the message cannot fail.
    let _ = msg.encode(&mut out);
    out.freeze()
}

/// Why a health response is not `SERVING`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HealthError {
    /// The body is not one uncompressed gRPC message.
    #[error("malformed gRPC health response")]
    Malformed,
    /// The call failed.
    #[error("gRPC status {code}{}", if message.is_empty() { String::new() } else { format!(": {message}") })]
    Status {
        /// The gRPC status.
        code: u32,
        /// Its message.
        message: String,
    },
    /// The service answered with another serving status.
    #[error("gRPC health status {0} (not SERVING)")]
    NotServing(i32),
    /// The answer was not HTTP 200.
    #[error("HTTP {0} to a gRPC health check")]
    Http(u16),
    /// The backend chose HTTP/1.1.
    #[error("the backend speaks HTTP/1.1 only; gRPC health checks need HTTP/2")]
    Http1Only,
}

/// Reads a health response: its body and the status (from the trailers,
/// or the head of a trailers-only answer).
pub fn health_verdict(body: &[u8], status: &HeaderMap) -> Result<(), HealthError> {
    let code = status_of(status).ok_or(HealthError::Malformed)?;
    if code != OK {
        let message = status
            .get(&GRPC_MESSAGE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        return Err(HealthError::Status { code, message });
    }
    let [0, a, b, c, d, msg @ ..] = body else {
        return Err(HealthError::Malformed);
    };
    let len = u32::from_be_bytes([*a, *b, *c, *d]) as usize;
    if len != msg.len() || len > MAX_HEALTH_MESSAGE {
        return Err(HealthError::Malformed);
    }
    let resp =
        <HealthCheckResponse as prost::Message>::decode(msg).map_err(|_| HealthError::Malformed)?;
    if resp.status == SERVING {
        Ok(())
    } else {
        Err(HealthError::NotServing(resp.status))
    }
}

/// Largest health response body kept.
pub const fn max_health_body() -> usize {
    MAX_HEALTH_MESSAGE + 5
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(ct: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(CONTENT_TYPE, HeaderValue::from_str(ct).expect("value"));
        h
    }

    #[test]
    fn recognises_grpc_content_types() {
        for ct in [
            "application/grpc",
            "application/grpc+proto",
            "Application/GRPC;charset=x",
        ] {
            assert!(call(&headers(ct)).is_some(), "{ct}");
        }
        for ct in [
            "application/grpc-web",
            "application/grpcx",
            "text/plain",
            "application/json",
        ] {
            assert!(call(&headers(ct)).is_none(), "{ct}");
        }
        assert!(call(&HeaderMap::new()).is_none());
    }

    #[test]
    fn parses_grpc_timeouts() {
        assert_eq!(parse_timeout(b"1S"), Some(Duration::from_secs(1)));
        assert_eq!(parse_timeout(b"250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_timeout(b"2H"), Some(Duration::from_secs(7200)));
        assert_eq!(
            parse_timeout(b"99999999n"),
            Some(Duration::from_nanos(99_999_999))
        );
        for bad in [&b""[..], b"S", b"123456789S", b"10x", b"-1S", b"1.5S"] {
            assert_eq!(parse_timeout(bad), None, "{bad:?}");
        }
        let mut h = headers("application/grpc");
        h.insert(GRPC_TIMEOUT.clone(), HeaderValue::from_static("100m"));
        assert_eq!(
            call(&h).and_then(|c| c.timeout),
            Some(Duration::from_millis(100))
        );
    }

    #[test]
    fn maps_proxy_statuses() {
        assert_eq!(code_for(StatusCode::SERVICE_UNAVAILABLE), UNAVAILABLE);
        assert_eq!(code_for(StatusCode::BAD_GATEWAY), UNAVAILABLE);
        assert_eq!(code_for(StatusCode::GATEWAY_TIMEOUT), DEADLINE_EXCEEDED);
        assert_eq!(code_for(StatusCode::NOT_FOUND), 12);
        assert_eq!(code_for(StatusCode::TOO_MANY_REQUESTS), 8);
        assert_eq!(code_for(StatusCode::BAD_REQUEST), 13);
        let h = answer_headers(14, "no backend 100%\n");
        assert_eq!(status_of(&h), Some(14));
        assert_eq!(h[&GRPC_MESSAGE], "no backend 100%25%0A");
        let h = answer_headers(13, "café ~");
        assert_eq!(h[&GRPC_MESSAGE], "caf%C3%A9 ~");
    }

    #[test]
    fn reads_health_responses() {
        let mut ok = HeaderMap::new();
        ok.insert(GRPC_STATUS.clone(), HeaderValue::from(0u32));
        let serving = frame(&HealthCheckResponse { status: SERVING });
        assert_eq!(health_verdict(&serving, &ok), Ok(()));
        let not = frame(&HealthCheckResponse { status: 2 });
        assert_eq!(health_verdict(&not, &ok), Err(HealthError::NotServing(2)));
        assert_eq!(
            health_verdict(&serving[..4], &ok),
            Err(HealthError::Malformed)
        );
        assert_eq!(
            health_verdict(b"", &answer_headers(5, "unknown service")),
            Err(HealthError::Status {
                code: 5,
                message: "unknown service".into()
            })
        );
        assert_eq!(
            health_verdict(&serving, &HeaderMap::new()),
            Err(HealthError::Malformed)
        );
        let req = frame(&HealthCheckRequest {
            service: "echo".into(),
        });
        assert_eq!(&req[..5], &[0, 0, 0, 0, 6]);
    }
}
