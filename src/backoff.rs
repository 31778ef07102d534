//! How long to wait between the starts of two connection attempts.
//!
//! The delay of each attempt is `retry_delay()` randomised uniformly within `±jitter` (±30 % by
//! default, so in `[0.7 d, 1.3 d]`), then kept within [`MIN_RETRY_DELAY`] and
//! [`MAX_RETRY_DELAY`]:
//!
//! - a delay function that returns zero (or jitters down to almost nothing) waits
//!   [`MIN_RETRY_DELAY`], the resolution of tokio's timer, so that a connector that fails at once
//!   cannot turn the driver into a busy loop;
//! - a delay function that returns something huge (up to `Duration::MAX`) waits
//!   [`MAX_RETRY_DELAY`], so that a mistake cannot park the connection for ever nor overflow
//!   the clock;
//! - a delay function that panics is logged at ERROR and the default delay (10 s) is used for
//!   that attempt.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Duration;

use crate::error::panic_message;

/// The default base delay between the starts of two connection attempts.
pub const DEFAULT_RETRY_DELAY: Duration = Duration::from_secs(10);

/// The default jitter: each delay is drawn uniformly from `[0.7 d, 1.3 d]`.
pub const DEFAULT_JITTER: f64 = 0.3;

/// The shortest wait between the starts of two attempts, whatever the delay function says.
pub const MIN_RETRY_DELAY: Duration = Duration::from_millis(1);

/// The longest wait between the starts of two attempts, whatever the delay function says.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(60 * 60);

pub(crate) type DelayFn = Arc<dyn Fn() -> Duration + Send + Sync>;

/// The retry delay as configured on the layer.
#[derive(Clone)]
pub(crate) struct Backoff {
    pub(crate) delay: DelayFn,
    pub(crate) jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            delay: Arc::new(|| DEFAULT_RETRY_DELAY),
            jitter: DEFAULT_JITTER,
        }
    }
}

impl Backoff {
    /// The delay of one attempt: calls the delay function once.
    pub(crate) fn next_delay(&self, server: &str) -> Duration {
        let base = match catch_unwind(AssertUnwindSafe(|| (self.delay)())) {
            Ok(base) => base,
            Err(payload) => {
                tracing::error!(
                    server,
                    panic = %panic_message(&*payload),
                    "retry_delay panicked; using the default delay for this attempt"
                );
                DEFAULT_RETRY_DELAY
            }
        };
        let factor = if self.jitter > 0.0 {
            rand::random_range(1.0 - self.jitter..=1.0 + self.jitter)
        } else {
            1.0
        };
        jittered(base, factor)
    }
}

/// `base * factor`, kept within [`MIN_RETRY_DELAY`] and [`MAX_RETRY_DELAY`], without overflow.
pub(crate) fn jittered(base: Duration, factor: f64) -> Duration {
    let secs = base.min(MAX_RETRY_DELAY).as_secs_f64() * factor;
    Duration::try_from_secs_f64(secs)
        .unwrap_or(MIN_RETRY_DELAY)
        .clamp(MIN_RETRY_DELAY, MAX_RETRY_DELAY)
}

#[cfg(test)]
mod tests {
    use super::*;

    // The bounds hold for zero, huge and ordinary delays, at both ends of the jitter.
    #[test]
    fn jittered_is_bounded() {
        assert_eq!(jittered(Duration::ZERO, 1.0), MIN_RETRY_DELAY);
        assert_eq!(jittered(Duration::MAX, 1.3), MAX_RETRY_DELAY);
        assert_eq!(jittered(Duration::MAX, 0.7), MAX_RETRY_DELAY.mul_f64(0.7));
        assert_eq!(
            jittered(Duration::from_secs(10), 0.7),
            Duration::from_secs(7)
        );
        assert_eq!(
            jittered(Duration::from_secs(10), 1.3),
            Duration::from_secs(13)
        );
    }
}
