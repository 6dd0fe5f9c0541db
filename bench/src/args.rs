//! Go-style `-flag value` arguments for the SPIRE-API subcommands: every
//! flag takes a value, each may appear once, and an unknown flag is an error
//! (the caller lists the ones it reads and calls [`Args::finish`]).

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use crate::BenchError;

/// Parsed flags, consumed one by one.
#[derive(Debug)]
pub struct Args {
    flags: HashMap<String, String>,
}

impl Args {
    /// Parses `-name value` pairs (one or two leading dashes).
    pub fn parse(raw: &[String]) -> Result<Self, BenchError> {
        let mut flags = HashMap::new();
        let mut it = raw.iter();
        while let Some(flag) = it.next() {
            let name = flag.trim_start_matches('-');
            if name.len() == flag.len() {
                return Err(BenchError::Usage(format!("expected a flag, got {flag}")));
            }
            let val = it
                .next()
                .ok_or_else(|| BenchError::Usage(format!("-{name} needs a value")))?;
            if flags.insert(name.to_owned(), val.clone()).is_some() {
                return Err(BenchError::Usage(format!("-{name} given twice")));
            }
        }
        Ok(Args { flags })
    }

    /// The value of `name` parsed as `T`, or `default`.
    pub fn get<T: FromStr>(&mut self, name: &str, default: T) -> Result<T, BenchError> {
        match self.flags.remove(name) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| BenchError::Usage(format!("-{name}: bad value {v:?}"))),
        }
    }

    /// A required value.
    pub fn required<T: FromStr>(&mut self, name: &str) -> Result<T, BenchError> {
        let v = self
            .flags
            .remove(name)
            .ok_or_else(|| BenchError::Usage(format!("-{name} is required")))?;
        v.parse()
            .map_err(|_| BenchError::Usage(format!("-{name}: bad value {v:?}")))
    }

    /// An optional value.
    pub fn optional<T: FromStr>(&mut self, name: &str) -> Result<Option<T>, BenchError> {
        match self.flags.remove(name) {
            None => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| BenchError::Usage(format!("-{name}: bad value {v:?}"))),
        }
    }

    /// Seconds (fractions allowed) as a duration, or `default`.
    pub fn secs(&mut self, name: &str, default: f64) -> Result<Duration, BenchError> {
        let s: f64 = self.get(name, default)?;
        Duration::try_from_secs_f64(s)
            .map_err(|_| BenchError::Usage(format!("-{name}: bad duration {s}")))
    }

    /// Refuses flags nobody read.
    pub fn finish(self) -> Result<(), BenchError> {
        match self.flags.keys().next() {
            None => Ok(()),
            Some(k) => Err(BenchError::Usage(format!("unknown flag -{k}"))),
        }
    }
}
