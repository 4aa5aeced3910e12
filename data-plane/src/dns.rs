//! Backends by host name: every A and AAAA address of the name becomes an
//! endpoint of the upstream (see [`crate::snapshot`]), and the name is
//! looked up again on a schedule.
//!
//! The answers live here, not in a snapshot: a snapshot is compiled from
//! the config and the addresses known at that moment, and when an answer
//! changes the set of addresses the control thread compiles the same
//! config again (the generation does not move). A name is asked again
//! after its answer's TTL, bounded by the shortest `dns_refresh` of the
//! upstreams that use it and by one second below; a failed lookup (no
//! answer, `SERVFAIL`, `NXDOMAIN`, no address) keeps the last good
//! addresses, is counted and shown, and is tried again sooner (1 s,
//! doubling, up to the refresh). A name that was never resolved has no
//! endpoints: its backend takes no requests until it resolves.

use crate::metrics::Metrics;
use crate::snapshot::Shared;
use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolverConfig,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::TokioResolver;
use isame_proto::config::{Config, Dns as DnsConfig, MIN_DNS_REFRESH};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};
use tokio::time::Instant;
use tracing::{info, warn};

/// What is known of one name.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The addresses of the last good answer, sorted; none before the first.
    pub addrs: Option<Vec<IpAddr>>,
    /// Why the last lookup failed, while it stays failed.
    pub error: Option<String>,
    /// When the last good answer came.
    pub resolved_at: Option<SystemTime>,
    /// The longest time between two lookups (the upstreams' `dns_refresh`).
    refresh: Duration,
    /// When the name is asked again.
    due: Instant,
    /// Failed lookups in a row.
    failures: u32,
}

#[derive(Default)]
struct State {
    /// The resolver and the section it was made from.
    resolver: Option<(DnsConfig, TokioResolver)>,
    names: HashMap<String, Entry>,
}

impl State {
    /// The resolver for `dns` (made anew when the section changed, and then
    /// every name is due: other name servers may answer otherwise), with
    /// its lookup timeout.
    fn resolver_for(&mut self, dns: &DnsConfig) -> Option<(TokioResolver, Duration)> {
        if self.resolver.as_ref().is_none_or(|(c, _)| c != dns) {
            let made = self.resolver.is_some();
            match resolver(dns) {
                Ok(r) => self.resolver = Some((dns.clone(), r)),
                Err(e) => {
                    warn!(error = %e, "cannot set up the DNS resolver");
                    return None;
                }
            }
            if made {
                let now = Instant::now();
                for e in self.names.values_mut() {
                    e.due = now;
                }
            }
        }
        self.resolver.as_ref().map(|(c, r)| (r.clone(), c.timeout))
    }
}

/// The names of a proxy's backends and what they resolve to.
#[derive(Default)]
pub struct Dns {
    state: Mutex<State>,
}

impl Dns {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The addresses `host` resolved to last; `None` before its first answer.
    pub fn addresses(&self, host: &str) -> Option<Vec<IpAddr>> {
        self.lock().names.get(host).and_then(|e| e.addrs.clone())
    }

    /// Records what `host` resolved to and why its last lookup failed.
    #[cfg(test)]
    pub fn set_for_test(&self, host: &str, addrs: Option<Vec<IpAddr>>, error: Option<&str>) {
        self.lock().names.insert(
            host.to_owned(),
            Entry {
                addrs,
                error: error.map(str::to_owned),
                resolved_at: None,
                refresh: Duration::from_secs(30),
                due: Instant::now(),
                failures: 0,
            },
        );
    }

    /// Why the last lookup of `host` failed, while it stays failed.
    pub fn error(&self, host: &str) -> Option<String> {
        self.lock().names.get(host).and_then(|e| e.error.clone())
    }

