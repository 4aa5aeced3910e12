//! Where the server and token come from (flags > environment > config file
//! > default), what failures look like, exit codes, completion, https.

use crate::common::*;
use isame_control_plane::store::Role;
use std::path::Path;

/// Writes `text` as the default config file under `home`.
fn config_file(home: &Path, text: &str) {
    let dir = home.join(".config/isame");
    std::fs::create_dir_all(&dir).expect("dir");
    write_private(&dir.join("config.yaml"), text);
}

fn write_private(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
}

#[test]
fn completion_needs_nothing() {
    let home = tempfile::tempdir().expect("dir");
    let mut c = command(home.path());
    c.args(["completion", "bash"]);
    let r = run(c).expect(0);
    assert!(r.stdout.contains("isame-ctl"), "{r}");
    assert!(r.stdout.contains("complete -F"), "{r}");
    for shell in ["zsh", "fish"] {
        let mut c = command(home.path());
        c.args(["completion", shell]);
        assert!(!run(c).expect(0).stdout.is_empty());
    }
}

#[test]
fn usage_errors_exit_2() {
    let home = tempfile::tempdir().expect("dir");
    for args in [
        &[][..],
        &["get", "bogus"][..],
        &["apply"][..],
        &["backend", "weight", "web", "127.0.0.1:1", "heavy"][..],
        &["history", "--limit", "0"][..],
        &["get", "upstreams", "-o", "xml"][..],
        &["--no-such-flag", "status"][..],
    ] {
        let mut c = command(home.path());
        c.args(args);
        let r = run(c).expect(2);
        assert!(r.stdout.is_empty(), "{args:?}: {r}");
        assert!(!r.stderr.is_empty(), "{args:?}: {r}");
    }
    let mut c = command(home.path());
    c.arg("--help");
    assert!(run(c).expect(0).stdout.contains("rollback"));
}

#[test]
fn an_unreachable_server_is_named_with_the_reason() {
    let home = tempfile::tempdir().expect("dir");
    let port = closed_port();
    let mut c = command(home.path());
    c.env("ISAME_SERVER", format!("http://127.0.0.1:{port}"))
        .args(["get", "upstreams"]);
    let r = run(c).expect(1);
    assert!(r.stdout.is_empty(), "{r}");
    assert!(
        r.stderr.contains(&format!(
            "cannot reach the control plane at http://127.0.0.1:{port}: "
        )),
        "{r}"
    );
    assert!(
        r.stderr.to_lowercase().contains("refused"),
        "the reason: {r}"
    );
    let mut c = command(home.path());
    c.args(["--server", "127.0.0.1:7070", "status"]);
    let r = run(c).expect(1);
    assert!(
        r.stderr.contains("must start with http:// or https://"),
        "{r}"
    );
}

#[test]
fn tokens_are_checked() {
    let cp = Cp::start();
    cp.seed();
    let r = cp
        .ctl_as(Some("not-a-valid-token"), &["get", "upstreams"])
        .expect(1);
    assert!(
        r.stderr.contains("token rejected (401 Unauthorized)"),
        "{r}"
    );
    let r = cp.ctl_as(None, &["get", "upstreams"]).expect(1);
    assert!(r.stderr.contains("no token given (401"), "{r}");

    let viewer = cp.token("dashboard", Role::Viewer);
    cp.ctl_as(Some(&viewer), &["get", "upstreams"]).expect(0);
    cp.ctl_as(Some(&viewer), &["status"]).expect(0);
    let f = cp.file("base.yaml", BASE);
    for args in [
        &["apply", "-f", &f][..],
        &["diff", "-f", &f][..],
        &["backend", "drain", "web", "127.0.0.1:3001"][..],
        &["rollback", "1"][..],
    ] {
        let r = cp.ctl_as(Some(&viewer), args).expect(1);
        assert!(
            r.stderr
                .contains("not allowed: viewer token (403 Forbidden)"),
            "{args:?}: {r}"
        );
    }
}

