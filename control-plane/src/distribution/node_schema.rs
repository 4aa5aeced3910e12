//! What a node can read: the config field paths its Hello lists. A version
//! that uses a field the node does not know is not sent to it; the ledger
//! records why, as a refusal by the control plane (docs/distribution.md).

use crate::configs::Current;
use isame_proto::pb;
use serde_json::{json, Value};
use std::collections::HashSet;

/// Most field paths kept from one Hello (this build has a few hundred).
const MAX_FIELDS: usize = 10_000;

/// The config fields a node can read, from its Hello.
#[derive(Debug)]
pub struct NodeSchema {
    /// Its build, named in the explanation.
    pub build: String,
    /// Every field path it reads.
    pub fields: HashSet<String>,
}

impl NodeSchema {
    /// What the node's Hello says, when it reads configs differently from
    /// this build (a node with this build's schema, or one that sent no
    /// field list, gets every version).
    pub fn of(hello: &pb::Hello) -> Option<NodeSchema> {
        if hello.config_fields.is_empty()
            || hello.schema_digest == isame_proto::config::schema::digest()
        {
            return None;
        }
        Some(NodeSchema {
            build: hello.build_version.clone(),
            fields: hello
                .config_fields
                .iter()
                .take(MAX_FIELDS)
                .map(|f| f.chars().take(256).collect())
                .collect(),
        })
    }

    /// The fields version `cur` uses that the node does not know.
    pub fn unknown_in<'a>(&self, cur: &'a Current) -> Vec<&'a String> {
        cur.fields_used
            .iter()
            .filter(|f| !self.fields.contains(*f))
            .collect()
    }

    /// The ledger's record of version `version` held back for `unknown`.
    pub fn refusal(&self, version: u64, unknown: &[&String]) -> Value {
        let errors: Vec<Value> = unknown
            .iter()
            .take(100)
            .map(|f| {
                json!({
                    "path": f,
                    "message": format!(
                        "isame-lb {} on this node does not know this field; upgrade it to serve version {version}",
                        self.build
                    ),
                })
            })
            .collect();
        json!({
            "version": version,
            "errors": errors,
            "at": crate::api::rfc3339(crate::store::now_ms()),
            "by": "control-plane",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use isame_proto::config::schema;

    fn hello(digest: &str, fields: Vec<String>) -> pb::Hello {
        pb::Hello {
            build_version: "0.0.9".into(),
            schema_digest: digest.into(),
            config_fields: fields,
            ..Default::default()
        }
    }

    #[test]
    fn only_a_node_with_another_schema_and_a_field_list_is_checked() {
        let all = schema::fields().to_vec();
        assert!(NodeSchema::of(&hello(schema::digest(), all.clone())).is_none());
        assert!(NodeSchema::of(&hello("other", Vec::new())).is_none());
        let older = NodeSchema::of(&hello("other", all)).expect("checked");
        assert_eq!(older.build, "0.0.9");
    }

    #[test]
    fn a_refusal_names_each_unknown_field_and_the_version() {
        let n = NodeSchema {
            build: "0.0.9".into(),
            fields: HashSet::new(),
        };
        let a = "upstreams[].keepalive_timeout".to_owned();
        let r = n.refusal(7, &[&a]);
        assert_eq!(r["version"], 7);
        assert_eq!(r["by"], "control-plane");
        assert_eq!(r["errors"][0]["path"], "upstreams[].keepalive_timeout");
        let message = r["errors"][0]["message"].as_str().unwrap_or("");
        assert!(
            message.contains("0.0.9") && message.contains("version 7"),
            "{message}"
        );
    }
}
