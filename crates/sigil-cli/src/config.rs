//! Walking SPIRE-format HCL config files.
//!
//! A [`Section`] holds the attributes and blocks of one HCL body. Callers take
//! the options they understand; [`Section::finish`] then rejects whatever is
//! left, naming it, so no option is ever silently ignored.

use std::collections::BTreeMap;
use std::time::Duration;

use hcl::eval::{Context, Evaluate};

use crate::duration::parse_duration;

/// A config file problem, naming the option and where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file is not valid HCL.
    #[error("could not parse configuration: {0}")]
    Syntax(String),
    /// An option sigil does not know at all.
    #[error("unknown option {key:?} in {path}")]
    UnknownOption {
        /// Where (`server`, `plugins.DataStore "sql".plugin_data`).
        path: String,
        /// The option name.
        key: String,
    },
    /// An option SPIRE has that sigil does not support yet.
    #[error("option {key:?} in {path} is not supported by sigil yet")]
    Unsupported {
        /// Where.
        path: String,
        /// The option name.
        key: String,
    },
    /// An option with a value of the wrong type or out of range.
    #[error("invalid value for {key:?} in {path}: {reason}")]
    InvalidValue {
        /// Where.
        path: String,
        /// The option name.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A required option is missing.
    #[error("{key:?} must be set in {path}")]
    Missing {
        /// Where.
        path: String,
        /// The option name.
        key: String,
    },
    /// A block that may appear only once appeared more than once.
    #[error("block {key:?} appears more than once in {path}")]
    Duplicate {
        /// Where.
        path: String,
        /// The block name.
        key: String,
    },
}

/// One HCL body: attributes and blocks not yet taken.
#[derive(Debug, Clone)]
pub struct Section {
    path: String,
    attrs: BTreeMap<String, hcl::Value>,
    blocks: Vec<Block>,
}

/// A block: its identifier, labels and body.
#[derive(Debug, Clone)]
pub struct Block {
    /// `server`, `DataStore`, ...
    pub ident: String,
    /// `["sql"]` for `DataStore "sql" { }`.
    pub labels: Vec<String>,
    /// The body.
    pub body: Section,
}

/// A plugin declared in a `plugins { }` block.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginDecl {
    /// The plugin type (`DataStore`, `KeyManager`, `NodeAttestor`, ...).
    pub kind: String,
    /// The plugin name (`sql`, `disk`, `join_token`).
    pub name: String,
    /// `plugin_data` as JSON (an empty object when absent).
    pub data: serde_json::Value,
}

