//! How long to wait between the starts of two connection attempts: retry policies.
//!
//! A [`RetryPolicy`] gives the delay of each attempt, measured from the **start** of that attempt
//! to the start of the next. The default is the seed's: a constant 10 s, randomised within
//! ±30 %. The others are the ones large fleets use, without their known defects:
//!
//! | policy | delay of the attempt `n` (from 0) |
//! |---|---|
//! | [`constant`](RetryPolicy::constant) | `d` ± jitter |
//! | [`exponential`](RetryPolicy::exponential) | `min(initial · multiplierⁿ, max)` ± jitter (gRPC's connection backoff: 1 s, ×1.6, ±20 %, 120 s) |
//! | [`full_jitter`](RetryPolicy::full_jitter) | uniform in `[0, min(max, base · 2ⁿ)]` |
//! | [`decorrelated_jitter`](RetryPolicy::decorrelated_jitter) | uniform in `[base, 3 · previous]`, at most `max` |
//! | [`from_fn`](RetryPolicy::from_fn) | your function of `n` |
//!
//! Guarantees, whatever the parameters (for [`from_fn`](RetryPolicy::from_fn), whose function is
//! used as it is, the bounds and the fallback on a panic only):
//!
//! - **Jitter from the first retry on**: clients that lost the same server do not all come back
//!   at the same instant (grpc-go waits exactly 1 s before its first retry). Where the
//!   parameters leave room for it: a jitter of 0 asks for none, and a decorrelated jitter whose
//!   maximum equals its base has only that base to give.
//! - **Jitter at the cap, never above it**: a jittered delay `d ± j` is drawn from
//!   `[lo, hi]` with `hi = min(d (1 + j), max)` and `lo = hi (1 - j) / (1 + j)`: below the cap
//!   that is `d ± j`; at the cap it spreads below it instead of collapsing onto it (as Finagle's
//!   and backon's do) or exceeding it (as gRPC's spec does).
//! - **No overflow, no panic**: the arithmetic saturates for any attempt count (tested for a
//!   million attempts and a century of outage).
//! - **Bounds**: every delay is kept within [`MIN_RETRY_DELAY`] (1 ms, the resolution of tokio's
//!   timer, so that a zero delay cannot become a busy loop) and [`MAX_RETRY_DELAY`] (one hour, so
//!   that a mistake cannot park the connection for ever). A delay function that panics is logged
//!   at ERROR and the default delay (10 s) is used for that attempt.
//! - **Invalid parameters are rejected** by the constructors with an [`InvalidPolicy`] error:
//!   a jitter outside `[0, 1]`, a multiplier below 1, NaN or infinite numbers, a zero base, a
//!   maximum below the base.
//!
//! The attempt count `n` of a policy grows across rounds and is reset once a connection has
//! stayed up for [`backoff_reset_after`](crate::PersistentLayer::backoff_reset_after) (10 s by
//! default), once one is replaced at once (one that served and was closed in good order, say),
//! and by [`reconnect_now`](crate::Persistent::reconnect_now): a server that accepts and closes
//! at once cannot cause a reconnection storm.
//!
//! # Examples
//!
//! ```
//! use std::time::Duration;
//! use tower_persistent::backoff::{Exponential, RetryPolicy};
//!
//! let grpc = RetryPolicy::exponential(Exponential::grpc()).unwrap();
//! let mut delays = grpc.delays();
//! let first = delays.next().unwrap();
//! assert!(first >= Duration::from_millis(800) && first <= Duration::from_millis(1200));
//! // Far along, the delay stays jittered below the 120 s cap.
//! let late = delays.nth(1000).unwrap();
//! assert!(late >= Duration::from_secs(80) && late <= Duration::from_secs(120));
//!
//! let error = RetryPolicy::constant(Duration::from_secs(1), 1.5).unwrap_err();
//! assert_eq!(error.to_string(), "invalid retry policy: jitter must be within [0, 1], got 1.5");
//! ```

use std::error::Error as StdError;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Duration;

use crate::error::panic_message;

/// The default base delay between the starts of two connection attempts.
pub const DEFAULT_RETRY_DELAY: Duration = Duration::from_secs(10);

