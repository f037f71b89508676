//! Single-executor plumbing shared by the server and the client: replies awaited by token,
//! and the outbox a connection's writer task drains.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::rc::Rc;
use std::task::{Poll, Waker};

/// A reply being waited for.
struct Slot<T> {
    value: RefCell<Option<T>>,
    waker: RefCell<Option<Waker>>,
}

/// Replies awaited by token: `open` hands out a token and a future that resolves once
/// `complete` is called with that token.
pub(crate) struct Pending<T> {
    slots: RefCell<ahash::HashMap<u64, Rc<Slot<T>>>>,
    next: Cell<u64>,
}

impl<T> Default for Pending<T> {
    fn default() -> Pending<T> {
        Pending { slots: RefCell::default(), next: Cell::new(1) }
    }
}

impl<T> Pending<T> {
    pub(crate) fn open(&self) -> (u64, impl Future<Output = T>) {
        let token = self.next.get();
        self.next.set(token + 1);
        let slot = Rc::new(Slot { value: RefCell::new(None), waker: RefCell::new(None) });
        self.slots.borrow_mut().insert(token, slot.clone());
        let reply = futures_lite::future::poll_fn(move |context| match slot.value.borrow_mut().take() {
            Some(value) => Poll::Ready(value),
            None => {
                *slot.waker.borrow_mut() = Some(context.waker().clone());
                Poll::Pending
            }
        });
        (token, reply)
    }

    /// Resolves the reply of `token`; a token nobody waits for any more is ignored.
    pub(crate) fn complete(&self, token: u64, value: T) {
        let slot = self.slots.borrow_mut().remove(&token);
        if let Some(slot) = slot {
            *slot.value.borrow_mut() = Some(value);
            if let Some(waker) = slot.waker.borrow_mut().take() {
                waker.wake();
            }
        }
    }

    /// Forgets `token` (its reply will never come).
    pub(crate) fn abandon(&self, token: u64) {
        self.slots.borrow_mut().remove(&token);
    }

    /// Resolves every open reply with `value()` (the connection is gone).
    pub(crate) fn fail_all(&self, value: impl Fn() -> T) {
        let slots: Vec<u64> = self.slots.borrow().keys().copied().collect();
        for token in slots {
            self.complete(token, value());
        }
    }
}

/// Answers waiting to be written to one connection, and how many tasks may still add some.
#[derive(Default)]
pub(crate) struct Outbox {
    pub(crate) bytes: RefCell<Vec<u8>>,
    producers: Cell<usize>,
    waker: RefCell<Option<Waker>>,
}

/// A task that may still add answers; the writer ends after the last one is dropped.
pub(crate) struct Producer(pub(crate) Rc<Outbox>);

impl Producer {
    pub(crate) fn new(outbox: &Rc<Outbox>) -> Producer {
        outbox.producers.set(outbox.producers.get() + 1);
        Producer(outbox.clone())
    }

    /// Appends bytes with `write` and wakes the writer.
    pub(crate) fn send(&self, write: impl FnOnce(&mut Vec<u8>)) {
        write(&mut self.0.bytes.borrow_mut());
        self.0.wake();
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        self.0.producers.set(self.0.producers.get() - 1);
        self.0.wake();
    }
}

impl Outbox {
    pub(crate) fn wake(&self) {
        if let Some(waker) = self.waker.borrow_mut().take() {
            waker.wake();
        }
    }

    /// Everything queued so far (swapped with `spare`), or `None` once nothing more can come.
    pub(crate) async fn next(&self, spare: Vec<u8>) -> Option<Vec<u8>> {
        let mut spare = Some(spare);
        futures_lite::future::poll_fn(|context| {
            let mut bytes = self.bytes.borrow_mut();
            if !bytes.is_empty() {
                let mut next = spare.take().expect("polled once more after ready");
                next.clear();
                return Poll::Ready(Some(std::mem::replace(&mut *bytes, next)));
            }
            if self.producers.get() == 0 {
                return Poll::Ready(None);
            }
            *self.waker.borrow_mut() = Some(context.waker().clone());
            Poll::Pending
        })
        .await
    }
}
