//! Stored certificates pushed with a snapshot: each is written to files only
//! this user can read, and the config's references by name are rewritten to
//! those files before the config is compiled. The directory is
//! `--cache-dir/certs` (so a node restarting from its cache finds them) or a
//! private temporary directory removed when the node stops.

use isame_proto::config::{ConfigError, ConfigErrors};
use isame_proto::{pb, Config};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::fs::{self, DirBuilder};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Where pushed certificates are written.
#[derive(Debug)]
pub struct CertDir {
    dir: PathBuf,
    /// Removes the directory on drop when it is a temporary one.
    _temp: Option<tempfile::TempDir>,
}

impl CertDir {
    /// `cache_dir/certs` (created with mode 0700), or a new private temporary
    /// directory without a cache dir.
    pub fn new(cache_dir: Option<&Path>) -> std::io::Result<CertDir> {
        match cache_dir {
            Some(cache) => {
                let dir = cache.join("certs");
                DirBuilder::new().recursive(true).mode(0o700).create(&dir)?;
                fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?;
                Ok(CertDir { dir, _temp: None })
            }
            None => {
                let temp = tempfile::Builder::new().prefix("isame-certs-").tempdir()?;
                Ok(CertDir {
                    dir: temp.path().to_owned(),
                    _temp: Some(temp),
                })
            }
        }
    }

    /// Writes the certificates `config` names and points its references at
    /// the files. Returns the files the config now uses.
    pub fn materialize(
        &self,
        config: &mut Config,
        pushed: &[pb::StoredCertificate],
    ) -> Result<Vec<PathBuf>, ConfigErrors> {
        let mut used = Vec::new();
        let mut problems = Vec::new();
        let tls = &mut config.tls;
        let slots = std::iter::once((
            "tls.certificate".to_owned(),
            &mut tls.certificate,
            &mut tls.cert_file,
            &mut tls.key_file,
        ))
        .chain(tls.certificates.iter_mut().enumerate().map(|(i, c)| {
            (
                format!("tls.certificates[{i}].certificate"),
                &mut c.certificate,
                &mut c.cert_file,
                &mut c.key_file,
            )
        }));
        for (path, name, cert_file, key_file) in slots {
            if name.is_empty() {
                continue;
            }
            let Some(stored) = pushed.iter().find(|c| c.name == *name) else {
                problems.push(ConfigError::new(
                    &path,
                    format!("certificate {name:?} is not in the snapshot"),
                ));
                continue;
            };
            match self.write(stored) {
                Ok((cert, key)) => {
                    *cert_file = cert.to_string_lossy().into_owned();
                    *key_file = key.to_string_lossy().into_owned();
                    name.clear();
                    used.push(cert);
                    used.push(key);
                }
                Err(e) => problems.push(ConfigError::new(
                    &path,
                    format!(
                        "cannot write certificate {name:?} to {}: {e}",
                        self.dir.display()
                    ),
                )),
            }
        }
        if problems.is_empty() {
            Ok(used)
        } else {
            Err(ConfigErrors(problems))
        }
    }

    /// Removes the certificate files not in `keep` (those of versions no
    /// longer served).
    pub fn prune(&self, keep: &[PathBuf]) {
        let keep: HashSet<&Path> = keep.iter().map(PathBuf::as_path).collect();
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let ours = matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("crt" | "key")
            );
            if ours && !keep.contains(path.as_path()) {
                if let Err(e) = fs::remove_file(&path) {
                    tracing::warn!(file = %path.display(), error = %e, "cannot remove an old certificate file");
                }
            }
        }
    }

    /// Writes one certificate and its key (once per content), mode 0600.
    fn write(&self, c: &pb::StoredCertificate) -> std::io::Result<(PathBuf, PathBuf)> {
        // The name comes from the control plane: it must be a plain name
        // before it becomes part of a path.
        isame_proto::config::check_name(&c.name).map_err(|m| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("certificate name {:?} {m}", c.name),
            )
        })?;
        let mut h = Sha256::new();
        h.update(c.cert_pem.as_bytes());
        h.update([0]);
        h.update(c.key_pem.as_bytes());
        let id: String = h.finalize()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        // Names are letters, digits, '-', '_' and '.' (checked above), and
        // the suffix keeps even ".." a plain file name.
        let base = format!("{}.{id}", c.name);
        let cert = self.dir.join(format!("{base}.crt"));
        let key = self.dir.join(format!("{base}.key"));
        write_private(&cert, c.cert_pem.as_bytes())?;
        write_private(&key, c.key_pem.as_bytes())?;
        Ok((cert, key))
    }
}

