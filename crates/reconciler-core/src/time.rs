//! Time as a value: the machine never reads a clock, the driver passes `now` in.
//!
//! Durations are plain [`std::time::Duration`] values (no clock involved), so drivers can hand
//! them straight to their timers.

use std::fmt;
use std::time::Duration;

/// An instant in UTC, as milliseconds since the Unix epoch (negative before 1970).
///
/// Millisecond resolution matches what Kubernetes and the control plane keep for phase times.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

/// A broken-down UTC date and time, computed from a [`Timestamp`] without any date library.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CivilTime {
    /// Proleptic Gregorian year.
    pub year: i64,
    /// 1..=12.
    pub month: u8,
    /// 1..=31.
    pub day: u8,
    /// 0..=23.
    pub hour: u8,
    /// 0..=59.
    pub minute: u8,
    /// 0..=59 (a Unix timestamp has no leap seconds).
    pub second: u8,
}

const MILLIS_PER_SECOND: i64 = 1_000;
const SECONDS_PER_DAY: i64 = 86_400;
const MILLIS_PER_DAY: i64 = SECONDS_PER_DAY * MILLIS_PER_SECOND;
/// Days in one 400-year Gregorian cycle; the calendar repeats exactly after it.
const DAYS_PER_ERA: i64 = 146_097;
/// Days from 0000-03-01 to 1970-01-01. Counting years from March puts the leap day at the end
/// of the year, which turns the month arithmetic into a straight line.
const EPOCH_SHIFT_DAYS: i64 = 719_468;

impl Timestamp {
    /// 1970-01-01T00:00:00Z.
    pub const UNIX_EPOCH: Self = Self(0);

    /// The instant `millis` milliseconds after the Unix epoch.
    pub const fn from_millis(millis: i64) -> Self {
        Self(millis)
    }

    /// The instant `seconds` seconds after the Unix epoch (saturating).
    pub const fn from_secs(seconds: i64) -> Self {
        Self(seconds.saturating_mul(MILLIS_PER_SECOND))
    }

    /// The instant at the given UTC civil date and time; `None` if a field is out of range.
    pub fn from_utc(
        year: i64,
        month: u8,
        day: u8,
        hour: u8,
        minute: u8,
        second: u8,
    ) -> Option<Self> {
        let valid = (1..=12).contains(&month)
            && day >= 1
            && day <= days_in_month(year, month)
            && hour < 24
            && minute < 60
            && second < 60;
        if !valid {
            return None;
        }
        let days = days_from_civil(year, month, day);
        let seconds = i64::from(hour) * 3_600 + i64::from(minute) * 60 + i64::from(second);
        days.checked_mul(MILLIS_PER_DAY)?
            .checked_add(seconds * MILLIS_PER_SECOND)
            .map(Self)
    }

    /// Milliseconds since the Unix epoch.
    pub const fn as_millis(self) -> i64 {
        self.0
    }

    /// `self + duration`, saturating at the end of time instead of wrapping.
    #[must_use]
    pub fn saturating_add(self, duration: Duration) -> Self {
        Self(self.0.saturating_add(duration_millis(duration)))
    }

    /// How long after `earlier` this instant is; zero if it is not after it.
    pub fn saturating_duration_since(self, earlier: Self) -> Duration {
        let millis = self.0.saturating_sub(earlier.0);
        Duration::from_millis(u64::try_from(millis).unwrap_or(0))
    }

    /// The UTC calendar date and time of this instant.
    pub fn civil(self) -> CivilTime {
        let days = self.0.div_euclid(MILLIS_PER_DAY);
        let second_of_day = self.0.rem_euclid(MILLIS_PER_DAY) / MILLIS_PER_SECOND;
        let (year, month, day) = civil_from_days(days);
        CivilTime {
            year,
            month,
            day,
            hour: small(second_of_day / 3_600),
            minute: small(second_of_day % 3_600 / 60),
            second: small(second_of_day % 60),
        }
    }

