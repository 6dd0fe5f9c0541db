//! The catalog mechanism both sides share: what a plugin type is (its
//! count rule and its built-ins), how declarations from a config file are
//! checked against the types and built, and the typed errors that come out.
//!
//! Each side (sigil-server, sigil-agent) owns one catalog module with one
//! file per plugin type; that file holds a [`PluginType`] constant listing
//! the type's built-ins as `name -> build(plugin_data, context)`. Adding a
//! built-in is one file (the plugin) plus one line (its [`Builtin`]).
//! This module never names a plugin.

use std::sync::Arc;

/// How many plugins of one type a configuration may declare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CountRule {
    /// At least this many.
    pub min: usize,
    /// At most this many.
    pub max: usize,
}

impl CountRule {
    /// Exactly one (DataStore, KeyManager; the agent's NodeAttestor).
    pub const EXACTLY_ONE: CountRule = CountRule { min: 1, max: 1 };
    /// Zero or one (UpstreamAuthority).
    pub const AT_MOST_ONE: CountRule = CountRule { min: 0, max: 1 };
    /// Any number, none included.
    pub const ANY: CountRule = CountRule {
        min: 0,
        max: usize::MAX,
    };
    /// One or more (the agent's WorkloadAttestors).
    pub const AT_LEAST_ONE: CountRule = CountRule {
        min: 1,
        max: usize::MAX,
    };
}

/// A plugin type that SPIRE knows and sigil does not implement yet: any
/// declaration of it is a startup error saying so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnsupportedType(pub &'static str);

/// A built-in plugin: its name as written in config and its constructor.
///
/// The constructor reads only its own `plugin_data` and the side's context
/// `C`; it checks everything it can without side effects (no key
/// generation, no connections), so `validate` can run it.
pub struct Builtin<T: ?Sized, C> {
    /// The plugin name (`disk`, `join_token`).
    pub name: &'static str,
    /// Builds the plugin from its `plugin_data`.
    pub build: fn(&serde_json::Value, &C) -> Result<Arc<T>, PluginError>,
}

impl<T: ?Sized, C> std::fmt::Debug for Builtin<T, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builtin").field("name", &self.name).finish()
    }
}

/// One plugin type of one side: its config name, count rule and built-ins.
pub struct PluginType<T: ?Sized + 'static, C: 'static> {
    /// The type as written in config (`NodeAttestor`).
    pub kind: &'static str,
    /// How many declarations are allowed.
    pub count: CountRule,
    /// The built-in plugins of this type.
    pub builtins: &'static [Builtin<T, C>],
}

impl<T: ?Sized, C> std::fmt::Debug for PluginType<T, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginType")
            .field("kind", &self.kind)
            .field("count", &self.count)
            .field("builtins", &self.names())
            .finish()
    }
}

impl<T: ?Sized, C> PluginType<T, C> {
    /// The built-ins' names, in declaration order.
    pub fn names(&self) -> Vec<&'static str> {
        self.builtins.iter().map(|b| b.name).collect()
    }

    /// The count rule, as the checker wants it.
    pub fn rule(&self) -> (&'static str, CountRule) {
        (self.kind, self.count)
    }

    /// Builds the built-in named `name`, or says it does not exist.
    pub fn build(
        &self,
        name: &str,
        data: &serde_json::Value,
        ctx: &C,
    ) -> Result<Arc<T>, PluginError> {
        let builtin = self
            .builtins
            .iter()
            .find(|b| b.name == name)
            .ok_or_else(|| PluginError {
                kind: self.kind,
                plugin: name.to_owned(),
                problem: Problem::UnknownPlugin {
                    supported: self.names(),
                },
            })?;
        (builtin.build)(data, ctx)
    }

    /// Builds every declaration of this type, in order, refusing a plugin
    /// name declared twice (SPIRE refuses duplicates too).
    pub fn build_all(
        &self,
        declared: &[Declaration<'_>],
        ctx: &C,
    ) -> Result<Vec<Arc<T>>, PluginError> {
        let mine: Vec<&Declaration<'_>> = declared.iter().filter(|d| d.kind == self.kind).collect();
        let mut out = Vec::with_capacity(mine.len());
        for (i, d) in mine.iter().enumerate() {
            if mine[..i].iter().any(|o| o.name == d.name) {
                return Err(PluginError {
                    kind: self.kind,
                    plugin: d.name.to_owned(),
                    problem: Problem::Duplicate,
                });
            }
            out.push(self.build(d.name, d.data, ctx)?);
        }
        Ok(out)
    }
}

/// One plugin as declared in a config file: `Kind "name" { plugin_data {} }`.
#[derive(Debug, Clone, Copy)]
pub struct Declaration<'a> {
    /// The type (`NodeAttestor`).
    pub kind: &'a str,
    /// The name (`join_token`).
    pub name: &'a str,
    /// `plugin_data` as JSON (an empty object when absent).
    pub data: &'a serde_json::Value,
}

