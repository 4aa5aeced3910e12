//! The rules a decoded [`Config`] must satisfy beyond what each field
//! declares (types, bounds, required fields): rules across fields and
//! formats of their own, each reported with its path.
//! Every rule runs; nothing stops at the first problem.

use super::errors::{Path, Problems};
use super::*;
use std::collections::HashSet;

/// Longest name of an upstream or route.
const MAX_NAME: usize = 128;

pub(super) fn validate(c: &Config, p: &mut Problems) {
    let root = Path::root();
    server(&c.server, &c.tls, &root.key("server"), p);
    if c.upstreams.is_empty() {
        p.add(&root.key("upstreams"), "at least one upstream is required");
    }
    let mut names = HashSet::new();
    for (i, u) in c.upstreams.iter().enumerate() {
        let path = root.key("upstreams").index(i);
        upstream(u, &path, p);
        grpc_health(c, u, &path, p);
        if !u.name.is_empty() && !names.insert(u.name.as_str()) {
            p.add(
                &path.key("name"),
                format!("duplicate upstream name {:?}", u.name),
            );
        }
    }
    let mut route_names = HashSet::new();
    for (i, r) in c.routes.iter().enumerate() {
        let path = root.key("routes").index(i);
        route(r, &names, &path, p);
        if !r.name.is_empty() && !route_names.insert(r.name.as_str()) {
            p.add(
                &path.key("name"),
                format!("duplicate route name {:?}", r.name),
            );
        }
    }
    health(&c.health, &root.key("health"), p);
    metrics(&c.metrics, &c.server, &c.tls, &root.key("metrics"), p);
    circuit_breaker(&c.circuit_breaker, &root.key("circuit_breaker"), p);
    super::retry::validate(&c.retry, &root.key("retry"), p);
    tls(&c.tls, &root.key("tls"), p);
    super::dns::validate(&c.dns, &root.key("dns"), p);
}

fn positive(d: Duration, path: &Path, p: &mut Problems) {
    if d.is_zero() {
        p.add(path, "must be longer than 0s");
    }
}

fn at_least_one(n: u32, path: &Path, p: &mut Problems) {
    if n == 0 {
        p.add(path, "must be at least 1");
    }
}

fn name(n: &str, path: &Path, p: &mut Problems) {
    if let Err(message) = check_name(n) {
        p.add(path, message);
    }
}

/// [`check_name`] as a regular expression (for the JSON Schema and the
/// API's path parameters).
pub const NAME_PATTERN: &str = r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$";

/// The rule for every name (upstreams, routes, stored certificates): 1 to
/// 128 letters, digits, '-', '_' and '.', starting with a letter, a digit
/// or '_'.
///
/// Names are URL path segments (`/api/v1/upstreams/{name}`) and command
/// arguments, so none may be `.` or `..` (which URL-normalising clients
/// resolve away), start with `-` (read as an option) or need escaping.
pub fn check_name(n: &str) -> Result<(), String> {
    check_segment(n, "letters, digits, '-', '_' and '.'", |c| {
        matches!(c, '-' | '_' | '.')
    })
}

/// The rule for node ids: as [`check_name`], and ':' is allowed too
/// (`host:port` ids are common).
pub fn check_node_id(n: &str) -> Result<(), String> {
    check_segment(n, "letters, digits, '-', '_', '.' and ':'", |c| {
        matches!(c, '-' | '_' | '.' | ':')
    })
}

fn check_segment(n: &str, allowed: &str, punctuation: impl Fn(char) -> bool) -> Result<(), String> {
    if n.is_empty() {
        Err("must not be empty".into())
    } else if n.len() > MAX_NAME {
        Err(format!("must be at most {MAX_NAME} characters"))
    } else if !n
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || punctuation(c))
    {
        Err(format!("{n:?} may only contain {allowed}"))
    } else if !n.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
        Err(format!("{n:?} must start with a letter, a digit or '_'"))
    } else {
        Ok(())
    }
}

