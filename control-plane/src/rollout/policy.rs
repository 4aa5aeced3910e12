//! The rollout policy: the ordered stages a new version goes through and
//! the gates each stage must pass. Read from JSON with every problem
//! reported at its path (nothing half-read is kept), and written back in
//! one canonical form with every default filled in.
//!
//! ```yaml
//! stages:
//!   - name: canary
//!     selector: {stage: canary}   # nodes whose labels all match
//!     percent: 100                # of the matching nodes not yet on it
//!     bake: 5m
//!     min_requests: 100
//!     on_low_traffic: wait        # or pass
//! gates:
//!   max_5xx_rate: 0.05
//!   max_5xx_ratio: 2
//!   min_baseline_5xx_rate: 0.01
//!   max_p99_ratio: 1.5
//!   min_baseline_p99: 5ms
//!   health: true
//!   silence: 30s
//! ```

use isame_proto::config::duration;
use isame_proto::{ConfigError, ConfigErrors};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::time::Duration;

/// Most stages in a policy.
pub const MAX_STAGES: usize = 10;
/// Most labels in one selector.
const MAX_SELECTOR: usize = 16;
/// Longest bake time.
const MAX_BAKE: Duration = Duration::from_secs(7 * 24 * 3600);

/// What a stage whose nodes served too few requests to judge does at the
/// end of its bake time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LowTraffic {
    /// Keep baking until enough requests were served (or an operator
    /// promotes).
    Wait,
    /// Judge what can be judged (NACKs, health, silence) and go on.
    Pass,
}

impl LowTraffic {
    fn as_str(self) -> &'static str {
        match self {
            LowTraffic::Wait => "wait",
            LowTraffic::Pass => "pass",
        }
    }
}

/// One stage of a rollout.
#[derive(Debug, Clone, PartialEq)]
pub struct Stage {
    /// Shown in status and the audit log.
    pub name: String,
    /// Labels a node must all have (empty: every node).
    pub selector: BTreeMap<String, String>,
    /// Share of the matching nodes not on the new version yet, 1 to 100.
    pub percent: u32,
    /// How long the stage's nodes serve the new version before it is judged.
    pub bake: Duration,
    /// Requests the stage's nodes must serve for the traffic gates to judge.
    pub min_requests: u64,
    /// What happens when they served fewer.
    pub on_low_traffic: LowTraffic,
}

/// What a stage must pass, comparing its nodes on the new version with the
/// nodes still on the old one over the bake window.
#[derive(Debug, Clone, PartialEq)]
pub struct Gates {
    /// Highest share of 5xx responses on the new version, whatever the
    /// baseline.
    pub max_5xx_rate: f64,
    /// Highest ratio of the new version's 5xx rate to the baseline's.
    pub max_5xx_ratio: f64,
    /// The baseline's 5xx rate counts as at least this in the ratio, so
    /// that a baseline without errors does not make one error a failure.
    pub min_baseline_5xx_rate: f64,
    /// Highest ratio of the new version's p99 latency to the baseline's.
    pub max_p99_ratio: f64,
    /// The baseline's p99 counts as at least this in the ratio.
    pub min_baseline_p99: Duration,
    /// Highest p99 latency on the new version, whatever the baseline.
    pub max_p99: Option<Duration>,
    /// Fail when a stage node sees fewer of its backends healthy than it
    /// did before it took the new version.
    pub health: bool,
    /// Fail when a stage node has not been heard from (or has not
    /// answered the new version) for this long.
    pub silence: Duration,
}

impl Default for Gates {
    fn default() -> Self {
        Self {
            max_5xx_rate: 0.05,
            max_5xx_ratio: 2.0,
            min_baseline_5xx_rate: 0.01,
            max_p99_ratio: 1.5,
            min_baseline_p99: Duration::from_millis(5),
            max_p99: None,
            health: true,
            silence: Duration::from_secs(30),
        }
    }
}

/// A rollout policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// In order; after the last one passes the version goes everywhere.
    pub stages: Vec<Stage>,
    /// The gates of every stage.
    pub gates: Gates,
}

/// Reads a policy; every problem is listed with its path.
pub fn parse(doc: &Value) -> Result<Policy, ConfigErrors> {
    let mut p = Problems::default();
    let Some(obj) = doc.as_object() else {
        return Err(ConfigErrors::one("", "a rollout policy is an object"));
    };
    p.only(obj, "", &["stages", "gates"]);
    let mut stages = Vec::new();
    match obj.get("stages") {
        Some(Value::Array(items)) => {
            if items.is_empty() || items.len() > MAX_STAGES {
                p.add("stages", format!("1 to {MAX_STAGES} stages"));
            }
            for (i, s) in items.iter().enumerate() {
                if let Some(stage) = stage(&mut p, &format!("stages[{i}]"), s) {
                    if stages.iter().any(|o: &Stage| o.name == stage.name) {
                        p.add(format!("stages[{i}].name"), "stage names are unique");
                    }
                    stages.push(stage);
                }
            }
        }
        Some(_) => p.add("stages", "a list of stages"),
        None => p.add("stages", "required: the stages a version goes through"),
    }
    let gates = match obj.get("gates") {
        None => Gates::default(),
        Some(Value::Object(g)) => gates(&mut p, g),
        Some(_) => {
            p.add("gates", "an object");
            Gates::default()
        }
    };
    p.finish(Policy { stages, gates })
}

