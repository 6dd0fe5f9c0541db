//! Go-style flags. SPIRE's docs and scripts write `-spiffeID x`; clap wants
//! `--spiffeID x`. Both forms are accepted by rewriting single-dash long flags
//! before clap sees them.

use std::ffi::OsString;

/// Rewrites `-name` and `-name=value` to `--name` / `--name=value`.
///
/// Left alone: `--x`, `-` (stdin), single-letter flags (`-h`), arguments after
/// `--`, and anything that does not start with a letter after the dash (so
/// negative numbers pass through as values).
pub fn normalize_go_flags<I, T>(args: I) -> Vec<OsString>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    let mut out = Vec::new();
    let mut passthrough = false;
    for arg in args {
        let arg: OsString = arg.into();
        if passthrough {
            out.push(arg);
            continue;
        }
        let Some(s) = arg.to_str() else {
            out.push(arg);
            continue;
        };
        if s == "--" {
            passthrough = true;
            out.push(arg);
            continue;
        }
        let is_go_long = s.len() > 2
            && s.starts_with('-')
            && !s.starts_with("--")
            && s[1..].starts_with(|c: char| c.is_ascii_alphabetic())
            && !s[1..2].contains('=');
        if is_go_long {
            out.push(OsString::from(format!("-{s}")));
        } else {
            out.push(arg);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(v: &[&str]) -> Vec<String> {
        normalize_go_flags(v.iter().copied())
            .into_iter()
            .map(|s| s.into_string().unwrap())
            .collect()
    }

    #[test]
    fn single_dash_long_flags_become_double_dash() {
        assert_eq!(
            norm(&["entry", "create", "-spiffeID", "spiffe://x/y", "-ttl=60"]),
            ["entry", "create", "--spiffeID", "spiffe://x/y", "--ttl=60"]
        );
    }

    #[test]
    fn short_flags_numbers_and_passthrough_are_untouched() {
        assert_eq!(
            norm(&["-h", "--x", "-1", "-", "--", "-spiffeID"]),
            ["-h", "--x", "-1", "-", "--", "-spiffeID"]
        );
    }
}

/// A flag value Go's `strconv.ParseBool` would refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid boolean value {0:?}")]
pub struct InvalidBool(pub String);

/// A Go boolean flag value (`-daemon-mode=false`): the spellings Go's
/// `strconv.ParseBool` takes.
pub fn parse_go_bool(s: &str) -> Result<bool, InvalidBool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(InvalidBool(s.to_owned())),
    }
}