/// Why a declared plugin cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} {plugin:?}: {problem}")]
pub struct PluginError {
    /// The plugin type (`KeyManager`).
    pub kind: &'static str,
    /// The plugin name as declared (`disk`).
    pub plugin: String,
    /// What is wrong.
    pub problem: Problem,
}

impl PluginError {
    /// An error of plugin `plugin` of type `kind`.
    pub fn new(kind: &'static str, plugin: &str, problem: Problem) -> Self {
        PluginError {
            kind,
            plugin: plugin.to_owned(),
            problem,
        }
    }
}

/// What is wrong with one plugin's declaration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Problem {
    /// No built-in of this type has that name.
    #[error("is not supported by sigil yet (supported: {})", list(supported))]
    UnknownPlugin {
        /// The built-ins of the type.
        supported: Vec<&'static str>,
    },
    /// The same plugin is declared twice.
    #[error("is declared more than once")]
    Duplicate,
    /// `plugin_data` is not a block of options.
    #[error("plugin_data must be a block of options")]
    NotABlock,
    /// An option the plugin does not know.
    #[error("unknown option {0:?} in plugin_data")]
    UnknownOption(String),
    /// An option SPIRE has and sigil does not implement yet.
    #[error("option {0:?} in plugin_data is not supported by sigil yet")]
    UnsupportedOption(String),
    /// A required option is missing.
    #[error("{0:?} must be set in plugin_data")]
    MissingOption(String),
    /// An option has a value the plugin cannot use.
    #[error("invalid value for {option:?} in plugin_data: {reason}")]
    InvalidOption {
        /// The option.
        option: String,
        /// Why.
        reason: String,
    },
    /// The options, taken together, are not usable (the plugin's words).
    #[error("{0}")]
    Invalid(String),
    /// Something the plugin needs at load time (a file it names) is unusable.
    #[error("{0}")]
    Load(String),
}

/// Why the set of declared plugins is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CountError {
    /// A type neither side knows.
    #[error("unknown plugin type {kind:?} (supported types: {})", list(supported))]
    UnknownType {
        /// The declared type.
        kind: String,
        /// The types this side knows.
        supported: Vec<&'static str>,
    },
    /// A type SPIRE has that sigil does not implement yet.
    #[error(
        "at most 0 {kind} plugin(s) may be configured, found {found}: this plugin type is not supported by sigil yet"
    )]
    UnsupportedType {
        /// The type.
        kind: &'static str,
        /// How many were declared.
        found: usize,
    },
    /// Fewer than the rule allows.
    #[error("{}", too_few(kind, *min, *max, *found))]
    TooFew {
        /// The type.
        kind: &'static str,
        /// The rule's minimum.
        min: usize,
        /// The rule's maximum.
        max: usize,
        /// How many were declared.
        found: usize,
    },
    /// More than the rule allows.
    #[error("at most {max} {kind} plugin(s) may be configured, found {found}")]
    TooMany {
        /// The type.
        kind: &'static str,
        /// The rule's maximum.
        max: usize,
        /// How many were declared.
        found: usize,
    },
}

