//! Which connections the HTTP server keeps when there are more than it may hold.
//!
//! Why: every open connection costs a file descriptor, and systemd's default soft limit is 1,024.
//! Without a cap, clients that open connections and send their request head slowly (or never)
//! use them all up: `accept` then fails, and Qlik Cloud's deliveries wait in the kernel's
//! backlog unanswered until Qlik marks them failed (and may disable the webhook).
//!
//! Promises: at most `max` connections are held. When a new one arrives at the cap, the oldest
//! connection that is not in the middle of a request (still sending its head, or idle between
//! requests) is closed to make room, so a flood of slow clients cannot keep a good request out;
//! only when every held connection is busy with a request is the new one shed (the server
//! answers it 503). Pure bookkeeping, no I/O: the server acts on the answers.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// The connections held, oldest first.
pub struct Admission {
    max: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    open: BTreeMap<u64, Slot>,
}

struct Slot {
    busy: Arc<AtomicBool>,
    evict: Arc<Notify>,
}

/// The answer for a new connection.
pub enum Admit {
    /// Serve it; `evicted` (if any) was told to close to make room.
    Yes { ticket: Ticket, evicted: bool },
    /// Every held connection is busy with a request: answer 503 and close.
    Full,
}

/// A held connection: its place is given back when this is dropped.
pub struct Ticket {
    id: u64,
    admission: Arc<Admission>,
    /// Set while a request is being handled: such a connection is never evicted.
    pub busy: Arc<AtomicBool>,
    /// Notified when the connection must close to make room for a newer one.
    pub evict: Arc<Notify>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.admission.lock().open.remove(&self.id);
    }
}

impl Admission {
    pub fn new(max: usize) -> Arc<Admission> {
        Arc::new(Admission {
            max: max.max(1),
            inner: Mutex::default(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many connections are held.
    pub fn held(&self) -> usize {
        self.lock().open.len()
    }

    /// Admits a new connection, closing the oldest idle one if the cap is reached.
    pub fn admit(self: &Arc<Self>) -> Admit {
        let mut inner = self.lock();
        let mut evicted = false;
        if inner.open.len() >= self.max {
            let oldest_idle = inner
                .open
                .iter()
                .find(|(_, slot)| !slot.busy.load(Ordering::SeqCst))
                .map(|(id, _)| *id);
            match oldest_idle.and_then(|id| inner.open.remove(&id)) {
                Some(slot) => {
                    // Stored if the connection's task is not waiting yet: it sees it next.
                    slot.evict.notify_one();
                    evicted = true;
                }
                None => return Admit::Full,
            }
        }
        let id = inner.next_id;
        inner.next_id += 1;
        let busy = Arc::new(AtomicBool::new(false));
        let evict = Arc::new(Notify::new());
        inner.open.insert(
            id,
            Slot {
                busy: busy.clone(),
                evict: evict.clone(),
            },
        );
        Admit::Yes {
            ticket: Ticket {
                id,
                admission: Arc::clone(self),
                busy,
                evict,
            },
            evicted,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticket(a: &Arc<Admission>) -> (Ticket, bool) {
        match a.admit() {
            Admit::Yes { ticket, evicted } => (ticket, evicted),
            Admit::Full => panic!("full"),
        }
    }

    #[tokio::test]
    async fn at_the_cap_the_oldest_idle_connection_makes_room() {
        let a = Admission::new(3);
        let (first, _) = ticket(&a);
        let (second, _) = ticket(&a);
        let (third, evicted) = ticket(&a);
        assert!(!evicted);
        first.busy.store(true, Ordering::SeqCst); // in a request: kept
        let (_fourth, evicted) = ticket(&a);
        assert!(evicted);
        assert_eq!(a.held(), 3);
        // The second (oldest idle) was told to close; the busy first was not.
        tokio::time::timeout(std::time::Duration::from_secs(1), second.evict.notified())
            .await
            .expect("the oldest idle connection is evicted");
        drop(second);
        assert_eq!(a.held(), 3, "an evicted ticket was already given back");
        third.busy.store(true, Ordering::SeqCst);
        let (fifth, evicted) = ticket(&a);
        assert!(evicted, "the fourth was idle");
        fifth.busy.store(true, Ordering::SeqCst);
        // Now every held connection is busy: shed.
        assert!(matches!(a.admit(), Admit::Full));
        drop(first);
        assert_eq!(a.held(), 2);
        assert!(matches!(a.admit(), Admit::Yes { evicted: false, .. }));
    }
}
