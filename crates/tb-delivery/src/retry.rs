//! When a failed job is tried again, and which failures are worth trying again.

use std::time::Duration;

use crate::config::RetryConfig;

/// How one load of a job ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Delivered.
    Succeeded,
    /// Failed; worth trying again (after at least `after`, when the receiver said so).
    Retry {
        /// The receiver's `Retry-After`.
        after: Option<Duration>,
    },
    /// Failed for good: trying again would fail the same way.
    Discard,
}

/// The verdict on an HTTP answer: 2xx succeeded; 408, 429 and 5xx are retried (honouring
/// `Retry-After`), as are codes the action lists in `retry_on`; 410 and other 4xx discard,
/// and so does a receiver that answers `webhook-delivery: abort-message` (it asks for no
/// more retries). Anything else (1xx, 3xx: redirects are not followed) is retried.
pub fn verdict(
    status: u16,
    retry_after: Option<Duration>,
    abort: bool,
    retry_on: &[u16],
) -> Verdict {
    if (200..300).contains(&status) {
        return Verdict::Succeeded;
    }
    if abort {
        return Verdict::Discard;
    }
    match status {
        408 | 429 | 500..=599 => Verdict::Retry { after: retry_after },
        code if retry_on.contains(&code) => Verdict::Retry { after: retry_after },
        400..=499 => Verdict::Discard,
        _ => Verdict::Retry { after: retry_after },
    }
}

/// Reads a `Retry-After` value: seconds, or an HTTP date.
pub fn parse_retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate_to_system_time(value)?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

fn httpdate_to_system_time(value: &str) -> Option<std::time::SystemTime> {
    humantime::parse_rfc3339_weak(value).ok().or_else(|| {
        // IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT".
        let parts: Vec<&str> = value.split_whitespace().collect();
        let [_, day, month, year, time, "GMT"] = parts.as_slice() else {
            return None;
        };
        let month = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ]
        .iter()
        .position(|name| name == month)?
            + 1;
        humantime::parse_rfc3339_weak(&format!("{year}-{month:02}-{day:0>2} {time}")).ok()
    })
}

/// The wait before retry number `retry` (1 for the first retry): `initial_backoff`
/// doubled each time up to `max_backoff`, spread by ±20 % with jitter.
pub fn backoff(config: &RetryConfig, retry: u32) -> Duration {
    let doublings = retry.saturating_sub(1).min(40);
    let nominal = config
        .initial_backoff
        .saturating_mul(2_u32.saturating_pow(doublings))
        .min(config.max_backoff);
    if config.jitter {
        nominal.mul_f64(0.8 + 0.4 * fastrand::f64())
    } else {
        nominal
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_sort_into_success_retry_and_discard() {
        assert_eq!(verdict(204, None, false, &[]), Verdict::Succeeded);
        for retried in [408, 429, 500, 503] {
            assert!(matches!(
                verdict(retried, None, false, &[]),
                Verdict::Retry { .. }
            ));
        }
        for discarded in [400, 404, 410, 422] {
            assert_eq!(verdict(discarded, None, false, &[]), Verdict::Discard);
        }
        assert!(matches!(
            verdict(409, None, false, &[409]),
            Verdict::Retry { .. }
        ));
        assert_eq!(
            verdict(503, None, true, &[]),
            Verdict::Discard,
            "abort-message"
        );
    }

    #[test]
    fn retry_after_is_read_as_seconds_or_a_date() {
        let now = humantime::parse_rfc3339("1994-11-06T08:49:00Z").expect("time");
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now),
            Some(Duration::from_secs(37))
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn the_default_schedule_keeps_a_job_about_three_days() {
        let config = RetryConfig {
            jitter: false,
            ..RetryConfig::default()
        };
        let total: Duration = (1..=config.max_retries)
            .map(|retry| backoff(&config, retry))
            .sum();
        let hours = total.as_secs_f64() / 3600.0;
        assert!((65.0..80.0).contains(&hours), "{hours} hours");
        assert_eq!(backoff(&config, 1), Duration::from_secs(5));
        assert_eq!(backoff(&config, 3), Duration::from_secs(20));
        assert_eq!(backoff(&config, 30), Duration::from_secs(36_000), "capped");
    }
}
