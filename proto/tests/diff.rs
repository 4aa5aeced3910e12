//! Property tests of the config diff: a config has no changes against itself,
//! two configs differ exactly when the diff is non-empty, and every change is
//! well formed and sits under a top-level field of `Config`.

mod common;

use common::config;
use isame_proto::config::{diff, diff_from, Change, ChangeOp, Config};
use proptest::prelude::*;

/// The top-level fields of `Config`, as serialized.
const TOP_LEVEL: [&str; 12] = [
    "version",
    "service",
    "server",
    "upstreams",
    "routes",
    "trusted_proxies",
    "health",
    "metrics",
    "circuit_breaker",
    "retry",
    "tls",
    "dns",
];

/// How many ways `near` can change a config.
const EDITS: usize = 14;

/// `a` with some parts taken from `other` or edited in place, so that the two
/// differ in few places (or none) rather than everywhere.
fn near(a: &Config, other: &Config, edits: &[bool]) -> Config {
    let mut b = a.clone();
    let on = |i: usize| edits.get(i).copied().unwrap_or(false);
    if on(0) {
        b.version = other.version.clone();
    }
    if on(1) {
        b.server = other.server.clone();
    }
    if on(2) {
        b.upstreams = other.upstreams.clone();
    }
    if let Some(up) = b.upstreams.first_mut() {
        if on(3) {
            if let Some(backend) = up.backends.first_mut() {
                backend.weight = backend.weight % 1000 + 1;
            }
        }
        if on(4) {
            up.health = other.upstreams.first().and_then(|o| o.health.clone());
        }
        if on(5) && up.backends.len() > 1 {
            up.backends.pop();
        }
        if on(6) {
            up.backends.reverse();
        }
    }
    if on(7) {
        b.upstreams.rotate_left(1);
    }
    if on(8) {
        b.routes.reverse();
    }
    if on(9) {
        b.routes = other.routes.clone();
    }
    if on(10) {
        b.trusted_proxies = other.trusted_proxies.clone();
    }
    if on(11) {
        b.health = other.health.clone();
    }
    if on(12) {
        b.retry = other.retry.clone();
    }
    if on(13) {
        b.tls.certificates.clear();
    }
    b
}

fn pair() -> impl Strategy<Value = (Config, Config)> {
    (
        config(),
        config(),
        prop::collection::vec(prop::bool::weighted(0.2), EDITS),
    )
        .prop_map(|(a, other, edits)| {
            let b = near(&a, &other, &edits);
            (a, b)
        })
}

fn under_top_level(path: &str) -> bool {
    TOP_LEVEL.iter().any(|field| {
        path.strip_prefix(field)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('.') || rest.starts_with('['))
    })
}

fn check_well_formed(changes: &[Change]) -> Result<(), TestCaseError> {
    for c in changes {
        prop_assert!(
            under_top_level(&c.path),
            "path {:?} is not under a top-level field",
            c.path
        );
        match c.op {
            ChangeOp::Added => prop_assert!(c.old.is_none() && c.new.is_some(), "{c:?}"),
            ChangeOp::Removed => prop_assert!(c.old.is_some() && c.new.is_none(), "{c:?}"),
            ChangeOp::Changed | ChangeOp::Reordered => {
                prop_assert!(
                    c.old.is_some() && c.new.is_some() && c.old != c.new,
                    "{c:?}"
                )
            }
        }
    }
    Ok(())
}

/// The diff the other way round: additions become removals, old and new swap.
fn mirrored(changes: Vec<Change>) -> Vec<(String, String)> {
    let mut flat: Vec<(String, String)> = changes
        .into_iter()
        .map(|c| {
            let op = match c.op {
                ChangeOp::Added => ChangeOp::Removed,
                ChangeOp::Removed => ChangeOp::Added,
                other => other,
            };
            let key = format!("{op:?} {}", c.path);
            (key, format!("{:?} -> {:?}", c.new, c.old))
        })
        .collect();
    flat.sort();
    flat
}

fn flat(changes: Vec<Change>) -> Vec<(String, String)> {
    let mut flat: Vec<(String, String)> = changes
        .into_iter()
        .map(|c| {
            (
                format!("{:?} {}", c.op, c.path),
                format!("{:?} -> {:?}", c.old, c.new),
            )
        })
        .collect();
    flat.sort();
    flat
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn a_config_has_no_changes_against_itself(a in config()) {
        prop_assert_eq!(diff(&a, &a), vec![]);
        prop_assert_eq!(diff(&a, &a.clone()), vec![]);
        prop_assert_eq!(diff_from(Some(&a), &a), vec![]);
    }

    #[test]
    fn diff_is_empty_exactly_when_equal((a, b) in pair()) {
        let changes = diff(&a, &b);
        prop_assert_eq!(changes.is_empty(), a == b, "{:#?}", changes);
        check_well_formed(&changes)?;
    }

    #[test]
    fn unrelated_configs_differ_and_changes_are_well_formed(a in config(), b in config()) {
        let changes = diff(&a, &b);
        prop_assert_eq!(changes.is_empty(), a == b);
        check_well_formed(&changes)?;
    }

    #[test]
    fn diff_backwards_mirrors_diff_forwards((a, b) in pair()) {
        prop_assert_eq!(mirrored(diff(&a, &b)), flat(diff(&b, &a)));
    }

    #[test]
    fn diff_is_deterministic((a, b) in pair()) {
        prop_assert_eq!(diff(&a, &b), diff(&a.clone(), &b.clone()));
    }

    #[test]
    fn from_nothing_everything_is_added(a in config()) {
        let changes = diff_from(None, &a);
        check_well_formed(&changes)?;
        prop_assert!(changes.iter().all(|c| c.op == ChangeOp::Added), "{:#?}", changes);
        for u in &a.upstreams {
            let path = format!("upstreams[{}]", u.name);
            prop_assert!(changes.iter().any(|c| c.path == path), "{} missing", path);
        }
        for r in &a.routes {
            let path = format!("routes[{}]", r.name);
            prop_assert!(changes.iter().any(|c| c.path == path), "{} missing", path);
        }
    }
}
