//! The certificate store over real HTTP and gRPC: uploads are checked and
//! never shown back with their key, configs name certificates, replacing a
//! named one is a new version pushed to nodes with its key, and removing a
//! named one is refused.

mod common;

use common::{call, seed, start, Subscriber, ADMIN};
use http::Method;
use isame_control_plane::app;
use isame_control_plane::store::Role;
use isame_testkit::tls::{KeyKind, TestCa};
use serde_json::{json, Value};

fn upload(cert: &str, key: &str) -> String {
    json!({"cert_pem": cert, "key_pem": key}).to_string()
}

/// The base config with TLS on, naming stored certificate `main` (and
/// `shop` for SNI when `with_shop`).
fn tls_config(with_shop: bool) -> String {
    let mut c = format!(
        "{}server:\n  https_port: 8443\ntls:\n  enabled: true\n  certificate: main\n",
        common::base_config()
    );
    if with_shop {
        c.push_str("  certificates:\n    - certificate: shop\n");
    }
    c
}

#[tokio::test]
async fn uploads_are_checked_and_keys_never_come_back() {
    let cp = start().await;
    let ca = TestCa::new();
    let good = ca.issue(&["example.com", "www.example.com"], KeyKind::Ecdsa);
    let r = cp
        .admin(
            Method::PUT,
            "/api/v1/certificates/main",
            &upload(&good.cert_pem, &good.key_pem),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let body = r.json();
    assert_eq!(body["created"], true);
    assert_eq!(
        body["certificate"]["names"],
        json!(["example.com", "www.example.com"])
    );
    assert_eq!(body["certificate"]["in_use"], json!([]));
    assert!(body["version"].is_null(), "no config names it: no version");

    // Reads show the certificate and what it says, never the key.
    for path in ["/api/v1/certificates", "/api/v1/certificates/main"] {
        let r = cp.get(path).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(!r.text().contains("PRIVATE KEY"), "{path} leaks the key");
    }
    let one = cp.get("/api/v1/certificates/main").await.json();
    assert_eq!(one["cert_pem"], good.cert_pem.as_str());
    assert_eq!(one["fingerprint_sha256"].as_str().map(str::len), Some(64));
    assert!(one["not_after"]
        .as_str()
        .is_some_and(|t| t.starts_with("2100-01-01")));

    // The same upload again changes nothing.
    let again = cp
        .admin(
            Method::PUT,
            "/api/v1/certificates/main",
            &upload(&good.cert_pem, &good.key_pem),
        )
        .await;
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(again.json()["changed"], false);

    // Every bad upload is a 422 naming the field, and stores nothing.
    let other = ca.issue(&["other.example"], KeyKind::Ecdsa);
    let expired = ca.issue_expired(&["old.example"]);
    type Case<'a> = (String, String, Vec<(&'a str, &'a str)>);
    let cases: Vec<Case> = vec![
        (
            "/api/v1/certificates/bad".into(),
            upload("not a certificate", "nor a key"),
            vec![
                ("cert_pem", "holds no PEM certificate"),
                ("key_pem", "holds no PEM private key"),
            ],
        ),
        (
            "/api/v1/certificates/bad".into(),
            upload(&good.cert_pem, &other.key_pem),
            vec![("key_pem", "does not match the certificate")],
        ),
        (
            "/api/v1/certificates/bad".into(),
            upload(&expired.cert_pem, &expired.key_pem),
            vec![("cert_pem", "the certificate expired on")],
        ),
        (
            "/api/v1/certificates/bad".into(),
            json!({"cert_pem": good.cert_pem, "key": good.key_pem}).to_string(),
            vec![("key_pem", "required"), ("key", "unknown field")],
        ),
        (
            "/api/v1/certificates/bad".into(),
            upload(&format!("{}{}", good.cert_pem, good.key_pem), &good.key_pem),
            vec![("cert_pem", "holds a section other than certificates")],
        ),
        (
            "/api/v1/certificates/no%20spaces".into(),
            upload(&good.cert_pem, &good.key_pem),
            vec![("name", "may only contain")],
        ),
    ];
    for (path, body, expected) in cases {
        let r = cp.admin(Method::PUT, &path, &body).await;
        assert_eq!(r.status, 422, "{path} {body}: {}", r.text());
        let errors = r.json()["errors"].clone();
        for (at, message) in expected {
            assert!(
                errors
                    .as_array()
                    .is_some_and(|all| all.iter().any(|e| e["path"] == at
                        && e["message"].as_str().is_some_and(|m| m.contains(message)))),
                "{at}: {message} missing from {errors}"
            );
        }
    }
    let all = cp.get("/api/v1/certificates").await.json();
    assert_eq!(all["certificates"].as_array().map(Vec::len), Some(1));

    // A viewer reads the list but cannot upload or remove.
    let viewer = app::create_token(cp.cp.configs.store(), "viewer", Role::Viewer)
        .await
        .expect("viewer token");
    let r = call(
        cp.addr,
        Method::GET,
        "/api/v1/certificates",
        Some(&viewer),
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, 200);
    for method in [Method::PUT, Method::DELETE] {
        let r = call(
            cp.addr,
            method,
            "/api/v1/certificates/main",
            Some(&viewer),
            &[],
            upload(&good.cert_pem, &good.key_pem),
        )
        .await;
        assert_eq!(r.status, 403, "{}", r.text());
    }

    // Uploads are audited.
    let audit = cp.get("/api/v1/audit").await.json();
    let puts = audit["entries"].as_array().map(|e| {
        e.iter()
            .filter(|e| e["action"] == "certificate.put")
            .count()
    });
    assert_eq!(puts, Some(1), "{audit}");
}

#[tokio::test]
async fn configs_name_certificates_and_nodes_receive_them() {
    let cp = start().await;
    seed(&cp).await;
    let ca = TestCa::new();
    let main = ca.issue(&["example.com"], KeyKind::Ecdsa);
    let shop = ca.issue(&["shop.example"], KeyKind::Rsa);

    // A name the store does not have is a validation error at its path.
    let r = cp
        .admin(Method::PUT, "/api/v1/config", &tls_config(true))
        .await;
    assert_eq!(r.status, 422, "{}", r.text());
    let errors = r.json()["errors"].clone();
    for path in ["tls.certificate", "tls.certificates[0].certificate"] {
        assert!(
            errors
                .as_array()
                .is_some_and(|e| e.iter().any(|e| e["path"] == path)),
            "{path} not in {errors}"
        );
    }

    for (name, pair) in [("main", &main), ("shop", &shop)] {
        let r = cp
            .admin(
                Method::PUT,
                &format!("/api/v1/certificates/{name}"),
                &upload(&pair.cert_pem, &pair.key_pem),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text());
    }
    let r = cp
        .admin(Method::PUT, "/api/v1/config", &tls_config(true))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let named_version = r.json()["version"].as_u64().expect("version");
    let listed = cp.get("/api/v1/certificates/shop").await.json();
    assert_eq!(listed["in_use"], json!(["tls.certificates[0].certificate"]));

    // A node gets both certificates with their keys in the snapshot.
    let mut node = Subscriber::connect(cp.cp.grpc_addr, ADMIN, "node-1")
        .await
        .expect("subscribed");
    let s = node.snapshot().await;
    assert_eq!(s.version, named_version);
    let mut got: Vec<(&str, &str, &str)> = s
        .certificates
        .iter()
        .map(|c| (c.name.as_str(), c.cert_pem.as_str(), c.key_pem.as_str()))
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("main", main.cert_pem.as_str(), main.key_pem.as_str()),
            ("shop", shop.cert_pem.as_str(), shop.key_pem.as_str()),
        ]
    );
    node.ack(s.version).await;

    // Replacing a named certificate is a new version, pushed at once.
    let renewed = ca.issue(&["example.com"], KeyKind::Ecdsa);
    let r = cp
        .admin(
            Method::PUT,
            "/api/v1/certificates/main",
            &upload(&renewed.cert_pem, &renewed.key_pem),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let replaced_version = r.json()["version"].as_u64().expect("a new version");
    assert_eq!(replaced_version, named_version + 1);
    let v = cp
        .get(&format!("/api/v1/versions/{replaced_version}"))
        .await
        .json();
    assert_eq!(v["changes"][0]["path"], "certificates[main]", "{v}");
    let s = node.snapshot().await;
    assert_eq!(s.version, replaced_version);
    let pushed = s
        .certificates
        .iter()
        .find(|c| c.name == "main")
        .expect("main pushed");
    assert_eq!(pushed.key_pem, renewed.key_pem);

    // A named certificate cannot be removed; an unnamed one can.
    let r = cp
        .admin(Method::DELETE, "/api/v1/certificates/shop", "")
        .await;
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(r.text().contains("tls.certificates[0].certificate"));
    let r = cp
        .admin(Method::PUT, "/api/v1/config", &tls_config(false))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = cp
        .admin(Method::DELETE, "/api/v1/certificates/shop", "")
        .await;
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(cp.get("/api/v1/certificates/shop").await.status, 404);
    let r = cp
        .admin(Method::DELETE, "/api/v1/certificates/shop", "")
        .await;
    assert_eq!(r.status, 404);

    // Rolling back to a version that named the removed certificate is
    // refused, with the path.
    let r = cp
        .admin(
            Method::POST,
            &format!("/api/v1/versions/{named_version}/rollback"),
            "",
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(r.text().contains("tls.certificates[0].certificate"));

    // After a restart the newest version still carries its certificates.
    let newest = cp.version().await;
    let dir = cp.stop().await;
    let cp = common::start_in(dir, Some(ADMIN)).await;
    let mut node = Subscriber::connect(cp.cp.grpc_addr, ADMIN, "node-2")
        .await
        .expect("subscribed");
    let s = node.snapshot().await;
    assert_eq!(s.version, newest);
    let names: Vec<&str> = s.certificates.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["main"]);
    assert_eq!(s.certificates[0].key_pem, renewed.key_pem);
    let v: Value = cp.get("/api/v1/config").await.json();
    assert_eq!(v["tls"]["certificate"], "main");
}

