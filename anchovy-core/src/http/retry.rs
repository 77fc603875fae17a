//! When to send a request again, and how long to wait first: the one retry policy of
//! every HTTP client of anchovies (the REST downloader's [`super::Client`] and the
//! object stores' `Retry-After` handling).
//!
//! - **Throttled** (429, 503): wait as `Retry-After` asks (seconds, or an HTTP date),
//!   at most [`RetryPolicy::retry_after_cap`]; without the header, back off.
//! - **Transient** (408, 500, 502, 504 and every other 5xx but 501 and 505; timeouts,
//!   refused or reset connections, a body cut short): jittered exponential backoff.
//! - Anything else is final: the caller gets the response.
//!
//! A request is sent at most `1 + max_retries` times and retried only while the time
//! since its first attempt stays under `max_elapsed`.

use std::time::{Duration, SystemTime};

/// How a request is retried.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (0 = never retry).
    pub max_retries: u32,
    /// The first backoff; each next one doubles, up to `max_backoff`.
    pub initial_backoff: Duration,
    /// The longest backoff.
    pub max_backoff: Duration,
    /// No retry starts later than this after the first attempt.
    pub max_elapsed: Duration,
    /// The longest `Retry-After` honoured (longer ones are cut to this, with a warning).
    pub retry_after_cap: Duration,
}

impl Default for RetryPolicy {
    /// 8 retries, 0.5 s doubling to 30 s (full jitter), 5 minutes in all; `Retry-After`
    /// honoured up to 2 minutes.
    fn default() -> Self {
        RetryPolicy {
            max_retries: 8,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            max_elapsed: Duration::from_secs(300),
            retry_after_cap: Duration::from_secs(120),
        }
    }
}

/// What a response status means for a retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Final: the caller takes the response (success or a client error).
    Final,
    /// Throttled: wait as `Retry-After` says, or back off.
    Throttled,
    /// A transient failure: back off and retry.
    Transient,
}

/// The verdict for an HTTP status.
pub fn verdict(status: u16) -> Verdict {
    match status {
        429 | 503 => Verdict::Throttled,
        // 501 Not Implemented and 505 HTTP Version Not Supported will not change.
        408 | 500..=599 if status != 501 && status != 505 => Verdict::Transient,
        _ => Verdict::Final,
    }
}

impl RetryPolicy {
    /// The backoff before retry number `attempt` (1-based): a random duration up to
    /// `initial_backoff * 2^(attempt-1)` capped at `max_backoff` ("full jitter"), never
    /// under a tenth of that bound so retries do not hammer.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .initial_backoff
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
        let bound = exp.min(self.max_backoff);
        let floor = bound / 10;
        floor + (bound - floor).mul_f64(jitter())
    }

    /// The wait a throttled response asks for, capped; `None` without a usable header.
    pub fn throttle_wait(&self, retry_after: Option<&str>) -> Option<(Duration, bool)> {
        let wait = retry_after.and_then(|v| parse_retry_after(v, SystemTime::now()))?;
        Some((wait.min(self.retry_after_cap), wait > self.retry_after_cap))
    }
}

/// A `Retry-After` value as a wait from `now`: delta seconds (`120`) or an HTTP date
/// (`Wed, 21 Oct 2015 07:28:00 GMT`; a date in the past is no wait). `None` when the
/// value is neither.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if let Ok(s) = v.parse::<u64>() {
        return Some(Duration::from_secs(s));
    }
    if let Ok(s) = v.parse::<f64>()
        && s.is_finite()
        && s >= 0.0
    {
        return Some(Duration::from_secs_f64(s));
    }
    let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let at =
        SystemTime::UNIX_EPOCH + Duration::from_millis(u64::try_from(at.timestamp_millis()).ok()?);
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// A uniformly random number in `[0, 1)`.
fn jitter() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or_default(),
    );
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_in_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_470); // 07:27:50
        assert_eq!(parse_retry_after("3", now), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("1.5", now),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-4", now), None);
        let p = RetryPolicy::default();
        assert_eq!(
            p.throttle_wait(Some("86400")),
            Some((Duration::from_secs(120), true))
        );
        assert_eq!(p.throttle_wait(None), None);
    }

    #[test]
    fn backoff_doubles_within_jitter_and_caps() {
        let p = RetryPolicy::default();
        for attempt in 1..=12 {
            let bound = (Duration::from_millis(500) * (1 << (attempt - 1))).min(p.max_backoff);
            for _ in 0..50 {
                let b = p.backoff(attempt);
                assert!(b >= bound / 10 && b <= bound, "{attempt}: {b:?}");
            }
        }
        assert!(p.backoff(u32::MAX) <= p.max_backoff);
    }

    #[test]
    fn statuses() {
        assert_eq!(verdict(200), Verdict::Final);
        assert_eq!(verdict(404), Verdict::Final);
        assert_eq!(verdict(401), Verdict::Final);
        assert_eq!(verdict(429), Verdict::Throttled);
        assert_eq!(verdict(503), Verdict::Throttled);
        assert_eq!(verdict(408), Verdict::Transient);
        assert_eq!(verdict(502), Verdict::Transient);
        assert_eq!(verdict(599), Verdict::Transient);
        assert_eq!(verdict(501), Verdict::Final);
    }
}
