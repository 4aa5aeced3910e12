//! `get`, `describe`, `delete`, `backend …`, `history` and `rollback`.

use crate::common::*;

/// The backends of upstream `name` as `(url, weight, drain)`.
fn backends(cp: &Cp, name: &str) -> Vec<(String, u64, bool)> {
    let u = cp
        .ctl(&["describe", "upstream", name, "-o", "json"])
        .expect(0)
        .json();
    u["backends"]
        .as_array()
        .expect("backends")
        .iter()
        .map(|b| {
            (
                b["url"].as_str().unwrap_or_default().to_owned(),
                b["weight"].as_u64().unwrap_or(0),
                b["drain"] == true,
            )
        })
        .collect()
}

#[test]
fn get_lists_in_every_format() {
    let cp = Cp::start();
    cp.seed();
    let t = cp.ctl(&["get", "upstreams"]).expect(0).stdout;
    let lines: Vec<&str> = t.lines().collect();
    assert_eq!(
        lines,
        [
            "NAME  ALGORITHM             BACKENDS  DRAINING  WEIGHTS",
            "web   weighted_round_robin  2         0         1:2",
            "api   round_robin           1         0         1",
        ],
        "{t}"
    );
    let t = cp.ctl(&["get", "routes"]).expect(0).stdout;
    assert!(
        t.starts_with("NAME  HOST  PATH  HEADERS  UPSTREAM\n"),
        "{t}"
    );
    assert!(t.contains("api   *     /api  -        api"), "{t}");
    let t = cp.ctl(&["get", "versions"]).expect(0).stdout;
    assert!(t.starts_with("VERSION  CREATED"), "{t}");
    assert!(t.contains("bootstrap-admin"), "{t}");

    for what in ["upstreams", "routes", "versions"] {
        let json = cp.ctl(&["get", what, "-o", "json"]).expect(0).json();
        let yaml = cp.ctl(&["get", what, "-o", "yaml"]).expect(0).yaml();
        assert_eq!(json, yaml, "{what}: the same data in both formats");
        assert!(
            json[what].as_array().is_some_and(|l| !l.is_empty()),
            "{json}"
        );
    }
    let json = cp.ctl(&["get", "upstreams", "-o", "json"]).expect(0).json();
    assert_eq!(json["version"], 1);
    assert_eq!(json["upstreams"][0]["name"], "web");
    assert_eq!(json["upstreams"][0]["backends"][1]["weight"], 2);
    let routes = cp.ctl(&["get", "route", "-o", "yaml"]).expect(0).yaml();
    assert_eq!(routes["routes"][0]["path_prefix"], "/api");
    // No node yet: an empty table says so on stderr; JSON is still data.
    let r = cp.ctl(&["get", "nodes"]).expect(0);
    assert_eq!(r.stdout, "");
    assert!(r.stderr.contains("no nodes"), "{r}");
    let nodes = cp.ctl(&["get", "nodes", "-o", "json"]).expect(0).json();
    assert_eq!(nodes["nodes"], serde_json::json!([]));
}

#[test]
fn describe_shows_one_thing() {
    let cp = Cp::start();
    cp.seed();
    let t = cp.ctl(&["describe", "upstream", "web"]).expect(0).stdout;
    for want in [
        "Name:              web\n",
        "Algorithm:         weighted_round_robin\n",
        "Health checks:     global settings\n",
        "Used by routes:    -\n",
        "BACKEND                WEIGHT  DRAINING  HEALTHY\n",
        "http://127.0.0.1:3002  2       no        no reports\n",
    ] {
        assert!(t.contains(want), "{want:?} missing from\n{t}");
    }
    let t = cp.ctl(&["describe", "upstream", "api"]).expect(0).stdout;
    assert!(t.contains("Used by routes:    api\n"), "{t}");
    let u = cp
        .ctl(&["describe", "upstream", "web", "-o", "yaml"])
        .expect(0)
        .yaml();
    assert_eq!(u["name"], "web");
    let t = cp.ctl(&["describe", "route", "api"]).expect(0).stdout;
    assert!(t.contains("Path prefix:  /api\n"), "{t}");
    let r = cp.ctl(&["describe", "upstream", "nope"]).expect(1);
    assert!(r.stderr.contains("404"), "{r}");
    assert!(r.stderr.contains("upstream \"nope\" not found"), "{r}");
}