#[tokio::test]
async fn a_config_cannot_name_a_certificate_that_expired_since_its_upload() {
    use isame_control_plane::store::{CertificateMeta, Material, NewAudit, NewCertificate};
    let cp = start().await;
    seed(&cp).await;
    let ca = TestCa::new();
    let pair = ca.issue(&["example.com"], KeyKind::Ecdsa);
    // As if uploaded while valid, and the calendar moved on since.
    let id = isame_control_plane::store::material_id(&pair.cert_pem, &pair.key_pem);
    let stored = NewCertificate {
        meta: CertificateMeta {
            name: "main".into(),
            id: id.clone(),
            fingerprint_sha256: "00".repeat(32),
            subject: "CN=example.com".into(),
            issuer: "CN=isame test CA".into(),
            names: vec!["example.com".into()],
            not_before: 1_000,
            not_after: 2_000,
            created_at: 0,
            updated_at: 0,
            updated_by: "test".into(),
        },
        material: Material {
            id,
            cert_pem: pair.cert_pem.clone(),
            key_pem: pair.key_pem.clone(),
        },
    };
    let audit = NewAudit {
        actor: "test".into(),
        remote_addr: String::new(),
        action: "certificate.put".into(),
        target: "main".into(),
        message: String::new(),
        changes: Vec::new(),
    };
    cp.cp
        .configs
        .store()
        .put_certificate(stored, audit)
        .await
        .expect("stored");
    let before = cp.version().await;
    let r = cp
        .admin(Method::PUT, "/api/v1/config", &tls_config(false))
        .await;
    assert_eq!(r.status, 422, "{}", r.text());
    let e = &r.json()["errors"][0];
    assert_eq!(e["path"], "tls.certificate");
    assert!(
        e["message"]
            .as_str()
            .is_some_and(|m| m.contains("expired on 1970")),
        "{e}"
    );
    assert_eq!(cp.version().await, before, "nothing committed");
}

