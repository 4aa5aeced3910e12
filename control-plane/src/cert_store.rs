//! The certificate store: a certificate and its key are uploaded once under a
//! name, checked (PEM, the key matches, valid now), and referenced from the
//! config by that name. Replacing a certificate the newest config names is a
//! new version, so data planes get the new one like any other change;
//! removing one the config still names is refused.

use crate::configs::{ChangeError, ChangeRequest, Configs};
use crate::store::{material_id, CertificateMeta, Material, NewCertificate};
use isame_proto::certs::{self, Part};
use isame_proto::config::{check_name, Change, ChangeOp, ConfigError};
use isame_proto::ConfigErrors;
use serde::Serialize;
use std::time::SystemTime;

/// A certificate as uploaded.
#[derive(Clone)]
pub struct Upload {
    /// PEM chain, leaf first.
    pub cert_pem: String,
    /// PEM private key.
    pub key_pem: String,
}

impl std::fmt::Debug for Upload {
    /// Never the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upload")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// What an upload did.
#[derive(Debug, Clone, Serialize)]
pub struct PutOutcome {
    /// The stored certificate.
    pub certificate: CertificateMeta,
    /// Whether the name is new.
    pub created: bool,
    /// Whether anything changed (an identical upload changes nothing).
    pub changed: bool,
    /// The config version the replacement created, when the config names it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// Whether this was a dry run.
    pub dry_run: bool,
}

/// Every place the newest config names `name`.
pub fn uses(configs: &Configs, name: &str) -> Vec<String> {
    let cur = configs.current();
    let Some(c) = cur.config.as_ref() else {
        return Vec::new();
    };
    let mut paths = Vec::new();
    if c.tls.certificate == name {
        paths.push("tls.certificate".to_owned());
    }
    for (i, k) in c.tls.certificates.iter().enumerate() {
        if k.certificate == name {
            paths.push(format!("tls.certificates[{i}].certificate"));
        }
    }
    paths
}

/// Checks an upload; every problem is listed at `cert_pem`, `key_pem` or
/// `name`.
fn check(name: &str, upload: &Upload, actor: &str) -> Result<NewCertificate, ChangeError> {
    let mut problems = Vec::new();
    if let Err(m) = check_name(name) {
        problems.push(ConfigError::new("name", m));
    }
    // The chain is stored and shown as uploaded: a combined file with the
    // key in it would hand the key to every reader.
    if let Some(other) = upload
        .cert_pem
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("-----BEGIN ") && *l != "-----BEGIN CERTIFICATE-----")
    {
        problems.push(ConfigError::new(
            "cert_pem",
            format!(
                "holds a section other than certificates ({other}); \
                 the chain only, the key goes in key_pem"
            ),
        ));
    }
    let provider = rustls::crypto::ring::default_provider();
    let checked = certs::check_pair(
        upload.cert_pem.as_bytes(),
        upload.key_pem.as_bytes(),
        &provider,
        SystemTime::now(),
    );
    let info = match checked {
        Ok(c) => Some(c.info),
        Err(found) => {
            problems.extend(found.into_iter().map(|p| {
                let at = match p.part {
                    Part::Cert => "cert_pem",
                    Part::Key => "key_pem",
                };
                ConfigError::new(at, p.message)
            }));
            None
        }
    };
    let Some(info) = info.filter(|_| problems.is_empty()) else {
        return Err(ChangeError::Invalid(ConfigErrors(problems)));
    };
    let now = crate::store::now_ms();
    let id = material_id(&upload.cert_pem, &upload.key_pem);
    Ok(NewCertificate {
        meta: CertificateMeta {
            name: name.to_owned(),
            id: id.clone(),
            fingerprint_sha256: info.fingerprint_sha256,
            subject: info.subject,
            issuer: info.issuer,
            names: info.names,
            not_before: info.not_before,
            not_after: info.not_after,
            created_at: now,
            updated_at: now,
            updated_by: actor.to_owned(),
        },
        material: Material {
            id,
            cert_pem: upload.cert_pem.clone(),
            key_pem: upload.key_pem.clone(),
        },
    })
}

