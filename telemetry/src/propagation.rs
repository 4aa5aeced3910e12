//! W3C trace context (`traceparent`, `tracestate`) on HTTP headers: read
//! from a request, written to the request sent on, and the trace id for log
//! lines.

use http::header::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry::Context;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The `traceparent` header.
pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

struct Reader<'a>(&'a HeaderMap);

impl Extractor for Reader<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

struct Writer<'a>(&'a mut HeaderMap);

impl Injector for Writer<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::try_from(value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// The trace context a request carries (empty when none or malformed).
pub fn extract(headers: &HeaderMap) -> Context {
    TraceContextPropagator::new().extract(&Reader(headers))
}

/// Makes `span` a child of the trace context in `headers`, if any.
pub fn continue_trace(span: &tracing::Span, headers: &HeaderMap) {
    let parent = extract(headers);
    if parent.span().span_context().is_valid() {
        // Only fails for a span that is already started elsewhere.
        let _ = span.set_parent(parent);
    }
}

/// Writes `span`'s trace context into `headers`, replacing what was there:
/// the next hop sees `span` as its parent.
pub fn inject(span: &tracing::Span, headers: &mut HeaderMap) {
    let cx = span.context();
    if cx.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(&cx, &mut Writer(headers));
    }
}

/// The trace id of `span`, as 32 hex digits (when it is being traced).
pub fn trace_id(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

/// The trace id of a `traceparent` header (`00-<trace id>-<parent id>-<flags>`),
/// when it is well formed.
pub fn trace_id_of_header(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(&TRACEPARENT)?.to_str().ok()?;
    let mut parts = v.split('-');
    let (_version, id, parent) = (parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    (hex(id, 32) && hex(parent, 16) && id.bytes().any(|b| b != b'0')).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_ids_are_read_only_from_well_formed_headers() {
        let mut h = HeaderMap::new();
        assert_eq!(trace_id_of_header(&h), None);
        h.insert(
            &TRACEPARENT,
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
        assert_eq!(
            trace_id_of_header(&h),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "garbage",
        ] {
            h.insert(&TRACEPARENT, HeaderValue::from_static(bad));
            assert_eq!(trace_id_of_header(&h), None, "{bad}");
        }
    }
}