#[test]
fn flags_beat_environment_beats_file_beats_default() {
    let cp = Cp::start();
    cp.seed();
    let dead = format!("http://127.0.0.1:{}", closed_port());
    let home = tempfile::tempdir().expect("dir");
    let get = |setup: &dyn Fn(&mut std::process::Command)| {
        let mut c = command(home.path());
        setup(&mut c);
        c.args(["get", "upstreams", "-o", "json"]);
        run(c)
    };

    // (With nothing anywhere the default address is used: see the unit
    // tests, which need not assume that nothing listens on it.)

    // The file alone is enough.
    config_file(
        home.path(),
        &format!("server: {}\ntoken: {ADMIN}\n", cp.url()),
    );
    assert_eq!(get(&|_| {}).expect(0).json()["version"], 1);

    // The environment beats the file, for the server and the token.
    let r = get(&|c| {
        c.env("ISAME_SERVER", &dead);
    })
    .expect(1);
    assert!(r.stderr.contains(&dead), "{r}");
    let r = get(&|c| {
        c.env("ISAME_TOKEN", "wrong-token");
    })
    .expect(1);
    assert!(r.stderr.contains("token rejected"), "{r}");

    // A flag beats the environment.
    get(&|c| {
        c.env("ISAME_SERVER", &dead).args(["--server", &cp.url()]);
    })
    .expect(0);
    get(&|c| {
        c.env("ISAME_TOKEN", "wrong-token").args(["--token", ADMIN]);
    })
    .expect(0);

    // The file in a file with a wrong token: the environment's token wins.
    config_file(
        home.path(),
        &format!("server: {}\ntoken: wrong-token\n", cp.url()),
    );
    get(&|c| {
        c.env("ISAME_TOKEN", ADMIN);
    })
    .expect(0);

    // Without XDG_CONFIG_HOME, ~/.config is the place.
    config_file(
        home.path(),
        &format!("server: {}\ntoken: {ADMIN}\n", cp.url()),
    );
    get(&|c| {
        c.env_remove("XDG_CONFIG_HOME");
    })
    .expect(0);
    // With it, $XDG_CONFIG_HOME/isame/config.yaml is the place.
    let xdg = home.path().join("xdg");
    std::fs::create_dir_all(xdg.join("isame")).expect("dir");
    write_private(&xdg.join("isame/config.yaml"), &format!("server: {dead}\n"));
    let r = get(&|c| {
        c.env("XDG_CONFIG_HOME", &xdg);
    })
    .expect(1);
    assert!(r.stderr.contains(&dead), "{r}");

    // --config and ISAME_CTL_CONFIG point elsewhere; they must exist.
    let other = home.path().join("other.yaml");
    write_private(&other, &format!("server: {dead}\n"));
    let r = get(&|c| {
        c.env("ISAME_CTL_CONFIG", &other);
    })
    .expect(1);
    assert!(r.stderr.contains(&dead), "{r}");
    let r = get(&|c| {
        c.env("ISAME_CTL_CONFIG", "/nonexistent/isame.yaml")
            .args(["--config", &other.display().to_string()]);
    })
    .expect(1);
    assert!(r.stderr.contains(&dead), "the flag wins: {r}");
    let r = get(&|c| {
        c.args(["--config", "/nonexistent/isame.yaml"]);
    })
    .expect(1);
    assert!(
        r.stderr
            .contains("cannot read config file /nonexistent/isame.yaml"),
        "{r}"
    );

    // A broken file is an error naming it, even when flags say everything.
    config_file(home.path(), "server: [unclosed\n");
    let r = get(&|c| {
        c.args(["--server", &cp.url(), "--token", ADMIN]);
    })
    .expect(1);
    let file = home.path().join(".config/isame/config.yaml");
    assert!(
        r.stderr
            .contains(&format!("config file {} is not valid", file.display())),
        "{r}"
    );
    config_file(home.path(), "sever: http://typo\n");
    let r = get(&|_| {}).expect(1);
    assert!(r.stderr.contains("unknown field `sever`"), "{r}");

    // A token in a file others can read gets a warning.
    config_file(
        home.path(),
        &format!("server: {}\ntoken: {ADMIN}\n", cp.url()),
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let r = get(&|_| {}).expect(0);
        assert!(r.stderr.contains("other users can read it"), "{r}");
    }
}

#[test]
fn https_uses_the_system_roots() {
    let cp = Cp::start();
    cp.seed();
    let ca = isame_testkit::tls::TestCa::new();
    let leaf = ca.issue(&["localhost"], isame_testkit::tls::KeyKind::Ecdsa);
    let acceptor = tokio_rustls::TlsAcceptor::from(leaf.server_config());
    let upstream = cp.addr;
    // A TLS terminator in front of the control plane, as an ingress would be.
    let listener = cp
        .rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    cp.rt.spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                if let Ok(mut back) = tokio::net::TcpStream::connect(upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut back).await;
                }
            });
        }
    });
    let ca_file = cp.file("ca.pem", &ca.cert_pem());
    let server = format!("https://localhost:{port}");

    let mut c = cp.command_as(Some(ADMIN), &["get", "upstreams", "-o", "json"]);
    c.env("ISAME_SERVER", &server)
        .env("SSL_CERT_FILE", &ca_file);
    assert_eq!(run(c).expect(0).json()["version"], 1);

    // Without the CA among the roots, the certificate is not trusted.
    let mut c = cp.command_as(Some(ADMIN), &["get", "upstreams"]);
    let other_ca = isame_testkit::tls::TestCa::new().cert_pem();
    c.env("ISAME_SERVER", &server)
        .env("SSL_CERT_FILE", cp.file("other-ca.pem", &other_ca));
    let r = run(c).expect(1);
    assert!(
        r.stderr
            .contains(&format!("cannot reach the control plane at {server}")),
        "{r}"
    );
    assert!(r.stderr.to_lowercase().contains("certificate"), "{r}");
}