fn stage(p: &mut Problems, at: &str, v: &Value) -> Option<Stage> {
    let Some(o) = v.as_object() else {
        p.add(at, "a stage is an object");
        return None;
    };
    p.only(
        o,
        at,
        &[
            "name",
            "selector",
            "percent",
            "bake",
            "min_requests",
            "on_low_traffic",
        ],
    );
    let name = match o.get("name").and_then(Value::as_str) {
        Some(n) if isame_proto::config::check_name(n).is_ok() => n.to_owned(),
        Some(n) => {
            p.add(
                format!("{at}.name"),
                format!("{n:?} is not a valid name (letters, digits, '-', '_', '.')"),
            );
            n.to_owned()
        }
        None => {
            p.add(format!("{at}.name"), "required, a string");
            String::new()
        }
    };
    let mut selector = BTreeMap::new();
    match o.get("selector") {
        None => {}
        Some(Value::Object(m)) => {
            if m.len() > MAX_SELECTOR {
                p.add(
                    format!("{at}.selector"),
                    format!("at most {MAX_SELECTOR} labels"),
                );
            }
            for (k, v) in m {
                match v.as_str() {
                    Some(s) if !k.is_empty() && k.len() <= 128 && s.len() <= 1024 => {
                        selector.insert(k.clone(), s.to_owned());
                    }
                    _ => p.add(
                        format!("{at}.selector.{k}"),
                        "a label value (string); keys 1 to 128 bytes, values up to 1024",
                    ),
                }
            }
        }
        Some(_) => p.add(format!("{at}.selector"), "an object of label: value"),
    }
    let percent = match o.get("percent") {
        None => 100,
        Some(v) => match v.as_u64() {
            Some(n @ 1..=100) => n as u32,
            _ => {
                p.add(format!("{at}.percent"), "a whole number from 1 to 100");
                100
            }
        },
    };
    let bake = p.duration(o, at, "bake", Some(Duration::from_secs(300)), MAX_BAKE);
    let min_requests = match o.get("min_requests") {
        None => 100,
        Some(v) => match v.as_u64() {
            Some(n) if n <= 1_000_000_000 => n,
            _ => {
                p.add(
                    format!("{at}.min_requests"),
                    "a whole number from 0 to 1000000000",
                );
                100
            }
        },
    };
    let on_low_traffic = match o.get("on_low_traffic").map(Value::as_str) {
        None | Some(Some("wait")) => LowTraffic::Wait,
        Some(Some("pass")) => LowTraffic::Pass,
        Some(_) => {
            p.add(format!("{at}.on_low_traffic"), "\"wait\" or \"pass\"");
            LowTraffic::Wait
        }
    };
    Some(Stage {
        name,
        selector,
        percent,
        bake: bake.unwrap_or_default(),
        min_requests,
        on_low_traffic,
    })
}

fn gates(p: &mut Problems, g: &Map<String, Value>) -> Gates {
    let d = Gates::default();
    p.only(
        g,
        "gates",
        &[
            "max_5xx_rate",
            "max_5xx_ratio",
            "min_baseline_5xx_rate",
            "max_p99_ratio",
            "min_baseline_p99",
            "max_p99",
            "health",
            "silence",
        ],
    );
    let day = Duration::from_secs(24 * 3600);
    Gates {
        max_5xx_rate: p.number(g, "max_5xx_rate", d.max_5xx_rate, 0.0, 1.0),
        max_5xx_ratio: p.number(g, "max_5xx_ratio", d.max_5xx_ratio, 1.0, 1e6),
        min_baseline_5xx_rate: p.number(
            g,
            "min_baseline_5xx_rate",
            d.min_baseline_5xx_rate,
            0.0,
            1.0,
        ),
        max_p99_ratio: p.number(g, "max_p99_ratio", d.max_p99_ratio, 1.0, 1e6),
        min_baseline_p99: p
            .duration(
                g,
                "gates",
                "min_baseline_p99",
                Some(d.min_baseline_p99),
                day,
            )
            .unwrap_or(d.min_baseline_p99),
        max_p99: p.duration(g, "gates", "max_p99", None, day),
        health: match g.get("health") {
            None => d.health,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                p.add("gates.health", "true or false");
                d.health
            }
        },
        silence: p
            .duration(g, "gates", "silence", Some(d.silence), day)
            .filter(|s| *s >= Duration::from_secs(1))
            .unwrap_or_else(|| {
                if g.get("silence").is_some() {
                    p.add("gates.silence", "at least 1s");
                }
                d.silence
            }),
    }
}

