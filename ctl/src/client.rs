//! The control plane's REST API over a blocking HTTP client: requests with
//! the bearer token, answers as JSON, refusals as [`ServerError`].

use crate::settings::Settings;
use anyhow::{anyhow, Context, Result};
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS, NON_ALPHANUMERIC};
use serde_json::Value;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use ureq::http::{self, Method};

/// Largest answer read (a history of big configs can be many megabytes).
const MAX_ANSWER: u64 = 256 << 20;

/// Characters escaped in a path segment: everything but RFC 3986's unreserved.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Characters escaped in `X-Isame-Message`: controls and `%` (the server
/// percent-decodes the header); non-ASCII is always escaped.
const MESSAGE: &AsciiSet = &CONTROLS.add(b'%');

/// A path segment, percent-encoded (`http://a:1` → `http%3A%2F%2Fa%3A1`).
pub fn segment(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

/// A change message as the `X-Isame-Message` header carries it.
pub fn message_header(message: &str) -> String {
    utf8_percent_encode(message, MESSAGE).to_string()
}

/// A body to send.
pub struct Body {
    /// `Content-Type`.
    pub content_type: &'static str,
    /// The bytes.
    pub bytes: Vec<u8>,
}

impl Body {
    /// A JSON body.
    pub fn json(v: &Value) -> Body {
        Body {
            content_type: "application/json",
            bytes: v.to_string().into_bytes(),
        }
    }

    /// A YAML body (a config file as written).
    pub fn yaml(text: String) -> Body {
        Body {
            content_type: "application/yaml",
            bytes: text.into_bytes(),
        }
    }
}

/// Options of a write: dry run, message, precondition.
#[derive(Debug, Default, Clone)]
pub struct Write {
    /// `?dry_run=true`.
    pub dry_run: bool,
    /// `X-Isame-Message`.
    pub message: Option<String>,
    /// `If-Match: "N"`.
    pub if_version: Option<u64>,
}

/// The API's answer to a request it refused.
#[derive(Debug, Clone)]
pub struct ServerError {
    /// HTTP status.
    pub status: u16,
    /// The server's `error` text (or the start of a body that was not JSON).
    pub error: String,
    /// `errors[]` as `(path, message)`.
    pub errors: Vec<(String, String)>,
    /// `current_version` of a 412.
    pub current_version: Option<u64>,
    /// Whether a token was sent.
    pub had_token: bool,
}

impl std::error::Error for ServerError {}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = self.status;
        let reason = http::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("");
        let code = format!("{status} {reason}").trim_end().to_owned();
        match status {
            401 if !self.had_token => write!(
                f,
                "no token given ({code}): pass --token, set ISAME_TOKEN, or put `token:` in the config file"
            )?,
            401 => write!(f, "token rejected ({code}): {}", self.error)?,
            403 if self.error.contains("only read") => write!(
                f,
                "not allowed: viewer token ({code}): {}; writes need an admin token",
                self.error
            )?,
            403 => write!(f, "not allowed ({code}): {}", self.error)?,
            412 => {
                write!(f, "the config changed meanwhile ({code})")?;
                if let Some(v) = self.current_version {
                    write!(f, ": version {v} is the newest")?;
                }
                write!(f, "; check with `isame-ctl diff` and apply again")?;
            }
            _ => write!(f, "server refused ({code}): {}", self.error)?,
        }
        for (path, message) in &self.errors {
            if path.is_empty() {
                write!(f, "\n  {message}")?;
            } else {
                write!(f, "\n  {path}: {message}")?;
            }
        }
        Ok(())
    }
}

