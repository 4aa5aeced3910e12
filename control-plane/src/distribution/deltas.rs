//! What a version sends over the wire beyond its snapshot: its config in
//! pieces (read once, when first needed) and the deltas to it from the
//! versions nodes were sent before, each made once and shared by every
//! session that sends it.

use crate::configs::Current;
use isame_proto::delta::Document;
use isame_proto::pb;
use prost::Message;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};

/// Deltas kept per version: one per base nodes were on (a rollout keeps
/// two or three bases alive at most; more are made again when asked).
const KEPT: usize = 8;

/// A version's wire forms beyond its snapshot.
#[derive(Debug, Default)]
pub struct Wire {
    document: OnceLock<Option<Arc<Document>>>,
    deltas: Mutex<VecDeque<Made>>,
}

/// The delta from one base, or `None` when only a whole snapshot will do.
#[derive(Debug)]
struct Made {
    base_version: u64,
    base_hash: String,
    delta: Option<Arc<pb::Delta>>,
}

impl Current {
    /// The config in pieces; `None` before anything was applied, or when
    /// its stored text is not in the canonical form deltas need.
    pub fn document(&self) -> Option<&Arc<Document>> {
        self.wire
            .document
            .get_or_init(|| {
                let text = std::str::from_utf8(&self.json).ok()?;
                let doc = Document::split(text).ok()?;
                if doc.join().as_bytes() != &self.json[..] {
                    tracing::warn!(
                        version = self.version,
                        "the stored config is not in canonical form: its nodes get whole snapshots"
                    );
                    return None;
                }
                Some(Arc::new(doc))
            })
            .as_ref()
    }

    /// The delta that takes a node from `base` to this version; `None`
    /// when only a whole snapshot will do (the change moves items around,
    /// or the delta would be no smaller than the snapshot).
    pub fn delta_from(&self, base: &Current) -> Option<Arc<pb::Delta>> {
        let mut kept = self.wire.deltas.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = kept
            .iter()
            .find(|m| m.base_version == base.version && m.base_hash == base.hash)
        {
            return m.delta.clone();
        }
        let made = self.make_delta(base).map(Arc::new);
        if kept.len() == KEPT {
            kept.pop_front();
        }
        kept.push_back(Made {
            base_version: base.version,
            base_hash: base.hash.clone(),
            delta: made.clone(),
        });
        made
    }

    fn make_delta(&self, base: &Current) -> Option<pb::Delta> {
        let snapshot = self.snapshot.as_ref()?;
        let (resources, removed) = base.document()?.diff(self.document()?)?;
        let certificates = snapshot
            .certificates
            .iter()
            .filter(|c| base.certificates.get(&c.name) != Some(&c.id))
            .cloned()
            .collect();
        let removed_certificates = base
            .certificates
            .keys()
            .filter(|name| !self.certificates.contains_key(*name))
            .cloned()
            .collect();
        let delta = pb::Delta {
            version: self.version,
            hash: self.hash.clone(),
            base_version: base.version,
            base_hash: base.hash.clone(),
            resources,
            removed,
            certificates,
            removed_certificates,
            newest_version: self.version,
        };
        // A change to most of the config travels whole: the node then has
        // one thing less to get right.
        (delta.encoded_len() * 2 < snapshot.encoded_len()).then_some(delta)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::collections::BTreeMap;

    fn version(v: u64, json: &str, certs: &[(&str, &str)]) -> Current {
        let certificates: BTreeMap<String, String> = certs
            .iter()
            .map(|(n, id)| ((*n).to_owned(), (*id).to_owned()))
            .collect();
        let hash = isame_proto::delta::content_hash(json.as_bytes(), &certificates);
        Current {
            version: v,
            hash: hash.clone(),
            json: Bytes::from(json.to_owned()),
            snapshot: Some(Arc::new(pb::Snapshot {
                version: v,
                hash,
                config_json: json.to_owned().into(),
                certificates: certificates
                    .iter()
                    .map(|(name, id)| pb::StoredCertificate {
                        name: name.clone(),
                        id: id.clone(),
                        cert_pem: "CERT".into(),
                        key_pem: "KEY".into(),
                    })
                    .collect(),
                newest_version: v,
            })),
            certificates,
            ..Default::default()
        }
    }

    fn big(weight: u32) -> String {
        let ups: Vec<String> = (0..50)
            .map(|i| {
                let w = if i == 7 { weight } else { 1 };
                format!(r#"{{"name":"u{i}","backends":[{{"url":"http://127.0.0.1:{}","weight":{w}}}]}}"#, 3000 + i)
            })
            .collect();
        format!(
            r#"{{"version":"1","upstreams":[{}],"health":{{"interval":"5s"}}}}"#,
            ups.join(",")
        )
    }

    #[test]
    fn a_delta_carries_only_what_changed_and_is_made_once() {
        let v1 = version(1, &big(1), &[("main", "id1"), ("old", "id0")]);
        let v2 = version(2, &big(5), &[("main", "id2")]);
        let d = v2.delta_from(&v1).expect("a delta");
        assert_eq!((d.version, d.base_version), (2, 1));
        assert_eq!(
            (d.hash.as_str(), d.base_hash.as_str()),
            (v2.hash.as_str(), v1.hash.as_str())
        );
        assert_eq!(d.resources.len(), 1);
        assert_eq!(d.resources[0].name, "u7");
        assert_eq!(d.certificates.len(), 1);
        assert_eq!(d.certificates[0].id, "id2");
        assert_eq!(d.removed_certificates, ["old"]);
        assert!(d.encoded_len() * 10 < v2.snapshot.as_ref().expect("snapshot").encoded_len());
        // The second session to ask shares the first one's delta.
        assert!(Arc::ptr_eq(&d, &v2.delta_from(&v1).expect("a delta")));
    }

    #[test]
    fn a_change_to_most_of_the_config_travels_whole() {
        let v1 = version(1, r#"{"version":"1","health":{"interval":"5s"}}"#, &[]);
        let v2 = version(2, r#"{"version":"2","health":{"interval":"6s"}}"#, &[]);
        assert!(v2.delta_from(&v1).is_none());
    }

    #[test]
    fn text_not_in_canonical_form_gets_no_deltas() {
        let v1 = version(1, &big(1), &[]);
        let spaced = big(5).replace(",\"health\"", ", \"health\"");
        let v2 = version(2, &spaced, &[]);
        assert!(v2.document().is_none());
        assert!(v2.delta_from(&v1).is_none());
    }
}