    /// Every name with what is known of it, sorted by name (for `/status`).
    pub fn entries(&self) -> Vec<(String, Entry)> {
        let mut all: Vec<_> = self
            .lock()
            .names
            .iter()
            .map(|(n, e)| (n.clone(), e.clone()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Follows `config`: forgets names it no longer uses, and looks up the
    /// ones it adds before the config is compiled, so that a new backend
    /// has its endpoints at once (when the name servers changed, every name
    /// is due at once for the refresh task).
    pub async fn prepare(&self, config: &Config, metrics: &Metrics) {
        let wanted = names(config);
        let (resolver, new) = {
            let mut s = self.lock();
            // A name no backend uses any more leaves the metrics too.
            s.names.retain(|n, _| {
                let keep = wanted.contains_key(n);
                if !keep {
                    let _ = metrics.dns_addresses.remove_label_values(&[n]);
                    for result in ["ok", "failed"] {
                        let _ = metrics.dns_lookups.remove_label_values(&[n, result]);
                    }
                }
                keep
            });
            if wanted.is_empty() {
                return;
            }
            let resolver = s.resolver_for(&config.dns);
            let now = Instant::now();
            let mut new = Vec::new();
            // Only names never asked are awaited here: a name already known
            // keeps its addresses and is refreshed on its schedule, so an
            // apply does not wait on a name server that is down.
            for (name, refresh) in &wanted {
                let e = s.names.entry(name.clone()).or_insert_with(|| {
                    new.push(name.clone());
                    Entry {
                        addrs: None,
                        error: None,
                        resolved_at: None,
                        refresh: *refresh,
                        due: now,
                        failures: 0,
                    }
                });
                e.refresh = *refresh;
            }
            (resolver, new)
        };
        if let Some((r, timeout)) = resolver {
            self.resolve(&r, timeout, new, metrics).await;
        }
    }

    /// Looks up the names of the first config before the proxy serves, on a
    /// runtime of its own (the caller may be inside one). The resolver made
    /// there is dropped with that runtime; the control thread makes its own.
    pub fn resolve_at_start(&self, config: &Config, metrics: &Metrics) {
        if names(config).is_empty() {
            return;
        }
        std::thread::scope(|s| {
            let handle = s.spawn(|| {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                match rt {
                    Ok(rt) => rt.block_on(self.prepare(config, metrics)),
                    Err(e) => warn!(error = %e, "cannot look up backend names at start"),
                }
            });
            if handle.join().is_err() {
                warn!("looking up backend names at start failed");
            }
        });
        self.lock().resolver = None;
    }

    /// Looks up the names that are due; true when some name's addresses
    /// changed (the snapshot must then be compiled again).
    pub async fn refresh(&self, dns: &DnsConfig, metrics: &Metrics) -> bool {
        let (resolver, due) = {
            let mut s = self.lock();
            let now = Instant::now();
            let due: Vec<String> = s
                .names
                .iter()
                .filter(|(_, e)| e.due <= now)
                .map(|(n, _)| n.clone())
                .collect();
            if due.is_empty() {
                return false;
            }
            let r = s.resolver_for(dns);
            if r.is_none() {
                // No resolver to ask (logged): try again in a second rather
                // than spin.
                for n in &due {
                    if let Some(e) = s.names.get_mut(n) {
                        e.due = now + MIN_DNS_REFRESH;
                    }
                }
            }
            (r, due)
        };
        match resolver {
            Some((r, timeout)) => self.resolve(&r, timeout, due, metrics).await,
            None => false,
        }
    }

    /// When the next name is due (a second from now when none is).
    pub fn next_due(&self) -> Instant {
        let s = self.lock();
        s.names
            .values()
            .map(|e| e.due)
            .min()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(1))
    }

    /// Looks `names` up side by side and records the answers; true when
    /// some name's addresses changed.
    async fn resolve(
        &self,
        r: &TokioResolver,
        timeout: Duration,
        names: Vec<String>,
        metrics: &Metrics,
    ) -> bool {
        let mut lookups = tokio::task::JoinSet::new();
        for name in names {
            let r = r.clone();
            lookups.spawn(async move {
                let answer = tokio::time::timeout(timeout, lookup(&r, &name)).await;
                let answer =
                    answer.unwrap_or_else(|_| Err(format!("no answer within {timeout:?}")));
                (name, answer)
            });
        }
        let mut changed = false;
        while let Some(done) = lookups.join_next().await {
            let Ok((name, answer)) = done else { continue };
            changed |= self.record(&name, answer, metrics);
        }
        changed
    }

    fn record(
        &self,
        name: &str,
        answer: Result<(Vec<IpAddr>, Duration), String>,
        metrics: &Metrics,
    ) -> bool {
        let mut s = self.lock();
        let Some(e) = s.names.get_mut(name) else {
            return false;
        };
        let now = Instant::now();
        match answer {
            Ok((addrs, ttl)) => {
                metrics.dns_lookups.with_label_values(&[name, "ok"]).inc();
                metrics
                    .dns_addresses
                    .with_label_values(&[name])
                    .set(i64::try_from(addrs.len()).unwrap_or(i64::MAX));
                e.due = now + ttl.clamp(MIN_DNS_REFRESH, e.refresh.max(MIN_DNS_REFRESH));
                e.failures = 0;
                e.resolved_at = Some(SystemTime::now());
                if e.error.take().is_some() {
                    info!(name, "DNS lookups succeed again");
                }
                let changed = e.addrs.as_ref() != Some(&addrs);
                if changed {
                    info!(name, addresses = ?addrs, "backend name resolved");
                    e.addrs = Some(addrs);
                }
                changed
            }
            Err(why) => {
                metrics
                    .dns_lookups
                    .with_label_values(&[name, "failed"])
                    .inc();
                e.failures = e.failures.saturating_add(1);
                let backoff = Duration::from_secs(1u64 << e.failures.min(12).saturating_sub(1));
                e.due = now + backoff.min(e.refresh.max(MIN_DNS_REFRESH));
                if e.error.as_deref() != Some(why.as_str()) {
                    warn!(name, error = %why, kept = ?e.addrs, "DNS lookup failed; keeping the last good addresses");
                }
                e.error = Some(why);
                false
            }
        }
    }
}

/// Every backend host name of `config` with the shortest `dns_refresh` of
/// the upstreams that use it.
pub fn names(config: &Config) -> HashMap<String, Duration> {
    let mut out: HashMap<String, Duration> = HashMap::new();
    for u in &config.upstreams {
        for b in &u.backends {
            let Ok(t) = crate::backend::Target::parse(&b.url) else {
                continue;
            };
            if t.addr.is_none() {
                let e = out.entry(t.host).or_insert(u.dns_refresh);
                *e = (*e).min(u.dns_refresh);
            }
        }
    }
    out
}

/// One lookup: the addresses, sorted and without repeats, and the
/// shortest TTL among the records.
async fn lookup(r: &TokioResolver, name: &str) -> Result<(Vec<IpAddr>, Duration), String> {
    // A final dot: the name as written, never completed by search domains.
    let fqdn = if name.ends_with('.') {
        name.to_owned()
    } else {
        format!("{name}.")
    };
    let found = r
        .lookup_ip(fqdn.as_str())
        .await
        .map_err(|e| e.to_string())?;
    let ttl = found
        .as_lookup()
        .answers()
        .iter()
        .map(|rec| rec.ttl)
        .min()
        .unwrap_or(0);
    let addrs = settle(name, found.iter().collect());
    if addrs.is_empty() {
        return Err("the name has no A or AAAA record".into());
    }
    Ok((addrs, Duration::from_secs(u64::from(ttl))))
}

/// Most endpoints one name becomes: each costs health checks, metric series
/// and pool state, and an answer (a name server's mistake, or someone
/// else's zone) should not be able to grow a node without bound.
pub const MAX_ADDRESSES: usize = 256;

/// An answer's addresses sorted, without repeats, and at most
/// [`MAX_ADDRESSES`] of them (the lowest, so every node keeps the same).
fn settle(name: &str, mut addrs: Vec<IpAddr>) -> Vec<IpAddr> {
    addrs.sort();
    addrs.dedup();
    if addrs.len() > MAX_ADDRESSES {
        warn!(
            name,
            answered = addrs.len(),
            kept = MAX_ADDRESSES,
            "a backend name has more addresses than the limit; keeping the lowest"
        );
        addrs.truncate(MAX_ADDRESSES);
    }
    addrs
}

/// A resolver asking `c.servers` (or the system's name servers), without a
/// cache of its own: the schedule here decides when a name is asked again.
fn resolver(c: &DnsConfig) -> Result<TokioResolver, String> {
    let servers = c.server_addrs();
    let mut builder = if servers.is_empty() {
        TokioResolver::builder_tokio().map_err(|e| e.to_string())?
    } else {
        let groups = servers
            .iter()
            .map(|sa| {
                let mut udp = ConnectionConfig::udp();
                udp.port = sa.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = sa.port();
                NameServerConfig::new(sa.ip(), true, vec![udp, tcp])
            })
            .collect();
        TokioResolver::builder_with_config(
            ResolverConfig::from_name_servers(groups),
            TokioRuntimeProvider::default(),
        )
    };
    let opts = builder.options_mut();
    opts.timeout = c.timeout;
    opts.attempts = 1;
    opts.cache_size = 0;
    opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    builder.build().map_err(|e| e.to_string())
}

/// Looks up the names that are due, on the control thread, and asks the
/// control loop to compile the config again when an answer changed.
pub async fn refresh_loop(shared: Arc<Shared>, changed: impl Fn() -> bool) {
    loop {
        tokio::time::sleep_until(shared.dns.next_due()).await;
        let dns = shared.snapshot().config.dns.clone();
        if shared.dns.refresh(&dns, &shared.metrics).await && !changed() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_sorted_deduplicated_and_bounded() {
        let ip = |n: u32| IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + n));
        assert_eq!(
            settle("a", vec![ip(3), ip(1), ip(3), ip(2)]),
            [ip(1), ip(2), ip(3)]
        );
        let many: Vec<IpAddr> = (0..1000).rev().map(ip).collect();
        let kept = settle("a", many);
        assert_eq!(kept.len(), MAX_ADDRESSES);
        assert_eq!((kept[0], kept[MAX_ADDRESSES - 1]), (ip(0), ip(255)));
    }
}
