//! `apply`, `diff` and `validate`: versions made (or not), change lists,
//! every validation problem with its path, the offline check.

use crate::common::*;

/// [`BASE`] with web's second weight 5, route `api` removed, upstream `api`
/// removed and a route `web` added.
const CHANGED: &str = "\
service: test
upstreams:
  - name: web
    algorithm: weighted_round_robin
    backends:
      - url: http://127.0.0.1:3001
      - url: http://127.0.0.1:3002
        weight: 5
routes:
  - name: web
    path_prefix: /
    upstream: web
health:
  enabled: false
";

/// Two problems at once.
const INVALID: &str = "\
upstreams:
  - name: web
    backends:
      - url: ftp://127.0.0.1:3001
routes:
  - name: r
    upstream: nowhere
";

#[test]
fn apply_makes_a_version_once() {
    let cp = Cp::start();
    let f = cp.file("base.yaml", BASE);
    let r = cp.ctl(&["apply", "-f", &f]).expect(0);
    assert!(r.stdout.contains("+ upstreams[web]\n"), "{r}");
    assert!(r.stdout.contains("+ routes[api]\n"), "{r}");
    assert!(r.stdout.contains("applied as version 1"), "{r}");
    let r = cp.ctl(&["apply", "-f", &f]).expect(0);
    assert!(
        r.stdout.contains("no changes; version 1 stays the newest"),
        "{r}"
    );
    // Scripts get the server's answer.
    let v = cp.ctl(&["apply", "-f", &f, "-o", "json"]).expect(0).json();
    assert_eq!(v["version"], 1);
    assert_eq!(v["created"], false);
    assert_eq!(v["changes"], serde_json::json!([]));
    let versions = cp.ctl(&["get", "versions", "-o", "json"]).expect(0).json();
    assert_eq!(versions["versions"].as_array().map(Vec::len), Some(1));
}

#[test]
fn the_message_goes_with_the_version() {
    let cp = Cp::start();
    let f = cp.file("base.yaml", BASE);
    // Non-ASCII, a literal % and a newline all survive the header.
    let message = "first rollout: naïve café, 100% sure\nsecond line";
    cp.ctl(&["apply", "-f", &f, "-m", message]).expect(0);
    let h = cp.ctl(&["history", "-o", "json"]).expect(0).json();
    assert_eq!(h["versions"][0]["message"], message);
    let text = cp.ctl(&["history"]).expect(0).stdout;
    assert!(
        text.contains("    first rollout: naïve café, 100% sure\n"),
        "{text}"
    );
    assert!(text.contains("    second line\n"), "{text}");
    let table = cp.ctl(&["get", "versions"]).expect(0).stdout;
    assert!(table.contains("naïve café"), "{table}");
}

#[test]
fn dry_run_and_diff_change_nothing() {
    let cp = Cp::start();
    cp.seed();
    let f = cp.file("changed.yaml", CHANGED);
    let r = cp.ctl(&["apply", "-f", &f, "--dry-run"]).expect(0);
    assert!(
        r.stdout
            .contains("~ upstreams[web].backends[http://127.0.0.1:3002].weight: 2 → 5\n"),
        "{r}"
    );
    assert!(r.stdout.contains("dry run, nothing applied"), "{r}");
    let r = cp.ctl(&["diff", "-f", &f]).expect(0);
    // Piped: plain text, one change per line, each kind marked.
    assert!(!r.stdout.contains('\x1b'), "no colour when piped: {r}");
    let lines: Vec<&str> = r.stdout.lines().collect();
    for want in [
        "~ upstreams[web].backends[http://127.0.0.1:3002].weight: 2 → 5",
        "+ routes[web]",
        "- routes[api]",
        "- upstreams[api]",
    ] {
        assert!(lines.contains(&want), "{want:?} missing from\n{r}");
    }
    assert!(r.stdout.ends_with("4 changes against version 1\n"), "{r}");
    // Nothing was applied by either.
    let v = cp.ctl(&["get", "versions", "-o", "json"]).expect(0).json();
    assert_eq!(v["versions"].as_array().map(Vec::len), Some(1));
    // Colour when asked for, none with NO_COLOR.
    let coloured = cp.ctl(&["diff", "-f", &f, "--color", "always"]).expect(0);
    assert!(
        coloured.stdout.contains("\x1b[33m~ upstreams[web]"),
        "{coloured}"
    );
    assert!(
        coloured.stdout.contains("\x1b[31m- upstreams[api]"),
        "{coloured}"
    );
    let mut c = cp.command_as(Some(ADMIN), &["diff", "-f", &f]);
    c.env("NO_COLOR", "1");
    assert!(!run(c).expect(0).stdout.contains('\x1b'));
    // A diff of what is applied.
    let same = cp.file("same.yaml", BASE);
    let r = cp.ctl(&["diff", "-f", &same]).expect(0);
    assert_eq!(r.stdout, "no differences from version 1\n");
    // The config can come from standard input.
    let mut c = cp.command_as(Some(ADMIN), &["diff", "-f", "-"]);
    c.stdin(std::fs::File::open(&f).expect("open"));
    assert!(run(c).expect(0).stdout.contains("+ routes[web]"));
}

