//! When a destination loads: `realtime` (each job as soon as it is stored), `@every 10m`,
//! or a cron expression (`0 */5 * * * *`, seconds optional, read by croner).

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};

/// A destination's schedule.
#[derive(Clone, Debug)]
pub enum Schedule {
    /// Load each job as soon as it is stored.
    Realtime,
    /// Load what waits every period.
    Every(Duration),
    /// Load what waits at each tick of a cron expression.
    Cron(Box<croner::Cron>),
}

impl Schedule {
    /// Reads `schedule`.
    ///
    /// # Errors
    ///
    /// What would be right.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text == "realtime" {
            return Ok(Self::Realtime);
        }
        if let Some(period) = text.strip_prefix("@every") {
            return match humantime::parse_duration(period.trim()) {
                Ok(period) if !period.is_zero() => Ok(Self::Every(period)),
                _ => Err(format!(
                    "`{text}`: @every takes a duration, such as \"@every 10m\""
                )),
            };
        }
        croner::Cron::from_str(text)
            .map(|cron| Self::Cron(Box::new(cron)))
            .map_err(|error| {
                format!("schedule `{text}` is not \"realtime\", \"@every 10m\" or a cron expression such as \"0 */5 * * * *\": {error}")
            })
    }

    /// The first tick after `now`, or `None` for realtime.
    pub fn next_tick(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Self::Realtime => None,
            Self::Every(period) => chrono::Duration::from_std(*period)
                .ok()
                .and_then(|period| now.checked_add_signed(period)),
            Self::Cron(cron) => cron.find_next_occurrence(&now, false).ok(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_read_realtime_every_and_cron_with_or_without_seconds() {
        let now = DateTime::parse_from_rfc3339("2026-11-25T10:02:03Z")
            .expect("time")
            .with_timezone(&Utc);
        assert!(
            Schedule::parse("realtime")
                .expect("realtime")
                .next_tick(now)
                .is_none()
        );
        let every = Schedule::parse("@every 10m").expect("every");
        assert_eq!(
            every.next_tick(now).map(|at| at.to_rfc3339()).as_deref(),
            Some("2026-11-25T10:12:03+00:00")
        );
        let cron = Schedule::parse("0 */5 * * * *").expect("cron");
        assert_eq!(
            cron.next_tick(now).map(|at| at.to_rfc3339()).as_deref(),
            Some("2026-11-25T10:05:00+00:00")
        );
        let minutes = Schedule::parse("*/15 * * * *").expect("five fields");
        assert_eq!(
            minutes.next_tick(now).map(|at| at.to_rfc3339()).as_deref(),
            Some("2026-11-25T10:15:00+00:00")
        );
        assert!(Schedule::parse("every day").is_err());
        assert!(Schedule::parse("@every never").is_err());
    }
}
