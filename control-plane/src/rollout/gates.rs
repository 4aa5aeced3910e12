//! The judgement of one stage: pure arithmetic over what the nodes
//! reported, so that every rule is unit-tested without a fleet.
//!
//! The stage's nodes on the new version (the candidate) are compared with
//! the nodes still on the base version (the baseline) over the same bake
//! window. In order:
//!
//! 1. `nack`: a stage node refused the version. Fails at once.
//! 2. `silence`: a stage node was not heard from for `gates.silence`
//!    (connected or not: a control-plane restart that its nodes ride out
//!    is no failure), or did not answer the version within it. Fails at once.
//! 3. Traffic, once the candidate served `min_requests` (in total, and per
//!    upstream for the 5xx gates): `5xx_rate` (the candidate's share of 5xx
//!    above `max_5xx_rate`), `5xx_ratio` (above `max_5xx_ratio` times the
//!    baseline's, the baseline counting as at least
//!    `min_baseline_5xx_rate`), `p99` (above `max_p99`) and `p99_ratio`
//!    (above `max_p99_ratio` times the baseline's, at least
//!    `min_baseline_p99`). Ratios need a baseline that served
//!    `min_requests` too; without one they are not judged, and say so. A
//!    failure here fails at once, before the bake time is over.
//! 4. The bake time runs out, and every stage node serves the version; then
//!    `health`: a stage node sees a backend unhealthy that it saw healthy
//!    before it took the version.
//! 5. A candidate short of `min_requests` waits for traffic, or passes,
//!    as the stage says.

use super::model::{Failure, Sample, StageProgress};
use super::policy::{Gates, LowTraffic, Stage};
use isame_proto::latency::Histogram;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashSet};

/// What the ledger says of one node, as the gates need it.
#[derive(Debug, Clone, Default)]
pub struct NodeView {
    /// Node id.
    pub id: String,
    /// Unix milliseconds.
    pub last_seen: i64,
    /// The version it last ACKed.
    pub version: Option<u64>,
    /// The version of its last NACK.
    pub nacked: Option<u64>,
    /// The errors of that NACK.
    pub nack_errors: Value,
    /// Backends it sees healthy, as `"upstream url"`.
    pub healthy: HashSet<String>,
}

/// Traffic of one side, summed over the window.
#[derive(Debug, Clone, Default)]
pub struct Side {
    /// Requests that ended.
    pub requests: u64,
    /// Of which 5xx.
    pub errors: u64,
    /// Their latencies.
    pub latency: Histogram,
    /// Requests and 5xx per upstream.
    pub by_upstream: BTreeMap<String, (u64, u64)>,
    /// Nodes that reported.
    pub nodes: HashSet<String>,
}

impl Side {
    /// Adds one sample.
    pub fn add(&mut self, s: &Sample) {
        self.nodes.insert(s.node.clone());
        let t = &s.traffic;
        self.requests = self.requests.saturating_add(t.requests);
        self.errors = self.errors.saturating_add(t.errors.min(t.requests));
        self.latency.add_compact(t.latency_first, &t.latency);
        for u in &t.upstreams {
            let e = self.by_upstream.entry(u.upstream.clone()).or_default();
            e.0 = e.0.saturating_add(u.requests);
            e.1 = e.1.saturating_add(u.errors.min(u.requests));
        }
    }

    fn rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 / self.requests as f64
        }
    }

    fn p99_ms(&self) -> Option<f64> {
        self.latency.quantile(0.99).map(|us| us / 1000.0)
    }

    fn figures(&self) -> Value {
        json!({
            "nodes": self.nodes.len(),
            "requests": self.requests,
            "errors_5xx": self.errors,
            "rate_5xx": round(self.rate()),
            "p99_ms": self.p99_ms().map(round),
        })
    }
}

/// The window's traffic: the candidate's and the baseline's.
#[derive(Debug, Clone, Default)]
pub struct Window {
    /// Stage nodes on the new version.
    pub candidate: Side,
    /// Other nodes on the base version.
    pub baseline: Side,
}