/// A certificate comes from the certificate store by name, or from a pair of
/// files, never both.
fn key_source(
    certificate: &str,
    cert_file: &str,
    key_file: &str,
    when: &str,
    path: &Path,
    p: &mut Problems,
) {
    if !certificate.is_empty() {
        name(certificate, &path.key("certificate"), p);
        for (field, value) in [("cert_file", cert_file), ("key_file", key_file)] {
            if !value.is_empty() {
                p.add(
                    &path.key(field),
                    "must be left out when `certificate` names a stored certificate",
                );
            }
        }
        return;
    }
    for (field, value) in [("cert_file", cert_file), ("key_file", key_file)] {
        if value.is_empty() {
            p.add(
                &path.key(field),
                format!("required {when}(or `certificate`: the name of a stored certificate)"),
            );
        }
    }
}

fn url_path(s: &str, path: &Path, p: &mut Problems) {
    if !s.starts_with('/') {
        p.add(path, format!("{s:?} must start with '/'"));
    } else if s.contains(|c: char| c.is_whitespace() || c.is_control() || c == '?' || c == '#') {
        p.add(
            path,
            format!("{s:?} must be a plain path (no spaces, '?' or '#')"),
        );
    }
}

fn server(s: &Server, tls: &Tls, path: &Path, p: &mut Problems) {
    if tls.enabled && s.https_port == s.port && s.port != 0 {
        p.add(&path.key("https_port"), "must differ from server.port");
    }
    positive(s.read_timeout, &path.key("read_timeout"), p);
    positive(s.write_timeout, &path.key("write_timeout"), p);
    positive(s.idle_timeout, &path.key("idle_timeout"), p);
    if let Some(pp) = &s.proxy_protocol {
        if pp.trusted.is_empty() {
            p.add(
                &path.key("proxy_protocol").key("trusted"),
                "at least one address or CIDR is required (the load balancers that send PROXY headers)",
            );
        }
    }
}

fn upstream(u: &Upstream, path: &Path, p: &mut Problems) {
    name(&u.name, &path.key("name"), p);
    if u.backends.is_empty() {
        p.add(&path.key("backends"), "at least one backend is required");
    }
    let mut seen = HashSet::new();
    for (j, b) in u.backends.iter().enumerate() {
        let bpath = path.key("backends").index(j);
        if let Some(key) = backend_url(&b.url, &bpath.key("url"), p) {
            if !seen.insert(key) {
                p.add(&bpath.key("url"), format!("duplicate backend {:?}", b.url));
            }
        }
    }
    if let Some(rl) = &u.rate_limit {
        rate_limit(rl, &path.key("rate_limit"), p);
    }
    positive(u.connect_timeout, &path.key("connect_timeout"), p);
    positive(u.response_timeout, &path.key("response_timeout"), p);
    positive(u.tunnel_idle_timeout, &path.key("tunnel_idle_timeout"), p);
    let mut tokens = HashSet::new();
    for (j, t) in u.upgrades.iter().enumerate() {
        let at = path.key("upgrades").index(j);
        if t.is_empty() || !t.bytes().all(|b| is_token_byte(b) || b == b'/') {
            p.add(
                &at,
                format!("{t:?} is not a protocol token (e.g. \"websocket\")"),
            );
        } else if t.eq_ignore_ascii_case("h2c") {
            p.add(
                &at,
                "h2c upgrades are never passed to a backend; name the backend h2c://host:port",
            );
        } else if !tokens.insert(t.to_ascii_lowercase()) {
            p.add(&at, format!("duplicate protocol {t:?}"));
        }
    }
    super::traffic::validate(u, path, p);
    super::dns::validate_refresh(u.dns_refresh, &path.key("dns_refresh"), p);
    if u.drain_timeout > Duration::from_secs(24 * 3600) {
        p.add(&path.key("drain_timeout"), "must be at most 24h");
    }
    if let Some(o) = &u.outlier_detection {
        super::lifecycle::validate(o, &path.key("outlier_detection"), p);
    }
    if let Some(h) = &u.health {
        health(h, &path.key("health"), p);
    }
    if let Some(b) = &u.circuit_breaker {
        circuit_breaker(b, &path.key("circuit_breaker"), p);
    }
    if let Some(r) = &u.retry {
        super::retry::validate(r, &path.key("retry"), p);
    }
    if let Some(t) = &u.tls {
        if !t.server_name.is_empty() && t.server_name.parse::<std::net::IpAddr>().is_err() {
            host_pattern(&t.server_name, &path.key("tls").key("server_name"), p);
        }
        if t.server_name.starts_with("*.") {
            p.add(
                &path.key("tls").key("server_name"),
                "must be a host name, not a wildcard",
            );
        }
    }
}

