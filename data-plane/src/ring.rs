//! The hash ring of `algorithm: consistent_hash` (ketama-style ring hash).
//!
//! Every backend owns points on a 64-bit circle, as many as its weight
//! asks, each the XXH3 hash of the backend's URL seeded with the point's
//! number; a key goes to the owner of the first point at or after the
//! key's own hash. A backend's points depend on nothing but its own URL and
//! weight, so removing one of N backends moves exactly the keys it owned
//! (about 1/N) and no other key, and adding one takes about 1/(N+1), all of
//! it for the new backend. An ineligible backend (unhealthy, ejected,
//! draining, circuit open) is skipped by walking on to the next point:
//! its keys spread over the others in proportion to their weights, and
//! everyone else's keys stay where they are.
//!
//! A ring rather than Maglev: Maglev's lookup table is faster to read but
//! reshuffles a few percent of other backends' keys on every change, and
//! skipping an ineligible backend means rebuilding the table; the ring
//! gives the exact bound and a walk costs a few more comparisons.

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

/// Points a backend owns per unit of weight: enough that shares stay
/// within a few percent of their weights.
pub const POINTS_PER_WEIGHT: u64 = 160;
/// Most points on one ring (16 MiB of them); past it every backend's share
/// of points is scaled down alike.
pub const MAX_POINTS: u64 = 1 << 20;

/// One point on the circle.
#[derive(Debug, Clone, Copy)]
struct Point {
    hash: u64,
    backend: u32,
}

/// A consistent hash ring over an upstream's backends.
#[derive(Debug)]
pub struct Ring {
    points: Vec<Point>,
}

/// The hash of a request's key (a header value, a path, a client address).
pub fn key_hash(key: &[u8]) -> u64 {
    xxh3_64(key)
}