impl Window {
    /// Sorts samples into the two sides: a stage node's on the new version,
    /// another node's on the base; anything else (a node between versions)
    /// is left out.
    pub fn of(
        samples: &[Sample],
        members: &HashSet<&str>,
        version: u64,
        base: Option<u64>,
    ) -> Self {
        let mut w = Window::default();
        for s in samples {
            if members.contains(s.node.as_str()) {
                if s.version == version {
                    w.candidate.add(s);
                }
            } else if Some(s.version) == base {
                w.baseline.add(s);
            }
        }
        w
    }
}

/// The judgement.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// A gate failed: roll back.
    Fail(Failure),
    /// Still baking (milliseconds left).
    Baking(i64, Value),
    /// Baked, but too little traffic to judge.
    Waiting(Value),
    /// Passed; promote.
    Pass(Value),
}

/// Judges `stage` (started as `progress`, of a rollout of `version`) at
/// `now` (Unix ms), `nodes` being the stage's members as the ledger has them.
pub fn judge(
    gates: &Gates,
    stage: &Stage,
    progress: &StageProgress,
    version: u64,
    nodes: &[NodeView],
    window: &Window,
    now: i64,
) -> Verdict {
    let fail = |gate: &str, message: String, figures: Value, nodes: Vec<String>| {
        Verdict::Fail(Failure {
            gate: gate.to_owned(),
            message,
            figures,
            nodes,
            stage: stage.name.clone(),
        })
    };
    let nacked: Vec<&NodeView> = nodes.iter().filter(|n| n.nacked == Some(version)).collect();
    if !nacked.is_empty() {
        return fail(
            "nack",
            format!(
                "{} of {} stage nodes refused version {version}",
                nacked.len(),
                nodes.len()
            ),
            json!({"errors": nacked.iter().map(|n| json!({"node": n.id, "errors": n.nack_errors})).collect::<Vec<_>>()}),
            nacked.iter().map(|n| n.id.clone()).collect(),
        );
    }
    let silence = i64::try_from(gates.silence.as_millis()).unwrap_or(i64::MAX);
    let quiet: Vec<String> = nodes
        .iter()
        .filter(|n| {
            now.saturating_sub(n.last_seen) > silence
                || (n.version != Some(version) && now.saturating_sub(progress.started_at) > silence)
        })
        .map(|n| n.id.clone())
        .collect();
    if !quiet.is_empty() {
        return fail(
            "silence",
            format!(
                "{} of {} stage nodes went quiet or did not answer version {version} within {}",
                quiet.len(),
                nodes.len(),
                isame_proto::config::duration::format(gates.silence)
            ),
            json!({"silence_ms": silence}),
            quiet,
        );
    }
    let (c, b) = (&window.candidate, &window.baseline);
    let mut figures = json!({"candidate": c.figures(), "baseline": b.figures()});
    let enough = c.requests >= stage.min_requests.max(1);
    let baseline_enough = b.requests >= stage.min_requests.max(1);
    if !baseline_enough {
        figures["ratios"] = "not judged: the baseline served too few requests".into();
    }
    if enough {
        if let Some(f) = traffic(gates, stage, c, b, baseline_enough) {
            return fail(&f.0, f.1, figures, c.nodes.iter().cloned().collect());
        }
    }
    let bake = i64::try_from(stage.bake.as_millis()).unwrap_or(i64::MAX);
    let left = progress.bake_from.saturating_add(bake).saturating_sub(now);
    if left > 0 {
        return Verdict::Baking(left, figures);
    }
    // No stage passes before each of its nodes serves the version (until
    // `silence` fails the ones that never do).
    let unanswered: Vec<&str> = nodes
        .iter()
        .filter(|n| n.version != Some(version))
        .map(|n| n.id.as_str())
        .collect();
    if !unanswered.is_empty() {
        figures["unanswered"] = unanswered.into();
        return Verdict::Baking(0, figures);
    }
    if gates.health {
        let mut lost = Vec::new();
        for n in nodes {
            let before = progress
                .healthy_before
                .get(&n.id)
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            let gone: Vec<&String> = before.iter().filter(|k| !n.healthy.contains(*k)).collect();
            if !gone.is_empty() {
                lost.push(json!({"node": n.id, "unhealthy": gone}));
            }
        }
        if !lost.is_empty() {
            let who = lost
                .iter()
                .filter_map(|l| l["node"].as_str().map(str::to_owned))
                .collect();
            return fail(
                "health",
                format!(
                    "{} stage nodes see backends unhealthy that were healthy before version {version}",
                    lost.len()
                ),
                json!({"lost": lost}),
                who,
            );
        }
    }
    if !enough {
        figures["low_traffic"] = format!(
            "{} of the {} requests needed to judge the traffic gates",
            c.requests, stage.min_requests
        )
        .into();
        return match stage.on_low_traffic {
            LowTraffic::Wait => Verdict::Waiting(figures),
            LowTraffic::Pass => Verdict::Pass(figures),
        };
    }
    Verdict::Pass(figures)
}