impl Section {
    /// Parses HCL text into its top-level section.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        check_brackets(text)?;
        let body: hcl::Body = hcl::parse(text).map_err(|e| ConfigError::Syntax(e.to_string()))?;
        Section::from_body(String::from("the configuration file"), body)
    }

    fn from_body(path: String, body: hcl::Body) -> Result<Self, ConfigError> {
        let ctx = Context::new();
        let mut attrs = BTreeMap::new();
        let mut blocks = Vec::new();
        for structure in body.into_iter() {
            match structure {
                hcl::Structure::Attribute(attr) => {
                    let key = attr.key.to_string();
                    if let Some(op) = arithmetic_in(&attr.expr) {
                        return Err(ConfigError::InvalidValue {
                            path,
                            key,
                            reason: format!(
                                "arithmetic (`{op}`) is not supported in configuration files"
                            ),
                        });
                    }
                    let value =
                        attr.expr
                            .evaluate(&ctx)
                            .map_err(|e| ConfigError::InvalidValue {
                                path: path.clone(),
                                key: key.clone(),
                                reason: e.to_string(),
                            })?;
                    attrs.insert(key, value);
                }
                hcl::Structure::Block(block) => {
                    let ident = block.identifier.to_string();
                    let labels: Vec<String> = block
                        .labels
                        .iter()
                        .map(|l| match l {
                            hcl::BlockLabel::String(s) => s.clone(),
                            hcl::BlockLabel::Identifier(i) => i.to_string(),
                        })
                        .collect();
                    let child_path = if labels.is_empty() {
                        format!("{path}.{ident}")
                    } else {
                        format!("{path}.{ident} \"{}\"", labels.join("\" \""))
                    };
                    let child_path = child_path
                        .trim_start_matches("the configuration file.")
                        .to_owned();
                    blocks.push(Block {
                        ident,
                        labels,
                        body: Section::from_body(child_path, block.body)?,
                    });
                }
            }
        }
        Ok(Section {
            path,
            attrs,
            blocks,
        })
    }

    /// A section holding the attributes of an HCL object value
    /// (`health_checks = { bind_port = 8081 }`), so an option written as an
    /// object is walked, and its unknown keys refused, like a block.
    pub fn from_object(path: impl Into<String>, object: hcl::Map<String, hcl::Value>) -> Self {
        Section {
            path: path.into(),
            attrs: object.into_iter().collect(),
            blocks: Vec::new(),
        }
    }

    /// Where this section is, for messages.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Takes an attribute's raw value.
    pub fn take_value(&mut self, key: &str) -> Option<hcl::Value> {
        self.attrs.remove(key)
    }

    fn invalid(&self, key: &str, reason: impl Into<String>) -> ConfigError {
        ConfigError::InvalidValue {
            path: self.path.clone(),
            key: key.to_owned(),
            reason: reason.into(),
        }
    }

    /// An error for a missing required option of this section.
    pub fn missing(&self, key: &str) -> ConfigError {
        ConfigError::Missing {
            path: self.path.clone(),
            key: key.to_owned(),
        }
    }

    /// An error about a value of this section's option, for callers that
    /// validate further (a SPIFFE ID, a key type).
    pub fn invalid_value(&self, key: &str, reason: impl Into<String>) -> ConfigError {
        self.invalid(key, reason)
    }

    /// Takes a string attribute.
    pub fn take_string(&mut self, key: &str) -> Result<Option<String>, ConfigError> {
        match self.attrs.remove(key) {
            None => Ok(None),
            Some(hcl::Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(self.invalid(key, format!("expected a string, found {other}"))),
        }
    }

    /// Takes a bool attribute.
    pub fn take_bool(&mut self, key: &str) -> Result<Option<bool>, ConfigError> {
        match self.attrs.remove(key) {
            None => Ok(None),
            Some(hcl::Value::Bool(b)) => Ok(Some(b)),
            Some(hcl::Value::String(s)) if s == "true" || s == "false" => Ok(Some(s == "true")),
            Some(other) => Err(self.invalid(key, format!("expected true or false, found {other}"))),
        }
    }

    /// Takes an integer attribute (a quoted number is accepted, as SPIRE does).
    pub fn take_i64(&mut self, key: &str) -> Result<Option<i64>, ConfigError> {
        match self.attrs.remove(key) {
            None => Ok(None),
            Some(hcl::Value::Number(n)) => n
                .as_i64()
                .map(Some)
                .ok_or_else(|| self.invalid(key, format!("expected an integer, found {n}"))),
            Some(hcl::Value::String(s)) => s
                .parse()
                .map(Some)
                .map_err(|_| self.invalid(key, format!("expected an integer, found {s:?}"))),
            Some(other) => Err(self.invalid(key, format!("expected an integer, found {other}"))),
        }
    }

    /// Takes a port number.
    pub fn take_port(&mut self, key: &str) -> Result<Option<u16>, ConfigError> {
        match self.take_i64(key)? {
            None => Ok(None),
            Some(n) => u16::try_from(n)
                .map(Some)
                .map_err(|_| self.invalid(key, format!("{n} is not a port number (0-65535)"))),
        }
    }

    /// Takes a Go duration string (`"1h"`); a bare integer is read as seconds.
    pub fn take_duration(&mut self, key: &str) -> Result<Option<Duration>, ConfigError> {
        match self.attrs.remove(key) {
            None => Ok(None),
            Some(hcl::Value::String(s)) => parse_duration(&s)
                .map(Some)
                .map_err(|e| self.invalid(key, e.to_string())),
            Some(hcl::Value::Number(n)) => match n.as_u64() {
                Some(secs) => Ok(Some(Duration::from_secs(secs))),
                None => Err(self.invalid(key, format!("{n} is not a duration"))),
            },
            Some(other) => {
                Err(self.invalid(key, format!("expected a duration string, found {other}")))
            }
        }
    }

    /// Takes a list of strings.
    pub fn take_string_list(&mut self, key: &str) -> Result<Option<Vec<String>>, ConfigError> {
        match self.attrs.remove(key) {
            None => Ok(None),
            Some(hcl::Value::Array(items)) => {
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    match item {
                        hcl::Value::String(s) => out.push(s),
                        other => {
                            return Err(
                                self.invalid(key, format!("expected strings, found {other}"))
                            );
                        }
                    }
                }
                Ok(Some(out))
            }
            Some(other) => {
                Err(self.invalid(key, format!("expected a list of strings, found {other}")))
            }
        }
    }

    /// Takes every block with this identifier.
    pub fn take_blocks(&mut self, ident: &str) -> Vec<Block> {
        let (taken, kept) = std::mem::take(&mut self.blocks)
            .into_iter()
            .partition(|b| b.ident == ident);
        self.blocks = kept;
        taken
    }

    /// Takes the single block with this identifier, if any.
    pub fn take_block(&mut self, ident: &str) -> Result<Option<Block>, ConfigError> {
        let mut blocks = self.take_blocks(ident);
        match blocks.len() {
            0 => Ok(None),
            1 => Ok(blocks.pop()),
            _ => Err(ConfigError::Duplicate {
                path: self.path.clone(),
                key: ident.to_owned(),
            }),
        }
    }

    /// Converts what is left of this section to JSON (for `plugin_data`).
    pub fn into_json(self) -> serde_json::Value {
        let mut map = serde_json::Map::new();
        for (k, v) in self.attrs {
            map.insert(
                k,
                serde_json::to_value(v).unwrap_or(serde_json::Value::Null),
            );
        }
        for b in self.blocks {
            let mut value = b.body.into_json();
            for label in b.labels.iter().rev() {
                let mut m = serde_json::Map::new();
                m.insert(label.clone(), value);
                value = serde_json::Value::Object(m);
            }
            // Repeated labelled blocks (`clusters "a" {} clusters "b" {}`)
            // add up to one object, as HCL 1 decodes them for SPIRE.
            match map.get_mut(&b.ident) {
                Some(existing) => merge(existing, value),
                None => {
                    map.insert(b.ident, value);
                }
            }
        }
        serde_json::Value::Object(map)
    }

    /// Rejects every attribute and block not taken. Names in `unsupported`
    /// are SPIRE options sigil knows but does not implement yet.
    pub fn finish(self, unsupported: &[&str]) -> Result<(), ConfigError> {
        let leftover = self
            .attrs
            .keys()
            .cloned()
            .chain(self.blocks.iter().map(|b| b.ident.clone()))
            .next();
        match leftover {
            None => Ok(()),
            Some(key) if unsupported.contains(&key.as_str()) => Err(ConfigError::Unsupported {
                path: self.path,
                key,
            }),
            Some(key) => Err(ConfigError::UnknownOption {
                path: self.path,
                key,
            }),
        }
    }
}

