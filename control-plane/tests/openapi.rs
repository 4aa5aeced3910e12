//! `/api/v1/openapi.json` describes the routes the server really has: every
//! documented operation is served, and every endpoint of CONTRACT.md is
//! documented.

mod common;

use common::*;
use http::Method;

/// The REST endpoints CONTRACT.md promises, the certificate store, what
/// the dashboard reads (`/traffic`, `/whoami`) and staged rollouts.
const CONTRACT: &[(&str, &str)] = &[
    ("get", "/api/v1/config"),
    ("put", "/api/v1/config"),
    ("get", "/api/v1/schema"),
    ("get", "/api/v1/upstreams"),
    ("post", "/api/v1/upstreams"),
    ("get", "/api/v1/upstreams/{name}"),
    ("put", "/api/v1/upstreams/{name}"),
    ("delete", "/api/v1/upstreams/{name}"),
    ("post", "/api/v1/upstreams/{name}/backends"),
    ("patch", "/api/v1/upstreams/{name}/backends/{backend}"),
    ("delete", "/api/v1/upstreams/{name}/backends/{backend}"),
    ("get", "/api/v1/routes"),
    ("post", "/api/v1/routes"),
    ("get", "/api/v1/routes/{name}"),
    ("put", "/api/v1/routes/{name}"),
    ("delete", "/api/v1/routes/{name}"),
    ("get", "/api/v1/versions"),
    ("get", "/api/v1/versions/{v}"),
    ("get", "/api/v1/versions/{v}/diff"),
    ("post", "/api/v1/versions/{v}/rollback"),
    ("get", "/api/v1/nodes"),
    ("get", "/api/v1/nodes/{id}"),
    ("get", "/api/v1/audit"),
    ("get", "/api/v1/fleet"),
    ("get", "/api/v1/traffic"),
    ("get", "/api/v1/whoami"),
    ("get", "/api/v1/certificates"),
    ("get", "/api/v1/certificates/{name}"),
    ("put", "/api/v1/certificates/{name}"),
    ("delete", "/api/v1/certificates/{name}"),
    ("get", "/api/v1/rollout-policy"),
    ("put", "/api/v1/rollout-policy"),
    ("delete", "/api/v1/rollout-policy"),
    ("get", "/api/v1/rollout-policy/history"),
    ("get", "/api/v1/rollouts"),
    ("get", "/api/v1/rollouts/latest"),
    ("get", "/api/v1/rollouts/{v}"),
    ("post", "/api/v1/rollouts/{v}/pause"),
    ("post", "/api/v1/rollouts/{v}/resume"),
    ("post", "/api/v1/rollouts/{v}/promote"),
    ("post", "/api/v1/rollouts/{v}/abort"),
];

#[tokio::test]
async fn document_matches_the_routes() {
    let cp = start().await;
    seed(&cp).await;
    let r = call(cp.addr, Method::GET, "/api/v1/schema", None, &[], "").await;
    assert_eq!(r.status, 200, "the config schema needs no token");
    assert_eq!(r.headers["content-type"], "application/schema+json");
    assert_eq!(r.json(), isame_proto::config::schema::document());
    let r = call(cp.addr, Method::GET, "/api/v1/openapi.json", None, &[], "").await;
    assert_eq!(r.status, 200, "the document needs no token");
    let doc = r.json();
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "{}",
        doc["openapi"]
    );
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    let paths = doc["paths"].as_object().expect("paths");
    // Names in paths say their grammar (the one validation applies).
    for path in [
        "/api/v1/upstreams/{name}",
        "/api/v1/routes/{name}",
        "/api/v1/certificates/{name}",
        "/api/v1/nodes/{id}",
    ] {
        let param = &paths[path]["get"]["parameters"][0];
        let pattern = param["schema"]["pattern"].as_str().unwrap_or("");
        assert!(pattern.starts_with("^[A-Za-z0-9_]"), "{path}: {param}");
    }
    for (method, path) in CONTRACT {
        assert!(
            paths.get(*path).and_then(|p| p.get(*method)).is_some(),
            "{method} {path} is not documented"
        );
    }
    let mut operations = 0;
    for (path, item) in paths {
        for (method, op) in item.as_object().expect("path item") {
            operations += 1;
            assert!(
                op["responses"].as_object().is_some_and(|r| !r.is_empty()),
                "{method} {path}"
            );
            let concrete = path
                .replace("{name}", "web")
                .replace("{backend}", "127.0.0.1:3001")
                .replace("{v}", "1")
                .replace("{id}", "node-1");
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
            let body = if m == Method::GET || m == Method::DELETE {
                ""
            } else {
                "{}"
            };
            // Writes as dry runs, so that every operation can be tried on one config.
            let query = if method == "get" { "" } else { "?dry_run=true" };
            let r = call(
                cp.addr,
                m,
                &format!("{concrete}{query}"),
                Some(ADMIN),
                &[("content-type", "application/json")],
                body,
            )
            .await;
            let text = r.text();
            assert_ne!(
                r.status, 405,
                "{method} {path} is documented but not served"
            );
            assert!(
                !text.contains("no such endpoint"),
                "{method} {path} is documented but not served"
            );
            assert!(r.status.as_u16() < 500, "{method} {path}: {text}");
        }
    }
    assert_eq!(
        operations,
        CONTRACT.len(),
        "undocumented or extra operations"
    );
    assert_eq!(cp.version().await, 1, "dry runs only");
    cp.stop().await;
}

#[test]
fn document_is_generated_without_a_server() {
    let json = isame_control_plane::api::openapi_document();
    assert!(json["paths"]["/api/v1/config"]["put"]["requestBody"].is_object());
    // Config documents are described by the config model's own schema.
    assert_eq!(
        json["paths"]["/api/v1/config"]["put"]["requestBody"]["content"]["application/json"]
            ["schema"]["$ref"],
        "#/components/schemas/Config"
    );
    assert_eq!(
        json["paths"]["/api/v1/upstreams/{name}/backends"]["post"]["requestBody"]["content"]
            ["application/yaml"]["schema"]["$ref"],
        "#/components/schemas/Backend"
    );
    let config = &json["components"]["schemas"]["Config"];
    assert_eq!(config["additionalProperties"], false);
    assert_eq!(
        config["properties"]["upstreams"]["items"]["$ref"],
        "#/components/schemas/Upstream"
    );
    assert!(json["paths"]["/api/v1/config"]["put"]["responses"]["422"].is_object());
}