/// The first traffic gate the candidate fails: its name and why.
fn traffic(
    g: &Gates,
    stage: &Stage,
    c: &Side,
    b: &Side,
    baseline_enough: bool,
) -> Option<(String, String)> {
    let floor = g.min_baseline_5xx_rate;
    let check = |what: &str,
                 creq: u64,
                 cerr: u64,
                 breq: u64,
                 berr: u64|
     -> Option<(String, String)> {
        let rate = cerr as f64 / creq.max(1) as f64;
        if rate > g.max_5xx_rate {
            return Some((
                "5xx_rate".into(),
                format!(
                    "{what}: {:.2}% of {creq} requests on the new version were 5xx, above the {:.2}% ceiling",
                    rate * 100.0,
                    g.max_5xx_rate * 100.0
                ),
            ));
        }
        if baseline_enough && breq >= stage.min_requests.max(1) {
            let base = (berr as f64 / breq as f64).max(floor);
            if rate > g.max_5xx_ratio * base {
                return Some((
                    "5xx_ratio".into(),
                    format!(
                        "{what}: 5xx rate {:.2}% on the new version is {:.1}x the baseline's {:.2}% (limit {}x)",
                        rate * 100.0,
                        rate / base,
                        base * 100.0,
                        g.max_5xx_ratio
                    ),
                ));
            }
        }
        None
    };
    if let Some(f) = check("all upstreams", c.requests, c.errors, b.requests, b.errors) {
        return Some(f);
    }
    for (name, (creq, cerr)) in &c.by_upstream {
        if *creq < stage.min_requests.max(1) {
            continue;
        }
        let (breq, berr) = b.by_upstream.get(name).copied().unwrap_or((0, 0));
        if let Some(f) = check(&format!("upstream {name}"), *creq, *cerr, breq, berr) {
            return Some(f);
        }
    }
    let p99 = c.p99_ms()?;
    if let Some(max) = g.max_p99 {
        let max_ms = max.as_secs_f64() * 1000.0;
        if p99 > max_ms {
            return Some((
                "p99".into(),
                format!("p99 latency {p99:.1} ms on the new version, above {max_ms:.1} ms"),
            ));
        }
    }
    if baseline_enough {
        let floor_ms = g.min_baseline_p99.as_secs_f64() * 1000.0;
        let base = b.p99_ms().unwrap_or(0.0).max(floor_ms);
        if p99 > g.max_p99_ratio * base {
            return Some((
                "p99_ratio".into(),
                format!(
                    "p99 latency {p99:.1} ms on the new version is {:.2}x the baseline's {base:.1} ms (limit {}x)",
                    p99 / base,
                    g.max_p99_ratio
                ),
            ));
        }
    }
    None
}