/// Everything that can go wrong loading a side's catalog.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CatalogError {
    /// The declared types or their counts are wrong.
    #[error(transparent)]
    Count(#[from] CountError),
    /// One plugin cannot be built.
    #[error(transparent)]
    Plugin(#[from] PluginError),
}

/// Checks the declared types against a side's rules: every type known,
/// every count within its rule, unsupported types absent.
pub fn check_counts(
    declared: &[Declaration<'_>],
    rules: &[(&'static str, CountRule)],
    unsupported: &[UnsupportedType],
) -> Result<(), CountError> {
    for d in declared {
        let known =
            rules.iter().any(|(k, _)| *k == d.kind) || unsupported.iter().any(|u| u.0 == d.kind);
        if !known {
            let mut supported: Vec<&'static str> = rules.iter().map(|(k, _)| *k).collect();
            supported.extend(unsupported.iter().map(|u| u.0));
            return Err(CountError::UnknownType {
                kind: d.kind.to_owned(),
                supported,
            });
        }
    }
    for u in unsupported {
        let found = declared.iter().filter(|d| d.kind == u.0).count();
        if found > 0 {
            return Err(CountError::UnsupportedType { kind: u.0, found });
        }
    }
    for (kind, rule) in rules {
        let found = declared.iter().filter(|d| d.kind == *kind).count();
        if found < rule.min {
            return Err(CountError::TooFew {
                kind,
                min: rule.min,
                max: rule.max,
                found,
            });
        }
        if found > rule.max {
            return Err(CountError::TooMany {
                kind,
                max: rule.max,
                found,
            });
        }
    }
    Ok(())
}

/// Decodes a plugin's `plugin_data` into its options struct (which should
/// be `#[serde(deny_unknown_fields)]`), with errors that name the plugin
/// and the option. `unsupported` lists SPIRE options sigil does not
/// implement yet: naming one is an error saying so rather than "unknown".
pub fn decode<T: serde::de::DeserializeOwned>(
    kind: &'static str,
    plugin: &str,
    data: &serde_json::Value,
    unsupported: &[&str],
) -> Result<T, PluginError> {
    let err = |problem| PluginError::new(kind, plugin, problem);
    let data = match data {
        serde_json::Value::Null => &serde_json::Value::Object(Default::default()),
        serde_json::Value::Object(obj) => {
            if let Some(k) = obj.keys().find(|k| unsupported.contains(&k.as_str())) {
                return Err(err(Problem::UnsupportedOption(k.clone())));
            }
            data
        }
        _ => return Err(err(Problem::NotABlock)),
    };
    serde_json::from_value(data.clone()).map_err(|e| {
        let msg = e.to_string();
        // serde_json names unknown fields as "unknown field `x`, expected ...".
        match msg
            .strip_prefix("unknown field `")
            .and_then(|rest| rest.split('`').next())
        {
            Some(field) => err(Problem::UnknownOption(field.to_owned())),
            None => match msg
                .strip_prefix("missing field `")
                .and_then(|rest| rest.split('`').next())
            {
                Some(field) => err(Problem::MissingOption(field.to_owned())),
                None => err(Problem::InvalidOption {
                    option: String::from("plugin_data"),
                    reason: msg,
                }),
            },
        }
    })
}

fn list(names: &[&str]) -> String {
    if names.is_empty() {
        String::from("none")
    } else {
        names.join(", ")
    }
}

fn too_few(kind: &str, min: usize, max: usize, found: usize) -> String {
    if min == 1 && max == 1 {
        format!("exactly one {kind} plugin must be configured, found none")
    } else {
        format!("at least {min} {kind} plugin(s) must be configured, found {found}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: &[(&str, CountRule)] = &[
        ("DataStore", CountRule::EXACTLY_ONE),
        ("NodeAttestor", CountRule::AT_LEAST_ONE),
    ];
    const UNSUPPORTED: &[UnsupportedType] = &[UnsupportedType("Notifier")];

    fn decl(kind: &'static str) -> Declaration<'static> {
        static EMPTY: serde_json::Value = serde_json::Value::Null;
        Declaration {
            kind,
            name: "x",
            data: &EMPTY,
        }
    }

    #[test]
    fn counts_within_the_rules_pass() {
        let d = [
            decl("DataStore"),
            decl("NodeAttestor"),
            decl("NodeAttestor"),
        ];
        check_counts(&d, RULES, UNSUPPORTED).unwrap();
    }

    #[test]
    fn missing_extra_unknown_and_unsupported_types_are_typed_errors() {
        assert_eq!(
            check_counts(&[decl("NodeAttestor")], RULES, UNSUPPORTED).unwrap_err(),
            CountError::TooFew {
                kind: "DataStore",
                min: 1,
                max: 1,
                found: 0
            }
        );
        let e = check_counts(
            &[decl("DataStore"), decl("DataStore"), decl("NodeAttestor")],
            RULES,
            UNSUPPORTED,
        )
        .unwrap_err();
        assert!(matches!(
            e,
            CountError::TooMany {
                kind: "DataStore",
                max: 1,
                found: 2
            }
        ));
        assert_eq!(
            e.to_string(),
            "at most 1 DataStore plugin(s) may be configured, found 2"
        );
        let e = check_counts(&[decl("Nope")], RULES, UNSUPPORTED).unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown plugin type \"Nope\" (supported types: DataStore, NodeAttestor, Notifier)"
        );
        let e = check_counts(
            &[decl("DataStore"), decl("NodeAttestor"), decl("Notifier")],
            RULES,
            UNSUPPORTED,
        )
        .unwrap_err();
        assert_eq!(
            e,
            CountError::UnsupportedType {
                kind: "Notifier",
                found: 1
            }
        );
        assert!(
            e.to_string()
                .ends_with("this plugin type is not supported by sigil yet")
        );
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Opts {
        path: String,
        #[serde(default)]
        mode: Option<u32>,
    }

    #[test]
    fn decode_names_unknown_missing_unsupported_and_invalid_options() {
        let d = |v: serde_json::Value| decode::<Opts>("KeyManager", "disk", &v, &["hsm"]);
        d(serde_json::json!({"path": "/x"})).unwrap();
        let problem = |v| d(v).unwrap_err().problem;
        assert_eq!(
            problem(serde_json::json!({"path": "/x", "colour": 1})),
            Problem::UnknownOption("colour".into())
        );
        assert_eq!(
            problem(serde_json::json!({})),
            Problem::MissingOption("path".into())
        );
        assert_eq!(
            problem(serde_json::json!({"path": "/x", "hsm": true})),
            Problem::UnsupportedOption("hsm".into())
        );
        assert_eq!(problem(serde_json::json!([1])), Problem::NotABlock);
        let e = d(serde_json::json!({"path": "/x", "mode": "rw"})).unwrap_err();
        assert!(matches!(e.problem, Problem::InvalidOption { .. }), "{e}");
        assert!(
            e.to_string()
                .starts_with("KeyManager \"disk\": invalid value"),
            "{e}"
        );
    }
}
