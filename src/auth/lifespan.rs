//! A token's lifespan as people write it: a whole number and one unit, `90s`, `12h`, `30d`,
//! `2w`. The same reading for the CLI and the admin API. Months and years are not units
//! (their length varies, and `m` would read as minutes to some and months to others).

use std::time::Duration;

/// The units, their meaning, and their length in seconds.
pub const UNITS: &[(&str, &str, u64)] = &[
    ("s", "seconds", 1),
    ("h", "hours", 3600),
    ("d", "days", 86_400),
    ("w", "weeks", 7 * 86_400),
];

/// The longest lifespan that can be written: 100 years of days.
pub const MAX: Duration = Duration::from_secs(36_500 * 86_400);

/// Why a lifespan cannot be read. The text is not repeated: it may be a secret pasted
/// into the wrong field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LifespanError {
    #[error("is not a lifespan: write a whole number and one unit, {} (e.g. 90s, 12h, 30d)", unit_list())]
    Malformed,
    #[error("must be at least 1s")]
    TooShort,
    #[error("must be at most 36500d")]
    TooLong,
}

fn unit_list() -> String {
    UNITS
        .iter()
        .map(|(u, name, _)| format!("{u} ({name})"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Reads a lifespan such as `30d`.
pub fn parse(text: &str) -> Result<Duration, LifespanError> {
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or(LifespanError::Malformed)?;
    let (number, unit) = text.split_at(split);
    if number.is_empty() {
        return Err(LifespanError::Malformed);
    }
    let &(_, _, seconds) = UNITS.iter().find(|(u, _, _)| *u == unit).ok_or(LifespanError::Malformed)?;
    let n: u64 = number.parse().map_err(|_| LifespanError::TooLong)?;
    let total = n.checked_mul(seconds).map(Duration::from_secs).ok_or(LifespanError::TooLong)?;
    if total.is_zero() {
        return Err(LifespanError::TooShort);
    }
    if total > MAX {
        return Err(LifespanError::TooLong);
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_units_read_as_they_say() {
        assert_eq!(parse("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("12h"), Ok(Duration::from_secs(12 * 3600)));
        assert_eq!(parse("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse("2w"), Ok(Duration::from_secs(14 * 86_400)));
        assert_eq!(parse("36500d"), Ok(MAX));
    }

    #[test]
    fn other_units_are_refused_with_the_list() {
        for text in [
            "1month", "10y", "6m", "1M", "30", "d", "", "1.5d", "-1d", "1d12h", " 30d", "30 d", "30D", "1ms",
        ] {
            assert_eq!(parse(text), Err(LifespanError::Malformed), "{text:?}");
        }
        let e = LifespanError::Malformed.to_string();
        assert!(e.contains("s (seconds), h (hours), d (days), w (weeks)"), "{e}");
        assert_eq!(parse("0s"), Err(LifespanError::TooShort));
        assert_eq!(parse("36501d"), Err(LifespanError::TooLong));
        assert_eq!(parse("99999999999999999999999w"), Err(LifespanError::TooLong));
        assert_eq!(parse("9999999999999999999w"), Err(LifespanError::TooLong));
    }
}
