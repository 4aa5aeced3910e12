//! The latency histogram nodes report and rollout gates read: fixed,
//! logarithmic buckets, four per doubling, from 64 µs to about 67 s. A
//! bucket's upper bound is at most 19% above its lower one, so a quantile
//! read from the buckets is within that of the true value; both sides
//! agree on the layout through this module alone.
//!
//! Bucket 0 holds everything under 64 µs, the last one everything from
//! about 67 s up.

/// Number of buckets.
pub const BUCKETS: usize = 2 + OCTAVES * PER_OCTAVE;

/// Sub-buckets per doubling.
const PER_OCTAVE: usize = 4;
/// log2 of the first bucket's lower bound in microseconds (64 µs).
const FIRST_EXP: u32 = 6;
/// Doublings covered (64 µs × 2^20 ≈ 67 s).
const OCTAVES: usize = 20;

/// The bucket of a duration of `micros` microseconds.
pub fn bucket_of(micros: u64) -> usize {
    if micros < (1 << FIRST_EXP) {
        return 0;
    }
    let exp = 63 - micros.leading_zeros();
    let octave = (exp - FIRST_EXP) as usize;
    if octave >= OCTAVES {
        return BUCKETS - 1;
    }
    // The two bits after the leading one pick the quarter of the doubling.
    let sub = ((micros >> (exp - 2)) & 3) as usize;
    1 + octave * PER_OCTAVE + sub
}

/// The lower bound of bucket `i`, in microseconds.
pub fn lower_bound(i: usize) -> f64 {
    if i == 0 {
        return 0.0;
    }
    let i = (i - 1).min(OCTAVES * PER_OCTAVE);
    let octave = i / PER_OCTAVE;
    let sub = i % PER_OCTAVE;
    let base = (1u64 << (FIRST_EXP as usize + octave)) as f64;
    base * (1.0 + sub as f64 / PER_OCTAVE as f64)
}

/// The upper bound of bucket `i`, in microseconds (the last bucket's is
/// its lower bound: it is open above).
pub fn upper_bound(i: usize) -> f64 {
    if i + 1 >= BUCKETS {
        return lower_bound(BUCKETS - 1);
    }
    lower_bound(i + 1)
}

/// A histogram as counts per bucket, in the compact form reports carry:
/// the index of the first counted bucket and the counts from there to the
/// last non-empty one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Histogram {
    counts: Vec<u64>,
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Self {
            counts: vec![0; BUCKETS],
        }
    }

    /// Counts one duration.
    pub fn record(&mut self, micros: u64) {
        self.add(bucket_of(micros), 1);
    }

    /// Adds `n` to bucket `i` (ignored when there is no such bucket).
    pub fn add(&mut self, i: usize, n: u64) {
        if self.counts.len() < BUCKETS {
            self.counts.resize(BUCKETS, 0);
        }
        if let Some(c) = self.counts.get_mut(i) {
            *c = c.saturating_add(n);
        }
    }

    /// Adds a report's buckets: `counts[k]` belongs to bucket `first + k`.
    /// Buckets past the last are ignored.
    pub fn add_compact(&mut self, first: u32, counts: &[u64]) {
        for (k, n) in counts.iter().enumerate() {
            if *n > 0 {
                self.add((first as usize).saturating_add(k), *n);
            }
        }
    }

    /// Adds another histogram.
    pub fn merge(&mut self, other: &Histogram) {
        for (i, n) in other.counts.iter().enumerate() {
            if *n > 0 {
                self.add(i, *n);
            }
        }
    }

    /// The compact form: the first non-empty bucket and the counts up to
    /// the last non-empty one (`(0, [])` when empty).
    pub fn compact(&self) -> (u32, Vec<u64>) {
        let Some(first) = self.counts.iter().position(|n| *n > 0) else {
            return (0, Vec::new());
        };
        let last = self.counts.iter().rposition(|n| *n > 0).unwrap_or(first);
        (first as u32, self.counts[first..=last].to_vec())
    }

    /// Durations counted.
    pub fn count(&self) -> u64 {
        self.counts.iter().fold(0u64, |a, n| a.saturating_add(*n))
    }

    /// The `q` quantile (0 < q ≤ 1) in microseconds, interpolated
    /// linearly inside its bucket; `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * total as f64).max(1.0);
        let mut below = 0u64;
        for (i, n) in self.counts.iter().enumerate() {
            if *n == 0 {
                continue;
            }
            if (below + n) as f64 >= rank {
                let into = (rank - below as f64) / *n as f64;
                let (lo, hi) = (lower_bound(i), upper_bound(i));
                return Some(lo + (hi - lo) * into);
            }
            below += n;
        }
        Some(lower_bound(BUCKETS - 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_duration_falls_between_its_buckets_bounds() {
        for micros in (0..200_000u64).step_by(7).chain([u64::MAX, 1 << 40]) {
            let i = bucket_of(micros);
            assert!(i < BUCKETS);
            assert!(lower_bound(i) <= micros as f64, "{micros} in {i}");
            if i + 1 < BUCKETS {
                assert!((micros as f64) < upper_bound(i), "{micros} in {i}");
            }
        }
        assert_eq!(bucket_of(63), 0);
        assert_eq!(bucket_of(64), 1);
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn buckets_are_at_most_a_quarter_wide() {
        for i in 1..BUCKETS - 1 {
            let (lo, hi) = (lower_bound(i), upper_bound(i));
            assert!(hi > lo && hi / lo <= 1.25 + 1e-9, "bucket {i}: {lo}..{hi}");
        }
    }

    #[test]
    fn quantiles_are_close_to_the_true_ones() {
        let mut h = Histogram::new();
        // 1..=10_000 ms, uniformly.
        for ms in 1..=10_000u64 {
            h.record(ms * 1000);
        }
        for (q, want) in [(0.5, 5_000_000.0), (0.99, 9_900_000.0), (1.0, 10_000_000.0)] {
            let got = h.quantile(q).expect("not empty");
            assert!(
                (got - want).abs() / want < 0.13,
                "q{q}: {got} against {want}"
            );
        }
        assert_eq!(Histogram::new().quantile(0.99), None);
    }

    #[test]
    fn the_compact_form_round_trips() {
        let mut h = Histogram::new();
        h.record(100);
        h.record(100);
        h.record(5_000);
        let (first, counts) = h.compact();
        assert_eq!(first as usize, bucket_of(100));
        assert_eq!(counts.first(), Some(&2));
        assert_eq!(counts.last(), Some(&1));
        let mut back = Histogram::new();
        back.add_compact(first, &counts);
        assert_eq!(back, h);
        assert_eq!(Histogram::new().compact(), (0, vec![]));
        // A hostile report cannot index past the end.
        back.add_compact(u32::MAX, &[1, 2]);
        assert_eq!(back.count(), 3);
    }
}
