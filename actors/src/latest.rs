//! A latest-value channel: one sender, any number of receivers that wait for
//! a newer version and read the current value (intermediate versions are
//! skipped, so it never queues).
//!
//! It replaces `tokio::sync::watch`, whose waiters are spread over notifiers
//! picked by a thread-local random number that tokio seeds from a
//! process-wide counter: two runs of one seed in a process wake waiters in
//! different orders, which madsim's determinism check (rightly) rejects.
//! Here waiters are woken in the order they registered.

use std::collections::BTreeMap;
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};

struct State<T> {
    value: T,
    version: u64,
    closed: bool,
    next_receiver: u64,
    /// Waiting receivers by id: one waker each, however often they poll.
    waiting: BTreeMap<u64, Waker>,
}

type Shared<T> = Arc<Mutex<State<T>>>;

fn lock<T>(s: &Mutex<State<T>>) -> MutexGuard<'_, State<T>> {
    // Critical sections are a few assignments; a panic cannot leave one half done.
    s.lock().unwrap_or_else(|e| e.into_inner())
}

/// The sending end; dropping it closes the channel.
pub struct Sender<T> {
    shared: Shared<T>,
}

/// A receiving end; clones start from the same seen version.
pub struct Receiver<T> {
    shared: Shared<T>,
    id: u64,
    seen: u64,
}

/// A channel holding `value` as version 0.
pub fn channel<T>(value: T) -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Mutex::new(State {
        value,
        version: 0,
        closed: false,
        next_receiver: 1,
        waiting: BTreeMap::new(),
    }));
    let rx = Receiver {
        shared: shared.clone(),
        id: 0,
        seen: 0,
    };
    (Sender { shared }, rx)
}

impl<T> Sender<T> {
    /// Changes the value with `f`; if it returns `true`, publishes a new
    /// version and wakes the waiting receivers.
    pub fn send_if_modified(&self, f: impl FnOnce(&mut T) -> bool) -> bool {
        let mut s = lock(&self.shared);
        if !f(&mut s.value) {
            return false;
        }
        s.version += 1;
        let waiting = std::mem::take(&mut s.waiting);
        drop(s);
        for w in waiting.into_values() {
            w.wake();
        }
        true
    }

    /// Changes the value and publishes a new version.
    pub fn send_modify(&self, f: impl FnOnce(&mut T)) {
        self.send_if_modified(|v| {
            f(v);
            true
        });
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let mut s = lock(&self.shared);
        s.closed = true;
        let waiting = std::mem::take(&mut s.waiting);
        drop(s);
        for w in waiting.into_values() {
            w.wake();
        }
    }
}

impl<T> Clone for Receiver<T> {
    fn clone(&self) -> Self {
        let mut s = lock(&self.shared);
        let id = s.next_receiver;
        s.next_receiver += 1;
        Receiver {
            shared: self.shared.clone(),
            id,
            seen: self.seen,
        }
    }
}

impl<T: Clone> Receiver<T> {
    /// The current value (and marks it seen).
    pub fn borrow_and_update(&mut self) -> T {
        let s = lock(&self.shared);
        self.seen = s.version;
        s.value.clone()
    }

    /// The current value (without marking it seen).
    pub fn current(&self) -> T {
        lock(&self.shared).value.clone()
    }
}

impl<T> Receiver<T> {
    /// Waits for a version newer than the last seen; `Err(())` once the
    /// sender is gone (and nothing newer is left to see).
    pub async fn changed(&mut self) -> Result<(), ()> {
        poll_fn(|cx| {
            let mut s = lock(&self.shared);
            if s.version > self.seen {
                self.seen = s.version;
                return Poll::Ready(Ok(()));
            }
            if s.closed {
                return Poll::Ready(Err(()));
            }
            s.waiting.insert(self.id, cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        lock(&self.shared).waiting.remove(&self.id);
    }
}