/// The default jitter: each delay is drawn uniformly from `[0.7 d, 1.3 d]`.
pub const DEFAULT_JITTER: f64 = 0.3;

/// The shortest wait between the starts of two attempts, whatever the policy says.
pub const MIN_RETRY_DELAY: Duration = Duration::from_millis(1);

/// The longest wait between the starts of two attempts, whatever the policy says.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(60 * 60);

/// The default time a connection must stay up for the backoff to start again from the beginning.
pub const DEFAULT_BACKOFF_RESET_AFTER: Duration = Duration::from_secs(10);

type DelayFn = Arc<dyn Fn() -> Duration + Send + Sync>;
type AttemptFn = Arc<dyn Fn(u32) -> Duration + Send + Sync>;

/// The parameters of an exponential backoff.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Exponential {
    /// The delay of the first attempt.
    pub initial: Duration,
    /// The factor from one delay to the next; at least 1.
    pub multiplier: f64,
    /// The jitter, within `[0, 1]`: `0.2` is ±20 %.
    pub jitter: f64,
    /// The cap; no delay exceeds it.
    pub max: Duration,
}

impl Exponential {
    /// gRPC's connection backoff: 1 s, ×1.6, ±20 %, at most 120 s.
    pub fn grpc() -> Self {
        Exponential {
            initial: Duration::from_secs(1),
            multiplier: 1.6,
            jitter: 0.2,
            max: Duration::from_secs(120),
        }
    }
}

impl Default for Exponential {
    /// [`Exponential::grpc`].
    fn default() -> Self {
        Self::grpc()
    }
}

/// A retry policy: the delay of each connection attempt. See the [module docs](self).
#[derive(Clone)]
pub struct RetryPolicy {
    /// Shared: a policy is cloned into every persistent connection made with it.
    kind: Arc<Kind>,
}

#[derive(Clone)]
enum Kind {
    Constant { delay: DelayFn, jitter: f64 },
    Exponential(Exponential),
    FullJitter { base: Duration, max: Duration },
    Decorrelated { base: Duration, max: Duration },
    Custom(AttemptFn),
}

impl Default for RetryPolicy {
    /// A constant 10 s, ±30 %.
    fn default() -> Self {
        RetryPolicy {
            kind: Arc::new(Kind::Constant {
                delay: Arc::new(|| DEFAULT_RETRY_DELAY),
                jitter: DEFAULT_JITTER,
            }),
        }
    }
}

impl fmt::Debug for RetryPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &*self.kind {
            Kind::Constant { jitter, .. } => f
                .debug_struct("Constant")
                .field("jitter", jitter)
                .finish_non_exhaustive(),
            Kind::Exponential(e) => e.fmt(f),
            Kind::FullJitter { base, max } => f
                .debug_struct("FullJitter")
                .field("base", base)
                .field("max", max)
                .finish(),
            Kind::Decorrelated { base, max } => f
                .debug_struct("DecorrelatedJitter")
                .field("base", base)
                .field("max", max)
                .finish(),
            Kind::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

/// A retry policy's parameters are invalid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidPolicy(String);

impl fmt::Display for InvalidPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid retry policy: {}", self.0)
    }
}

impl StdError for InvalidPolicy {}

pub(crate) fn check_jitter(jitter: f64) -> Result<(), InvalidPolicy> {
    if (0.0..=1.0).contains(&jitter) {
        Ok(())
    } else {
        Err(InvalidPolicy(format!(
            "jitter must be within [0, 1], got {jitter}"
        )))
    }
}

fn check_base(name: &str, base: Duration, max: Duration) -> Result<(), InvalidPolicy> {
    if base.is_zero() {
        return Err(InvalidPolicy(format!("{name} must be above zero")));
    }
    if max < base {
        return Err(InvalidPolicy(format!(
            "max ({max:?}) must not be below {name} ({base:?})"
        )));
    }
    Ok(())
}

impl RetryPolicy {
    /// A constant delay `delay`, randomised within `±jitter` (the seed's policy with
    /// `jitter = 0.3`).
    ///
    /// # Errors
    ///
    /// If `jitter` is not within `[0, 1]` (NaN included).
    pub fn constant(delay: Duration, jitter: f64) -> Result<Self, InvalidPolicy> {
        Self::constant_fn(move || delay, jitter)
    }

