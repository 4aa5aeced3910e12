//! Which node ids have a stream open right now. A second stream with an id
//! that is already connected replaces the first: the old session is told to
//! end, and only the newest session may mark the node disconnected.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use tokio::sync::oneshot;

/// One open stream.
struct Entry {
    session: u64,
    replaced: oneshot::Sender<()>,
}

/// The open streams, by node id.
#[derive(Default)]
pub struct Registry {
    sessions: Mutex<HashMap<String, Entry>>,
    next: AtomicU64,
}

/// A session's place in the registry.
pub struct Ticket {
    /// Unique per stream.
    pub session: u64,
    /// Completes when another stream took over this node id.
    pub replaced: oneshot::Receiver<()>,
}

impl Registry {
    /// Registers a new stream for `id`, ending any older one. Returns the
    /// ticket and whether another stream was replaced.
    pub fn open(&self, id: &str) -> (Ticket, bool) {
        let session = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let mut map = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let old = map.insert(
            id.to_owned(),
            Entry {
                session,
                replaced: tx,
            },
        );
        let replaced = old.is_some();
        if let Some(old) = old {
            let _ = old.replaced.send(());
        }
        (
            Ticket {
                session,
                replaced: rx,
            },
            replaced,
        )
    }

    /// Removes `id` if `session` is still its stream; true when it was.
    pub fn close(&self, id: &str, session: u64) -> bool {
        let mut map = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        if map.get(id).is_some_and(|e| e.session == session) {
            map.remove(id);
            true
        } else {
            false
        }
    }

    /// How many nodes have a stream open.
    pub fn len(&self) -> usize {
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_stream_replaces_the_first() {
        let r = Registry::default();
        let (mut first, replaced) = r.open("dp-1");
        assert!(!replaced);
        let (second, replaced) = r.open("dp-1");
        assert!(replaced);
        assert!(
            first.replaced.try_recv().is_ok(),
            "the first session is told"
        );
        assert!(
            !r.close("dp-1", first.session),
            "the old session may not close the node"
        );
        assert_eq!(r.len(), 1);
        assert!(r.close("dp-1", second.session));
        assert_eq!(r.len(), 0);
    }
}
