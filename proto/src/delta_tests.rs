use super::*;
use crate::Config;
use proptest::prelude::*;
use serde_json::{json, Value};

/// The canonical JSON of a valid config, as the control plane writes it.
fn canonical(doc: &Value) -> String {
    let config = Config::from_json(&doc.to_string()).expect("a valid config");
    serde_json::to_string(&config).expect("serializable")
}

fn upstream(name: &str, weight: u32) -> Value {
    json!({"name": name, "backends": [
        {"url": "http://127.0.0.1:3001", "weight": weight},
        {"url": "http://127.0.0.1:3002"}
    ]})
}

fn base() -> Value {
    json!({
        "upstreams": [upstream("a", 1), upstream("b", 2), upstream("c", 3)],
        "routes": [
            {"name": "r1", "path_prefix": "/a", "upstream": "a"},
            {"name": "r2", "path_prefix": "/b", "upstream": "b"}
        ],
        "health": {"interval": "5s"}
    })
}

fn delta(old: &str, new: &str) -> Option<(Vec<pb::Resource>, Vec<pb::ResourceKey>)> {
    Document::split(old)
        .expect("old")
        .diff(&Document::split(new).expect("new"))
}

fn applied(old: &str, d: &(Vec<pb::Resource>, Vec<pb::ResourceKey>)) -> String {
    Document::split(old)
        .expect("old")
        .apply(&d.0, &d.1)
        .expect("applies")
        .join()
}

#[test]
fn a_document_joins_back_to_the_same_bytes() {
    let text = canonical(&base());
    let doc = Document::split(&text).expect("splits");
    assert_eq!(doc.join(), text);
    // 3 upstreams, 2 routes, and every other section as one piece each.
    let sections = serde_json::from_str::<serde_json::Map<String, Value>>(&text)
        .expect("object")
        .len();
    assert_eq!(doc.resources(), 5 + sections - 2);
}

#[test]
fn one_weight_changes_one_upstream() {
    let old = canonical(&base());
    let mut v = base();
    v["upstreams"][1] = upstream("b", 7);
    let new = canonical(&v);
    let d = delta(&old, &new).expect("a delta");
    assert_eq!(d.0.len(), 1, "{:?}", d.0);
    assert_eq!(
        (d.0[0].section.as_str(), d.0[0].name.as_str()),
        ("upstreams", "b")
    );
    assert_eq!(d.0[0].index, 1);
    assert_eq!(d.0[0].hash, resource_hash(&d.0[0].json));
    assert!(d.1.is_empty());
    assert_eq!(applied(&old, &d), new);
}

#[test]
fn items_added_removed_and_sections_changed() {
    let old = canonical(&base());
    let mut v = base();
    let ups = v["upstreams"].as_array_mut().expect("list");
    ups.remove(0);
    ups.insert(1, upstream("z", 1));
    v["routes"] = json!([{"name": "r2", "path_prefix": "/b", "upstream": "b"}]);
    v["health"] = json!({"interval": "9s"});
    v["trusted_proxies"] = json!(["10.0.0.0/8"]);
    let new = canonical(&v);
    let d = delta(&old, &new).expect("a delta");
    let names: Vec<_> =
        d.0.iter()
            .map(|r| format!("{}[{}]", r.section, r.name))
            .collect();
    assert!(names.contains(&"upstreams[z]".to_owned()), "{names:?}");
    assert!(names.contains(&"health[]".to_owned()), "{names:?}");
    assert!(names.contains(&"trusted_proxies[]".to_owned()), "{names:?}");
    let gone: Vec<_> =
        d.1.iter()
            .map(|k| format!("{}[{}]", k.section, k.name))
            .collect();
    assert_eq!(gone, ["upstreams[a]", "routes[r1]"]);
    assert_eq!(applied(&old, &d), new);
    // And back: the section that appeared is removed again.
    let back = delta(&new, &old).expect("a delta");
    assert!(back
        .1
        .iter()
        .any(|k| k.section == "trusted_proxies" && k.name.is_empty()));
    assert_eq!(applied(&new, &back), old);
}

#[test]
fn items_that_only_move_need_a_whole_snapshot() {
    let old = canonical(&base());
    let mut v = base();
    v["routes"].as_array_mut().expect("list").reverse();
    assert_eq!(delta(&old, &canonical(&v)), None);
}

#[test]
fn a_wrong_delta_is_refused_with_the_reason() {
    let old = Document::split(&canonical(&base())).expect("old");
    let mut v = base();
    v["upstreams"][0] = upstream("a", 9);
    let (mut res, removed) = old
        .diff(&Document::split(&canonical(&v)).expect("new"))
        .expect("a delta");
    // A resource whose text does not match its hash.
    let mut tampered = res.clone();
    tampered[0].json = tampered[0].json.replace('9', "8");
    let e = old.apply(&tampered, &removed).expect_err("refused");
    assert!(
        e.to_string()
            .contains("upstreams[a] does not match its hash"),
        "{e}"
    );
    // A removal of something the base lacks.
    let gone = [pb::ResourceKey {
        section: "upstreams".into(),
        name: "nope".into(),
    }];
    let e = old.apply(&[], &gone).expect_err("refused");
    assert!(e.to_string().contains("removes upstreams[nope]"), "{e}");
    // A position past the end.
    res[0].index = 40;
    let e = old.apply(&res, &removed).expect_err("refused");
    assert!(e.to_string().contains("past the end"), "{e}");
    // Items of a section that is not a list.
    let item = resource("health", "x", 0, "{}");
    let e = old.apply(&[item], &[]).expect_err("refused");
    assert!(e.to_string().contains("not a named list"), "{e}");
}

