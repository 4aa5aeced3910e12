//! The container deployment, checked without a Docker engine: docker-compose.yml
//! against the compose specification (deploy/check-compose.sh), every file it
//! builds from or mounts, how its services find each other, the Prometheus
//! targets, the Grafana dashboard's queries against the metrics the binaries
//! really export, the Dockerfile against the binaries the services run, and
//! the seed config against the project's own reader.

mod deploy_files;

use deploy_files::{
    authority, cargo_metadata, check_compose, grouping_labels, identifiers, is_bind, minor, panels,
    port_of, read, root, text, yaml, Compose, Exported,
};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// The metric names CONTRACT.md promises; the binaries must export each one.
const CONTRACT_METRICS: &[&str] = &[
    "isame_lb_requests_total",
    "isame_lb_request_duration_seconds",
    "isame_lb_upstream_healthy",
    "isame_lb_active_connections",
    "isame_lb_config_version",
    "isame_lb_config_reloads_total",
    "isame_lb_retries_total",
    "isame_lb_rate_limited_total",
    "isame_lb_circuit_open",
    "isame_cp_config_version",
    "isame_cp_connected_nodes",
    "isame_cp_push_seconds",
    "isame_cp_api_requests_total",
];

/// What the dashboard must show (series names as queried).
const DASHBOARD_MUST_QUERY: &[&str] = &[
    "isame_lb_requests_total",
    "isame_lb_request_duration_seconds_bucket",
    "isame_lb_upstream_healthy",
    "isame_lb_circuit_open",
    "isame_lb_config_version",
    "isame_cp_config_version",
    "isame_lb_retries_total",
    "isame_lb_rate_limited_total",
    "isame_cp_connected_nodes",
    "isame_cp_push_seconds_bucket",
];

/// The shortest bootstrap token the control plane accepts.
const MIN_ADMIN_TOKEN: usize = 32;

#[test]
fn the_high_availability_override_passes_merged_with_the_base_file() {
    let out = std::process::Command::new(root().join("deploy/check-compose.sh"))
        .arg(root().join("docker-compose.yml"))
        .arg(root().join("docker-compose.ha.yml"))
        .output()
        .expect("run deploy/check-compose.sh");
    assert!(
        out.status.success(),
        "docker-compose.ha.yml does not merge into valid compose:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let ha = std::fs::read_to_string(root().join("docker-compose.ha.yml")).expect("read");
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&ha).expect("yaml");
    let services = &doc["services"];
    // Two replicas answer to the name the data planes use, on PostgreSQL.
    for replica in ["control-plane", "control-plane-2"] {
        let s = &services[replica];
        let aliases = &s["networks"]["default"]["aliases"];
        assert!(
            aliases
                .as_sequence()
                .is_some_and(|a| a.iter().any(|n| n.as_str() == Some("control-plane"))),
            "{replica} answers to control-plane"
        );
        let command: Vec<&str> = s["command"]
            .as_sequence()
            .expect("command")
            .iter()
            .filter_map(|c| c.as_str())
            .collect();
        let url = command
            .iter()
            .skip_while(|c| **c != "--database-url")
            .nth(1)
            .expect("--database-url");
        assert!(url.starts_with("postgres://"), "{replica}: {url}");
        assert!(url.contains("@postgres:5432/"), "{replica}: {url}");
    }
    assert!(services["postgres"].is_mapping());
    assert_eq!(
        services["migrate"]["command"][3].as_str(),
        Some("migrate"),
        "the schema is migrated once before the replicas start"
    );
}

#[test]
fn compose_file_passes_the_compose_specification() {
    let out = check_compose(&root().join("docker-compose.yml"));
    assert!(
        out.status.success(),
        "docker-compose.yml is not valid compose:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_compose_check_refuses_an_invalid_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let bad = dir.path().join("docker-compose.yml");
    std::fs::write(
        &bad,
        "services:\n  web:\n    image: nginx:1.27\n    colour: blue\n",
    )
    .expect("write");
    let out = check_compose(&bad);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "an unknown key passed: {stderr}");
    assert!(
        stderr.contains("colour"),
        "the error names the key: {stderr}"
    );
}