#[test]
fn an_invalid_file_is_refused_with_every_path() {
    let cp = Cp::start();
    cp.seed();
    let f = cp.file("invalid.yaml", INVALID);
    let offline = cp.ctl(&["validate", "-f", &f]).expect(1);
    let problems: Vec<&str> = offline.stderr.lines().skip(1).map(str::trim).collect();
    assert!(problems.len() >= 2, "{offline}");
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("upstreams[0].backends[0].url: ")),
        "{offline}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("routes[0].upstream: ")),
        "{offline}"
    );
    for verb in [&["apply", "-f", &f][..], &["diff", "-f", &f][..]] {
        let r = cp.ctl(verb).expect(1);
        assert!(r.stdout.is_empty(), "{r}");
        assert!(r.stderr.contains("422"), "{r}");
        // The server and the offline check say the same, path for path.
        for p in &problems {
            assert!(r.stderr.contains(p), "{p:?} missing from\n{r}");
        }
    }
    // Malformed YAML is a 400 with the parser's reason.
    let bad = cp.file("bad.yaml", "upstreams: [\n");
    let r = cp.ctl(&["apply", "-f", &bad]).expect(1);
    assert!(
        r.stderr.contains("400") && r.stderr.contains("malformed YAML"),
        "{r}"
    );
    let v = cp.ctl(&["get", "versions", "-o", "json"]).expect(0).json();
    assert_eq!(v["versions"].as_array().map(Vec::len), Some(1));
}

#[test]
fn validate_needs_no_server() {
    let home = tempfile::tempdir().expect("dir");
    let good = home.path().join("good.yaml");
    std::fs::write(&good, BASE).expect("write");
    let bad = home.path().join("bad.yaml");
    std::fs::write(&bad, INVALID).expect("write");
    // Nothing listens there, and the config file is broken: neither matters.
    let cfg = home.path().join(".config/isame");
    std::fs::create_dir_all(&cfg).expect("dir");
    std::fs::write(cfg.join("config.yaml"), "{{{ not yaml").expect("write");
    let offline = |args: &[&str]| {
        let mut c = command(home.path());
        c.env(
            "ISAME_SERVER",
            format!("http://127.0.0.1:{}", closed_port()),
        )
        .args(args);
        run(c)
    };
    let good = good.display().to_string();
    let bad = bad.display().to_string();
    let r = offline(&["validate", "-f", &good]).expect(0);
    assert_eq!(r.stdout, format!("{good}: valid\n"));
    let v = offline(&["validate", "-f", &good, "-o", "json"])
        .expect(0)
        .json();
    assert_eq!(v["valid"], true);
    let r = offline(&["validate", "-f", &bad]).expect(1);
    assert!(r.stderr.starts_with(&format!("{bad}: ")), "{r}");
    let v = offline(&["validate", "-f", &bad, "-o", "yaml"])
        .expect(1)
        .yaml();
    assert_eq!(v["valid"], false);
    assert!(v["errors"].as_array().is_some_and(|e| e.len() >= 2), "{v}");
    let r = offline(&["validate", "-f", "/nonexistent/x.yaml"]).expect(1);
    assert!(r.stderr.contains("cannot read /nonexistent/x.yaml"), "{r}");
}

#[test]
fn a_stale_version_is_a_412() {
    let cp = Cp::start();
    cp.seed();
    let f = cp.file("changed.yaml", CHANGED);
    let r = cp.ctl(&["apply", "-f", &f, "--if-version", "7"]).expect(1);
    assert!(
        r.stderr.contains("the config changed meanwhile (412"),
        "{r}"
    );
    assert!(r.stderr.contains("version 1 is the newest"), "{r}");
    let r = cp.ctl(&["apply", "-f", &f, "--if-version", "1"]).expect(0);
    assert!(r.stdout.contains("applied as version 2"), "{r}");
}