/// Merges `add` into `into`: objects key by key, anything else replaced.
fn merge(into: &mut serde_json::Value, add: serde_json::Value) {
    match (into, add) {
        (serde_json::Value::Object(into), serde_json::Value::Object(add)) => {
            for (k, v) in add {
                match into.get_mut(&k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        into.insert(k, v);
                    }
                }
            }
        }
        (into, add) => *into = add,
    }
}

/// Reads a `plugins { Kind "name" { plugin_data { } } }` block into
/// declarations. External plugins (`plugin_cmd`) are not supported yet, and
/// `enabled = false` drops the plugin, as in SPIRE.
pub fn parse_plugins(mut plugins: Section) -> Result<Vec<PluginDecl>, ConfigError> {
    let mut out = Vec::new();
    for block in std::mem::take(&mut plugins.blocks) {
        let name = match block.labels.as_slice() {
            [name] => name.clone(),
            _ => {
                return Err(ConfigError::InvalidValue {
                    path: plugins.path.clone(),
                    key: block.ident.clone(),
                    reason:
                        "a plugin block needs exactly one label, its name: Kind \"name\" { ... }"
                            .into(),
                });
            }
        };
        let mut body = block.body;
        let enabled = body.take_bool("enabled")?.unwrap_or(true);
        let data = match (
            body.take_block("plugin_data")?,
            body.take_value("plugin_data"),
        ) {
            (Some(b), _) => b.body.into_json(),
            (None, Some(v)) => serde_json::to_value(v).unwrap_or(serde_json::Value::Null),
            (None, None) => serde_json::Value::Object(Default::default()),
        };
        body.finish(&[
            "plugin_cmd",
            "plugin_checksum",
            "plugin_args",
            "plugin_data_file",
        ])?;
        if enabled {
            out.push(PluginDecl {
                kind: block.ident,
                name,
                data,
            });
        }
    }
    plugins.finish(&[])?;
    Ok(out)
}