    /// A delay asked of `delay` for every attempt, randomised within `±jitter`.
    ///
    /// # Errors
    ///
    /// If `jitter` is not within `[0, 1]` (NaN included).
    pub fn constant_fn<F>(delay: F, jitter: f64) -> Result<Self, InvalidPolicy>
    where
        F: Fn() -> Duration + Send + Sync + 'static,
    {
        check_jitter(jitter)?;
        Ok(RetryPolicy {
            kind: Arc::new(Kind::Constant {
                delay: Arc::new(delay),
                jitter,
            }),
        })
    }

    /// An exponential backoff; [`Exponential::grpc`] gives gRPC's.
    ///
    /// # Errors
    ///
    /// If the jitter is not within `[0, 1]`, the multiplier is below 1 or not finite, the
    /// initial delay is zero, or the maximum is below the initial delay.
    pub fn exponential(params: Exponential) -> Result<Self, InvalidPolicy> {
        check_jitter(params.jitter)?;
        if !(params.multiplier.is_finite() && params.multiplier >= 1.0) {
            return Err(InvalidPolicy(format!(
                "multiplier must be a finite number of at least 1, got {}",
                params.multiplier
            )));
        }
        check_base("initial", params.initial, params.max)?;
        Ok(RetryPolicy {
            kind: Arc::new(Kind::Exponential(params)),
        })
    }

    /// "Full jitter": a delay drawn uniformly from `[0, min(max, base · 2ⁿ)]` for the attempt
    /// `n` (at least [`MIN_RETRY_DELAY`]).
    ///
    /// # Errors
    ///
    /// If `base` is zero or `max` is below `base`.
    pub fn full_jitter(base: Duration, max: Duration) -> Result<Self, InvalidPolicy> {
        check_base("base", base, max)?;
        Ok(RetryPolicy {
            kind: Arc::new(Kind::FullJitter { base, max }),
        })
    }

    /// "Decorrelated jitter": each delay drawn uniformly from `[base, 3 · previous]`, at most
    /// `max`; the first previous delay is `base`.
    ///
    /// # Errors
    ///
    /// If `base` is zero or `max` is below `base`.
    pub fn decorrelated_jitter(base: Duration, max: Duration) -> Result<Self, InvalidPolicy> {
        check_base("base", base, max)?;
        Ok(RetryPolicy {
            kind: Arc::new(Kind::Decorrelated { base, max }),
        })
    }

    /// Your own policy: `delay(n)` for the attempt `n` (from 0, reset as the module docs say),
    /// kept within [`MIN_RETRY_DELAY`] and [`MAX_RETRY_DELAY`]. Add your own jitter.
    pub fn from_fn<F>(delay: F) -> Self
    where
        F: Fn(u32) -> Duration + Send + Sync + 'static,
    {
        RetryPolicy {
            kind: Arc::new(Kind::Custom(Arc::new(delay))),
        }
    }

    /// Makes this a constant policy asking `delay`, keeping the jitter of a constant policy.
    pub(crate) fn set_delay_fn(&mut self, delay: DelayFn) {
        let jitter = match &*self.kind {
            Kind::Constant { jitter, .. } => *jitter,
            _ => DEFAULT_JITTER,
        };
        self.kind = Arc::new(Kind::Constant { delay, jitter });
    }

    /// Sets the jitter of a constant or exponential policy; the others have their own.
    pub(crate) fn set_jitter(&mut self, new: f64) {
        match Arc::make_mut(&mut self.kind) {
            Kind::Constant { jitter, .. } => *jitter = new,
            Kind::Exponential(e) => e.jitter = new,
            _ => {}
        }
    }

    /// The delays this policy gives to successive attempts, from the first: an endless iterator,
    /// for inspection and tests.
    pub fn delays(&self) -> impl Iterator<Item = Duration> + use<> {
        let mut backoff = Backoff::new(self.clone());
        std::iter::repeat_with(move || backoff.next_delay(""))
    }
}

/// A policy in use: the attempt count and the previous delay.
pub(crate) struct Backoff {
    policy: RetryPolicy,
    attempt: u32,
    previous: Duration,
}