#[tokio::test]
async fn a_second_writer_on_the_same_database_cannot_remove_a_named_certificate() {
    // Neither follows the other's commits: A must stay behind.
    let a = common::start_with(tempfile::tempdir().expect("dir"), Some(ADMIN), |o| {
        o.replica.follow = false;
    })
    .await;
    seed(&a).await;
    let url = a.db_url();
    let b = common::start_with(tempfile::tempdir().expect("dir"), Some(ADMIN), |o| {
        o.database_url = url.clone();
        o.replica.follow = false;
    })
    .await;
    let ca = TestCa::new();
    let pair = ca.issue(&["example.com"], KeyKind::Ecdsa);
    let r = a
        .admin(
            Method::PUT,
            "/api/v1/certificates/main",
            &upload(&pair.cert_pem, &pair.key_pem),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    // B names it; A has not seen that version.
    let r = b
        .admin(Method::PUT, "/api/v1/config", &tls_config(false))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let named = r.json()["version"].as_u64().expect("version");
    let r = a
        .admin(Method::DELETE, "/api/v1/certificates/main", "")
        .await;
    assert_eq!(r.status, 412, "{}", r.text());
    assert_eq!(r.json()["current_version"], named);
    // A caught up: now it knows the certificate is in use.
    let r = a
        .admin(Method::DELETE, "/api/v1/certificates/main", "")
        .await;
    assert_eq!(r.status, 409, "{}", r.text());
    assert_eq!(a.get("/api/v1/certificates/main").await.status, 200);
    b.cp.shutdown().await;
    a.stop().await;
}

#[tokio::test]
async fn keys_no_version_served_leave_the_database() {
    let cp = start().await;
    seed(&cp).await;
    let ca = TestCa::new();
    let first = ca.issue(&["example.com"], KeyKind::Ecdsa);
    let second = ca.issue(&["example.com"], KeyKind::Ecdsa);
    let db = cp.db().await;
    let keys = || async {
        db.one::<i64>("SELECT COUNT(*) FROM certificate_material")
            .await
    };
    for pair in [&first, &second] {
        let r = cp
            .admin(
                Method::PUT,
                "/api/v1/certificates/spare",
                &upload(&pair.cert_pem, &pair.key_pem),
            )
            .await;
        assert!(r.status.is_success(), "{}", r.text());
    }
    assert_eq!(keys().await, 1, "the replaced key was never served");
    // Served by a version, then removed from the config: the key stays for
    // that version; the name can go.
    let r = cp
        .admin(
            Method::PUT,
            "/api/v1/config",
            &tls_config(false).replace("main", "spare"),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = cp
        .admin(Method::PUT, "/api/v1/config", common::base_config())
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        cp.admin(Method::DELETE, "/api/v1/certificates/spare", "")
            .await
            .status,
        204
    );
    assert_eq!(keys().await, 1, "a version served it");
    // Never served: gone with its name.
    let r = cp
        .admin(
            Method::PUT,
            "/api/v1/certificates/unused",
            &upload(&first.cert_pem, &first.key_pem),
        )
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(keys().await, 2);
    assert_eq!(
        cp.admin(Method::DELETE, "/api/v1/certificates/unused", "")
            .await
            .status,
        204
    );
    assert_eq!(keys().await, 1);
    db.close().await;
}