/// Expands `$VAR` and `${VAR}` from the environment (SPIRE's `-expandEnv`).
/// Unset variables expand to the empty string, as Go's `os.ExpandEnv` does.
pub fn expand_env(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c != '$' {
            out.push(c);
            continue;
        }
        let rest = &text[i + 1..];
        if let Some((body, end)) = rest
            .strip_prefix('{')
            .and_then(|body| body.find('}').map(|end| (body, end)))
        {
            out.push_str(&std::env::var(&body[..end]).unwrap_or_default());
            for _ in 0..end + 2 {
                chars.next();
            }
            continue;
        }
        let name_len = rest
            .find(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_'))
            .unwrap_or(rest.len());
        if name_len == 0 {
            out.push('$');
            continue;
        }
        out.push_str(&std::env::var(&rest[..name_len]).unwrap_or_default());
        for _ in 0..name_len {
            chars.next();
        }
    }
    out
}

/// Deepest bracket nesting a configuration file may have; SPIRE's own
/// files need about six.
const MAX_NESTING: usize = 24;

/// Refuses unbalanced or too deeply nested brackets before the HCL parser
/// sees the text: its backtracking takes time exponential in the number of
/// unclosed brackets (found by fuzzing: 25 unclosed `[` took over 10 s).
/// Brackets inside strings and comments do not count.
fn check_brackets(text: &str) -> Result<(), ConfigError> {
    let mut stack: Vec<char> = Vec::new();
    let mut chars = text.chars().peekable();
    let unbalanced = |what: String| ConfigError::Syntax(format!("unbalanced brackets: {what}"));
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                // A quoted string, with backslash escapes (heredocs hold
                // no quotes that matter here: their brackets are counted,
                // which is only stricter).
                while let Some(d) = chars.next() {
                    match d {
                        '\\' => {
                            chars.next();
                        }
                        '"' | '\n' => break,
                        _ => {}
                    }
                }
            }
            '#' => {
                for d in chars.by_ref() {
                    if d == '\n' {
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'/') => {
                for d in chars.by_ref() {
                    if d == '\n' {
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut prev = ' ';
                for d in chars.by_ref() {
                    if prev == '*' && d == '/' {
                        break;
                    }
                    prev = d;
                }
            }
            '[' | '{' | '(' => {
                stack.push(c);
                if stack.len() > MAX_NESTING {
                    return Err(ConfigError::Syntax(format!(
                        "brackets nested more than {MAX_NESTING} deep"
                    )));
                }
            }
            ']' | '}' | ')' => {
                let open = match c {
                    ']' => '[',
                    '}' => '{',
                    _ => '(',
                };
                if stack.pop() != Some(open) {
                    return Err(unbalanced(format!("`{c}` closes nothing open")));
                }
            }
            _ => {}
        }
    }
    match stack.last() {
        Some(open) => Err(unbalanced(format!("`{open}` is never closed"))),
        None => Ok(()),
    }
}

/// The first arithmetic operator in `expr`, at any depth (inside arrays,
/// objects, conditionals, function arguments and string templates too).
///
/// SPIRE's HCL (v1) has no operators at all, and hcl-rs evaluates integer
/// arithmetic unchecked: `1 % 0` panics, and an overflowing `*` panics in a
/// debug build and wraps in a release one. So a configuration with
/// arithmetic is refused before it is evaluated (found by fuzzing).
fn arithmetic_in(expr: &hcl::Expression) -> Option<&'static str> {
    use hcl::Expression as E;
    use hcl::expr::{BinaryOperator as B, ObjectKey, Operation, TraversalOperator};
    match expr {
        E::Array(items) => items.iter().find_map(arithmetic_in),
        E::Object(object) => object.iter().find_map(|(k, v)| {
            let key = match k {
                ObjectKey::Expression(e) => arithmetic_in(e),
                _ => None,
            };
            key.or_else(|| arithmetic_in(v))
        }),
        E::TemplateExpr(t) => hcl::Template::from_expr(t)
            .ok()
            .and_then(|t| arithmetic_in_template(&t)),
        E::Traversal(t) => arithmetic_in(&t.expr).or_else(|| {
            t.operators.iter().find_map(|op| match op {
                TraversalOperator::Index(e) => arithmetic_in(e),
                _ => None,
            })
        }),
        E::FuncCall(f) => f.args.iter().find_map(arithmetic_in),
        E::Parenthesis(e) => arithmetic_in(e),
        E::Conditional(c) => arithmetic_in(&c.cond_expr)
            .or_else(|| arithmetic_in(&c.true_expr))
            .or_else(|| arithmetic_in(&c.false_expr)),
        E::Operation(op) => match op.as_ref() {
            Operation::Unary(u) => arithmetic_in(&u.expr),
            Operation::Binary(b) => match b.operator {
                B::Plus => Some("+"),
                B::Minus => Some("-"),
                B::Mul => Some("*"),
                B::Div => Some("/"),
                B::Mod => Some("%"),
                _ => arithmetic_in(&b.lhs_expr).or_else(|| arithmetic_in(&b.rhs_expr)),
            },
        },
        E::ForExpr(f) => arithmetic_in(&f.collection_expr)
            .or_else(|| f.key_expr.as_ref().and_then(arithmetic_in))
            .or_else(|| arithmetic_in(&f.value_expr))
            .or_else(|| f.cond_expr.as_ref().and_then(arithmetic_in)),
        _ => None,
    }
}

