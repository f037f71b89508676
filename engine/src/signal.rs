//! Single-threaded wake-up primitives for one executor (no locks, no atomics): a watermark
//! that futures wait to pass, and an event that wakes one waiting task.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::task::{Poll, Waker};

/// A monotonically advancing value; `wait(target)` resolves once it reaches `target`, or
/// with the failure once `fail` is called.
#[derive(Default)]
pub(crate) struct Watermark {
    value: Cell<u64>,
    failure: RefCell<Option<String>>,
    /// Wakers by the value they wait for, so an advance touches only the ready ones.
    waiters: RefCell<BTreeMap<u64, Vec<Waker>>>,
}

impl Watermark {
    pub(crate) fn new(value: u64) -> Watermark {
        Watermark { value: Cell::new(value), ..Watermark::default() }
    }

    pub(crate) fn get(&self) -> u64 {
        self.value.get()
    }

    pub(crate) fn advance(&self, value: u64) {
        debug_assert!(value >= self.value.get(), "watermarks only move forward");
        self.value.set(value);
        let ready = {
            let mut waiters = self.waiters.borrow_mut();
            let waiting = waiters.split_off(&(value + 1));
            std::mem::replace(&mut *waiters, waiting)
        };
        ready.into_values().flatten().for_each(Waker::wake);
    }

    pub(crate) fn fail(&self, cause: String) {
        self.failure.borrow_mut().get_or_insert(cause);
        let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
        waiters.into_values().flatten().for_each(Waker::wake);
    }

    pub(crate) fn failure(&self) -> Option<String> {
        self.failure.borrow().clone()
    }

    pub(crate) fn wait(&self, target: u64) -> impl Future<Output = Result<(), String>> + '_ {
        futures_lite::future::poll_fn(move |context| {
            if self.value.get() >= target {
                return Poll::Ready(Ok(()));
            }
            if let Some(cause) = self.failure.borrow().clone() {
                return Poll::Ready(Err(cause));
            }
            self.waiters.borrow_mut().entry(target).or_default().push(context.waker().clone());
            Poll::Pending
        })
    }
}

/// A flag one task waits on and others set.
#[derive(Default)]
pub(crate) struct Event {
    set: Cell<bool>,
    waiter: RefCell<Option<Waker>>,
}

impl Event {
    pub(crate) fn notify(&self) {
        self.set.set(true);
        if let Some(waker) = self.waiter.borrow_mut().take() {
            waker.wake();
        }
    }

    /// Resolves once `notify` has been called since the last `wait` resolved.
    pub(crate) fn wait(&self) -> impl Future<Output = ()> + '_ {
        futures_lite::future::poll_fn(move |context| {
            if self.set.replace(false) {
                return Poll::Ready(());
            }
            *self.waiter.borrow_mut() = Some(context.waker().clone());
            Poll::Pending
        })
    }
}