#[test]
fn build_contexts_dockerfiles_and_bind_mounts_exist() {
    let c = Compose::load();
    let declared: BTreeSet<&String> = c.doc["volumes"]
        .as_object()
        .map(|m| m.keys().collect())
        .unwrap_or_default();
    for (name, svc) in c.services() {
        if let Some(build) = svc.get("build") {
            let (context, dockerfile) = match build {
                Value::String(ctx) => (ctx.clone(), "Dockerfile".to_owned()),
                b => (
                    text(&b["context"]),
                    b["dockerfile"].as_str().unwrap_or("Dockerfile").to_owned(),
                ),
            };
            let ctx = root().join(&context);
            assert!(ctx.is_dir(), "{name}: build context {context} is missing");
            let df = ctx.join(&dockerfile);
            assert!(df.is_file(), "{name}: {} is missing", df.display());
            if let Some(target) = build["target"].as_str() {
                let stage = format!(" as {}", target.to_lowercase());
                assert!(
                    read(&df)
                        .lines()
                        .any(|l| l.to_lowercase().starts_with("from ")
                            && l.to_lowercase().ends_with(&stage)),
                    "{name}: {dockerfile} has no stage {target}"
                );
            }
        }
        for (src, dst) in c.mounts(name) {
            if is_bind(&src) {
                assert!(
                    root().join(&src).exists(),
                    "{name}: {src} (mounted on {dst}) is missing"
                );
            } else {
                assert!(
                    declared.contains(&src),
                    "{name}: volume {src} is not declared"
                );
            }
        }
    }
}

#[test]
fn files_named_in_commands_and_environment_are_mounted() {
    let c = Compose::load();
    let mut checked = 0;
    for name in c.services().keys() {
        let mut values = c.argv(name);
        if let Some(env) = c.service(name)["environment"].as_object() {
            values.extend(env.values().map(text));
        }
        for v in values {
            let path = v.rsplit('=').next().unwrap_or_default();
            if !path.starts_with("/etc/") {
                continue;
            }
            let host = c
                .host_path(name, path)
                .unwrap_or_else(|| panic!("{name}: {path} is not mounted from the repository"));
            assert!(host.is_file(), "{name}: {} is missing", host.display());
            checked += 1;
        }
    }
    assert!(
        checked >= 4,
        "seed, prometheus, collector and grafana name config files"
    );
}