fn rate_limit(rl: &RateLimit, path: &Path, p: &mut Problems) {
    if rl.enabled {
        at_least_one(rl.requests_per_ip, &path.key("requests_per_ip"), p);
        positive(rl.window_size, &path.key("window_size"), p);
    }
}

/// Checks a backend URL; returns its normalized `scheme://host:port` when valid.
pub fn backend_url(raw: &str, path: &Path, p: &mut Problems) -> Option<String> {
    if raw.is_empty() {
        p.add(path, "must not be empty");
        return None;
    }
    let url = match url::Url::parse(raw) {
        Ok(u) => u,
        Err(e) => {
            p.add(path, format!("{raw:?} is not a valid URL: {e}"));
            return None;
        }
    };
    let mut ok = true;
    if !matches!(url.scheme(), "http" | "https" | "h2c") {
        p.add(
            path,
            format!(
                "scheme must be http, https or h2c, found {:?}",
                url.scheme()
            ),
        );
        ok = false;
    }
    if url.host_str().is_none_or(str::is_empty) {
        p.add(path, format!("{raw:?} has no host"));
        ok = false;
    }
    if !url.username().is_empty() || url.password().is_some() {
        p.add(path, "must not contain credentials");
        ok = false;
    }
    if url.path() != "/" && !url.path().is_empty()
        || url.query().is_some()
        || url.fragment().is_some()
    {
        p.add(
            path,
            format!("{raw:?} must be scheme://host[:port] only, without a path, query or fragment"),
        );
        ok = false;
    }
    let port = backend_port(&url)?;
    ok.then(|| {
        format!(
            "{}://{}:{port}",
            url.scheme(),
            url.host_str().unwrap_or_default()
        )
    })
}

/// The port of a backend URL: as written, else the scheme's (80 for `h2c`).
pub fn backend_port(url: &url::Url) -> Option<u16> {
    match url.scheme() {
        "h2c" => Some(url.port().unwrap_or(80)),
        _ => url.port_or_known_default(),
    }
}

/// True when some backend of `u` is spoken to in HTTP/2 (or may be, by ALPN).
pub fn speaks_http2(u: &Upstream) -> bool {
    u.backends.iter().any(|b| {
        let scheme = b.url.split_once("://").map_or("", |(s, _)| s);
        scheme.eq_ignore_ascii_case("h2c")
            || match u.protocol {
                UpstreamProtocol::Http1 => false,
                UpstreamProtocol::Http2 => true,
                UpstreamProtocol::Auto => scheme.eq_ignore_ascii_case("https"),
            }
    })
}

/// Rules of HTTP/2 backends: one connection carries many clients' requests,
/// so it cannot begin with one client's PROXY header; gRPC health checks
/// need HTTP/2.
fn grpc_health(c: &Config, u: &Upstream, path: &Path, p: &mut Problems) {
    let h2 = speaks_http2(u);
    if h2 && u.send_proxy_protocol.is_some() {
        p.add(
            &path.key("send_proxy_protocol"),
            "cannot be used with HTTP/2 backends (one connection carries many clients' requests); use protocol: http1 and http:// or https:// backends",
        );
    }
    let h = c.health_of(u);
    if h.enabled && h.protocol == HealthProtocol::Grpc && !h2 {
        let at = match &u.health {
            Some(_) => path.key("health").key("protocol"),
            None => Path::root().key("health").key("protocol"),
        };
        p.add(
            &at,
            format!(
                "gRPC health checks need HTTP/2 backends; upstream {:?} has none (set protocol: http2 or name backends h2c://)",
                u.name
            ),
        );
    }
}

