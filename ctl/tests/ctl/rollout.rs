//! `apply --wait` and `rollout …` against a real control plane with two
//! nodes subscribed over gRPC, one of them the canary: a version that
//! passes (exit 0), one the canary refuses (exit 3, with the gate), one
//! that is still going at the timeout (exit 4), and the operator's actions.

use crate::common::*;
use isame_proto::pb;
use std::process::Stdio;

const POLICY: &str = "\
stages:
  - name: canary
    selector: {stage: canary}
    bake: 1s
    min_requests: 1
    on_low_traffic: pass
  - name: rest
    bake: 0s
    on_low_traffic: pass
";

/// [`BASE`] with web's second backend weighted `w`.
fn config(w: u32) -> String {
    BASE.replace("weight: 2", &format!("weight: {w}"))
}

/// Starts `isame-ctl ARGS` without waiting for it.
fn spawn(cp: &Cp, args: &[&str]) -> std::process::Child {
    let mut c = cp.command_as(Some(ADMIN), args);
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    c.spawn().expect("isame-ctl starts")
}

fn finish(child: std::process::Child) -> Run {
    let out = child.wait_with_output().expect("isame-ctl ends");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn apply_wait_exits_by_how_the_rollout_ended() {
    let cp = Cp::start();
    // No policy: a version goes everywhere at once, and --wait says so.
    let f = cp.file("v1.yaml", &config(2));
    let r = cp.ctl(&["apply", "-f", &f, "--wait"]).expect(0);
    assert!(r.stdout.contains("version 1 reached every node"), "{r}");

    let mut canary = cp.subscribe_with("canary-1", &[("stage", "canary")]);
    let mut main = cp.subscribe_with("main-1", &[("stage", "main")]);
    assert_eq!(canary.snapshot(), 1);
    canary.ack(1);
    assert_eq!(main.snapshot(), 1);
    main.ack(1);
    wait_for(&cp, &["get", "nodes", "-o", "json"], |n| {
        n["nodes"]
            .as_array()
            .is_some_and(|n| n.len() == 2 && n.iter().all(|n| n["version"] == 1))
    });
    let p = cp.file("policy.yaml", POLICY);
    let r = cp
        .ctl(&["rollout", "policy", "set", "-f", &p, "-m", "canary first"])
        .expect(0);
    assert!(
        r.stdout.contains("revision 1") && r.stdout.contains("canary"),
        "{r}"
    );
    let bad = cp.file("bad-policy.yaml", "stages:\n  - name: x\n    percent: 0\n");
    let r = cp.ctl(&["rollout", "policy", "set", "-f", &bad]).expect(1);
    assert!(r.stderr.contains("stages[0].percent"), "{r}");

    // A version that passes: the canary first, then the rest.
    let f = cp.file("v2.yaml", &config(3));
    let waiting = spawn(&cp, &["apply", "-f", &f, "--wait", "--timeout", "30s"]);
    assert_eq!(canary.snapshot(), 2);
    canary.ack(2);
    assert_eq!(main.snapshot(), 2, "the rest after the canary's bake");
    main.ack(2);
    let r = finish(waiting).expect(0);
    assert!(r.stdout.contains("applied as version 2"), "{r}");
    assert!(
        r.stdout
            .contains("version 2 reached every node (completed)"),
        "{r}"
    );
    assert!(
        r.stderr.contains("stage_started") && r.stderr.contains("completed"),
        "{r}"
    );

    // A version the canary refuses: rolled back, exit 3 with the gate.
    let f = cp.file("v3.yaml", &config(4));
    let waiting = spawn(&cp, &["apply", "-f", &f, "--wait"]);
    assert_eq!(canary.snapshot(), 3);
    canary.send(pb::node_message::Kind::Nack(pb::Nack {
        version: 3,
        errors: vec![pb::Problem {
            path: "tls.cert_file".into(),
            message: "cannot read /nonexistent/cert.pem".into(),
        }],
    }));
    assert_eq!(canary.snapshot(), 2, "the canary goes back to the base");
    canary.ack(2);
    let r = finish(waiting).expect(3);
    assert!(
        r.stdout
            .contains("version 3 was rolled back: gate nack failed in stage canary"),
        "{r}"
    );
    assert!(r.stdout.contains("nodes: canary-1"), "{r}");
    let status = cp
        .ctl(&["rollout", "status", "-o", "json"])
        .expect(0)
        .json();
    assert_eq!(status["state"], "rolled_back");
    assert_eq!(status["failure"]["gate"], "nack");
    let table = cp.ctl(&["rollout", "status"]).expect(0);
    assert!(
        table.stdout.contains("rolled_back") && table.stdout.contains("canary → rest"),
        "{table}"
    );
    assert!(table.stdout.contains("2 on version 2"), "{table}");

    // Still going at the timeout: exit 4; then aborted by hand.
    let f = cp.file("v4.yaml", &config(5));
    let waiting = spawn(&cp, &["apply", "-f", &f, "--wait", "--timeout", "1s"]);
    assert_eq!(canary.snapshot(), 4);
    let r = finish(waiting).expect(4);
    assert!(
        r.stderr
            .contains("timed out: the rollout of version 4 is still running"),
        "{r}"
    );
    let r = cp.ctl(&["rollout", "pause", "-m", "looking"]).expect(0);
    assert!(r.stdout.contains("paused"), "{r}");
    let r = cp.ctl(&["rollout", "abort", "4"]).expect(0);
    assert!(r.stdout.contains("aborted"), "{r}");
    assert_eq!(canary.snapshot(), 2, "aborted: back to the base");
    let r = cp.ctl(&["rollout", "resume", "4"]).expect(1);
    assert!(
        r.stderr
            .contains("cannot resume the rollout of version 4: it is aborted"),
        "{r}"
    );
    let r = cp.ctl(&["rollout", "status", "--watch"]).expect(3);
    assert!(r.stdout.contains("version 4 was aborted"), "{r}");
    // An explicit promote sends it everywhere.
    cp.ctl(&["rollout", "promote", "4"]).expect(0);
    assert_eq!(canary.snapshot(), 4);
    assert_eq!(main.snapshot(), 4);
    let list = cp.ctl(&["rollout", "list"]).expect(0);
    for want in ["promoted", "rolled_back", "completed", "nack"] {
        assert!(list.stdout.contains(want), "{want}: {list}");
    }
    let audit = cp.ctl(&["history", "-o", "json"]).expect(0);
    assert!(audit.stdout.contains("\"version\": 4"), "{audit}");
    let r = cp.ctl(&["rollout", "policy", "remove"]).expect(0);
    assert!(r.stdout.contains("No rollout policy (revision 2)"), "{r}");
}