impl ServerError {
    fn from_answer(status: u16, body: &str, had_token: bool) -> ServerError {
        let parsed: Option<Value> = serde_json::from_str(body).ok();
        let error = parsed
            .as_ref()
            .and_then(|v| v["error"].as_str())
            .map(str::to_owned)
            .unwrap_or_else(|| {
                let text: String = body.trim().chars().take(200).collect();
                if text.is_empty() {
                    "(no details)".into()
                } else {
                    text
                }
            });
        let errors = parsed
            .as_ref()
            .and_then(|v| v["errors"].as_array())
            .map(|list| {
                list.iter()
                    .map(|e| {
                        let s = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
                        (s("path"), s("message"))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let current_version = parsed.as_ref().and_then(|v| v["current_version"].as_u64());
        ServerError {
            status,
            error,
            errors,
            current_version,
            had_token,
        }
    }
}

/// A client of one control plane.
pub struct Client {
    agent: ureq::Agent,
    server: String,
    token: Option<String>,
}

impl Client {
    /// A client for the resolved settings. HTTPS uses the system's root
    /// certificates (`SSL_CERT_FILE` and `SSL_CERT_DIR` are honoured).
    pub fn new(settings: &Settings) -> Result<Client> {
        let mut config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .user_agent(concat!("isame-ctl/", env!("CARGO_PKG_VERSION")))
            .timeout_connect(Some(Duration::from_secs(10)))
            .timeout_global(Some(Duration::from_secs(120)));
        if settings.server.starts_with("https://") {
            config = config.tls_config(tls()?);
        }
        Ok(Client {
            agent: config.build().new_agent(),
            server: settings.server.clone(),
            token: settings.token.clone(),
        })
    }

    /// `GET /api/v1{path}`.
    pub fn get(&self, path: &str) -> Result<Value> {
        self.write(Method::GET, path, None, &Write::default())
            .map(|(_, v)| v)
    }

    /// `METHOD /api/v1{path}` with the write's options; returns the status
    /// and the answer. A status other than 2xx is a [`ServerError`].
    pub fn write(
        &self,
        method: Method,
        path: &str,
        body: Option<Body>,
        write: &Write,
    ) -> Result<(u16, Value)> {
        let mut url = format!("{}/api/v1{path}", self.server);
        if write.dry_run {
            url.push_str(if path.contains('?') { "&" } else { "?" });
            url.push_str("dry_run=true");
        }
        let mut req = http::Request::builder()
            .method(method.clone())
            .uri(&url)
            .header("accept", "application/json");
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        if let Some(m) = write.message.as_deref().filter(|m| !m.is_empty()) {
            req = req.header("x-isame-message", message_header(m));
        }
        if let Some(v) = write.if_version {
            req = req.header("if-match", format!("\"{v}\""));
        }
        let sent = match body {
            Some(b) => {
                let req = req
                    .header("content-type", b.content_type)
                    .body(b.bytes)
                    .with_context(|| format!("cannot build the request to {url}"))?;
                self.agent.run(req)
            }
            None => {
                let req = req
                    .body(())
                    .with_context(|| format!("cannot build the request to {url}"))?;
                self.agent.run(req)
            }
        };
        let mut answer = sent.map_err(|e| self.unreachable(e))?;
        let status = answer.status().as_u16();
        let text = answer
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER)
            .read_to_string()
            .map_err(|e| self.unreachable(e))?;
        if !(200..300).contains(&status) {
            return Err(ServerError::from_answer(status, &text, self.token.is_some()).into());
        }
        let value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).with_context(|| {
                format!(
                    "{method} {url} answered {status} with something that is not JSON; is {} an Isame control plane?",
                    self.server
                )
            })?
        };
        Ok((status, value))
    }

    fn unreachable(&self, e: ureq::Error) -> anyhow::Error {
        let reason = match e {
            ureq::Error::Io(io) => io.to_string(),
            ureq::Error::Timeout(t) => format!("timed out ({t})"),
            other => other.to_string(),
        };
        anyhow!(
            "cannot reach the control plane at {}: {reason}",
            self.server
        )
    }
}

/// TLS with ring and the system's roots.
fn tls() -> Result<ureq::tls::TlsConfig> {
    let found = rustls_native_certs::load_native_certs();
    if found.certs.is_empty() {
        let why = found
            .errors
            .first()
            .map(|e| format!(": {e}"))
            .unwrap_or_default();
        anyhow::bail!("no trusted root certificates found on this system{why}");
    }
    let roots: Vec<ureq::tls::Certificate<'static>> = found
        .certs
        .iter()
        .map(|c| ureq::tls::Certificate::from_der(c.as_ref()).to_owned())
        .collect();
    Ok(ureq::tls::TlsConfig::builder()
        .provider(ureq::tls::TlsProvider::Rustls)
        .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .root_certs(ureq::tls::RootCerts::new_with_certs(&roots))
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends_are_one_path_segment() {
        assert_eq!(segment("http://10.0.0.1:80"), "http%3A%2F%2F10.0.0.1%3A80");
        assert_eq!(segment("web-1_a.b~c"), "web-1_a.b~c");
    }

    #[test]
    fn messages_fit_in_a_header() {
        assert_eq!(message_header("plain text"), "plain text");
        assert_eq!(message_header("100% ok"), "100%25 ok");
        assert_eq!(message_header("née\nx"), "n%C3%A9e%0Ax");
    }

    #[test]
    fn refusals_name_every_problem() {
        let e = ServerError::from_answer(
            422,
            r#"{"error":"invalid config","errors":[{"path":"upstreams[0].name","message":"required"},{"path":"","message":"empty"}]}"#,
            true,
        );
        assert_eq!(
            e.to_string(),
            "server refused (422 Unprocessable Entity): invalid config\n  upstreams[0].name: required\n  empty"
        );
        let e = ServerError::from_answer(403, r#"{"error":"this token may only read"}"#, true);
        assert!(e
            .to_string()
            .starts_with("not allowed: viewer token (403 Forbidden)"));
        let e = ServerError::from_answer(502, "<html>bad gateway</html>", true);
        assert!(e.to_string().contains("<html>bad gateway</html>"));
    }
}
