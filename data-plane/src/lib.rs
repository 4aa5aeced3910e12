//! The Isame data plane (`isame-lb`): an HTTP/1.1 and HTTP/2 load balancer.
//!
//! A request passes the modules in this order: [`listener`] accepts it and
//! [`conn_timeouts`] guards the connection; [`proxy`] routes it ([`route`]),
//! plans its forwarding headers ([`headers`], [`client_ip`]), runs the
//! route's [`middleware`], picks a backend ([`balancer`]), forwards it over a
//! pooled connection ([`upstream`], [`pool`]) and streams the response back
//! ([`body`]), recording [`metrics`]. [`snapshot`] holds the compiled config all of them read;
//! [`reload`] swaps it; [`admin`] reports on it; [`app`] ties it together.
#![forbid(unsafe_code)]

pub mod access_log;
pub mod admin;
pub mod app;
pub mod backend;
pub mod balancer;
pub mod body;
pub mod breaker;
pub mod cli;
pub mod client_ip;
pub mod clock;
pub mod conn_timeouts;
pub mod connection;
pub mod dispatch;
pub mod error;
pub mod headers;
pub mod health;
pub mod host;
pub mod listener;
pub mod metrics;
pub mod middleware;
pub mod observe;
pub mod pool;
pub mod proxy;
pub mod ratelimit;
pub mod reload;
pub mod retry;
pub mod rewind;
pub mod route;
pub mod series;
pub mod snapshot;
pub mod subscription;
pub mod tls;
pub mod traffic;
pub mod upstream;
