//! `status`, `get nodes` and `describe node` with a node subscribed over
//! gRPC: its version, what it refused, the backend health it reports.

use crate::common::*;
use isame_proto::pb;
use isame_proto::pb::node_message::Kind;

fn health(backends: &[(&str, bool)]) -> Kind {
    Kind::Health(pb::HealthReport {
        backends: backends
            .iter()
            .map(|(url, healthy)| pb::BackendHealth {
                upstream: "web".into(),
                backend: (*url).into(),
                healthy: *healthy,
                circuit: "closed".into(),
                ejected: false,
                ..Default::default()
            })
            .collect(),
    })
}

#[test]
fn status_shows_the_fleet() {
    let cp = Cp::start();
    let r = cp.ctl(&["status"]).expect(0);
    assert!(r.stdout.contains("Newest version:             none"), "{r}");
    assert!(
        r.stdout.contains("No data plane has subscribed yet."),
        "{r}"
    );
    cp.seed();

    let mut node = cp.subscribe("dp-1");
    assert_eq!(node.snapshot(), 1);
    node.ack(1);
    node.send(health(&[
        ("http://127.0.0.1:3001", true),
        ("http://127.0.0.1:3002", false),
    ]));
    wait_for(&cp, &["describe", "node", "dp-1", "-o", "json"], |n| {
        n["version"] == 1 && n["health"].as_array().is_some_and(|h| h.len() == 2)
    });

    let t = cp.ctl(&["status"]).expect(0).stdout;
    for want in [
        "Newest version:             1\n",
        "Nodes:                      1 known, 1 connected\n",
        "Behind the newest version:  none\n",
        "Refused versions:           none\n",
        "NODE  CONNECTED  VERSION  TARGET  BEHIND  LAST SEEN\n",
        "dp-1  yes        1        1       no      ",
        "Backend health across connected nodes:\n",
        "web       http://127.0.0.1:3001  on 1 of 1 nodes\n",
        "web       http://127.0.0.1:3002  on 0 of 1 nodes\n",
        "api       http://127.0.0.1:4001  no reports\n",
    ] {
        assert!(t.contains(want), "{want:?} missing from\n{t}");
    }
    let t = cp.ctl(&["get", "nodes"]).expect(0).stdout;
    assert!(
        t.starts_with("ID    HOSTNAME   CONNECTED  VERSION  TARGET  BEHIND  LAST SEEN\n"),
        "{t}"
    );
    assert!(
        t.contains("dp-1  test-host  yes        1        1       no      "),
        "{t}"
    );
    assert!(t.contains(" ago\n"), "{t}");
    let t = cp.ctl(&["describe", "node", "dp-1"]).expect(0).stdout;
    assert!(t.contains("Labels:          zone=a\n"), "{t}");
    assert!(
        t.contains("web       http://127.0.0.1:3002  no       closed"),
        "{t}"
    );

    // A change the node refuses: it stays behind, and says why.
    cp.ctl(&["backend", "weight", "web", "127.0.0.1:3001", "4"])
        .expect(0);
    assert_eq!(node.snapshot(), 2);
    node.send(Kind::Nack(pb::Nack {
        version: 2,
        errors: vec![pb::Problem {
            path: "tls.cert_file".into(),
            message: "cannot read /etc/x.pem".into(),
        }],
    }));
    wait_for(&cp, &["describe", "node", "dp-1", "-o", "json"], |n| {
        n["last_nack"]["version"] == 2
    });
    let t = cp.ctl(&["status"]).expect(0).stdout;
    for want in [
        "Newest version:             2\n",
        "Behind the newest version:  1 (dp-1)\n",
        "Refused versions:           1\n",
        "dp-1  yes        1        2       yes     ",
        "Refused versions (NACK):\n  dp-1 refused version 2:\n    tls.cert_file: cannot read /etc/x.pem\n",
    ] {
        assert!(t.contains(want), "{want:?} missing from\n{t}");
    }
    let t = cp.ctl(&["describe", "node", "dp-1"]).expect(0).stdout;
    assert!(
        t.contains("Last refused version 2:\n  tls.cert_file: cannot read /etc/x.pem\n"),
        "{t}"
    );

    // Scripts get both server answers.
    let s = cp.ctl(&["status", "-o", "json"]).expect(0).json();
    assert_eq!(s["fleet"]["version"], 2);
    assert_eq!(s["fleet"]["nodes"]["behind"][0], "dp-1");
    assert_eq!(
        s["fleet"]["nodes"]["nacked"][0]["errors"][0]["path"],
        "tls.cert_file"
    );
    assert_eq!(
        s["fleet"]["upstreams"][0]["backends"][0]["healthy_nodes"],
        1
    );
    assert_eq!(s["nodes"]["nodes"][0]["id"], "dp-1");
    let y = cp.ctl(&["status", "-o", "yaml"]).expect(0).yaml();
    assert_eq!(y["fleet"]["version"], 2);
    let n = cp.ctl(&["get", "nodes", "-o", "json"]).expect(0).json();
    assert_eq!(n["nodes"][0]["behind"], true);

    // Gone: still known, no longer connected.
    drop(node);
    wait_for(&cp, &["get", "nodes", "-o", "json"], |n| {
        n["nodes"][0]["connected"] == false
    });
    let t = cp.ctl(&["status"]).expect(0).stdout;
    assert!(
        t.contains("Nodes:                      1 known, 0 connected\n"),
        "{t}"
    );
    assert!(
        t.contains("dp-1  no         1        2       yes     "),
        "{t}"
    );
}
