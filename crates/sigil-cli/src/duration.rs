//! Go duration strings (`300ms`, `1h30m`, `24h`), as SPIRE's config uses.

use std::time::Duration;

/// Why a duration string is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DurationError {
    /// Not of the form `<number><unit>...`.
    #[error(
        "invalid duration {0:?}: expected a number and unit, such as \"90s\", \"10m\" or \"1h30m\""
    )]
    Invalid(String),
    /// A unit that is not one of ns, us, µs, ms, s, m, h.
    #[error("invalid duration {0:?}: unknown unit {1:?} (use ns, us, ms, s, m or h)")]
    UnknownUnit(String, String),
    /// Negative durations have no meaning in config.
    #[error("invalid duration {0:?}: must not be negative")]
    Negative(String),
}

/// Parses a Go duration. A bare `0` is accepted, as Go does.
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    let t = s.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    if t.starts_with('-') {
        return Err(DurationError::Negative(s.to_owned()));
    }
    let t = t.strip_prefix('+').unwrap_or(t);
    if t.is_empty() {
        return Err(DurationError::Invalid(s.to_owned()));
    }
    let mut total = 0f64;
    let mut rest = t;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| DurationError::Invalid(s.to_owned()))?;
        if num_end == 0 {
            return Err(DurationError::Invalid(s.to_owned()));
        }
        let value: f64 = rest[..num_end]
            .parse()
            .map_err(|_| DurationError::Invalid(s.to_owned()))?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_end];
        rest = &rest[unit_end..];
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "" => return Err(DurationError::Invalid(s.to_owned())),
            other => return Err(DurationError::UnknownUnit(s.to_owned(), other.to_owned())),
        };
        total += value * scale;
    }
    Ok(Duration::from_secs_f64(total))
}

/// Formats a duration the way Go prints it for whole seconds (`1h0m0s`, `5m0s`, `30s`).
pub fn format_duration(d: Duration) -> String {
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        assert_eq!(parse_duration("24h").unwrap(), Duration::from_secs(86400));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1.5h").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("300ms").unwrap(), Duration::from_millis(300));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
    }

    #[test]
    fn rejects_bad_durations_with_reason() {
        assert!(matches!(
            parse_duration("10"),
            Err(DurationError::Invalid(_))
        ));
        assert!(matches!(
            parse_duration("h"),
            Err(DurationError::Invalid(_))
        ));
        assert!(matches!(parse_duration("5d"), Err(DurationError::UnknownUnit(_, u)) if u == "d"));
        assert!(matches!(
            parse_duration("-5s"),
            Err(DurationError::Negative(_))
        ));
        assert!(matches!(parse_duration(""), Err(DurationError::Invalid(_))));
    }

    #[test]
    fn formats_like_go() {
        assert_eq!(format_duration(Duration::from_secs(3600)), "1h0m0s");
        assert_eq!(format_duration(Duration::from_secs(300)), "5m0s");
        assert_eq!(format_duration(Duration::from_secs(7)), "7s");
    }
}
