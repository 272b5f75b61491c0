//! The HTTP listener's connections: which of them are waiting for a request
//! (not serving one), so that at `http.max_connections` the one that has
//! waited longest makes room for a new connection.
//!
//! Without this, slow clients holding every slot (slowloris: half a
//! request's headers, then nothing) kept `/healthz` and the dashboard out
//! until their header timeout; now each new connection evicts the oldest
//! waiting one, so a client that sends a whole request is served at once.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

/// Every open connection: whether it serves a request now and, when it
/// waits, since when (a sequence number, older is smaller).
#[derive(Debug, Default)]
pub(super) struct Connections {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    next: u64,
    open: HashMap<u64, Open>,
}

#[derive(Debug)]
struct Open {
    /// Waiting since this sequence number; `None` while serving a request.
    waiting_since: Option<u64>,
    evict: CancellationToken,
}

impl Connections {
    /// A new connection, waiting for its first request; its id, and the
    /// token cancelled when it is evicted.
    pub(super) fn open(&self) -> (u64, CancellationToken) {
        let mut inner = self.inner.lock();
        inner.next += 1;
        let id = inner.next;
        let evict = CancellationToken::new();
        inner.open.insert(
            id,
            Open {
                waiting_since: Some(id),
                evict: evict.clone(),
            },
        );
        (id, evict)
    }

    /// The connection started serving a request.
    fn busy(&self, id: u64) {
        if let Some(o) = self.inner.lock().open.get_mut(&id) {
            o.waiting_since = None;
        }
    }

    /// The connection finished a request and waits for the next.
    fn idle(&self, id: u64) {
        let mut inner = self.inner.lock();
        inner.next += 1;
        let since = inner.next;
        if let Some(o) = inner.open.get_mut(&id) {
            o.waiting_since = Some(since);
        }
    }

    /// The connection closed.
    pub(super) fn close(&self, id: u64) {
        self.inner.lock().open.remove(&id);
    }

    /// Evicts the connection that has waited longest for a request; false
    /// when every connection is serving one.
    pub(super) fn evict_oldest_waiting(&self) -> bool {
        let mut inner = self.inner.lock();
        let oldest = inner
            .open
            .iter()
            .filter_map(|(id, o)| o.waiting_since.map(|s| (s, *id)))
            .min();
        match oldest.and_then(|(_, id)| inner.open.remove(&id)) {
            Some(o) => {
                o.evict.cancel();
                true
            }
            None => false,
        }
    }
}

/// A connection's service: marks it busy for the time of each request.
#[derive(Clone)]
pub(super) struct Tracked<S> {
    pub(super) inner: S,
    pub(super) id: u64,
    pub(super) connections: Arc<Connections>,
}

impl<S, R> hyper::service::Service<R> for Tracked<S>
where
    S: hyper::service::Service<R>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn call(&self, request: R) -> Self::Future {
        self.connections.busy(self.id);
        let response = self.inner.call(request);
        let (connections, id) = (self.connections.clone(), self.id);
        Box::pin(async move {
            let r = response.await;
            connections.idle(id);
            r
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_waiting_connection_is_evicted_and_busy_ones_never() {
        let c = Connections::default();
        let (a, evict_a) = c.open();
        let (b, evict_b) = c.open();
        let (_, evict_c) = c.open();
        c.busy(a);
        assert!(c.evict_oldest_waiting());
        assert!(evict_b.is_cancelled() && !evict_a.is_cancelled() && !evict_c.is_cancelled());
        c.idle(a); // a waits again, now the newest
        assert!(c.evict_oldest_waiting());
        assert!(evict_c.is_cancelled() && !evict_a.is_cancelled());
        c.busy(a);
        assert!(
            !c.evict_oldest_waiting(),
            "a busy connection is never evicted"
        );
        c.close(b);
    }
}
