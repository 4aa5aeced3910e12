//! Deltas on the node's side: what the stream carried last, and the whole
//! snapshot a delta makes of it. A delta whose base is not that, or whose
//! result does not hash as the control plane says, is refused with the
//! reason (the stream then asks for the whole snapshot); nothing else is
//! ever installed, so the node serves and caches only configs whose hash
//! matches the control plane's.

use isame_proto::delta::{content_hash, Document};
use isame_proto::pb;
use std::collections::BTreeMap;

/// The config this stream carried last, whether it was installed or
/// refused: the base the control plane's next delta builds on.
#[derive(Debug)]
pub(super) struct Received {
    version: u64,
    hash: String,
    doc: Document,
    certificates: Vec<pb::StoredCertificate>,
}

impl Received {
    /// What a whole snapshot leaves; `None` when its config cannot be read
    /// in pieces (a delta to it is then answered with a resync).
    pub(super) fn of(s: &pb::Snapshot) -> Option<Received> {
        let text = std::str::from_utf8(&s.config_json).ok()?;
        let doc = Document::split(text).ok()?;
        Some(Received::with(s, doc))
    }

    fn with(s: &pb::Snapshot, doc: Document) -> Received {
        Received {
            version: s.version,
            hash: s.hash.clone(),
            doc,
            certificates: s.certificates.clone(),
        }
    }
}

/// The whole snapshot `d` makes of `base`, and what it leaves as the next
/// base; the reason when it cannot be made.
pub(super) fn rebuild(
    base: Option<&Received>,
    d: &pb::Delta,
) -> Result<(pb::Snapshot, Received), String> {
    let Some(base) = base else {
        return Err("no config arrived on this stream for it to apply to".into());
    };
    if base.version != d.base_version || base.hash != d.base_hash {
        return Err(format!(
            "it builds on version {} ({}), this node holds version {} ({})",
            d.base_version,
            short(&d.base_hash),
            base.version,
            short(&base.hash)
        ));
    }
    let doc = base
        .doc
        .apply(&d.resources, &d.removed)
        .map_err(|e| e.to_string())?;
    let mut certs: BTreeMap<String, pb::StoredCertificate> = base
        .certificates
        .iter()
        .map(|c| (c.name.clone(), c.clone()))
        .collect();
    for name in &d.removed_certificates {
        if certs.remove(name).is_none() {
            return Err(format!(
                "it removes certificate {name:?}, which this node was not sent"
            ));
        }
    }
    for c in &d.certificates {
        certs.insert(c.name.clone(), c.clone());
    }
    let json = doc.join();
    let ids: BTreeMap<String, String> = certs
        .iter()
        .map(|(name, c)| (name.clone(), c.id.clone()))
        .collect();
    let hash = content_hash(json.as_bytes(), &ids);
    if hash != d.hash {
        return Err(format!(
            "the result hashes to {}, the control plane's version {} to {}",
            short(&hash),
            d.version,
            short(&d.hash)
        ));
    }
    let snapshot = pb::Snapshot {
        version: d.version,
        hash,
        config_json: json.into(),
        certificates: certs.into_values().collect(),
        newest_version: d.newest_version,
    };
    let next = Received::with(&snapshot, doc);
    Ok((snapshot, next))
}

fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(v: u64, json: &str, certs: &[(&str, &str)]) -> pb::Snapshot {
        let certificates: Vec<_> = certs
            .iter()
            .map(|(name, id)| pb::StoredCertificate {
                name: (*name).into(),
                id: (*id).into(),
                cert_pem: format!("CERT {id}"),
                key_pem: format!("KEY {id}"),
            })
            .collect();
        let ids = certs
            .iter()
            .map(|(n, i)| ((*n).to_owned(), (*i).to_owned()))
            .collect();
        pb::Snapshot {
            version: v,
            hash: content_hash(json.as_bytes(), &ids),
            config_json: json.to_owned().into(),
            certificates,
            newest_version: v,
        }
    }

    const V1: &str = r#"{"upstreams":[{"name":"a","backends":[{"url":"http://127.0.0.1:1","weight":1}]},{"name":"b","backends":[{"url":"http://127.0.0.1:2","weight":1}]}],"health":{"interval":"5s"}}"#;
    const V2: &str = r#"{"upstreams":[{"name":"a","backends":[{"url":"http://127.0.0.1:1","weight":1}]},{"name":"b","backends":[{"url":"http://127.0.0.1:2","weight":9}]}],"health":{"interval":"5s"}}"#;

    /// The delta the control plane would send from `a` to `b`.
    fn delta(a: &pb::Snapshot, b: &pb::Snapshot) -> pb::Delta {
        let text = |s: &pb::Snapshot| {
            std::str::from_utf8(&s.config_json)
                .expect("UTF-8")
                .to_owned()
        };
        let (resources, removed) = Document::split(&text(a))
            .expect("a")
            .diff(&Document::split(&text(b)).expect("b"))
            .expect("a delta");
        let had: BTreeMap<_, _> = a.certificates.iter().map(|c| (&c.name, &c.id)).collect();
        let has: BTreeMap<_, _> = b.certificates.iter().map(|c| (&c.name, &c.id)).collect();
        pb::Delta {
            version: b.version,
            hash: b.hash.clone(),
            base_version: a.version,
            base_hash: a.hash.clone(),
            resources,
            removed,
            certificates: b
                .certificates
                .iter()
                .filter(|c| had.get(&c.name) != Some(&&c.id))
                .cloned()
                .collect(),
            removed_certificates: a
                .certificates
                .iter()
                .filter(|c| !has.contains_key(&c.name))
                .map(|c| c.name.clone())
                .collect(),
            newest_version: b.version,
        }
    }

    #[test]
    fn a_delta_makes_the_same_snapshot_as_the_control_plane() {
        let a = snapshot(1, V1, &[("main", "id1"), ("old", "id0")]);
        let b = snapshot(2, V2, &[("main", "id2")]);
        let base = Received::of(&a).expect("splits");
        let (made, next) = rebuild(Some(&base), &delta(&a, &b)).expect("applies");
        assert_eq!(made.config_json, b.config_json);
        assert_eq!(made.hash, b.hash);
        assert_eq!(made.certificates.len(), 1);
        assert_eq!(made.certificates[0].key_pem, "KEY id2");
        assert_eq!((next.version, next.hash.as_str()), (2, b.hash.as_str()));
    }

    #[test]
    fn a_delta_on_another_base_is_refused() {
        let a = snapshot(1, V1, &[]);
        let b = snapshot(2, V2, &[]);
        let d = delta(&a, &b);
        assert!(rebuild(None, &d).unwrap_err().contains("no config arrived"));
        let other = Received::of(&snapshot(3, V1, &[])).expect("splits");
        let e = rebuild(Some(&other), &d).unwrap_err();
        assert!(e.contains("builds on version 1"), "{e}");
        assert!(e.contains("holds version 3"), "{e}");
    }

    #[test]
    fn a_corrupted_delta_is_refused() {
        let a = snapshot(1, V1, &[("main", "id1")]);
        let b = snapshot(2, V2, &[("main", "id1")]);
        let base = Received::of(&a).expect("splits");
        // A resource changed on the way, with its hash to match: the whole
        // hash still catches it.
        let mut d = delta(&a, &b);
        d.resources[0].json = d.resources[0].json.replace("9", "8");
        d.resources[0].hash = isame_proto::delta::resource_hash(&d.resources[0].json);
        let e = rebuild(Some(&base), &d).unwrap_err();
        assert!(e.contains("the result hashes to"), "{e}");
        // A resource that does not match its own hash.
        let mut d = delta(&a, &b);
        d.resources[0].hash = "0".repeat(64);
        let e = rebuild(Some(&base), &d).unwrap_err();
        assert!(e.contains("does not match its hash"), "{e}");
        // A certificate the node never had.
        let mut d = delta(&a, &b);
        d.removed_certificates.push("nope".into());
        let e = rebuild(Some(&base), &d).unwrap_err();
        assert!(e.contains("certificate \"nope\""), "{e}");
    }
}
