//! A monotonic clock in nanoseconds that fits in an atomic, built on
//! `tokio::time::Instant` so tests can pause and advance time.

use std::sync::OnceLock;
use std::time::Duration;
use tokio::time::Instant;

static EPOCH: OnceLock<Instant> = OnceLock::new();

fn epoch() -> Instant {
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds since the process's clock epoch; never 0 after the first call.
pub fn now_nanos() -> u64 {
    let e = epoch();
    u64::try_from(Instant::now().saturating_duration_since(e).as_nanos())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// The instant `nanos` after the epoch.
pub fn instant_at(nanos: u64) -> Instant {
    epoch() + Duration::from_nanos(nanos)
}