    /// The value of the `flyte.org/completed-time` label: `YYYY-MM-DD.HH-MM` in UTC, truncated
    /// to the minute (the format Flyte's garbage collector selects on).
    pub fn completed_time_label(self) -> String {
        let t = self.civil();
        format!(
            "{:04}-{:02}-{:02}.{:02}-{:02}",
            t.year, t.month, t.day, t.hour, t.minute
        )
    }
}

impl fmt::Display for Timestamp {
    /// RFC 3339 in UTC with milliseconds, e.g. `2024-02-29T23:59:07.250Z`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = self.civil();
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            t.year,
            t.month,
            t.day,
            t.hour,
            t.minute,
            t.second,
            self.0.rem_euclid(MILLIS_PER_SECOND)
        )
    }
}

/// A duration in whole milliseconds as `i64`, saturating: durations beyond ~292 million years
/// are "forever" for our purposes.
pub(crate) fn duration_millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// Narrows a value the caller has already bounded to 0..=255 (hours, minutes, days, months).
fn small(value: i64) -> u8 {
    u8::try_from(value).expect("caller bounds the value to a clock or calendar field")
}

fn is_leap_year(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: u8) -> u8 {
    match month {
        2 if is_leap_year(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Year, month, day of the day `days` after 1970-01-01 (proleptic Gregorian).
///
/// Works in 400-year eras counted from 0000-03-01: inside an era, the year-of-era follows from
/// the day-of-era by removing the leap days (every 4th year, except every 100th, except the
/// 400th), and with March as month 0 the month lengths 31,30,31,30,31,31,30,31,30,31,31,28/29
/// fit the line `(153 * m + 2) / 5`.
fn civil_from_days(days: i64) -> (i64, u8, u8) {
    let shifted = days + EPOCH_SHIFT_DAYS;
    let era = shifted.div_euclid(DAYS_PER_ERA);
    let day_of_era = shifted.rem_euclid(DAYS_PER_ERA); // 0..=146_096
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365; // 0..=399
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100); // 0..=365
    let march_month = (5 * day_of_year + 2) / 153; // 0..=11, March = 0
    let day = day_of_year - (153 * march_month + 2) / 5 + 1; // 1..=31
    let month = if march_month < 10 {
        march_month + 3
    } else {
        march_month - 9
    };
    // January and February belong to the March-based year that started in the previous
    // calendar year.
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, small(month), small(day))
}

/// Days from 1970-01-01 to the given date; the inverse of [`civil_from_days`].
fn days_from_civil(year: i64, month: u8, day: u8) -> i64 {
    let march_year = if month <= 2 { year - 1 } else { year };
    let era = march_year.div_euclid(400);
    let year_of_era = march_year.rem_euclid(400);
    let march_month = (i64::from(month) + 9) % 12;
    let day_of_year = (153 * march_month + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * DAYS_PER_ERA + day_of_era - EPOCH_SHIFT_DAYS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_day_round_trips_across_eight_centuries() {
        // 1600-01-01 .. 2400-12-31: covers both kinds of century years and era boundaries.
        let first = days_from_civil(1600, 1, 1);
        let last = days_from_civil(2400, 12, 31);
        let mut expected = (1600, 1, 1);
        for days in first..=last {
            let got = civil_from_days(days);
            assert_eq!(got, expected, "day {days}");
            assert_eq!(days_from_civil(got.0, got.1, got.2), days);
            let (y, m, d) = expected;
            expected = if d < days_in_month(y, m) {
                (y, m, d + 1)
            } else if m < 12 {
                (y, m + 1, 1)
            } else {
                (y + 1, 1, 1)
            };
        }
    }

    #[test]
    fn from_utc_rejects_impossible_dates() {
        assert_eq!(Timestamp::from_utc(2023, 2, 29, 0, 0, 0), None);
        assert_eq!(Timestamp::from_utc(2024, 13, 1, 0, 0, 0), None);
        assert_eq!(Timestamp::from_utc(2024, 4, 31, 0, 0, 0), None);
        assert_eq!(Timestamp::from_utc(2024, 1, 1, 24, 0, 0), None);
        assert!(Timestamp::from_utc(2024, 2, 29, 23, 59, 59).is_some());
    }
}