/// A conflict means another writer's newest version names the certificate:
/// catch up with it and answer that this change was based on a stale view.
async fn stale_or(configs: &Configs, e: crate::store::StoreError) -> ChangeError {
    match e {
        crate::store::StoreError::Conflict(_) => match configs.catch_up().await {
            Ok(current) => ChangeError::Stale { current },
            Err(e) => e.into(),
        },
        other => other.into(),
    }
}

/// Stores `upload` under `name`, creating or replacing it. When the newest
/// config names it, the replacement is committed as a new version in the
/// same transaction.
pub async fn put(
    configs: &Configs,
    req: ChangeRequest,
    name: &str,
    upload: Upload,
) -> Result<PutOutcome, ChangeError> {
    let mut new = check(name, &upload, &req.actor)?;
    let turn = configs.turn().await;
    let existing = configs.store().certificate(name).await?.map(|(m, _)| m);
    if let Some(old) = &existing {
        new.meta.created_at = old.created_at;
        if old.id == new.meta.id {
            return Ok(PutOutcome {
                certificate: old.clone(),
                created: false,
                changed: false,
                version: None,
                dry_run: req.dry_run,
            });
        }
    }
    let created = existing.is_none();
    let dry_run = req.dry_run;
    let outcome = |version| PutOutcome {
        certificate: new.meta.clone(),
        created,
        changed: true,
        version,
        dry_run,
    };
    if uses(configs, name).is_empty() {
        if dry_run {
            return Ok(outcome(None));
        }
        let change = Change {
            op: if created {
                ChangeOp::Added
            } else {
                ChangeOp::Changed
            },
            path: format!("certificates[{name}]"),
            old: existing.as_ref().map(|m| m.id.clone().into()),
            new: Some(new.meta.id.clone().into()),
        };
        let audit = req.into_audit(vec![change]);
        let result = outcome(None);
        if let Err(e) = configs.store().put_certificate(new, audit).await {
            return Err(stale_or(configs, e).await);
        }
        drop(turn);
        tracing::info!(certificate = name, "certificate stored");
        return Ok(result);
    }
    let meta = new.meta.clone();
    let applied = configs
        .change_in_turn(
            turn,
            req,
            |cur| {
                cur.cloned()
                    .ok_or_else(|| ChangeError::NotFound("no config has been applied yet".into()))
            },
            Some(new),
        )
        .await?;
    tracing::info!(
        certificate = name,
        version = applied.version,
        "certificate replaced"
    );
    Ok(PutOutcome {
        certificate: meta,
        created,
        changed: true,
        version: applied.created.then_some(applied.version),
        dry_run: applied.dry_run,
    })
}

/// Removes `name`; refused while the newest config names it.
pub async fn delete(configs: &Configs, req: ChangeRequest, name: &str) -> Result<(), ChangeError> {
    let _turn = configs.turn().await;
    let used = uses(configs, name);
    if !used.is_empty() {
        return Err(ChangeError::Exists(format!(
            "certificate {name:?} is in use at {}; change the config first",
            used.join(", ")
        )));
    }
    let missing = || ChangeError::NotFound(format!("certificate {name:?} not found"));
    let (old, _) = configs
        .store()
        .certificate(name)
        .await?
        .ok_or_else(missing)?;
    let audit = req.into_audit(vec![Change {
        op: ChangeOp::Removed,
        path: format!("certificates[{name}]"),
        old: Some(old.id.into()),
        new: None,
    }]);
    let deleted = match configs.store().delete_certificate(name, audit).await {
        Ok(d) => d,
        Err(e) => return Err(stale_or(configs, e).await),
    };
    if deleted {
        tracing::info!(certificate = name, "certificate removed");
        Ok(())
    } else {
        Err(missing())
    }
}
