//! The retry policy both front ends follow: a retryable error is retried after a jittered,
//! doubling backoff until the attempts run out. I/O-free: the front end sleeps.

use std::time::Duration;

use super::{ClientConfig, ClientError};
use crate::Response;

/// Randomness for backoff jitter (xorshift; not for anything else).
struct Jitter(u64);

impl Jitter {
    fn new() -> Jitter {
        let clock =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |now| now.as_nanos() as u64);
        Jitter(clock ^ u64::from(std::process::id()) ^ 0x9E37_79B9_7F4A_7C15)
    }

    /// A number in [0, 1).
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The retry policy of one request.
pub struct Retries {
    backoff: Duration,
    attempts_left: u32,
    /// Seeded at the first retry: most requests never need it.
    jitter: Option<Jitter>,
}

impl Retries {
    pub fn new(config: &ClientConfig) -> Retries {
        Retries { backoff: config.backoff, attempts_left: config.attempts.max(1), jitter: None }
    }

    /// The answer to give the caller, or how long to wait before the next attempt.
    pub fn judge(&mut self, response: Response) -> Result<Result<Response, ClientError>, Duration> {
        self.attempts_left -= 1;
        match response {
            Response::Error(error) if error.retryable && self.attempts_left > 0 => {
                let delay = self.backoff.mul_f64(0.5 + self.jitter.get_or_insert_with(Jitter::new).unit());
                self.backoff = self.backoff.saturating_mul(2);
                Err(delay)
            }
            Response::Error(error) => Ok(Err(ClientError::Service(error))),
            response => Ok(Ok(response)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ErrorCode, WireError};

    #[test]
    fn retryable_errors_back_off_until_the_attempts_run_out() {
        let config = ClientConfig { attempts: 4, backoff: Duration::from_millis(10), ..ClientConfig::default() };
        let mut retries = Retries::new(&config);
        let throttled = || Response::Error(WireError::new(ErrorCode::ThrottlingException, "slow down"));
        for attempt in 0..3 {
            let delay = retries.judge(throttled()).expect_err("retried");
            let base = Duration::from_millis(10) * 2u32.pow(attempt);
            assert!(delay >= base / 2 && delay <= base * 3 / 2, "attempt {attempt}: {delay:?}");
        }
        assert!(matches!(retries.judge(throttled()), Ok(Err(ClientError::Service(_)))));

        let mut retries = Retries::new(&config);
        let invalid = Response::Error(WireError::new(ErrorCode::ValidationException, "bad"));
        assert!(matches!(retries.judge(invalid), Ok(Err(ClientError::Service(_)))));
        assert!(matches!(retries.judge(Response::Item(None)), Ok(Ok(Response::Item(None)))));
    }
}
