//! How an upstream's own sections (`health`, `circuit_breaker`, `retry`)
//! are written. Fields the reader leaves out inherit from the global
//! section, so a field an upstream's section holds at its default must
//! still be written when the global section does not hold the default:
//! inside such a section every field is written, while elsewhere fields at
//! their defaults stay out of the canonical JSON (so that nodes that
//! predate a field still read configs that do not use it).

use serde::{Serialize, Serializer};
use std::cell::Cell;
use std::time::Duration;

thread_local! {
    /// True while an upstream's own section is being written.
    static IN_FULL: Cell<bool> = const { Cell::new(false) };
}

/// `serialize_with` for an upstream's own section: every field written.
pub(crate) fn serialize<T: Serialize, S: Serializer>(
    v: &Option<T>,
    s: S,
) -> Result<S::Ok, S::Error> {
    let before = IN_FULL.with(|f| f.replace(true));
    let out = v.serialize(s);
    IN_FULL.with(|f| f.set(before));
    out
}

/// For `skip_serializing_if`: skip a field at its default, except inside
/// an upstream's own section.
pub(crate) fn skips(at_default: bool) -> bool {
    at_default && !IN_FULL.with(Cell::get)
}

/// [`skips`] for a duration whose default is zero.
pub(crate) fn zero(d: &Duration) -> bool {
    skips(d.is_zero())
}

/// [`skips`] for a string whose default is empty.
pub(crate) fn empty(s: &str) -> bool {
    skips(s.is_empty())
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn an_upstream_section_at_defaults_survives_a_global_one_that_is_not() {
        let yaml = "upstreams:\n  - name: web\n    protocol: http2\n    health:\n      protocol: http\n    retry:\n      retry_on: [connect_failure, reset, timeout, gateway_error, grpc_unavailable]\n      per_try_timeout: 0s\n    backends: [\"h2c://127.0.0.1:3000\"]\n\
            health:\n  protocol: grpc\n  grpc_service: echo\nretry:\n  retry_on: [5xx]\n  per_try_timeout: 1s\n";
        let c = Config::from_yaml(yaml).expect("valid");
        let json = serde_json::to_string(&c).expect("serializes");
        assert_eq!(Config::from_json(&json), Ok(c.clone()), "{json}");
        let yaml = c.to_yaml().expect("serializes");
        assert_eq!(Config::from_yaml(&yaml), Ok(c), "{yaml}");
        // Outside upstreams, defaults stay out.
        let plain = Config::from_yaml(
            "upstreams:\n  - name: web\n    backends: [\"http://127.0.0.1:3000\"]\n",
        )
        .expect("valid");
        let json = serde_json::to_string(&plain).expect("serializes");
        assert!(
            !json.contains("retry_on") && !json.contains("grpc_service"),
            "{json}"
        );
    }
}