#[test]
fn images_are_pinned() {
    let c = Compose::load();
    for (name, svc) in c.services() {
        let image = svc["image"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: no image tag"));
        let tag = image.rsplit_once(':').map(|(_, t)| t).unwrap_or_default();
        assert!(
            !tag.is_empty() && !tag.contains('/') && tag != "latest",
            "{name}: image {image} is not pinned to a version"
        );
    }
}

#[test]
fn the_image_holds_every_binary_compose_runs() {
    let dockerfile = read(&root().join("Dockerfile"));
    let words: Vec<&str> = dockerfile.split_whitespace().collect();
    let built: BTreeSet<&str> = words
        .windows(2)
        .filter(|w| w[0] == "--bin")
        .map(|w| w[1])
        .collect();
    let meta = cargo_metadata(&["--no-deps"]);
    let workspace_bins: BTreeSet<String> = meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter(|t| {
            t["kind"]
                .as_array()
                .is_some_and(|k| k.contains(&"bin".into()))
        })
        .map(|t| text(&t["name"]))
        .collect();
    for bin in &built {
        assert!(
            workspace_bins.contains(*bin),
            "Dockerfile builds unknown --bin {bin}"
        );
        assert!(
            dockerfile.contains(&format!("target/release/{bin}")),
            "Dockerfile builds {bin} but does not copy it into the image"
        );
    }
    let c = Compose::load();
    let services = c.isame_services();
    assert!(
        services.len() >= 7,
        "compose runs the Isame services: {services:?}"
    );
    for (name, bin) in services {
        assert!(
            built.contains(bin.as_str()),
            "{name} runs {bin}, which the Dockerfile does not build"
        );
        assert!(
            c.service(&name)["build"].is_object(),
            "{name} runs the image it builds"
        );
    }
}

#[test]
fn the_builder_toolchain_can_build_cargo_lock() {
    let dockerfile = read(&root().join("Dockerfile"));
    let arg = dockerfile
        .lines()
        .find_map(|l| l.trim().strip_prefix("ARG RUST_VERSION="))
        .expect("Dockerfile sets ARG RUST_VERSION");
    assert!(dockerfile.contains("FROM rust:${RUST_VERSION}-bookworm AS builder"));
    assert!(dockerfile.contains("FROM debian:bookworm-slim AS runtime"));
    // Linux images on both common hosts (amd64 servers, arm64 laptops).
    let meta = cargo_metadata(&[
        "--filter-platform",
        "x86_64-unknown-linux-gnu",
        "--filter-platform",
        "aarch64-unknown-linux-gnu",
    ]);
    let (needed, by) = meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .filter_map(|p| Some((minor(p["rust_version"].as_str()?), text(&p["name"]))))
        .max()
        .expect("packages declare rust-version");
    assert!(
        minor(arg) >= needed,
        "the Docker builder has Rust {arg}, but {by} in Cargo.lock needs {}.{}",
        needed.0,
        needed.1
    );
}

#[test]
fn services_find_each_other_and_share_one_token() {
    let c = Compose::load();
    let cps = c.running("isame-control-plane");
    assert_eq!(cps.len(), 1, "one control plane");
    let cp = &cps[0];
    let api = c.flag(cp, "--api-listen").expect("--api-listen");
    let grpc = c.flag(cp, "--grpc-listen").expect("--grpc-listen");
    assert!(api.starts_with("0.0.0.0:") && grpc.starts_with("0.0.0.0:"));
    let db = c.flag(cp, "--database-url").expect("--database-url");
    let db_dir = db
        .strip_prefix("sqlite://")
        .and_then(|p| p.rsplit_once('/'))
        .map(|(dir, _)| dir.to_owned())
        .expect("sqlite:///absolute/path");
    assert!(
        c.mounts(cp)
            .iter()
            .any(|(src, dst)| !is_bind(src) && *dst == db_dir),
        "the database directory {db_dir} is a named volume"
    );

    let token = c.env(cp, "ISAME_ADMIN_TOKEN").expect("ISAME_ADMIN_TOKEN");
    let default = token
        .strip_prefix("${ISAME_ADMIN_TOKEN:-")
        .and_then(|t| t.strip_suffix('}'))
        .expect("the token comes from ISAME_ADMIN_TOKEN with a default");
    assert!(
        default.len() >= MIN_ADMIN_TOKEN,
        "the default token is too short"
    );

    let lbs = c.running("isame-lb");
    assert_eq!(lbs.len(), 2, "two data planes");
    let mut caches = BTreeSet::new();
    for lb in &lbs {
        let url = c.flag(lb, "--control-plane").expect("--control-plane");
        assert_eq!(authority(&url), format!("{cp}:{}", port_of(&grpc)), "{lb}");
        assert_eq!(c.flag(lb, "--node-id").as_deref(), Some(lb.as_str()));
        assert_eq!(c.env(lb, "ISAME_TOKEN"), Some(token.clone()), "{lb}");
        let cache = c.flag(lb, "--cache-dir").expect("--cache-dir");
        let vol = c.mounts(lb).into_iter().find(|(_, dst)| *dst == cache);
        caches.insert(
            vol.unwrap_or_else(|| panic!("{lb}: no volume on {cache}"))
                .0,
        );
        assert!(
            c.service(lb)["depends_on"][cp].is_object(),
            "{lb} waits for {cp}"
        );
    }
    assert_eq!(caches.len(), lbs.len(), "each data plane has its own cache");

    let seeds = c.running("isame-ctl");
    assert_eq!(seeds.len(), 1, "one seed job");
    let seed = &seeds[0];
    let server = c.flag(seed, "--server").expect("--server");
    assert_eq!(authority(&server), format!("{cp}:{}", port_of(&api)));
    assert_eq!(c.env(seed, "ISAME_TOKEN"), Some(token));
    assert_eq!(
        c.service(seed)["depends_on"][cp]["condition"],
        "service_healthy"
    );

    // The demo backends are no part of Isame and export nothing.
    for (name, _) in c.isame_services().iter().filter(|(_, b)| b != "isame-echo") {
        let otlp = c.env(name, "OTEL_EXPORTER_OTLP_ENDPOINT");
        assert_eq!(
            otlp.as_deref(),
            Some("http://otel-collector:4317"),
            "{name}"
        );
        assert!(c.env(name, "OTEL_SERVICE_NAME").is_some(), "{name}");
    }
    let otel = yaml(
        &c.host_path("otel-collector", "/etc/otelcol-contrib/config.yaml")
            .expect("mounted"),
    );
    let otlp = &otel["receivers"]["otlp"]["protocols"];
    assert_eq!(port_of(&text(&otlp["grpc"]["endpoint"])), "4317");
    assert_eq!(port_of(&text(&otlp["http"]["endpoint"])), "4318");
    let pipelines = otel["service"]["pipelines"].as_object().expect("pipelines");
    assert!(pipelines.contains_key("traces"));
}

/// The config the prometheus service runs with (its --config.file, mounted).
fn prometheus_config(c: &Compose) -> Value {
    let file = c
        .flag("prometheus", "--config.file")
        .expect("--config.file");
    yaml(&c.host_path("prometheus", &file).expect("mounted"))
}

#[test]
fn prometheus_scrapes_the_control_plane_and_every_data_plane() {
    let c = Compose::load();
    let prom = prometheus_config(&c);
    // Files the config names (rules, file-based discovery) are mounted too.
    let mut files: Vec<String> = prom["rule_files"]
        .as_array()
        .into_iter()
        .flatten()
        .map(text)
        .collect();
    for job in prom["scrape_configs"].as_array().into_iter().flatten() {
        for sd in job["file_sd_configs"].as_array().into_iter().flatten() {
            files.extend(sd["files"].as_array().into_iter().flatten().map(text));
        }
    }
    for f in files {
        let host = c.host_path("prometheus", &f);
        assert!(
            host.is_some_and(|h| h.is_file()),
            "prometheus reads {f}, which is not mounted"
        );
    }
    // target -> (metrics path, labels)
    let mut targets: BTreeMap<String, (String, Value)> = BTreeMap::new();
    for job in prom["scrape_configs"].as_array().expect("scrape_configs") {
        let path = job["metrics_path"]
            .as_str()
            .unwrap_or("/metrics")
            .to_owned();
        for sc in job["static_configs"].as_array().expect("static_configs") {
            for t in sc["targets"].as_array().expect("targets") {
                let t = text(t);
                let host = t.split(':').next().unwrap_or_default();
                assert!(
                    host == "localhost" || c.services().contains_key(host),
                    "prometheus scrapes {t}, which is no compose service"
                );
                targets.insert(t, (path.clone(), sc["labels"].clone()));
            }
        }
    }
    let cp = &c.running("isame-control-plane")[0];
    let api = c.flag(cp, "--api-listen").expect("--api-listen");
    let want = format!("{cp}:{}", port_of(&api));
    assert_eq!(
        targets.get(&want).map(|t| t.0.as_str()),
        Some("/metrics"),
        "{want}"
    );
    for lb in c.running("isame-lb") {
        let admin = c.flag(&lb, "--admin-listen").expect("--admin-listen");
        let want = format!("{lb}:{}", port_of(&admin));
        let (path, labels) = targets
            .get(&want)
            .unwrap_or_else(|| panic!("{want} not scraped"));
        assert_eq!(path, "/metrics");
        assert_eq!(
            labels["node"],
            lb.as_str(),
            "{want} is labelled with its node id"
        );
    }
}

#[test]
fn grafana_provisioning_and_dashboard_queries_use_exported_metrics() {
    let c = Compose::load();
    let provisioning = c
        .host_path("grafana", "/etc/grafana/provisioning")
        .expect("grafana provisioning is mounted");
    let mut uids = BTreeSet::new();
    for entry in std::fs::read_dir(provisioning.join("datasources")).expect("datasources/") {
        let doc = yaml(&entry.expect("entry").path());
        for ds in doc["datasources"].as_array().expect("datasources") {
            let url = text(&ds["url"]);
            let host = authority(&url).split(':').next().unwrap_or_default();
            assert!(
                c.services().contains_key(host),
                "datasource {url} is no compose service"
            );
            uids.insert(text(&ds["uid"]));
        }
    }
    let mut dashboards = Vec::new();
    for entry in std::fs::read_dir(provisioning.join("dashboards")).expect("dashboards/") {
        let doc = yaml(&entry.expect("entry").path());
        for provider in doc["providers"].as_array().expect("providers") {
            let path = text(&provider["options"]["path"]);
            let dir = c
                .host_path("grafana", &path)
                .unwrap_or_else(|| panic!("dashboard path {path} is not mounted"));
            for f in std::fs::read_dir(&dir).expect("dashboard dir") {
                let f = f.expect("entry").path();
                if f.extension().is_some_and(|e| e == "json") {
                    dashboards.push(f);
                }
            }
        }
    }
    assert!(!dashboards.is_empty(), "a dashboard is provisioned");

    let exported = Exported::read();
    for name in CONTRACT_METRICS {
        assert!(
            exported.names.contains(*name),
            "{name} (CONTRACT.md) is not exported"
        );
    }
    // Labels a query may group by: the metrics' own, the histogram bucket,
    // and those Prometheus adds to every series it scrapes.
    let mut labels = exported.labels.clone();
    labels.extend(["le", "instance", "job"].map(String::from));
    let prom = prometheus_config(&c);
    for job in prom["scrape_configs"].as_array().into_iter().flatten() {
        for sc in job["static_configs"].as_array().into_iter().flatten() {
            labels.extend(
                sc["labels"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, _)| k.clone()),
            );
        }
    }

    let mut queried = BTreeSet::new();
    for path in dashboards {
        let d: Value = serde_json::from_str(&read(&path))
            .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
        let mut exprs: Vec<(String, String)> = Vec::new();
        let mut ids = BTreeSet::new();
        for p in panels(&d["panels"]) {
            let title = text(&p["title"]);
            assert!(
                ids.insert(p["id"].to_string()),
                "panel id {} twice",
                p["id"]
            );
            if p["type"] == "row" {
                continue;
            }
            if let Some(uid) = p["datasource"]["uid"].as_str() {
                assert!(
                    uids.contains(uid),
                    "{title}: datasource {uid} is not provisioned"
                );
            }
            let targets = p["targets"].as_array().filter(|t| !t.is_empty());
            for t in targets.unwrap_or_else(|| panic!("panel {title} has no query")) {
                exprs.push((title.clone(), text(&t["expr"])));
            }
        }
        for v in d["templating"]["list"].as_array().into_iter().flatten() {
            exprs.push((text(&v["name"]), text(&v["query"]["query"])));
        }
        for (title, expr) in exprs {
            let metrics: Vec<String> = identifiers(&expr)
                .into_iter()
                .filter(|i| i.starts_with("isame_"))
                .collect();
            assert!(
                !metrics.is_empty(),
                "{title}: {expr} queries no Isame metric"
            );
            for m in metrics {
                assert!(
                    exported.has_series(&m),
                    "{title}: {m} is not exported by Isame ({expr})"
                );
                queried.insert(m);
            }
            for l in grouping_labels(&expr) {
                assert!(
                    labels.contains(&l),
                    "{title}: no metric has the label {l} ({expr})"
                );
            }
        }
    }
    for m in DASHBOARD_MUST_QUERY {
        assert!(queried.contains(*m), "the dashboard does not show {m}");
    }
}