fn round(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollout::model::{SampleTraffic, UpstreamSample};
    use std::time::Duration;

    const V: u64 = 7;
    const NOW: i64 = 1_000_000;

    fn stage(bake_s: u64, min_requests: u64, low: LowTraffic) -> Stage {
        Stage {
            name: "canary".into(),
            selector: Default::default(),
            percent: 100,
            bake: Duration::from_secs(bake_s),
            min_requests,
            on_low_traffic: low,
        }
    }

    fn started(ago_ms: i64) -> StageProgress {
        StageProgress {
            name: "canary".into(),
            members: vec!["c".into()],
            started_at: NOW - ago_ms,
            bake_from: NOW - ago_ms,
            ..Default::default()
        }
    }

    fn node(id: &str) -> NodeView {
        NodeView {
            id: id.into(),
            last_seen: NOW - 100,
            version: Some(V),
            ..Default::default()
        }
    }

    /// `requests` requests of `upstream`, `errors` of them 5xx, all taking
    /// `ms` milliseconds.
    fn traffic(upstream: &str, requests: u64, errors: u64, ms: u64) -> Side {
        let mut h = Histogram::new();
        h.add(isame_proto::latency::bucket_of(ms * 1000), requests);
        let (first, counts) = h.compact();
        let mut side = Side::default();
        side.add(&Sample {
            rollout: V,
            node: "n".into(),
            at: NOW,
            version: V,
            traffic: SampleTraffic {
                requests,
                errors,
                latency_first: first,
                latency: counts,
                upstreams: vec![UpstreamSample {
                    upstream: upstream.into(),
                    requests,
                    errors,
                }],
            },
        });
        side
    }

    fn window(c: Side, b: Side) -> Window {
        Window {
            candidate: c,
            baseline: b,
        }
    }

    fn gate_of(v: &Verdict) -> &str {
        match v {
            Verdict::Fail(f) => &f.gate,
            Verdict::Baking(..) => "baking",
            Verdict::Waiting(_) => "waiting",
            Verdict::Pass(_) => "pass",
        }
    }

    fn judge_now(
        g: &Gates,
        s: &Stage,
        p: &StageProgress,
        nodes: &[NodeView],
        w: &Window,
    ) -> Verdict {
        judge(g, s, p, V, nodes, w, NOW)
    }

    #[test]
    fn a_nack_fails_at_once_naming_the_node() {
        let mut n = node("c");
        n.nacked = Some(V);
        n.version = Some(V - 1);
        let v = judge_now(
            &Gates::default(),
            &stage(300, 10, LowTraffic::Wait),
            &started(10),
            &[n, node("d")],
            &Window::default(),
        );
        let Verdict::Fail(f) = v else { panic!("{v:?}") };
        assert_eq!(
            (f.gate.as_str(), f.nodes.as_slice()),
            ("nack", ["c".to_owned()].as_slice())
        );
        // A NACK of another version is not this rollout's.
        let mut old = node("c");
        old.nacked = Some(V - 1);
        let v = judge_now(
            &Gates::default(),
            &stage(300, 10, LowTraffic::Wait),
            &started(10),
            &[old],
            &Window::default(),
        );
        assert_eq!(gate_of(&v), "baking");
    }

    #[test]
    fn nodes_that_stop_reporting_or_never_answer_fail_the_stage() {
        let g = Gates::default(); // silence 30 s
        let mut quiet = node("c");
        quiet.last_seen = NOW - 31_000;
        let v = judge_now(
            &g,
            &stage(300, 10, LowTraffic::Wait),
            &started(40_000),
            &[quiet, node("d")],
            &Window::default(),
        );
        let Verdict::Fail(f) = v else { panic!("{v:?}") };
        assert_eq!(
            (f.gate.as_str(), f.nodes.as_slice()),
            ("silence", ["c".to_owned()].as_slice())
        );
        // Heard from, but still on the old version after the silence time.
        let mut stuck = node("c");
        stuck.version = Some(V - 1);
        let v = judge_now(
            &g,
            &stage(300, 10, LowTraffic::Wait),
            &started(31_000),
            &[stuck.clone()],
            &Window::default(),
        );
        assert_eq!(gate_of(&v), "silence");
        // ... which is fine while the silence time has not passed.
        let v = judge_now(
            &g,
            &stage(300, 10, LowTraffic::Wait),
            &started(5_000),
            &[stuck],
            &Window::default(),
        );
        assert_eq!(gate_of(&v), "baking");
    }

    #[test]
    fn the_5xx_ceiling_applies_whatever_the_baseline() {
        let w = window(traffic("web", 100, 6, 1), traffic("web", 100, 6, 1));
        let v = judge_now(
            &Gates::default(),
            &stage(300, 50, LowTraffic::Wait),
            &started(1000),
            &[node("c")],
            &w,
        );
        assert_eq!(
            gate_of(&v),
            "5xx_rate",
            "6% is above the 5% ceiling even with a baseline as bad"
        );
    }

    #[test]
    fn the_5xx_ratio_compares_with_the_baseline_and_its_floor() {
        let g = Gates::default(); // ratio 2, floor 1%
        let s = stage(0, 100, LowTraffic::Wait);
        // Baseline 0%: counts as 1%, so up to 2% passes.
        let ok = window(traffic("web", 1000, 20, 1), traffic("web", 1000, 0, 1));
        assert_eq!(
            gate_of(&judge_now(&g, &s, &started(1000), &[node("c")], &ok)),
            "pass"
        );
        let bad = window(traffic("web", 1000, 30, 1), traffic("web", 1000, 0, 1));
        let v = judge_now(&g, &s, &started(1000), &[node("c")], &bad);
        assert_eq!(gate_of(&v), "5xx_ratio", "3% against a floor of 1% is 3x");
        // A baseline at 2% allows 4%.
        let w = window(traffic("web", 1000, 40, 1), traffic("web", 1000, 20, 1));
        assert_eq!(
            gate_of(&judge_now(&g, &s, &started(1000), &[node("c")], &w)),
            "pass"
        );
        // Too small a baseline: the ratio is not judged (the ceiling is).
        let w = window(traffic("web", 1000, 30, 1), traffic("web", 10, 0, 1));
        let v = judge_now(&g, &s, &started(1000), &[node("c")], &w);
        let Verdict::Pass(fig) = &v else {
            panic!("{v:?}")
        };
        assert!(
            fig["ratios"]
                .as_str()
                .is_some_and(|m| m.contains("not judged")),
            "{fig}"
        );
    }

    #[test]
    fn one_failing_upstream_fails_the_stage_even_when_the_total_is_fine() {
        let mut c = traffic("web", 10_000, 0, 1);
        let broken = traffic("small", 100, 100, 1);
        c.by_upstream.extend(broken.by_upstream);
        c.requests += 100;
        c.errors += 100;
        let v = judge_now(
            &Gates::default(),
            &stage(0, 100, LowTraffic::Wait),
            &started(1000),
            &[node("c")],
            &window(c, Side::default()),
        );
        let Verdict::Fail(f) = v else { panic!("{v:?}") };
        assert_eq!(f.gate, "5xx_rate");
        assert!(f.message.contains("upstream small"), "{}", f.message);
    }

    #[test]
    fn latency_is_judged_by_p99_against_the_baseline_and_its_floor() {
        let g = Gates::default(); // ratio 1.5, floor 5 ms
        let s = stage(0, 100, LowTraffic::Wait);
        // 3 ms against 1 ms: both under the 5 ms floor, passes.
        let w = window(traffic("web", 1000, 0, 3), traffic("web", 1000, 0, 1));
        assert_eq!(
            gate_of(&judge_now(&g, &s, &started(1000), &[node("c")], &w)),
            "pass"
        );
        // 40 ms against 20 ms: 2x, fails.
        let w = window(traffic("web", 1000, 0, 40), traffic("web", 1000, 0, 20));
        assert_eq!(
            gate_of(&judge_now(&g, &s, &started(1000), &[node("c")], &w)),
            "p99_ratio"
        );
        // 25 ms against 20 ms passes.
        let w = window(traffic("web", 1000, 0, 25), traffic("web", 1000, 0, 20));
        assert_eq!(
            gate_of(&judge_now(&g, &s, &started(1000), &[node("c")], &w)),
            "pass"
        );
        // An absolute ceiling applies without a baseline.
        let capped = Gates {
            max_p99: Some(Duration::from_millis(10)),
            ..Gates::default()
        };
        let w = window(traffic("web", 1000, 0, 40), Side::default());
        assert_eq!(
            gate_of(&judge_now(&capped, &s, &started(1000), &[node("c")], &w)),
            "p99"
        );
    }

    #[test]
    fn a_stage_with_too_little_traffic_waits_or_passes_as_it_says() {
        let w = window(traffic("web", 5, 0, 1), traffic("web", 1000, 0, 1));
        let p = started(10_000);
        let waits = judge_now(
            &Gates::default(),
            &stage(5, 100, LowTraffic::Wait),
            &p,
            &[node("c")],
            &w,
        );
        let Verdict::Waiting(fig) = &waits else {
            panic!("{waits:?}")
        };
        assert!(
            fig["low_traffic"]
                .as_str()
                .is_some_and(|m| m.starts_with("5 of the 100")),
            "{fig}"
        );
        let passes = judge_now(
            &Gates::default(),
            &stage(5, 100, LowTraffic::Pass),
            &p,
            &[node("c")],
            &w,
        );
        assert_eq!(gate_of(&passes), "pass");
        // All 5xx but too few to judge: the traffic gates wait too.
        let w = window(traffic("web", 5, 5, 1), Side::default());
        assert_eq!(
            gate_of(&judge_now(
                &Gates::default(),
                &stage(5, 100, LowTraffic::Wait),
                &p,
                &[node("c")],
                &w
            )),
            "waiting"
        );
    }

    #[test]
    fn no_stage_passes_before_its_nodes_serve_the_version() {
        let mut late = node("c");
        late.version = Some(V - 1);
        let s = stage(1, 10, LowTraffic::Pass);
        let v = judge_now(
            &Gates::default(),
            &s,
            &started(5_000),
            &[late],
            &Window::default(),
        );
        let Verdict::Baking(0, fig) = &v else {
            panic!("{v:?}")
        };
        assert_eq!(fig["unanswered"], serde_json::json!(["c"]));
    }

    #[test]
    fn the_bake_time_runs_before_a_pass_and_health_is_judged_at_its_end() {
        let s = stage(10, 10, LowTraffic::Wait);
        let w = window(traffic("web", 100, 0, 1), traffic("web", 100, 0, 1));
        let v = judge_now(&Gates::default(), &s, &started(4_000), &[node("c")], &w);
        assert!(matches!(v, Verdict::Baking(6_000, _)), "{v:?}");
        let mut p = started(11_000);
        p.healthy_before.insert(
            "c".into(),
            vec!["web http://a".into(), "web http://b".into()],
        );
        let mut n = node("c");
        n.healthy.insert("web http://a".into());
        let v = judge_now(&Gates::default(), &s, &p, &[n.clone()], &w);
        let Verdict::Fail(f) = &v else {
            panic!("{v:?}")
        };
        assert_eq!(f.gate, "health");
        assert!(f.figures.to_string().contains("http://b"), "{}", f.figures);
        n.healthy.insert("web http://b".into());
        assert_eq!(
            gate_of(&judge_now(&Gates::default(), &s, &p, &[n.clone()], &w)),
            "pass"
        );
        let off = Gates {
            health: false,
            ..Gates::default()
        };
        n.healthy.clear();
        assert_eq!(gate_of(&judge_now(&off, &s, &p, &[n], &w)), "pass");
    }

    #[test]
    fn samples_sort_into_candidate_and_baseline_by_node_and_version() {
        let sample = |node: &str, version: u64| Sample {
            rollout: V,
            node: node.into(),
            at: NOW,
            version,
            traffic: SampleTraffic {
                requests: 10,
                errors: 1,
                latency_first: 0,
                latency: vec![10],
                upstreams: vec![UpstreamSample {
                    upstream: "web".into(),
                    requests: 10,
                    errors: 1,
                }],
            },
        };
        let members: HashSet<&str> = ["c"].into();
        let w = Window::of(
            &[
                sample("c", V),
                sample("c", V - 1),
                sample("d", V - 1),
                sample("d", V - 2),
            ],
            &members,
            V,
            Some(V - 1),
        );
        // The canary's traffic from before it switched, and a node on
        // neither version, are left out.
        assert_eq!((w.candidate.requests, w.candidate.errors), (10, 1));
        assert_eq!((w.baseline.requests, w.baseline.errors), (10, 1));
    }
}