impl Ring {
    /// A ring over backends given by their identity (the URL) and weight,
    /// in config order (the indices [`Ring::pick`] returns).
    pub fn new<'a>(backends: impl ExactSizeIterator<Item = (&'a str, u32)> + Clone) -> Self {
        let wanted: u64 = backends
            .clone()
            .map(|(_, w)| u64::from(w.max(1)) * POINTS_PER_WEIGHT)
            .sum();
        let mut points = Vec::with_capacity(wanted.min(MAX_POINTS) as usize);
        for (i, (id, weight)) in backends.enumerate() {
            let mut n = u64::from(weight.max(1)) * POINTS_PER_WEIGHT;
            if wanted > MAX_POINTS {
                n = (n * MAX_POINTS / wanted).max(1);
            }
            let backend = u32::try_from(i).unwrap_or(u32::MAX);
            points.extend((0..n).map(|seed| Point {
                hash: xxh3_64_with_seed(id.as_bytes(), seed),
                backend,
            }));
        }
        // Equal hashes (one in 2^64 per pair) order by backend, so every
        // data plane breaks the tie alike.
        points.sort_unstable_by_key(|p| (p.hash, p.backend));
        Self { points }
    }

    /// The backend for `key` (a [`key_hash`]): the owner of the first point
    /// at or after it whose backend `eligible` allows.
    pub fn pick(&self, key: u64, eligible: impl Fn(usize) -> bool) -> Option<usize> {
        let n = self.points.len();
        if n == 0 {
            return None;
        }
        let start = self.points.partition_point(|p| p.hash < key);
        let mut last_refused = usize::MAX;
        for k in 0..n {
            let b = self.points[(start + k) % n].backend as usize;
            // Runs of one backend's points are common once others drop out.
            if b == last_refused {
                continue;
            }
            if eligible(b) {
                return Some(b);
            }
            last_refused = b;
        }
        None
    }

    /// Points on the ring (for tests and `/status`).
    pub fn len(&self) -> usize {
        self.points.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn urls(ids: &[u32]) -> Vec<String> {
        ids.iter()
            .map(|i| format!("http://10.0.{}.{}:8080", i / 250, i % 250))
            .collect()
    }

    fn ring(urls: &[String], weights: &[u32]) -> Ring {
        Ring::new(urls.iter().map(String::as_str).zip(weights.iter().copied()))
    }

    /// The backend URL each of `keys` maps to.
    fn owners(urls: &[String], weights: &[u32], keys: &[u64]) -> Vec<String> {
        let r = ring(urls, weights);
        keys.iter()
            .map(|&k| urls[r.pick(k, |_| true).expect("pick")].clone())
            .collect()
    }

    fn keys(n: u64) -> Vec<u64> {
        (0..n)
            .map(|i| key_hash(format!("user-{i}").as_bytes()))
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn removing_a_backend_moves_only_its_own_keys(
            ids in prop::collection::btree_set(0u32..5000, 2..24),
            gone in any::<prop::sample::Index>(),
        ) {
            let ids: Vec<u32> = ids.into_iter().collect();
            let all = urls(&ids);
            let ones = vec![1; all.len()];
            let keys = keys(4000);
            let before = owners(&all, &ones, &keys);
            let removed = gone.index(all.len());
            let mut rest = all.clone();
            let lost = rest.remove(removed);
            let after = owners(&rest, &ones[1..], &keys);
            let mut moved = 0usize;
            for (b, a) in before.iter().zip(&after) {
                if b != a {
                    prop_assert_eq!(b, &lost, "a key of another backend moved");
                    moved += 1;
                }
            }
            prop_assert_eq!(moved, before.iter().filter(|b| **b == lost).count());
            // About 1/N of the keys: within a factor of 2 of it.
            let expected = keys.len() / all.len();
            prop_assert!(moved <= 2 * expected + 40, "moved {} of {}, expected about {}", moved, keys.len(), expected);
        }

        #[test]
        fn adding_a_backend_takes_keys_only_for_itself(
            ids in prop::collection::btree_set(0u32..5000, 2..24),
        ) {
            let ids: Vec<u32> = ids.into_iter().collect();
            let all = urls(&ids);
            let (old, new) = all.split_at(all.len() - 1);
            let keys = keys(4000);
            let before = owners(old, &vec![1; old.len()], &keys);
            let after = owners(&all, &vec![1; all.len()], &keys);
            let mut taken = 0usize;
            for (b, a) in before.iter().zip(&after) {
                if b != a {
                    prop_assert_eq!(a, &new[0], "a key moved between old backends");
                    taken += 1;
                }
            }
            let expected = keys.len() / all.len();
            prop_assert!(taken <= 2 * expected + 40 && taken * 3 + 40 >= expected,
                "took {} of {}, expected about {}", taken, keys.len(), expected);
        }

        #[test]
        fn an_ineligible_backend_moves_only_its_keys(
            ids in prop::collection::btree_set(0u32..5000, 3..16),
            down in any::<prop::sample::Index>(),
        ) {
            let ids: Vec<u32> = ids.into_iter().collect();
            let all = urls(&ids);
            let r = ring(&all, &vec![1; all.len()]);
            let down = down.index(all.len());
            for k in keys(2000) {
                let usual = r.pick(k, |_| true).expect("pick");
                let now = r.pick(k, |i| i != down).expect("pick");
                prop_assert_ne!(now, down);
                if usual != down {
                    prop_assert_eq!(usual, now);
                }
            }
        }
    }

    #[test]
    fn shares_follow_weights() {
        let all = urls(&[1, 2, 3, 4]);
        let weights = [1, 2, 3, 4];
        let r = ring(&all, &weights);
        let mut counts = [0u32; 4];
        let keys = keys(100_000);
        for &k in &keys {
            counts[r.pick(k, |_| true).expect("pick")] += 1;
        }
        for (i, &w) in weights.iter().enumerate() {
            let expected = keys.len() as f64 * f64::from(w) / 10.0;
            let got = f64::from(counts[i]);
            assert!(
                (got - expected).abs() / expected < 0.15,
                "backend {i} (weight {w}) got {got}, expected about {expected}: {counts:?}"
            );
        }
    }

    #[test]
    fn nothing_eligible_is_none_and_huge_weights_are_capped() {
        let all = urls(&[1, 2]);
        let r = ring(&all, &[1, 1]);
        assert_eq!(r.pick(7, |_| false), None);
        let many = urls(&(0..2000).collect::<Vec<_>>());
        let r = ring(&many, &vec![1000; many.len()]);
        assert!(
            r.len() as u64 <= MAX_POINTS + many.len() as u64,
            "{}",
            r.len()
        );
        assert!(r.pick(key_hash(b"x"), |_| true).is_some());
    }

    #[test]
    fn the_mapping_is_the_same_on_every_build() {
        // Data planes of one fleet must agree: XXH3 is specified, and this
        // pins a few keys so a change of hash or seeding cannot go unseen.
        let all = urls(&[1, 2, 3, 4, 5]);
        let r = ring(&all, &[1; 5]);
        let got: Vec<usize> = ["alice", "bob", "carol", "dave", "erin", "frank"]
            .iter()
            .map(|k| r.pick(key_hash(k.as_bytes()), |_| true).expect("pick"))
            .collect();
        assert_eq!(got, PINNED);
    }

    /// Where these keys go today. Changing it moves every hashed client
    /// of every fleet at the upgrade: a release note, not a quiet change.
    const PINNED: [usize; 6] = [3, 0, 3, 3, 4, 4];
}
