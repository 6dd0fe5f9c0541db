//! Selectors: `type:value` facts about a node or workload (`unix:uid:1000`).

use std::fmt;
use std::str::FromStr;

/// Why a string is not a valid selector.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SelectorError {
    /// No `:` separating type from value.
    #[error("selector {0:?} must be formatted as type:value")]
    MissingSeparator(String),
    /// The type part is empty.
    #[error("selector {0:?} has an empty type")]
    EmptyType(String),
    /// The value part is empty.
    #[error("selector {0:?} has an empty value")]
    EmptyValue(String),
}

/// A selector: a type (the attestor that produced it, `unix`, `k8s`,
/// `spiffe_id`) and a value, which may itself contain colons (`uid:1000`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct Selector {
    kind: String,
    value: String,
}

impl Selector {
    /// Builds a selector from its two parts.
    pub fn new(kind: &str, value: &str) -> Result<Self, SelectorError> {
        let whole = format!("{kind}:{value}");
        if kind.is_empty() {
            return Err(SelectorError::EmptyType(whole));
        }
        if value.is_empty() {
            return Err(SelectorError::EmptyValue(whole));
        }
        Ok(Selector {
            kind: kind.to_owned(),
            value: value.to_owned(),
        })
    }

    /// Parses `type:value`, splitting at the first colon.
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let (kind, value) = s
            .split_once(':')
            .ok_or_else(|| SelectorError::MissingSeparator(s.to_owned()))?;
        Selector::new(kind, value)
    }

    /// The selector type (`unix`).
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The selector value (`uid:1000`).
    pub fn value(&self) -> &str {
        &self.value
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, self.value)
    }
}

impl fmt::Debug for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Selector({}:{})", self.kind, self.value)
    }
}

impl FromStr for Selector {
    type Err = SelectorError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Selector::parse(s)
    }
}
