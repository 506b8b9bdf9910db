//! A UTC calendar day: the unit accounting rows are kept, expired and queried in.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

const DAY_MS: u64 = 86_400_000;

/// A UTC date, stored as days since 1970-01-01 so that ordering, ranges and "N days ago" are
/// integer arithmetic; shown and parsed as `YYYY-MM-DD` (ISO 8601, what finance tools and
/// `?from=` expect). Always within 0000-01-01..=9999-12-31, so it always prints as 4 digits
/// and round-trips through its text form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Day(i32);

/// Why a text is not a `YYYY-MM-DD` date.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DayError {
    /// Not ten characters shaped `NNNN-NN-NN`. The input is shown cut to 32 characters: it
    /// comes from a query string.
    #[error("expected a date as YYYY-MM-DD, got {0:?}")]
    Format(String),
    #[error("month {0:02} is not between 01 and 12")]
    Month(u32),
    #[error("{year:04}-{month:02} has no day {day:02}")]
    DayOfMonth { year: i32, month: u32, day: u32 },
    #[error("year {0} is outside 0000..=9999")]
    Year(i32),
}

/// Howard Hinnant's `days_from_civil`: proleptic Gregorian (year, month, day) → days since
/// 1970-01-01. Exact for every date this type holds.
fn days_from_civil(y: i32, m: u32, d: u32) -> i32 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m as i32 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i32 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse: days since 1970-01-01 → (year, month, day).
fn civil_from_days(z: i32) -> (i32, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn is_leap(y: i32) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i32, m: u32) -> u32 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

impl Day {
    /// 0000-01-01.
    pub const MIN: Day = Day(-719_528);
    /// 9999-12-31.
    pub const MAX: Day = Day(2_932_896);
    /// 1970-01-01.
    pub const EPOCH: Day = Day(0);

    /// The UTC day a Unix timestamp in milliseconds falls on (the [`crate::store::Clock`]'s
    /// unit). Past 9999-12-31 it stays there.
    pub fn from_unix_ms(ms: u64) -> Day {
        let days = i32::try_from(ms / DAY_MS).unwrap_or(i32::MAX);
        Day(days.min(Self::MAX.0))
    }

    /// A checked calendar date.
    pub fn from_ymd(year: i32, month: u32, day: u32) -> Result<Day, DayError> {
        if !(0..=9999).contains(&year) {
            return Err(DayError::Year(year));
        }
        if !(1..=12).contains(&month) {
            return Err(DayError::Month(month));
        }
        if day == 0 || day > days_in_month(year, month) {
            return Err(DayError::DayOfMonth { year, month, day });
        }
        Ok(Day(days_from_civil(year, month, day)))
    }

    /// Days since 1970-01-01, if that is a day this type holds.
    pub fn from_days_since_epoch(days: i64) -> Option<Day> {
        let d = i32::try_from(days).ok()?;
        (Self::MIN.0..=Self::MAX.0).contains(&d).then_some(Day(d))
    }

    pub fn days_since_epoch(self) -> i32 {
        self.0
    }

    /// (year, month 1..=12, day 1..=31).
    pub fn ymd(self) -> (i32, u32, u32) {
        civil_from_days(self.0)
    }

    /// Seconds since the Unix epoch at 00:00 UTC of this day (negative before 1970): what a
    /// Redis `EXPIREAT` takes.
    pub fn start_unix_secs(self) -> i64 {
        i64::from(self.0) * 86_400
    }

    /// `n` days later (earlier when negative), kept within [`Day::MIN`]..=[`Day::MAX`].
    pub fn saturating_add_days(self, n: i64) -> Day {
        let d = (i64::from(self.0) + n).clamp(i64::from(Self::MIN.0), i64::from(Self::MAX.0));
        Day(d as i32)
    }

    /// Days from `self` to `later` (negative when `later` is earlier).
    pub fn days_until(self, later: Day) -> i64 {
        i64::from(later.0) - i64::from(self.0)
    }

    /// Every day from `self` to `last`, both included (none when `last` is earlier).
    pub fn through(self, last: Day) -> impl Iterator<Item = Day> {
        (self.0..=last.0).map(Day)
    }
}

impl fmt::Display for Day {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, m, d) = self.ymd();
        write!(f, "{y:04}-{m:02}-{d:02}")
    }
}

impl FromStr for Day {
    type Err = DayError;

    fn from_str(s: &str) -> Result<Day, DayError> {
        let b = s.as_bytes();
        let digits = |r: std::ops::Range<usize>| -> Option<u32> {
            b[r].iter().try_fold(0u32, |n, c| {
                c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
            })
        };
        let shaped = b.len() == 10 && b[4] == b'-' && b[7] == b'-';
        let parts = shaped
            .then(|| Some((digits(0..4)?, digits(5..7)?, digits(8..10)?)))
            .flatten();
        let Some((y, m, d)) = parts else {
            return Err(DayError::Format(s.chars().take(32).collect()));
        };
        // Four digits: at most 9999, so the cast is exact.
        Day::from_ymd(y as i32, m, d)
    }
}

impl Serialize for Day {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Day {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Day, D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests;
