//! One core's budget for the request bytes its client connections buffer: an HTTP body, or a
//! binary frame, is read only once room for its declared length is reserved, and the room is
//! given back when the request has been answered. Without it, many connections each sending
//! part of a declared 16 MB body held gigabytes. Beyond the budget a request waits (at most
//! `RESERVE_WAIT_MAX`), then is refused with a retryable error and its connection closed (its
//! body is left unread).
//!
//! Requests up to `UNRESERVED_MAX` are not counted: every connection has a read buffer of
//! that size anyway, and its in-flight requests are capped.

use std::rc::Rc;
use std::time::Duration;

use glommio::sync::{Semaphore, StaticPermit};

/// Bodies and frames up to this size need no reservation.
pub(crate) const UNRESERVED_MAX: usize = 64 << 10;
/// How long a request waits for room before it is refused.
const RESERVE_WAIT_MAX: Duration = Duration::from_secs(2);
/// `ServerConfig::request_memory` unless configured: per core.
pub const REQUEST_MEMORY_DEFAULT: usize = 256 << 20;
/// The smallest budget: one request of the largest size fits.
pub const REQUEST_MEMORY_MIN: usize = 17 << 20;

/// Reserved in KiB units (a semaphore's count is a u64, and KiB keep the arithmetic exact
/// enough).
const UNIT: usize = 1 << 10;

/// A core's request-memory budget.
pub(crate) struct RequestMemory {
    units: Rc<Semaphore>,
}

/// Room reserved for one request, given back when dropped.
pub(crate) struct Reserved {
    _permit: Option<StaticPermit>,
}

impl RequestMemory {
    pub(crate) fn new(bytes: usize) -> RequestMemory {
        assert!(bytes >= REQUEST_MEMORY_MIN, "a request-memory budget of {bytes} bytes cannot hold one request");
        RequestMemory { units: Rc::new(Semaphore::new((bytes / UNIT) as u64)) }
    }

    /// Reserves room for a request of `bytes`, waiting up to `RESERVE_WAIT_MAX` for others to
    /// give theirs back; `None` if there was none in time.
    pub(crate) async fn reserve(&self, bytes: usize) -> Option<Reserved> {
        if bytes <= UNRESERVED_MAX {
            return Some(Reserved { _permit: None });
        }
        let units = bytes.div_ceil(UNIT) as u64;
        let acquire = async { self.units.acquire_static_permit(units).await.ok() };
        let late = async {
            glommio::timer::sleep(RESERVE_WAIT_MAX).await;
            None
        };
        futures_lite::future::or(acquire, late).await.map(|permit| Reserved { _permit: Some(permit) })
    }
}