#[test]
fn the_seed_config_is_valid_and_names_the_compose_backends() {
    let c = Compose::load();
    let seed = &c.running("isame-ctl")[0];
    let file = c.flag(seed, "-f").expect("apply -f FILE");
    let host = c
        .host_path(seed, &file)
        .expect("the seed config is mounted");
    let config = isame_proto::Config::from_yaml(&read(&host)).unwrap_or_else(|e| {
        let problems: Vec<String> = e.iter().map(ToString::to_string).collect();
        panic!("{}: {}", host.display(), problems.join("; "))
    });

    let echo: BTreeMap<String, String> = c
        .running("isame-echo")
        .into_iter()
        .map(|s| {
            let port = port_of(&c.flag(&s, "--listen").expect("--listen")).to_owned();
            (s, port)
        })
        .collect();
    assert_eq!(echo.len(), 3, "three demo backends");
    let mut used = BTreeSet::new();
    for u in &config.upstreams {
        for b in &u.backends {
            let addr = authority(&b.url);
            let (svc, port) = addr.split_once(':').expect("backend port");
            assert_eq!(echo.get(svc).map(String::as_str), Some(port), "{}", b.url);
            used.insert(svc.to_owned());
        }
    }
    assert_eq!(
        used.len(),
        echo.len(),
        "every demo backend is in the config"
    );
    assert_eq!(config.health.path, "/health", "isame-echo answers /health");
    assert!(config.health.enabled);
    assert!(config.metrics.enabled && config.metrics.address.is_unspecified());
    for lb in c.running("isame-lb") {
        let listen = c.flag(&lb, "--listen").expect("--listen");
        assert_eq!(port_of(&listen), config.server.port.to_string(), "{lb}");
        let admin = c.flag(&lb, "--admin-listen").expect("--admin-listen");
        assert_eq!(port_of(&admin), config.metrics.port.to_string(), "{lb}");
    }
}

#[test]
fn promql_reading_finds_metrics_and_grouping_labels() {
    let expr = r#"histogram_quantile(0.99, sum by (le, upstream) (rate(isame_lb_request_duration_seconds_bucket{node=~"isame_x|$node", status!="5.."}[$__rate_interval]))) / on() group_left max without(backend) (isame_cp_config_version)"#;
    let metrics: Vec<String> = identifiers(expr)
        .into_iter()
        .filter(|i| i.starts_with("isame_"))
        .collect();
    assert_eq!(
        metrics,
        [
            "isame_lb_request_duration_seconds_bucket",
            "isame_cp_config_version"
        ]
    );
    let mut labels = grouping_labels(expr);
    labels.sort();
    assert_eq!(labels, ["backend", "le", "upstream"]);
}
