//! Slow start (`upstreams[].slow_start`): a backend that joined the
//! upstream, became healthy again or came back from an ejection takes a
//! share of requests that grows linearly from nothing to its full share.
//!
//! It works beside every algorithm rather than inside each: when the
//! algorithm picks a ramping backend, the pick stands with probability
//! equal to the ramp's progress, and otherwise the algorithm picks again
//! without it. Under `consistent_hash` the draw is a hash of the key, not a
//! random number, so each key moves onto the backend once, at a point of
//! the ramp of its own, and stays. When every eligible backend is ramping
//! (all came back together), the first one refused takes the request:
//! slow start never turns a request away.

use crate::backend::BackendState;
use std::sync::atomic::Ordering::Relaxed;

/// Where backend `state` is in its ramp at `now`, as a share of its full
/// traffic in (0, 1); `None` when it takes its full share.
pub fn progress(state: &BackendState, slow_start: u64, now: u64) -> Option<f64> {
    if slow_start == 0 {
        return None;
    }
    let ejection_end = state.outlier.ejection_end();
    // An ejection still running keeps it out anyway; one that ended starts a ramp.
    let start =
        state
            .ramp_from
            .load(Relaxed)
            .max(if ejection_end <= now { ejection_end } else { 0 });
    let elapsed = now.checked_sub(start)?;
    (start != 0 && elapsed < slow_start).then(|| elapsed as f64 / slow_start as f64)
}

/// Whether a pick of a backend at `progress` stands: by the request's hash
/// key when it has one (the same key, the same answer), else by chance.
pub fn admits(progress: f64, key: Option<u64>, uid: u32) -> bool {
    let draw = match key {
        Some(k) => (mix(k ^ u64::from(uid).rotate_left(32)) >> 11) as f64 / (1u64 << 53) as f64,
        None => fastrand::f64(),
    };
    draw < progress
}

/// SplitMix64's finalizer: spreads a key's bits over the whole word.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    #[test]
    fn the_share_grows_linearly_from_the_latest_start() {
        let s = BackendState::new();
        assert_eq!(progress(&s, 10 * SEC, 100 * SEC), None, "never started");
        s.ramp_from.store(100 * SEC, Relaxed);
        assert_eq!(progress(&s, 0, 101 * SEC), None, "slow start off");
        assert_eq!(progress(&s, 10 * SEC, 102 * SEC), Some(0.2));
        assert_eq!(progress(&s, 10 * SEC, 107 * SEC), Some(0.7));
        assert_eq!(progress(&s, 10 * SEC, 110 * SEC), None);
    }

    #[test]
    fn draws_follow_the_progress_and_keys_keep_their_answer() {
        let n: u32 = 20_000;
        let admitted = (0..n).filter(|_| admits(0.3, None, 7)).count();
        assert!((5_400..6_600).contains(&admitted), "{admitted} of {n}");
        let keys: Vec<u64> = (0..n)
            .map(|i| crate::ring::key_hash(&i.to_le_bytes()))
            .collect();
        let at = |p: f64| keys.iter().filter(|&&k| admits(p, Some(k), 7)).count();
        let (early, late) = (at(0.25), at(0.75));
        assert!((4_500..5_500).contains(&early), "{early}");
        assert!((14_400..15_600).contains(&late), "{late}");
        // A key admitted early stays admitted later: keys move once.
        assert!(keys
            .iter()
            .all(|&k| !admits(0.25, Some(k), 7) || admits(0.75, Some(k), 7)));
    }
}