impl Policy {
    /// The canonical JSON form, defaults filled in.
    pub fn to_json(&self) -> Value {
        let g = &self.gates;
        let mut gates = json!({
            "max_5xx_rate": g.max_5xx_rate,
            "max_5xx_ratio": g.max_5xx_ratio,
            "min_baseline_5xx_rate": g.min_baseline_5xx_rate,
            "max_p99_ratio": g.max_p99_ratio,
            "min_baseline_p99": duration::format(g.min_baseline_p99),
            "health": g.health,
            "silence": duration::format(g.silence),
        });
        if let Some(m) = g.max_p99 {
            gates["max_p99"] = duration::format(m).into();
        }
        json!({
            "stages": self.stages.iter().map(|s| json!({
                "name": s.name,
                "selector": s.selector,
                "percent": s.percent,
                "bake": duration::format(s.bake),
                "min_requests": s.min_requests,
                "on_low_traffic": s.on_low_traffic.as_str(),
            })).collect::<Vec<_>>(),
            "gates": gates,
        })
    }
}

/// Problems found so far.
#[derive(Default)]
struct Problems(Vec<ConfigError>);

impl Problems {
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigError::new(path, message));
    }

    /// Reports keys of `o` outside `known`.
    fn only(&mut self, o: &Map<String, Value>, at: &str, known: &[&str]) {
        for k in o.keys() {
            if !known.contains(&k.as_str()) {
                let path = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                self.add(path, format!("unknown field (known: {})", known.join(", ")));
            }
        }
    }

    fn number(
        &mut self,
        o: &Map<String, Value>,
        key: &str,
        default: f64,
        min: f64,
        max: f64,
    ) -> f64 {
        match o.get(key) {
            None => default,
            Some(v) => match v.as_f64() {
                Some(n) if (min..=max).contains(&n) => n,
                _ => {
                    self.add(
                        format!("gates.{key}"),
                        format!("a number from {min} to {max}"),
                    );
                    default
                }
            },
        }
    }

    fn duration(
        &mut self,
        o: &Map<String, Value>,
        at: &str,
        key: &str,
        default: Option<Duration>,
        max: Duration,
    ) -> Option<Duration> {
        let Some(v) = o.get(key) else { return default };
        let parsed = v
            .as_str()
            .ok_or_else(|| "a duration such as \"30s\" or \"5m\"".to_owned())
            .and_then(duration::parse)
            .and_then(|d| {
                if d <= max {
                    Ok(d)
                } else {
                    Err(format!("at most {}", duration::format(max)))
                }
            });
        match parsed {
            Ok(d) => Some(d),
            Err(m) => {
                self.add(format!("{at}.{key}"), m);
                default
            }
        }
    }

    fn finish(self, policy: Policy) -> Result<Policy, ConfigErrors> {
        if self.0.is_empty() {
            Ok(policy)
        } else {
            Err(ConfigErrors(self.0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_in_and_the_canonical_form_reads_back() {
        let p = parse(&json!({"stages": [{"name": "canary", "selector": {"stage": "canary"}}]}))
            .expect("valid");
        assert_eq!(p.stages[0].percent, 100);
        assert_eq!(p.stages[0].bake, Duration::from_secs(300));
        assert_eq!(p.gates, Gates::default());
        assert_eq!(parse(&p.to_json()).expect("canonical form"), p);
    }

    #[test]
    fn every_problem_is_listed_with_its_path() {
        let e = parse(&json!({
            "stages": [
                {"name": "a", "percent": 0, "bake": "soon", "colour": 1},
                {"name": "a", "on_low_traffic": "maybe", "selector": {"k": 3}},
            ],
            "gates": {"max_5xx_rate": 2, "silence": "10ms"},
        }))
        .expect_err("invalid");
        let paths: Vec<&str> = e.iter().map(|e| e.path.as_str()).collect();
        for want in [
            "stages[0].colour",
            "stages[0].percent",
            "stages[0].bake",
            "stages[1].selector.k",
            "stages[1].on_low_traffic",
            "stages[1].name",
            "gates.max_5xx_rate",
            "gates.silence",
        ] {
            assert!(paths.contains(&want), "{want} missing from {paths:?}");
        }
        assert!(parse(&json!({"stages": []})).is_err());
        assert!(parse(&json!([])).is_err());
    }
}