fn route(r: &Route, upstreams: &HashSet<&str>, path: &Path, p: &mut Problems) {
    name(&r.name, &path.key("name"), p);
    let known = |u: &str, at: &Path, p: &mut Problems| {
        if !upstreams.contains(u) {
            p.add(at, format!("no upstream is named {u:?}"));
        }
    };
    match (r.upstream.is_empty(), r.split.is_empty()) {
        (true, true) => p.add(
            &path.key("upstream"),
            "required (or `split`: upstreams with weights)",
        ),
        (false, false) => p.add(
            &path.key("split"),
            "give either `upstream` or `split`, not both",
        ),
        (false, true) => known(&r.upstream, &path.key("upstream"), p),
        (true, false) => {
            let mut seen = HashSet::new();
            for (i, s) in r.split.iter().enumerate() {
                let at = path.key("split").index(i);
                if s.upstream.is_empty() {
                    continue;
                }
                known(&s.upstream, &at.key("upstream"), p);
                if !seen.insert(s.upstream.as_str()) {
                    p.add(
                        &at.key("upstream"),
                        format!("{:?} is already in this split", s.upstream),
                    );
                }
            }
            if r.split.iter().all(|s| s.weight == 0) {
                p.add(&path.key("split"), "at least one weight must be above 0");
            }
        }
    }
    if let Some(m) = &r.mirror {
        let at = path.key("mirror");
        if !m.upstream.is_empty() {
            known(&m.upstream, &at.key("upstream"), p);
            let serves =
                m.upstream == r.upstream || r.split.iter().any(|s| s.upstream == m.upstream);
            if serves {
                p.add(
                    &at.key("upstream"),
                    format!(
                        "{:?} serves this route; a mirror needs an upstream of its own",
                        m.upstream
                    ),
                );
            }
        }
        if m.max_body_bytes > MAX_RETRY_BODY {
            p.add(
                &at.key("max_body_bytes"),
                format!("must be at most {MAX_RETRY_BODY} (copied bodies are held in memory)"),
            );
        }
    }
    if let Some(retry) = &r.retry {
        super::retry::validate_route(retry, &path.key("retry"), p);
    }
    if let Some(host) = &r.host {
        host_pattern(host, &path.key("host"), p);
    }
    if let Some(prefix) = &r.path_prefix {
        url_path(prefix, &path.key("path_prefix"), p);
    }
    if let Some(rl) = &r.rate_limit {
        rate_limit(rl, &path.key("rate_limit"), p);
    }
    super::middleware::validate(&r.middleware, &path.key("middleware"), p);
    let mut cookies = HashSet::new();
    for c in &r.cookies {
        let at = path.key("cookies").key(&c.name);
        if c.name.is_empty() || !c.name.bytes().all(is_token_byte) {
            p.add(&at, format!("{:?} is not a valid cookie name", c.name));
        } else if !cookies.insert(c.name.as_str()) {
            p.add(&at, "duplicate cookie");
        }
        // RFC 6265's cookie-octet: visible ASCII but `"`, `,`, `;` and `\`.
        if !c
            .value
            .bytes()
            .all(|b| (b'!'..=b'~').contains(&b) && !b"\",;\\".contains(&b))
        {
            p.add(
                &at,
                "value may only contain visible ASCII other than '\"', ',', ';' and '\\'",
            );
        }
    }
    let mut seen = HashSet::new();
    for h in &r.headers {
        let hpath = path.key("headers").key(&h.name);
        if h.name.is_empty() || !h.name.bytes().all(is_token_byte) {
            p.add(&hpath, format!("{:?} is not a valid header name", h.name));
        } else if !seen.insert(h.name.to_ascii_lowercase()) {
            p.add(&hpath, "duplicate header (names are case-insensitive)");
        }
        if !h
            .value
            .bytes()
            .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
        {
            p.add(
                &hpath,
                "value may only contain visible ASCII, spaces and tabs",
            );
        }
    }
}

