//! Where the control plane is and which token to present: flags, then
//! environment (both read by clap), then the config file, then the default.

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The control plane's address when nothing says otherwise.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:7070";

/// The resolved connection settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Base URL of the control plane, without a trailing `/`.
    pub server: String,
    /// Bearer token, if any.
    pub token: Option<String>,
    /// The config file that was read, if any.
    pub file: Option<PathBuf>,
}

/// The config file's keys.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    server: Option<String>,
    token: Option<String>,
}

/// Where the config file is looked for when `--config` does not say:
/// `$XDG_CONFIG_HOME/isame/config.yaml`, else `$HOME/.config/isame/config.yaml`.
pub fn default_file() -> Option<PathBuf> {
    let nonempty = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(xdg) = nonempty("XDG_CONFIG_HOME").map(PathBuf::from) {
        // The XDG spec says relative values are to be ignored.
        if xdg.is_absolute() {
            return Some(xdg.join("isame").join("config.yaml"));
        }
    }
    nonempty("HOME").map(|h| {
        PathBuf::from(h)
            .join(".config")
            .join("isame")
            .join("config.yaml")
    })
}

/// Resolves the settings. `server` and `token` come from the flags or the
/// environment; `explicit` is `--config`/`ISAME_CTL_CONFIG`, which must exist.
pub fn resolve(
    server: Option<&str>,
    token: Option<&str>,
    explicit: Option<&Path>,
) -> Result<Settings> {
    let (file, from_file) = match explicit {
        Some(path) => (Some(path.to_path_buf()), Some(read(path)?)),
        None => match default_file() {
            Some(path) => match std::fs::read_to_string(&path) {
                Ok(text) => (Some(path.clone()), Some(parse(&path, &text)?)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => (None, None),
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("cannot read config file {}", path.display()))
                }
            },
            None => (None, None),
        },
    };
    let from_file = from_file.unwrap_or_default();
    let server = server
        .map(str::to_owned)
        .or(from_file.server)
        .unwrap_or_else(|| DEFAULT_SERVER.to_owned());
    let token = token
        .map(str::to_owned)
        .or(from_file.token)
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty());
    Ok(Settings {
        server: check_server(&server)?,
        token,
        file,
    })
}

fn read(path: &Path) -> Result<FileSettings> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    parse(path, &text)
}

fn parse(path: &Path, text: &str) -> Result<FileSettings> {
    if text.trim().is_empty() {
        return Ok(FileSettings::default());
    }
    let settings: FileSettings = serde_yaml_ng::from_str(text).with_context(|| {
        format!(
            "config file {} is not valid (expected YAML with `server` and `token`)",
            path.display()
        )
    })?;
    warn_if_readable_by_others(path, &settings);
    Ok(settings)
}

/// A token in a file others can read is a token others have.
#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path, settings: &FileSettings) {
    use std::os::unix::fs::PermissionsExt;
    if settings.token.is_none() {
        return;
    }
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o077 != 0 {
            eprintln!(
                "isame-ctl: warning: {} holds a token and other users can read it (chmod 600 it)",
                path.display()
            );
        }
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_: &Path, _: &FileSettings) {}

/// The server URL without a trailing `/`; it must be http or https.
fn check_server(url: &str) -> Result<String> {
    let url = url.trim().trim_end_matches('/');
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    match rest {
        Some(host) if !host.is_empty() => Ok(url.to_owned()),
        _ => bail!("server URL {url:?} must start with http:// or https://, e.g. {DEFAULT_SERVER}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls_are_checked_and_trimmed() {
        assert_eq!(
            check_server("http://cp:7070/").expect("ok"),
            "http://cp:7070"
        );
        assert_eq!(check_server("https://cp").expect("ok"), "https://cp");
        for bad in ["cp:7070", "ftp://cp", "http://", ""] {
            assert!(check_server(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn flags_and_environment_beat_the_file_which_beats_the_default() {
        let dir = tempfile::tempdir().expect("dir");
        let empty = dir.path().join("empty.yaml");
        std::fs::write(&empty, "").expect("write");
        let s = resolve(None, None, Some(&empty)).expect("resolves");
        assert_eq!(s.server, DEFAULT_SERVER);
        assert_eq!(s.token, None);
        let full = dir.path().join("full.yaml");
        std::fs::write(&full, "server: http://file:1\ntoken: from-file\n").expect("write");
        let s = resolve(None, None, Some(&full)).expect("resolves");
        assert_eq!(
            (s.server.as_str(), s.token.as_deref()),
            ("http://file:1", Some("from-file"))
        );
        let s = resolve(Some("http://given:2/"), Some(" given "), Some(&full)).expect("resolves");
        assert_eq!(
            (s.server.as_str(), s.token.as_deref()),
            ("http://given:2", Some("given"))
        );
        assert_eq!(s.file.as_deref(), Some(full.as_path()));
    }

    #[test]
    fn file_keys_are_checked() {
        let p = Path::new("c.yaml");
        let s = parse(p, "server: http://a\ntoken: t\n").expect("valid");
        assert_eq!(s.server.as_deref(), Some("http://a"));
        assert!(parse(p, "").expect("empty is fine").server.is_none());
        let e = parse(p, "sever: http://a\n").expect_err("typo");
        assert!(format!("{e:#}").contains("c.yaml"), "{e:#}");
    }
}