#[test]
fn backends_are_added_reweighted_drained_and_removed() {
    let cp = Cp::start();
    cp.seed();
    let new = "http://127.0.0.1:3003";
    let r = cp
        .ctl(&[
            "backend",
            "add",
            "web",
            new,
            "--weight",
            "3",
            "-m",
            "more capacity",
        ])
        .expect(0);
    assert!(
        r.stdout
            .starts_with("+ upstreams[web].backends[http://127.0.0.1:3003]\n"),
        "{r}"
    );
    assert!(r.stdout.contains("1 change; applied as version 2"), "{r}");
    assert_eq!(backends(&cp, "web")[2], (new.to_owned(), 3, false));

    // By host:port; a dry run first.
    let r = cp
        .ctl(&[
            "backend",
            "weight",
            "web",
            "127.0.0.1:3003",
            "7",
            "--dry-run",
        ])
        .expect(0);
    assert!(
        r.stdout
            .contains("~ upstreams[web].backends[http://127.0.0.1:3003].weight: 3 → 7\n"),
        "{r}"
    );
    assert!(r.stdout.contains("dry run, nothing applied"), "{r}");
    assert_eq!(backends(&cp, "web")[2].1, 3);
    cp.ctl(&["backend", "weight", "web", "127.0.0.1:3003", "7"])
        .expect(0);
    assert_eq!(backends(&cp, "web")[2].1, 7);

    // By full URL (percent-encoded on the way).
    let r = cp.ctl(&["backend", "drain", "web", new]).expect(0);
    assert!(
        r.stdout
            .contains("+ upstreams[web].backends[http://127.0.0.1:3003].drain: true"),
        "{r}"
    );
    assert!(backends(&cp, "web")[2].2);
    let t = cp.ctl(&["get", "upstreams"]).expect(0).stdout;
    assert!(t.contains("web   weighted_round_robin  3         1"), "{t}");
    cp.ctl(&["backend", "drain", "web", new, "--undo"])
        .expect(0);
    assert!(!backends(&cp, "web")[2].2);

    let r = cp.ctl(&["backend", "remove", "web", new]).expect(0);
    assert!(
        r.stdout
            .starts_with("- upstreams[web].backends[http://127.0.0.1:3003]\n"),
        "{r}"
    );
    assert_eq!(backends(&cp, "web").len(), 2);

    // Refusals name what is wrong.
    let r = cp.ctl(&["backend", "remove", "web", new]).expect(1);
    assert!(
        r.stderr.contains("404") && r.stderr.contains("has no backend"),
        "{r}"
    );
    let r = cp
        .ctl(&["backend", "add", "web", "http://127.0.0.1:3001"])
        .expect(1);
    assert!(r.stderr.contains("409"), "{r}");
    let r = cp
        .ctl(&["backend", "weight", "web", "127.0.0.1:3001", "0"])
        .expect(1);
    assert!(r.stderr.contains("422"), "{r}");
    assert!(
        r.stderr.contains("upstreams[0].backends[0].weight: "),
        "the path of the problem: {r}"
    );
}

#[test]
fn delete_is_refused_while_used() {
    let cp = Cp::start();
    cp.seed();
    let r = cp.ctl(&["delete", "upstream", "api"]).expect(1);
    assert!(r.stderr.contains("422"), "{r}");
    assert!(r.stderr.contains("routes[0].upstream: "), "{r}");
    let r = cp.ctl(&["delete", "route", "api"]).expect(0);
    assert!(r.stdout.starts_with("- routes[api]\n"), "{r}");
    let r = cp
        .ctl(&["delete", "upstream", "api", "-o", "json"])
        .expect(0)
        .json();
    assert_eq!(r["version"], 3);
    assert_eq!(r["changes"][0]["op"], "removed");
    assert_eq!(r["changes"][0]["path"], "upstreams[api]");
    let r = cp.ctl(&["delete", "upstream", "api"]).expect(1);
    assert!(r.stderr.contains("404"), "{r}");
}

