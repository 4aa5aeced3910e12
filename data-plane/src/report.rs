//! What a node tells the control plane about its backends: one entry per
//! backend of the config, as the control plane knows them. A backend given
//! by host name stands for its endpoints: it is healthy when one of them
//! is, ejected when all of them are, and carries how many there are and
//! why its last lookup failed.

use crate::dns::Dns;
use crate::snapshot::Snapshot;
use isame_proto::pb;

/// The health entries of `snap`'s backends.
pub fn backend_health(snap: &Snapshot, dns: &Dns) -> Vec<pb::BackendHealth> {
    let now = crate::clock::now_nanos();
    let mut out = Vec::new();
    for (u, uc) in snap.upstreams.iter().zip(&snap.config.upstreams) {
        for b in &uc.backends {
            let mine = u
                .backends
                .iter()
                .filter(|e| e.source.as_deref().unwrap_or(e.url.as_str()) == b.url);
            let by_name = crate::backend::Target::parse(&b.url).is_ok_and(|t| t.addr.is_none());
            if !by_name {
                if let Some(e) = mine.clone().next() {
                    out.push(pb::BackendHealth {
                        upstream: u.name.clone(),
                        backend: b.url.clone(),
                        healthy: e.state.health.is_healthy(),
                        circuit: e.state.breaker.state_name().into(),
                        ejected: e.state.outlier.is_ejected(now),
                        ..Default::default()
                    });
                }
                continue;
            }
            let (mut endpoints, mut healthy, mut ejected, mut open) = (0u32, 0u32, 0u32, 0u32);
            for e in mine {
                endpoints += 1;
                healthy += u32::from(e.state.health.is_healthy());
                ejected += u32::from(e.state.outlier.is_ejected(now));
                open += u32::from(e.state.breaker.is_open());
            }
            let host = crate::backend::Target::parse(&b.url)
                .map(|t| t.host)
                .unwrap_or_default();
            out.push(pb::BackendHealth {
                upstream: u.name.clone(),
                backend: b.url.clone(),
                healthy: healthy > 0,
                circuit: if endpoints > 0 && open == endpoints {
                    "open"
                } else {
                    "closed"
                }
                .into(),
                ejected: endpoints > 0 && ejected == endpoints,
                by_name: true,
                endpoints,
                healthy_endpoints: healthy,
                dns_error: dns.error(&host).unwrap_or_default(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_one_entry_for_all_its_endpoints() {
        let config = isame_proto::Config::from_yaml(
            "upstreams:\n  - name: web\n    backends: [\"http://10.0.0.1:80\", \"http://api.test:8080\", \"http://gone.test:80\"]\n",
        )
        .expect("valid");
        let dns = Dns::default();
        let two = vec![
            "10.0.0.5".parse().expect("ip"),
            "10.0.0.6".parse().expect("ip"),
        ];
        dns.set_for_test("api.test", Some(two), Some("SERVFAIL"));
        dns.set_for_test("gone.test", None, Some("NXDOMAIN"));
        let metrics = crate::metrics::Metrics::new().expect("metrics");
        let snap = Snapshot::compile(config, None, 1, &metrics, &dns).expect("compiles");
        let urls: Vec<&str> = snap.upstreams[0]
            .backends
            .iter()
            .map(|b| b.url.as_str())
            .collect();
        assert_eq!(
            urls,
            [
                "http://10.0.0.1:80",
                "http://10.0.0.5:8080",
                "http://10.0.0.6:8080"
            ]
        );
        let r = backend_health(&snap, &dns);
        assert_eq!(r.len(), 3, "{r:?}");
        assert_eq!(
            (r[0].backend.as_str(), r[0].by_name),
            ("http://10.0.0.1:80", false)
        );
        assert_eq!(r[1].backend, "http://api.test:8080");
        assert!(r[1].by_name && r[1].healthy && !r[1].ejected);
        assert_eq!((r[1].endpoints, r[1].healthy_endpoints), (2, 2));
        assert_eq!(r[1].dns_error, "SERVFAIL");
        // Never resolved: reported, with no endpoint and not healthy.
        assert_eq!(
            (r[2].endpoints, r[2].healthy, r[2].dns_error.as_str()),
            (0, false, "NXDOMAIN")
        );
    }
}