/// A byte of an RFC 9110 token (header names, cookie names, upgrade protocols).
pub(super) fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn host_pattern(host: &str, path: &Path, p: &mut Problems) {
    let bare = host.strip_prefix("*.").unwrap_or(host);
    let valid_label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if bare.is_empty() || bare.len() > 253 || !bare.split('.').all(valid_label) {
        p.add(
            path,
            format!("{host:?} is not a host name; write e.g. \"api.example.com\" or \"*.example.com\" (no port)"),
        );
    }
}

fn health(h: &Health, path: &Path, p: &mut Problems) {
    if !h.enabled {
        return;
    }
    positive(h.interval, &path.key("interval"), p);
    positive(h.timeout, &path.key("timeout"), p);
    if !h.interval.is_zero() && h.timeout > h.interval {
        p.add(
            &path.key("timeout"),
            "must not be longer than health.interval",
        );
    }
    url_path(&h.path, &path.key("path"), p);
    at_least_one(h.unhealthy_threshold, &path.key("unhealthy_threshold"), p);
    at_least_one(h.healthy_threshold, &path.key("healthy_threshold"), p);
    if h.expected_statuses.is_empty() {
        p.add(
            &path.key("expected_statuses"),
            "list at least one status or range",
        );
    }
    for (i, s) in h.expected_statuses.iter().enumerate() {
        if let Err(e) = super::parse_status_range(s) {
            p.add(&path.key("expected_statuses").index(i), e);
        }
    }
}

fn metrics(m: &Metrics, s: &Server, tls: &Tls, path: &Path, p: &mut Problems) {
    if m.port != 0 && (m.port == s.port || tls.enabled && m.port == s.https_port) {
        p.add(&path.key("port"), "must differ from the proxy's ports");
    }
    url_path(&m.path, &path.key("path"), p);
    for builtin in ["/health", "/ready", "/status"] {
        if m.path == builtin {
            p.add(
                &path.key("path"),
                format!("{builtin} is a built-in admin endpoint"),
            );
        }
    }
}

fn circuit_breaker(c: &CircuitBreaker, path: &Path, p: &mut Problems) {
    if c.enabled {
        at_least_one(c.failure_threshold, &path.key("failure_threshold"), p);
        positive(c.timeout, &path.key("timeout"), p);
        at_least_one(c.half_open_requests, &path.key("half_open_requests"), p);
    }
}

fn tls(t: &Tls, path: &Path, p: &mut Problems) {
    if t.enabled {
        key_source(
            &t.certificate,
            &t.cert_file,
            &t.key_file,
            "when tls.enabled is true ",
            path,
            p,
        );
    } else if !t.certificate.is_empty() {
        // Checked even while TLS is off: the name reaches data planes.
        name(&t.certificate, &path.key("certificate"), p);
    }
    if !t.enabled && t.redirect_http {
        p.add(
            &path.key("redirect_http"),
            "needs tls.enabled: true (there is no HTTPS to redirect to)",
        );
    }
    for (i, c) in t.certificates.iter().enumerate() {
        let cpath = path.key("certificates").index(i);
        key_source(&c.certificate, &c.cert_file, &c.key_file, "", &cpath, p);
    }
    let min_ok = matches!(t.min_version.as_str(), "1.2" | "1.3");
    if !min_ok {
        p.add(
            &path.key("min_version"),
            format!(
                "{:?} is not supported; expected \"1.2\" or \"1.3\"",
                t.min_version
            ),
        );
    }
    let mut seen = HashSet::new();
    let mut usable = t.cipher_suites.is_empty();
    for (i, name) in t.cipher_suites.iter().enumerate() {
        let cpath = path.key("cipher_suites").index(i);
        match tls_names::canonical(name) {
            Ok(iana) => {
                if !seen.insert(iana) {
                    p.add(&cpath, format!("duplicate cipher suite {name:?}"));
                }
                let v = tls_names::version_of(iana).unwrap_or("1.2");
                usable |= t.min_version.as_str() <= v;
            }
            Err(e) => p.add(&cpath, e),
        }
    }
    if min_ok && !usable {
        p.add(
            &path.key("cipher_suites"),
            format!(
                "no listed suite works with min_version {}; add a TLS 1.3 suite such as TLS_AES_128_GCM_SHA256",
                t.min_version
            ),
        );
    }
}