/// Writes `bytes` to `path` (see [`super::private_file`]), unless it already
/// holds them.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if fs::read(path).is_ok_and(|b| b == bytes) {
        return Ok(());
    }
    super::private_file::replace(path, &[bytes])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(name: &str, cert: &str) -> pb::StoredCertificate {
        pb::StoredCertificate {
            name: name.into(),
            id: String::new(),
            cert_pem: cert.into(),
            key_pem: format!("key of {cert}"),
        }
    }

    fn config(names: &[&str]) -> Config {
        let mut c = Config::from_yaml("upstreams: [{name: a, backends: [http://127.0.0.1:1]}]")
            .expect("config");
        c.tls.certificate = names[0].into();
        for n in &names[1..] {
            c.tls.certificates.push(isame_proto::config::Certificate {
                certificate: (*n).into(),
                cert_file: String::new(),
                key_file: String::new(),
            });
        }
        c
    }

    #[test]
    fn references_become_private_files() {
        let cache = tempfile::tempdir().expect("dir");
        let dir = CertDir::new(Some(cache.path())).expect("cert dir");
        let mut c = config(&["main", "shop"]);
        let used = dir
            .materialize(&mut c, &[stored("shop", "S"), stored("main", "M")])
            .expect("written");
        assert_eq!(used.len(), 4);
        assert!(c.tls.certificate.is_empty());
        assert_eq!(fs::read_to_string(&c.tls.cert_file).expect("cert"), "M");
        assert_eq!(
            fs::read_to_string(&c.tls.key_file).expect("key"),
            "key of M"
        );
        assert_eq!(
            fs::read_to_string(&c.tls.certificates[0].cert_file).expect("cert"),
            "S"
        );
        for f in &used {
            let mode = fs::metadata(f).expect("meta").permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", f.display());
        }
        let mode = fs::metadata(cache.path().join("certs"))
            .expect("meta")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o700);
    }

    #[test]
    fn a_missing_certificate_is_named_and_nothing_is_rewritten() {
        let dir = CertDir::new(None).expect("cert dir");
        let mut c = config(&["main", "gone"]);
        let errors = dir
            .materialize(&mut c, &[stored("main", "M")])
            .expect_err("refused");
        assert_eq!(errors.len(), 1);
        assert_eq!(
            errors.iter().next().expect("one").path,
            "tls.certificates[0].certificate"
        );
    }

    #[test]
    fn replaced_certificates_get_new_files_and_old_ones_are_pruned() {
        let dir = CertDir::new(None).expect("cert dir");
        let mut first = config(&["main"]);
        let old = dir
            .materialize(&mut first, &[stored("main", "v1")])
            .expect("v1");
        let mut second = config(&["main"]);
        let new = dir
            .materialize(&mut second, &[stored("main", "v2")])
            .expect("v2");
        assert_ne!(old, new);
        dir.prune(&new);
        assert!(old.iter().all(|f| !f.exists()));
        assert!(new.iter().all(|f| f.exists()));
    }

    #[test]
    fn a_pushed_name_that_is_not_a_plain_name_is_refused() {
        let dir = CertDir::new(None).expect("cert dir");
        let mut c = config(&["main"]);
        c.tls.certificate = "../escape".into();
        let errors = dir
            .materialize(&mut c, &[stored("../escape", "M")])
            .expect_err("refused");
        assert!(errors.to_string().contains("may only contain"), "{errors}");
        assert_eq!(std::fs::read_dir(&dir.dir).expect("list").count(), 0);
    }
}
