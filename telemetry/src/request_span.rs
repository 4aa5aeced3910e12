//! A server span per proxied request, made with the OpenTelemetry API
//! directly rather than through `tracing`: the sampler decides first, and a
//! span it drops costs ids and a `traceparent`, not attributes. (Through
//! `tracing`, every request paid for its attributes whether sampled or not:
//! docs/BENCHMARKS.md.)

use crate::propagation::{extract, TRACEPARENT};
use http::header::{HeaderMap, HeaderValue};
use opentelemetry::trace::{Span as _, SpanKind, Status, Tracer as _};
use opentelemetry::{Context, KeyValue, Value};
use opentelemetry_sdk::trace::{SdkTracer, Span};
use std::borrow::Cow;
use std::sync::OnceLock;

/// The tracer of the process, once trace export is set up.
pub(crate) static TRACER: OnceLock<SdkTracer> = OnceLock::new();

/// One request's span.
pub struct RequestSpan {
    span: Span,
}

impl RequestSpan {
    /// Starts a server span named `name`, child of the request's
    /// `traceparent` when it has a valid one; `None` when traces are not
    /// exported.
    pub fn start(name: impl Into<Cow<'static, str>>, headers: &HeaderMap) -> Option<RequestSpan> {
        let tracer = TRACER.get()?;
        let parent = if headers.contains_key(&TRACEPARENT) {
            extract(headers)
        } else {
            Context::new()
        };
        let span = tracer
            .span_builder(name)
            .with_kind(SpanKind::Server)
            .start_with_context(tracer, &parent);
        Some(RequestSpan { span })
    }

    /// Whether the sampler kept it (attributes are worth setting).
    pub fn recording(&self) -> bool {
        self.span.is_recording()
    }

    /// Sets an attribute (nothing when not recording).
    pub fn set(&mut self, key: &'static str, value: impl Into<Value>) {
        if self.span.is_recording() {
            self.span.set_attribute(KeyValue::new(key, value));
        }
    }

    /// Marks the span failed.
    pub fn fail(&mut self, description: &'static str) {
        self.span.set_status(Status::error(description));
    }

    /// The trace id, 32 hex digits.
    pub fn trace_id(&self) -> String {
        let mut out = [0u8; 32];
        hex(&self.span.span_context().trace_id().to_bytes(), &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Writes `traceparent` for the next hop, with this span as its parent
    /// (the request's `tracestate`, if any, passes through unchanged).
    pub fn inject(&self, headers: &mut HeaderMap) {
        let sc = self.span.span_context();
        if !sc.is_valid() {
            return;
        }
        // 00-<trace id>-<span id>-<flags>, written without the formatter:
        // this runs for every traced request, sampled or not.
        let mut value = *b"00-00000000000000000000000000000000-0000000000000000-00";
        hex(&sc.trace_id().to_bytes(), &mut value[3..35]);
        hex(&sc.span_id().to_bytes(), &mut value[36..52]);
        hex(&[sc.trace_flags().to_u8()], &mut value[53..55]);
        if let Ok(v) = HeaderValue::from_bytes(&value) {
            headers.insert(&TRACEPARENT, v);
        }
    }

    /// Ends the span (also done on drop).
    pub fn end(mut self) {
        self.span.end();
    }
}

/// Lower-case hex of `bytes` into `out` (twice as long).
fn hex(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = DIGITS[usize::from(b >> 4)];
        out[2 * i + 1] = DIGITS[usize::from(b & 0x0f)];
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_matches_the_formatter() {
        let bytes = [0x00, 0x0f, 0xa5, 0xff];
        let mut out = [0u8; 8];
        super::hex(&bytes, &mut out);
        assert_eq!(&out, b"000fa5ff");
    }
}