/// [`arithmetic_in`] for the interpolations and directives of a template.
fn arithmetic_in_template(t: &hcl::Template) -> Option<&'static str> {
    use hcl::template::{Directive, Element};
    t.elements().iter().find_map(|e| match e {
        Element::Interpolation(i) => arithmetic_in(&i.expr),
        Element::Directive(d) => match d.as_ref() {
            Directive::If(d) => arithmetic_in(&d.cond_expr)
                .or_else(|| arithmetic_in_template(&d.true_template))
                .or_else(|| d.false_template.as_ref().and_then(arithmetic_in_template)),
            Directive::For(d) => {
                arithmetic_in(&d.collection_expr).or_else(|| arithmetic_in_template(&d.template))
            }
        },
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
server {
    bind_address = "127.0.0.1"
    bind_port = "8081"
    trust_domain = "example.org"
    ca_ttl = "24h"
    admin_ids = ["spiffe://example.org/admin"]
}

plugins {
    DataStore "sql" {
        plugin_data {
            database_type = "sqlite3"
            connection_string = "/tmp/ds.sqlite3"
        }
    }
    KeyManager "memory" {
        plugin_data = {}
    }
    NodeAttestor "x509pop" {
        enabled = false
        plugin_data {}
    }
}
"#;

    /// Inputs the `server_config` and `agent_config` fuzz targets found:
    /// hcl-rs panicked evaluating them (remainder by zero; an overflowing
    /// multiplication). Both are in `fuzz/corpus/`.
    #[test]
    fn unclosed_and_too_deep_brackets_are_refused_before_the_hcl_parser_sees_them() {
        // The shape of a fuzz input on which the HCL parser spent over 10 s
        // backtracking: 25 unclosed `[` in an arithmetic expression.
        let fuzzed = format!("erlog =5555119{}", "-54[55556%5555555".repeat(25));
        let err = Section::parse(&fuzzed).unwrap_err().to_string();
        assert!(err.contains("brackets nested more than 24 deep"), "{err}");
        let err = Section::parse("a = [1, [2]").unwrap_err().to_string();
        assert!(err.contains("`[` is never closed"), "{err}");
        let err = Section::parse("a = 1]").unwrap_err().to_string();
        assert!(err.contains("`]` closes nothing open"), "{err}");
        // Brackets in strings and comments do not count.
        let ok = "a = \"[{(\\\"\" # ]]\n// ))\n/* } */\nb = [[1]]\n";
        assert!(Section::parse(ok).is_ok(), "{ok}");
    }

    #[test]
    fn arithmetic_that_panicked_hcl_evaluation_is_refused_naming_the_operator() {
        let cases = [
            (
                "\nseain =555555555555555555555556%555555555555555556*55555      ",
                "seain",
                "*",
            ),
            (
                "agent {\n  experimental {\n    ratelimit {\n      validate_jwt_svid = 10%0\n    }\n  }\n}\n",
                "validate_jwt_svid",
                "%",
            ),
            ("a = [1, { b = 9223372036854775807 * 2 }]", "a", "*"),
            ("a = \"x${1 % 0}\"", "a", "%"),
            ("a = \"%{ if true }${5 - 9}%{ endif }\"", "a", "-"),
            ("a = true ? (1 + 1) : 0", "a", "+"),
        ];
        for (text, key, op) in cases {
            let e = Section::parse(text).unwrap_err();
            match e {
                ConfigError::InvalidValue { key: k, reason, .. } => {
                    assert_eq!(k, key, "{text:?}");
                    assert!(reason.contains(&format!("(`{op}`)")), "{text:?}: {reason}");
                }
                other => panic!("{text:?}: {other}"),
            }
        }
        // Comparisons and negative literals still evaluate.
        let mut top = Section::parse("a = -5\nb = 1 < 2\nc = \"${true}\"").unwrap();
        assert_eq!(top.take_i64("a").unwrap(), Some(-5));
    }

    #[test]
    fn reads_spire_style_sections_and_plugins() {
        let mut top = Section::parse(SAMPLE).unwrap();
        let mut server = top.take_block("server").unwrap().unwrap().body;
        assert_eq!(
            server.take_string("bind_address").unwrap().unwrap(),
            "127.0.0.1"
        );
        assert_eq!(server.take_port("bind_port").unwrap(), Some(8081));
        assert_eq!(
            server.take_duration("ca_ttl").unwrap(),
            Some(Duration::from_secs(86400))
        );
        assert_eq!(
            server.take_string_list("admin_ids").unwrap().unwrap(),
            ["spiffe://example.org/admin"]
        );
        server.take_string("trust_domain").unwrap();
        server.finish(&[]).unwrap();
        let plugins = parse_plugins(top.take_block("plugins").unwrap().unwrap().body).unwrap();
        assert_eq!(plugins.len(), 2, "disabled plugin dropped");
        assert_eq!(plugins[0].kind, "DataStore");
        assert_eq!(plugins[0].name, "sql");
        assert_eq!(plugins[0].data["database_type"], "sqlite3");
        assert_eq!(plugins[1].data, serde_json::json!({}));
        top.finish(&[]).unwrap();
    }

    #[test]
    fn plugin_data_reads_both_spire_map_forms_and_keeps_every_labelled_block() {
        let text = r#"
plugins {
    NodeAttestor "k8s_psat" {
        plugin_data {
            clusters = {
                "a" = { service_account_allow_list = ["ns:sa"] }
            }
        }
    }
    NodeAttestor "other" {
        plugin_data {
            clusters "a" { service_account_allow_list = ["ns:a"] }
            clusters "b" { service_account_allow_list = ["ns:b"] }
        }
    }
}
"#;
        let mut top = Section::parse(text).unwrap();
        let plugins = parse_plugins(top.take_block("plugins").unwrap().unwrap().body).unwrap();
        assert_eq!(
            plugins[0].data,
            serde_json::json!({"clusters": {"a": {"service_account_allow_list": ["ns:sa"]}}})
        );
        assert_eq!(
            plugins[1].data,
            serde_json::json!({"clusters": {
                "a": {"service_account_allow_list": ["ns:a"]},
                "b": {"service_account_allow_list": ["ns:b"]},
            }})
        );
    }

    #[test]
    fn leftover_options_are_named() {
        let mut top = Section::parse("server {\n trust_domain = \"x\"\n bogus = 1\n}\n").unwrap();
        let mut server = top.take_block("server").unwrap().unwrap().body;
        server.take_string("trust_domain").unwrap();
        let err = server.finish(&[]).unwrap_err();
        assert_eq!(err.to_string(), "unknown option \"bogus\" in server");
    }

    #[test]
    fn unsupported_spire_options_say_so() {
        let mut top = Section::parse("server {\n federation {}\n}\n").unwrap();
        let server = top.take_block("server").unwrap().unwrap().body;
        let err = server.finish(&["federation"]).unwrap_err();
        assert!(matches!(err, ConfigError::Unsupported { ref key, .. } if key == "federation"));
    }

    #[test]
    fn wrong_types_are_precise() {
        let mut top =
            Section::parse("server {\n bind_port = \"abc\"\n ca_ttl = \"5d\"\n}\n").unwrap();
        let mut server = top.take_block("server").unwrap().unwrap().body;
        let err = server.take_port("bind_port").unwrap_err();
        assert!(err.to_string().contains("bind_port"), "{err}");
        let err = server.take_duration("ca_ttl").unwrap_err();
        assert!(err.to_string().contains("unknown unit \"d\""), "{err}");
    }

    #[test]
    fn expand_env_replaces_both_forms() {
        // PATH is set in every test environment.
        let path = std::env::var("PATH").unwrap();
        assert_eq!(
            expand_env("a=$PATH;b=${PATH};c=$$"),
            format!("a={path};b={path};c=$$")
        );
        assert_eq!(expand_env("x=${SIGIL_SURELY_UNSET_VAR}."), "x=.");
    }

    #[test]
    fn external_plugins_are_rejected_by_name() {
        let top = Section::parse(
            "plugins {\n NodeAttestor \"custom\" {\n plugin_cmd = \"/bin/x\"\n }\n}\n",
        )
        .unwrap();
        let mut top = top;
        let err = parse_plugins(top.take_block("plugins").unwrap().unwrap().body).unwrap_err();
        assert!(err.to_string().contains("plugin_cmd"), "{err}");
        assert!(err.to_string().contains("not supported"), "{err}");
    }
}
