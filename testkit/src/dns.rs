//! A small authoritative DNS server on a real UDP socket, for tests of
//! backends by name: the test sets which addresses a name has and with what
//! TTL, changes them while traffic flows, or makes the server fail
//! (`SERVFAIL`) or go silent.

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{RData, Record, RecordType};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use tokio::net::UdpSocket;

/// How the server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsMode {
    /// From its records (`NXDOMAIN` for names it does not know).
    Answer,
    /// `SERVFAIL` to everything.
    Fail,
    /// Nothing at all.
    Silent,
}

#[derive(Default)]
struct Zone {
    /// Lower-case name without the final dot → addresses and TTL.
    records: HashMap<String, (Vec<IpAddr>, u32)>,
}

/// A running test DNS server; it stops when dropped.
pub struct DnsServer {
    /// Where it listens (UDP).
    pub addr: SocketAddr,
    zone: Arc<Mutex<Zone>>,
    mode: Arc<AtomicU8>,
    queries: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl DnsServer {
    /// Starts a server on `127.0.0.1:0` in the current runtime.
    pub async fn start() -> DnsServer {
        let socket = UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind DNS server");
        let addr = socket.local_addr().expect("local addr");
        let zone = Arc::new(Mutex::new(Zone::default()));
        let mode = Arc::new(AtomicU8::new(0));
        let queries = Arc::new(AtomicUsize::new(0));
        let (z, m, q) = (zone.clone(), mode.clone(), queries.clone());
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
                    continue;
                };
                q.fetch_add(1, SeqCst);
                let mode = match m.load(SeqCst) {
                    1 => DnsMode::Fail,
                    2 => DnsMode::Silent,
                    _ => DnsMode::Answer,
                };
                if mode == DnsMode::Silent {
                    continue;
                }
                let Ok(query) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let reply = answer(&query, mode, &z);
                if let Ok(bytes) = reply.to_vec() {
                    let _ = socket.send_to(&bytes, peer).await;
                }
            }
        });
        DnsServer {
            addr,
            zone,
            mode,
            queries,
            task,
        }
    }

    /// Gives `name` these addresses (A and AAAA records) with `ttl` seconds.
    pub fn set(&self, name: &str, addrs: &[IpAddr], ttl: u32) {
        let key = name.trim_end_matches('.').to_ascii_lowercase();
        if let Ok(mut z) = self.zone.lock() {
            z.records.insert(key, (addrs.to_vec(), ttl));
        }
    }

    /// Removes `name`: it answers `NXDOMAIN`.
    pub fn remove(&self, name: &str) {
        let key = name.trim_end_matches('.').to_ascii_lowercase();
        if let Ok(mut z) = self.zone.lock() {
            z.records.remove(&key);
        }
    }

    /// Sets how the server answers.
    pub fn set_mode(&self, mode: DnsMode) {
        let v = match mode {
            DnsMode::Answer => 0,
            DnsMode::Fail => 1,
            DnsMode::Silent => 2,
        };
        self.mode.store(v, SeqCst);
    }

    /// Queries received so far.
    pub fn queries(&self) -> usize {
        self.queries.load(SeqCst)
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn answer(query: &Message, mode: DnsMode, zone: &Mutex<Zone>) -> Message {
    let mut reply = Message::new(query.id, MessageType::Response, OpCode::Query);
    reply.metadata.recursion_desired = query.recursion_desired;
    reply.metadata.recursion_available = true;
    reply.metadata.authoritative = true;
    reply.add_queries(query.queries.iter().cloned());
    if mode == DnsMode::Fail {
        reply.metadata.response_code = ResponseCode::ServFail;
        return reply;
    }
    let Some(q) = query.queries.first() else {
        reply.metadata.response_code = ResponseCode::FormErr;
        return reply;
    };
    let key = q
        .name()
        .to_ascii()
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let found = zone.lock().ok().and_then(|z| z.records.get(&key).cloned());
    let Some((addrs, ttl)) = found else {
        reply.metadata.response_code = ResponseCode::NXDomain;
        return reply;
    };
    for ip in addrs {
        let rdata = match (ip, q.query_type()) {
            (IpAddr::V4(v4), RecordType::A) => RData::A(A(v4)),
            (IpAddr::V6(v6), RecordType::AAAA) => RData::AAAA(AAAA(v6)),
            _ => continue,
        };
        reply.add_answer(Record::from_rdata(q.name().clone(), ttl, rdata));
    }
    reply
}
