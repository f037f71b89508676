//! Single-executor plumbing shared by the server and the client: replies awaited by token,
//! the outbox a connection's writer task drains, and the inbox its reader cuts frames from.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::rc::Rc;
use std::task::{Poll, Waker};

use futures_lite::{AsyncRead, AsyncReadExt};
use tessera_wire::frame::{self, Decoded, Frame, FramingLost};

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

/// Bytes read from a connection and not yet cut into frames. The buffer is allocated (and
/// zeroed) once and reused; it grows only for a frame larger than itself, and shrinks back once
/// that frame is consumed.
pub(crate) struct Inbox {
    bytes: Vec<u8>,
    start: usize,
    end: usize,
}

/// Bytes an `Inbox` asks the socket for at a time.
const INBOX_BYTES: usize = 64 << 10;
/// An `Inbox` grown past this for a large frame goes back to `INBOX_BYTES` once empty;
/// below it, it keeps its size (replication frames often exceed 64 KiB, and regrowing
/// for each cost zeroing and page faults on fresh memory: ~10% of a cluster's CPU).
const INBOX_KEEP_MAX: usize = 4 << 20;

impl Inbox {
    pub(crate) fn new() -> Inbox {
        Inbox { bytes: vec![0; INBOX_BYTES], start: 0, end: 0 }
    }

    /// The next whole frame, `None` if more bytes are needed first.
    pub(crate) fn next_frame(&mut self) -> Result<Option<Frame<'_>>, FramingLost> {
        match frame::decode(&self.bytes[self.start..self.end])? {
            Decoded::Incomplete(_) => Ok(None),
            Decoded::Frame(frame, used) => {
                self.start += used;
                Ok(Some(frame))
            }
        }
    }

    /// The length of the next frame, once its length field has arrived and while its bytes
    /// have not all (0 otherwise).
    pub(crate) fn wanted(&self) -> usize {
        match frame::decode(&self.bytes[self.start..self.end]) {
            Ok(Decoded::Incomplete(total)) if self.end - self.start >= 4 => total,
            _ => 0,
        }
    }

    /// Whether part of a frame has arrived.
    pub(crate) fn partial(&self) -> bool {
        self.start != self.end
    }

    /// Reads more bytes from `reader`; `Ok(0)` when the peer has closed.
    pub(crate) async fn fill(&mut self, reader: &mut (impl AsyncRead + Unpin)) -> std::io::Result<usize> {
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
            if self.bytes.len() > INBOX_KEEP_MAX {
                self.bytes = vec![0; INBOX_BYTES];
            }
        } else if self.bytes.len() - self.end < INBOX_BYTES / 2 {
            self.bytes.copy_within(self.start..self.end, 0);
            (self.start, self.end) = (0, self.end - self.start);
        }
        if self.end == self.bytes.len() {
            // A frame larger than the buffer (at most FRAME_LEN_MAX, or decoding stops first),
            // whose length is known: the buffer grows to hold it, and no more.
            let grown = (self.bytes.len() * 2).min(self.wanted().max(self.bytes.len() + 1));
            self.bytes.resize(grown, 0);
        }
        let read = reader.read(&mut self.bytes[self.end..]).await?;
        self.end += read;
        Ok(read)
    }
}
