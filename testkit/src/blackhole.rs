//! A loopback address where connection attempts hang: a listener whose accept
//! queue is full and never drained, so the kernel drops further SYNs. Used to
//! test connect timeouts without leaving loopback.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

/// A port that never completes a TCP handshake while this value lives.
pub struct Blackhole {
    /// The address whose connects hang.
    pub addr: SocketAddr,
    _listener: TcpListener,
    _fillers: Vec<TcpStream>,
}

impl Blackhole {
    /// Binds `127.0.0.1:0` with a one-slot backlog and fills it.
    pub fn start() -> std::io::Result<Blackhole> {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
        let any: SocketAddr = "127.0.0.1:0".parse().map_err(std::io::Error::other)?;
        socket.bind(&any.into())?;
        socket.listen(0)?;
        let listener: TcpListener = socket.into();
        let addr = listener.local_addr()?;
        let mut fillers = Vec::new();
        // Connect until one attempt does not complete quickly: the queue is full.
        for _ in 0..8 {
            match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                Ok(s) => fillers.push(s),
                Err(_) => break,
            }
        }
        Ok(Blackhole {
            addr,
            _listener: listener,
            _fillers: fillers,
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}