#[test]
fn history_and_rollback() {
    let cp = Cp::start();
    let f = cp.file("base.yaml", BASE);
    cp.ctl(&["apply", "-f", &f, "-m", "first"]).expect(0);
    cp.ctl(&[
        "backend",
        "weight",
        "web",
        "127.0.0.1:3002",
        "9",
        "-m",
        "heavier",
    ])
    .expect(0);
    let t = cp.ctl(&["history"]).expect(0).stdout;
    let v2 = t.find("version 2  ").expect("version 2 listed");
    let v1 = t.find("version 1  ").expect("version 1 listed");
    assert!(v2 < v1, "newest first:\n{t}");
    assert!(t.contains("by bootstrap-admin"), "{t}");
    assert!(
        t.contains(
            "    heavier\n    ~ upstreams[web].backends[http://127.0.0.1:3002].weight: 2 → 9\n"
        ),
        "{t}"
    );
    assert!(t.contains("    + upstreams[api]\n"), "{t}");
    let one = cp.ctl(&["history", "--limit", "1"]).expect(0).stdout;
    assert!(
        one.contains("version 2") && !one.contains("version 1"),
        "{one}"
    );

    let r = cp.ctl(&["rollback", "1", "-m", "too heavy"]).expect(0);
    assert!(
        r.stdout
            .contains("~ upstreams[web].backends[http://127.0.0.1:3002].weight: 9 → 2\n"),
        "{r}"
    );
    assert!(r.stdout.contains("applied as version 3"), "{r}");
    assert_eq!(backends(&cp, "web")[1].1, 2);
    let r = cp.ctl(&["rollback", "1"]).expect(0);
    assert!(r.stdout.contains("version 3 stays the newest"), "{r}");

    let h = cp.ctl(&["history", "-o", "yaml"]).expect(0).yaml();
    let versions = h["versions"].as_array().expect("versions");
    assert_eq!(versions.len(), 3);
    assert_eq!(versions[0]["version"], 3);
    assert_eq!(versions[0]["rollback_of"], 1);
    assert_eq!(versions[0]["message"], "too heavy");
    assert_eq!(versions[0]["changes"][0]["new"], 2);
    assert!(
        versions[0].get("config").is_none(),
        "history leaves configs out"
    );
    let t = cp.ctl(&["history", "-n", "1"]).expect(0).stdout;
    assert!(t.contains("(rollback to version 1)"), "{t}");
    let r = cp.ctl(&["rollback", "42"]).expect(1);
    assert!(r.stderr.contains("version 42 not found"), "{r}");
    let v = cp.ctl(&["get", "versions", "-o", "json"]).expect(0).json();
    assert_eq!(v["versions"].as_array().map(Vec::len), Some(3));
}

#[test]
fn hashing_and_sticky_cookies_show_in_the_diff_and_describe() {
    let cp = Cp::start();
    cp.seed();
    let hashed = BASE.replace(
        "    algorithm: weighted_round_robin\n",
        "    algorithm: consistent_hash\n    hash_on: cookie:session\n    sticky: {cookie: lb, ttl: 30m}\n",
    );
    let f = cp.file("hashed.yaml", &hashed);
    let r = cp.ctl(&["apply", "-f", &f]).expect(0);
    for want in [
        "~ upstreams[web].algorithm: weighted_round_robin → consistent_hash\n",
        "+ upstreams[web].hash_on: cookie:session\n",
        "+ upstreams[web].sticky\n",
    ] {
        assert!(r.stdout.contains(want), "{want:?} missing from\n{r}");
    }
    let t = cp.ctl(&["describe", "upstream", "web"]).expect(0).stdout;
    for want in [
        "Algorithm:         consistent_hash on cookie:session (without it: weighted_round_robin)\n",
        "Sticky:            ",
        "cookie: lb",
    ] {
        assert!(t.contains(want), "{want:?} missing from\n{t}");
    }
    // A bad key is refused with its path, nothing applied.
    let bad = hashed.replace("cookie:session", "cookie:a b");
    let r = cp
        .ctl(&["apply", "-f", &cp.file("bad.yaml", &bad)])
        .expect(1);
    assert!(r.stderr.contains("upstreams[0].hash_on"), "{r}");
}