impl Backoff {
    pub(crate) fn new(policy: RetryPolicy) -> Self {
        Backoff {
            policy,
            attempt: 0,
            previous: Duration::ZERO,
        }
    }

    /// Starts again from the first delay.
    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
        self.previous = Duration::ZERO;
    }

    /// The delay of the next attempt.
    pub(crate) fn next_delay(&mut self, server: &str) -> Duration {
        let n = self.attempt;
        self.attempt = self.attempt.saturating_add(1);
        let delay = match &*self.policy.kind {
            Kind::Constant { delay, jitter } => {
                let base = call_or_default(server, || delay());
                jittered(base, MAX_RETRY_DELAY, *jitter)
            }
            Kind::Exponential(e) => {
                // initial · multiplierⁿ, saturating at the cap (powi overflows to infinity).
                let exponent = n.min(i32::MAX as u32) as i32;
                let secs = e.initial.as_secs_f64() * e.multiplier.powi(exponent);
                let base = Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX);
                jittered(base.min(e.max), e.max, e.jitter)
            }
            Kind::FullJitter { base, max } => {
                let factor = 2f64.powi(n.min(i32::MAX as u32) as i32);
                let ceiling = Duration::try_from_secs_f64(base.as_secs_f64() * factor)
                    .unwrap_or(Duration::MAX)
                    .min(*max);
                uniform(Duration::ZERO, ceiling)
            }
            Kind::Decorrelated { base, max } => {
                let previous = self.previous.max(*base);
                let ceiling = previous.saturating_mul(3).min(*max);
                uniform(*base, ceiling)
            }
            Kind::Custom(f) => call_or_default(server, || f(n)),
        };
        let delay = delay.clamp(MIN_RETRY_DELAY, MAX_RETRY_DELAY);
        self.previous = delay;
        delay
    }
}

/// Calls a user's delay function; a panic is logged and gives the default delay.
fn call_or_default(server: &str, f: impl FnOnce() -> Duration) -> Duration {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(delay) => delay,
        Err(payload) => {
            tracing::error!(
                server,
                panic = %panic_message(&*payload),
                "retry delay function panicked; using the default delay for this attempt"
            );
            DEFAULT_RETRY_DELAY
        }
    }
}

/// `base ± jitter`, never above `cap`: uniform in `[hi (1 - j) / (1 + j), hi]` with
/// `hi = min(base (1 + j), cap)`.
fn jittered(base: Duration, cap: Duration, jitter: f64) -> Duration {
    let base = base.min(cap).min(MAX_RETRY_DELAY);
    let hi = Duration::try_from_secs_f64(base.as_secs_f64() * (1.0 + jitter))
        .unwrap_or(Duration::MAX)
        .min(cap)
        .min(MAX_RETRY_DELAY);
    let lo = hi.mul_f64((1.0 - jitter) / (1.0 + jitter));
    uniform(lo, hi)
}

/// Uniform in `[lo, hi]`.
fn uniform(lo: Duration, hi: Duration) -> Duration {
    if hi <= lo {
        return lo;
    }
    let nanos = |d: Duration| d.as_nanos().min(u64::MAX as u128) as u64;
    Duration::from_nanos(rand::random_range(nanos(lo)..=nanos(hi)))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Without jitter a delay is exact, and a huge one is held to the cap; with jitter, delays
    // stay within their window, and within the cap.
    #[test]
    fn jittered_is_bounded() {
        let hour = MAX_RETRY_DELAY;
        assert_eq!(
            jittered(Duration::from_secs(10), hour, 0.0),
            Duration::from_secs(10)
        );
        assert_eq!(jittered(Duration::MAX, hour, 0.0), hour);
        for _ in 0..1000 {
            let d = jittered(Duration::from_secs(10), hour, 0.3);
            assert!((Duration::from_secs(7)..=Duration::from_secs(13)).contains(&d));
            let capped = jittered(Duration::from_secs(100), Duration::from_secs(100), 0.2);
            let lo = Duration::from_secs(100).mul_f64(0.8 / 1.2);
            assert!(
                (lo..=Duration::from_secs(100)).contains(&capped),
                "{capped:?}"
            );
        }
    }
}
