//! How many plugins of each type a configuration may hold, checked once at
//! startup with errors that name the type.

/// How many plugins of one type are allowed.
#[derive(Debug, Clone, Copy)]
pub struct CountRule {
    /// The plugin type (`DataStore`).
    pub kind: &'static str,
    /// At least this many.
    pub min: usize,
    /// At most this many.
    pub max: usize,
}

/// Checks declared plugin types against the rules. `declared` holds the type
/// of each declared plugin; a type with no rule is an error naming it.
pub fn check_counts(declared: &[&str], rules: &[CountRule]) -> Result<(), String> {
    for kind in declared {
        if !rules.iter().any(|r| r.kind == *kind) {
            let known: Vec<&str> = rules.iter().map(|r| r.kind).collect();
            return Err(format!(
                "unknown plugin type {kind:?} (supported types: {})",
                known.join(", ")
            ));
        }
    }
    for rule in rules {
        let n = declared.iter().filter(|k| **k == rule.kind).count();
        if n < rule.min {
            return Err(if rule.min == 1 && rule.max == 1 {
                format!(
                    "exactly one {} plugin must be configured, found none",
                    rule.kind
                )
            } else {
                format!(
                    "at least {} {} plugin(s) must be configured, found {n}",
                    rule.min, rule.kind
                )
            });
        }
        if n > rule.max {
            return Err(format!(
                "at most {} {} plugin(s) may be configured, found {n}",
                rule.max, rule.kind
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: &[CountRule] = &[
        CountRule {
            kind: "DataStore",
            min: 1,
            max: 1,
        },
        CountRule {
            kind: "NodeAttestor",
            min: 1,
            max: usize::MAX,
        },
    ];

    #[test]
    fn exact_counts_pass() {
        check_counts(&["DataStore", "NodeAttestor", "NodeAttestor"], RULES).unwrap();
    }

    #[test]
    fn missing_and_extra_and_unknown_are_named() {
        let e = check_counts(&["NodeAttestor"], RULES).unwrap_err();
        assert!(e.contains("exactly one DataStore"), "{e}");
        let e = check_counts(&["DataStore", "DataStore", "NodeAttestor"], RULES).unwrap_err();
        assert!(e.contains("at most 1 DataStore"), "{e}");
        let e = check_counts(&["DataStore", "NodeAttestor", "Notifier"], RULES).unwrap_err();
        assert!(e.contains("\"Notifier\""), "{e}");
    }
}
