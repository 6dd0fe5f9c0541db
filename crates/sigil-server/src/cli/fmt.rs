//! The small textual conventions SPIRE's CLI inherits from Go, reproduced so
//! scripts written against `spire-server` read the same bytes: `%q` quoting,
//! `time.Time.String()`, gRPC code names and status errors, the `type:value`
//! selector syntax, and SPIFFE IDs as the API carries them.

use sigil_proto::spire::api::types::{Selector, Spiffeid};
use sigil_spiffe::{IdError, SpiffeId};

/// grpc-go's `codes.Code.String()`: the name for the 17 codes, `Code(n)`
/// for any other.
pub(crate) fn code_name(code: i32) -> String {
    if (0..=16).contains(&code) {
        sigil_telemetry::metrics::code_name(code).to_owned()
    } else {
        format!("Code({code})")
    }
}

/// A gRPC error status as grpc-go prints it:
/// `rpc error: code = NotFound desc = <message>`.
pub(crate) fn rpc_error(status: &tonic::Status) -> String {
    format!(
        "rpc error: code = {} desc = {}",
        code_name(status.code() as i32),
        status.message()
    )
}

/// Go's `%q`: a double-quoted string with Go escapes; printable Unicode is
/// kept as is.
pub(crate) fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_control() => {
                let n = c as u32;
                if n <= 0xffff {
                    out.push_str(&format!("\\u{n:04x}"));
                } else {
                    out.push_str(&format!("\\U{n:08x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Go's `time.Unix(secs, 0).UTC().String()`: `2019-03-12 17:04:26 +0000 UTC`.
///
/// SPIRE prints agent expiry in the local zone; we always print UTC, which is
/// what SPIRE prints on hosts (and containers) whose zone is UTC.
pub(crate) fn go_time_utc(secs: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(secs) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02} +0000 UTC",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        // Outside what `time` represents (beyond year 9999): still say
        // something true.
        Err(_) => format!("{secs} (unix seconds)"),
    }
}

/// Go's `time.Unix(secs, 0).UTC().Format(time.RFC3339)`:
/// `2019-03-12T17:04:26Z`.
pub(crate) fn rfc3339_utc(secs: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(secs) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => format!("{secs} (unix seconds)"),
    }
}

/// The text Go gives an errno (`no such file or directory`), from an I/O
/// error: Rust's message without the ` (os error N)` suffix, lowercased.
pub(crate) fn go_errno_text(err: &std::io::Error) -> String {
    let text = err.to_string();
    let text = match (err.raw_os_error(), text.rfind(" (os error ")) {
        (Some(_), Some(i)) => text[..i].to_owned(),
        _ => text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => text,
    }
}

/// SPIRE's `Pluralizer`: `msg` + `singular` when `n == 1`, else `plural`.
pub(crate) fn pluralize(msg: &str, singular: &str, plural: &str, n: usize) -> String {
    format!("{msg}{}", if n == 1 { singular } else { plural })
}

/// SPIRE's `ParseSelector`: everything before the first `:` is the type,
/// everything after it the value (which may hold more colons).
pub(crate) fn parse_selector(s: &str) -> Result<Selector, SelectorFormatError> {
    match s.split_once(':') {
        Some((kind, value)) => Ok(Selector {
            r#type: kind.to_owned(),
            value: value.to_owned(),
        }),
        None => Err(SelectorFormatError(s.to_owned())),
    }
}

/// A `-selector` value without a `:` (SPIRE's message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("selector {} must be formatted as type:value", go_quote(.0))]
pub(crate) struct SelectorFormatError(pub(crate) String);

/// Parses a SPIFFE ID string into the API's `{trust_domain, path}` form; the
/// error is the bare parse error, as SPIRE's CLI prints it.
pub(crate) fn id_to_proto(s: &str) -> Result<Spiffeid, IdError> {
    let id = SpiffeId::parse(s)?;
    Ok(Spiffeid {
        trust_domain: id.trust_domain_name().to_owned(),
        path: id.path().to_owned(),
    })
}

/// `spiffe://<td><path>` from the API form; empty for an absent ID.
pub(crate) fn proto_to_id(id: Option<&Spiffeid>) -> String {
    match id {
        Some(id) => format!("spiffe://{}{}", id.trust_domain, id.path),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_quote_escapes_like_percent_q() {
        assert_eq!(go_quote("a \"b\"\n\\"), r#""a \"b\"\n\\""#);
        assert_eq!(go_quote("é\u{1}"), "\"é\\x01\"");
    }

    #[test]
    fn time_string_matches_go_utc_format() {
        assert_eq!(go_time_utc(1552410266), "2019-03-12 17:04:26 +0000 UTC");
        assert_eq!(go_time_utc(0), "1970-01-01 00:00:00 +0000 UTC");
        assert_eq!(rfc3339_utc(1552410266), "2019-03-12T17:04:26Z");
    }

    #[test]
    fn selector_splits_on_first_colon_only() {
        let s = parse_selector("unix:uid:1000").unwrap();
        assert_eq!((s.r#type.as_str(), s.value.as_str()), ("unix", "uid:1000"));
        let s = parse_selector("a:").unwrap();
        assert_eq!((s.r#type.as_str(), s.value.as_str()), ("a", ""));
        assert_eq!(
            parse_selector("foo").unwrap_err().to_string(),
            "selector \"foo\" must be formatted as type:value"
        );
    }

    #[test]
    fn code_names_match_grpc_go() {
        assert_eq!(code_name(6), "AlreadyExists");
        assert_eq!(code_name(99), "Code(99)");
        assert_eq!(
            rpc_error(&tonic::Status::unknown("server-error")),
            "rpc error: code = Unknown desc = server-error"
        );
    }

    #[test]
    fn errno_text_is_lowercase_without_os_error_suffix() {
        let e = std::io::Error::from_raw_os_error(2);
        assert_eq!(go_errno_text(&e), "no such file or directory");
        let e = std::io::Error::from_raw_os_error(111);
        assert_eq!(go_errno_text(&e), "connection refused");
    }
}
