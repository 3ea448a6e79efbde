//! The cron schedule of a job: five fields (minute hour day-of-month month day-of-week) or a
//! nickname such as `@daily`, evaluated in the local time zone by croner.
//!
//! Parsing refuses seconds and year fields (a job file written for another cron would
//! otherwise fire at times its author did not mean) and expressions that never fire.

use chrono::{DateTime, Local, TimeZone};
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

/// A cron expression (5 fields: minute hour day-of-month month day-of-week), evaluated in
/// the local time zone.
#[derive(Clone, Debug)]
pub struct Schedule {
    expr: String,
    cron: Cron,
}

impl Schedule {
    pub fn parse(expr: &str) -> Result<Self, String> {
        let cron = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build()
            .parse(expr)
            .map_err(|e| format!("bad cron expression {expr:?}: {e}"))?;
        let s = Schedule {
            expr: expr.to_string(),
            cron,
        };
        if s.next_after(&Local::now()).is_none() {
            return Err(format!("cron expression {expr:?} never fires"));
        }
        Ok(s)
    }

    pub fn expr(&self) -> &str {
        &self.expr
    }

    /// The first time strictly after `t` that the schedule fires.
    pub fn next_after<Tz: TimeZone>(&self, t: &DateTime<Tz>) -> Option<DateTime<Tz>>
    where
        DateTime<Tz>: croner::CronDateTime,
    {
        self.cron.find_next_occurrence(t, false).ok()
    }
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        self.expr == other.expr
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_are_five_field_cron_or_a_nickname() {
        assert!(Schedule::parse("0 2 * * *").is_ok());
        assert!(Schedule::parse("@daily").is_ok());
        assert!(Schedule::parse("30 3 * * sun").is_ok());
        assert!(Schedule::parse("0 0 2 * * *").is_err(), "no seconds field");
        assert!(Schedule::parse("0 2 * * * 2030").is_err(), "no year field");
        assert!(
            Schedule::parse("0 0 31 2 *")
                .unwrap_err()
                .contains("never fires")
        );
    }
}