#[test]
fn a_route_split_is_shown_and_counts_as_use_of_its_upstreams() {
    let cp = Cp::start();
    cp.seed();
    let split = BASE.replace(
        "    upstream: api\n",
        "    split:\n      - {upstream: api, weight: 90}\n      - {upstream: web, weight: 10}\n",
    );
    let r = cp
        .ctl(&["apply", "-f", &cp.file("split.yaml", &split)])
        .expect(0);
    assert!(r.stdout.contains("+ routes[api].split[web]\n"), "{r}");
    assert!(r.stdout.contains("- routes[api].upstream: api\n"), "{r}");
    let t = cp.ctl(&["get", "routes"]).expect(0).stdout;
    assert!(t.contains("api=90, web=10"), "{t}");
    let t = cp.ctl(&["describe", "upstream", "web"]).expect(0).stdout;
    assert!(t.contains("Used by routes:    api\n"), "{t}");
    // Moving the canary's share is one change.
    let moved = split
        .replace("weight: 90", "weight: 50")
        .replace("weight: 10", "weight: 50");
    let r = cp
        .ctl(&["apply", "-f", &cp.file("moved.yaml", &moved), "--dry-run"])
        .expect(0);
    assert!(
        r.stdout
            .contains("~ routes[api].split[web].weight: 10 → 50\n"),
        "{r}"
    );
}

#[test]
fn route_split_shifts_weights_in_one_command() {
    let cp = Cp::start();
    cp.seed();
    // From a single upstream to a split: a dry run, then for real.
    let r = cp
        .ctl(&["route", "split", "api", "api=90", "web=10", "--dry-run"])
        .expect(0);
    assert!(r.stdout.contains("+ routes[api].split[web]\n"), "{r}");
    assert!(r.stdout.contains("dry run, nothing applied"), "{r}");
    let r = cp
        .ctl(&[
            "route",
            "split",
            "api",
            "api=90",
            "web=10",
            "-m",
            "canary 10%",
        ])
        .expect(0);
    assert!(r.stdout.contains("applied as version 2"), "{r}");
    let t = cp.ctl(&["get", "routes"]).expect(0).stdout;
    assert!(t.contains("api=90, web=10"), "{t}");
    // Shifting the share is one change.
    let r = cp
        .ctl(&["route", "split", "api", "api=0", "web=100"])
        .expect(0);
    assert!(
        r.stdout
            .contains("~ routes[api].split[api].weight: 90 → 0\n"),
        "{r}"
    );
    assert!(
        r.stdout
            .contains("~ routes[api].split[web].weight: 10 → 100\n"),
        "{r}"
    );
    // Bad shares are refused before anything is sent, with the reason.
    let r = cp.ctl(&["route", "split", "api", "web"]).expect(2);
    assert!(r.stderr.contains("expected UPSTREAM=WEIGHT"), "{r}");
    let r = cp.ctl(&["route", "split", "api", "web=5000"]).expect(2);
    assert!(r.stderr.contains("from 0 to 1000"), "{r}");
    // The server's rules still apply: an unknown upstream lists the problem.
    let r = cp.ctl(&["route", "split", "api", "nope=1"]).expect(1);
    assert!(r.stderr.contains("routes[0].split[0].upstream"), "{r}");
    let r = cp.ctl(&["route", "split", "missing", "web=1"]).expect(1);
    assert!(r.stderr.contains("missing"), "{r}");
}
