//! Rate limits per token and bucket (GCRA, from the `governor` crate). A request spends its
//! bucket before it reaches the writer; what is refused here is answered 429 with
//! `Retry-After` and `RateLimit-*` headers.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::{DefaultKeyedRateLimiter, Quota};
use uuid::Uuid;

use crate::domain::{Principal, TokenKind};

/// Requests per minute for each bucket. MCP tokens get their own, tight, defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub mcp_trigger_per_min: u32,
    pub mcp_read_per_min: u32,
    pub trigger_per_min: u32,
    pub read_per_min: u32,
    /// Runner protocol calls (claims, heartbeats, finishes).
    pub default_per_min: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            mcp_trigger_per_min: 5,
            mcp_read_per_min: 30,
            trigger_per_min: 1200,
            read_per_min: 6000,
            default_per_min: 12000,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bucket {
    /// Anything that changes state.
    Trigger,
    Read,
    Default,
}

/// What a caller learns about its bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quotum {
    pub limit: u32,
    pub remaining: u32,
    /// Seconds until the bucket is full again (allowed) or until the next request may pass
    /// (refused).
    pub reset_secs: u64,
}

type Limiter = DefaultKeyedRateLimiter<Uuid, StateInformationMiddleware>;

struct Slot {
    per_min: u32,
    limiter: Limiter,
    /// Requests this bucket refused, for `/metrics`.
    refused: AtomicU64,
}

impl Slot {
    fn new(per_min: u32) -> Slot {
        let per_min = NonZeroU32::new(per_min.max(1)).unwrap_or(NonZeroU32::MIN);
        Slot {
            per_min: per_min.get(),
            limiter: DefaultKeyedRateLimiter::<Uuid>::keyed(Quota::per_minute(per_min))
                .with_middleware::<StateInformationMiddleware>(),
            refused: AtomicU64::new(0),
        }
    }
}

pub struct RateLimits {
    mcp_trigger: Slot,
    mcp_read: Slot,
    trigger: Slot,
    read: Slot,
    default: Slot,
}

impl RateLimits {
    pub fn new(limits: Limits) -> RateLimits {
        RateLimits {
            mcp_trigger: Slot::new(limits.mcp_trigger_per_min),
            mcp_read: Slot::new(limits.mcp_read_per_min),
            trigger: Slot::new(limits.trigger_per_min),
            read: Slot::new(limits.read_per_min),
            default: Slot::new(limits.default_per_min),
        }
    }

    /// Spends one request from the principal's bucket. reeve itself is never limited.
    pub fn check(
        &self,
        principal: Principal,
        kind: Option<TokenKind>,
        bucket: Bucket,
    ) -> Result<Option<Quotum>, Quotum> {
        let Principal::Token(id) = principal else {
            return Ok(None);
        };
        let slot = match (kind, bucket) {
            (Some(TokenKind::Mcp), Bucket::Trigger) => &self.mcp_trigger,
            (Some(TokenKind::Mcp), _) => &self.mcp_read,
            (_, Bucket::Trigger) => &self.trigger,
            (_, Bucket::Read) => &self.read,
            (_, Bucket::Default) => &self.default,
        };
        let refill = Duration::from_secs(60) / slot.per_min;
        match slot.limiter.check_key(&id) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                let used = slot.per_min.saturating_sub(remaining);
                Ok(Some(Quotum {
                    limit: slot.per_min,
                    remaining,
                    reset_secs: (refill * used).as_secs_f64().ceil() as u64,
                }))
            }
            Err(not_until) => {
                slot.refused.fetch_add(1, Ordering::Relaxed);
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                Err(Quotum {
                    limit: slot.per_min,
                    remaining: 0,
                    reset_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
                })
            }
        }
    }

    /// Requests refused so far, by bucket (`mcp_trigger` and `mcp_read` are MCP tokens').
    pub fn refusals(&self) -> [(&'static str, u64); 5] {
        let n = |slot: &Slot| slot.refused.load(Ordering::Relaxed);
        [
            ("trigger", n(&self.trigger)),
            ("read", n(&self.read)),
            ("default", n(&self.default)),
            ("mcp_trigger", n(&self.mcp_trigger)),
            ("mcp_read", n(&self.mcp_read)),
        ]
    }
}