#[test]
fn the_hash_covers_certificates() {
    let json = b"{}";
    let none = content_hash(json, &BTreeMap::new());
    let one = content_hash(json, &[("main".into(), "id1".into())].into());
    let other = content_hash(json, &[("main".into(), "id2".into())].into());
    assert_ne!(none, one);
    assert_ne!(one, other);
    assert_eq!(none, resource_hash("{}"));
}

/// One change an operator may make.
#[derive(Debug, Clone)]
enum Edit {
    Weight(usize, u32),
    AddUpstream(usize),
    RemoveUpstream(usize),
    AddRoute(usize),
    RemoveRoute(usize),
    Health(u32),
    Trust(bool),
    Swap(usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (0..8usize, 1..100u32).prop_map(|(i, w)| Edit::Weight(i, w)),
        (0..8usize).prop_map(Edit::AddUpstream),
        (0..8usize).prop_map(Edit::RemoveUpstream),
        (0..8usize).prop_map(Edit::AddRoute),
        (0..8usize).prop_map(Edit::RemoveRoute),
        (5..60u32).prop_map(Edit::Health),
        any::<bool>().prop_map(Edit::Trust),
        (0..8usize).prop_map(Edit::Swap),
    ]
}

/// Applies `e` to the config document, keeping it valid.
fn make(v: &mut Value, e: &Edit, fresh: &mut u32) {
    let ups = v["upstreams"].as_array().map_or(0, Vec::len);
    match *e {
        Edit::Weight(i, w) if ups > 0 => {
            v["upstreams"][i % ups]["backends"][0]["weight"] = w.into();
        }
        Edit::AddUpstream(i) => {
            *fresh += 1;
            let at = i % (ups + 1);
            if let Some(list) = v["upstreams"].as_array_mut() {
                list.insert(at, upstream(&format!("u{fresh}"), 1));
            }
        }
        Edit::RemoveUpstream(i) if ups > 1 => {
            let name = v["upstreams"][i % ups]["name"].clone();
            let routed = v["routes"]
                .as_array()
                .is_some_and(|r| r.iter().any(|r| r["upstream"] == name));
            if !routed {
                if let Some(list) = v["upstreams"].as_array_mut() {
                    list.remove(i % ups);
                }
            }
        }
        Edit::AddRoute(i) if ups > 0 => {
            *fresh += 1;
            let target = v["upstreams"][i % ups]["name"].clone();
            let route = json!({"name": format!("r{fresh}"), "path_prefix": format!("/p{fresh}"), "upstream": target});
            match v["routes"].as_array_mut() {
                Some(list) => {
                    let at = i % (list.len() + 1);
                    list.insert(at, route);
                }
                None => v["routes"] = json!([route]),
            }
        }
        Edit::RemoveRoute(i) => {
            if let Some(list) = v["routes"].as_array_mut() {
                if !list.is_empty() {
                    let at = i % list.len();
                    list.remove(at);
                }
            }
        }
        Edit::Health(s) => v["health"] = json!({"interval": format!("{s}s")}),
        Edit::Trust(on) => {
            if let Some(o) = v.as_object_mut() {
                if on {
                    o.insert("trusted_proxies".into(), json!(["10.0.0.0/8"]));
                } else {
                    o.remove("trusted_proxies");
                }
            }
        }
        Edit::Swap(i) => {
            if let Some(list) = v["upstreams"].as_array_mut() {
                if list.len() > 1 {
                    let (a, n) = (i % list.len(), list.len());
                    list.swap(a, (a + 1) % n);
                }
            }
        }
        _ => {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Along any sequence of changes, each delta rebuilds the next version
    /// byte for byte (so its hash too), and when no delta is possible the
    /// diff says so rather than giving a wrong one.
    #[test]
    fn deltas_rebuild_every_version_exactly(edits in proptest::collection::vec(edit(), 1..12)) {
        let mut v = base();
        let mut fresh = 100;
        let mut prev = canonical(&v);
        let mut doc = Document::split(&prev).expect("splits");
        for e in &edits {
            make(&mut v, e, &mut fresh);
            let next = canonical(&v);
            let next_doc = Document::split(&next).expect("splits");
            prop_assert_eq!(next_doc.join(), next.clone());
            match doc.diff(&next_doc) {
                Some((res, removed)) => {
                    let rebuilt = doc.apply(&res, &removed).expect("applies");
                    prop_assert_eq!(rebuilt.join(), next.clone());
                    prop_assert_eq!(
                        content_hash(rebuilt.join().as_bytes(), &BTreeMap::new()),
                        content_hash(next.as_bytes(), &BTreeMap::new())
                    );
                }
                None => prop_assert!(matches!(e, Edit::Swap(_)), "no delta for {:?}", e),
            }
            prev = next;
            doc = next_doc;
        }
        prop_assert!(!prev.is_empty());
    }
}
