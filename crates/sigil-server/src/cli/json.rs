//! `-output json`: API messages as SPIRE prints them.
//!
//! SPIRE marshals with protojson (proto field names, every field emitted,
//! 64-bit integers as strings, bytes as base64), then round-trips the result
//! through a Go map to drop nulls (unset messages), which also sorts keys and
//! compacts it; `json.Encoder` adds a newline. The mapping for the few message
//! types the CLI prints is written out here by hand, and [`encode`] writes
//! the value the way Go's encoder does.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value};
use sigil_proto::spire::api::server::localauthority::v1::AuthorityState;
use sigil_proto::spire::api::server::{
    agent::v1 as agentv1, bundle::v1 as bundlev1, debug::v1 as debugv1, entry::v1 as entryv1,
    svid::v1 as svidv1,
};
use sigil_proto::spire::api::types::{
    Agent, Bundle, Entry, JoinToken, JwtKey, LogLevel, Logger, Selector, Spiffeid, Status, WitKey,
    X509Certificate,
};

/// Go's `json.Encoder.Encode` of the value: compact, object keys sorted
/// bytewise, `<`, `>`, `&`, U+2028 and U+2029 escaped, newline-terminated.
pub(crate) fn encode(value: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, value);
    out.push('\n');
    out
}

/// Go's `json.Marshal` of a struct (what SPIRE prints for results that are
/// not API messages), newline-terminated: the fields in declaration order,
/// values written as [`encode`] writes them.
pub(crate) fn encode_struct(fields: &[(&str, Value)]) -> String {
    let mut out = String::from("{");
    for (i, (k, v)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_string(&mut out, k);
        out.push(':');
        write_value(&mut out, v);
    }
    out.push_str("}\n");
    out
}

pub(crate) fn spiffe_id(id: &Spiffeid) -> Value {
    object([
        ("trust_domain", id.trust_domain.as_str().into()),
        ("path", id.path.as_str().into()),
    ])
}

pub(crate) fn selector(s: &Selector) -> Value {
    object([
        ("type", s.r#type.as_str().into()),
        ("value", s.value.as_str().into()),
    ])
}

pub(crate) fn status(s: Option<&Status>) -> Value {
    let s = s.cloned().unwrap_or_default();
    object([("code", s.code.into()), ("message", s.message.into())])
}

pub(crate) fn entry(e: &Entry) -> Value {
    let mut fields = vec![
        ("id", Value::from(e.id.as_str())),
        (
            "selectors",
            Value::Array(e.selectors.iter().map(selector).collect()),
        ),
        ("x509_svid_ttl", e.x509_svid_ttl.into()),
        ("federates_with", strings(&e.federates_with)),
        ("admin", e.admin.into()),
        ("downstream", e.downstream.into()),
        ("expires_at", int64(e.expires_at)),
        ("dns_names", strings(&e.dns_names)),
        ("revision_number", int64(e.revision_number)),
        ("store_svid", e.store_svid.into()),
        ("jwt_svid_ttl", e.jwt_svid_ttl.into()),
        ("hint", e.hint.as_str().into()),
        ("created_at", int64(e.created_at)),
    ];
    if let Some(id) = &e.spiffe_id {
        fields.push(("spiffe_id", spiffe_id(id)));
    }
    if let Some(id) = &e.parent_id {
        fields.push(("parent_id", spiffe_id(id)));
    }
    if let Some(a) = &e.additional_attributes {
        fields.push((
            "additional_attributes",
            object([
                (
                    "disable_x509_svid_prefetch",
                    a.disable_x509_svid_prefetch.into(),
                ),
                ("jwt_svid_include_jti", a.jwt_svid_include_jti.into()),
            ]),
        ));
    }
    object(fields)
}

pub(crate) fn agent(a: &Agent) -> Value {
    let mut fields = vec![
        ("attestation_type", Value::from(a.attestation_type.as_str())),
        (
            "x509svid_serial_number",
            a.x509svid_serial_number.as_str().into(),
        ),
        ("x509svid_expires_at", int64(a.x509svid_expires_at)),
        (
            "selectors",
            Value::Array(a.selectors.iter().map(selector).collect()),
        ),
        ("banned", a.banned.into()),
        ("can_reattest", a.can_reattest.into()),
        ("agent_version", a.agent_version.as_str().into()),
    ];
    if let Some(id) = &a.id {
        fields.push(("id", spiffe_id(id)));
    }
    object(fields)
}

pub(crate) fn bundle(b: &Bundle) -> Value {
    object([
        ("trust_domain", Value::from(b.trust_domain.as_str())),
        (
            "x509_authorities",
            Value::Array(b.x509_authorities.iter().map(x509_certificate).collect()),
        ),
        (
            "jwt_authorities",
            Value::Array(b.jwt_authorities.iter().map(jwt_key).collect()),
        ),
        ("refresh_hint", int64(b.refresh_hint)),
        (
            "sequence_number",
            Value::String(b.sequence_number.to_string()),
        ),
        (
            "wit_authorities",
            Value::Array(b.wit_authorities.iter().map(wit_key).collect()),
        ),
    ])
}

pub(crate) fn join_token(t: &JoinToken) -> Value {
    object([
        ("value", Value::from(t.value.as_str())),
        ("expires_at", int64(t.expires_at)),
    ])
}

/// A response holding only an `int32 count`.
pub(crate) fn count(n: i32) -> Value {
    object([("count", n.into())])
}

/// `google.protobuf.Empty`.
pub(crate) fn empty() -> Value {
    Value::Object(Map::new())
}

/// A `Batch{Create,Update}EntryResponse` (same shape).
pub(crate) fn entry_results<'a>(
    results: impl IntoIterator<Item = (Option<&'a Status>, Option<&'a Entry>)>,
) -> Value {
    let results = results
        .into_iter()
        .map(|(s, e)| {
            let mut fields = vec![("status", status(s))];
            if let Some(e) = e {
                fields.push(("entry", entry(e)));
            }
            object(fields)
        })
        .collect();
    object([("results", Value::Array(results))])
}

pub(crate) fn delete_entry_response(r: &entryv1::BatchDeleteEntryResponse) -> Value {
    let results = r
        .results
        .iter()
        .map(|r| {
            object([
                ("status", status(r.status.as_ref())),
                ("id", r.id.as_str().into()),
            ])
        })
        .collect();
    object([("results", Value::Array(results))])
}

pub(crate) fn list_entries_response(r: &entryv1::ListEntriesResponse) -> Value {
    object([
        (
            "entries",
            Value::Array(r.entries.iter().map(entry).collect()),
        ),
        ("next_page_token", r.next_page_token.as_str().into()),
    ])
}

pub(crate) fn list_agents_response(r: &agentv1::ListAgentsResponse) -> Value {
    object([
        ("agents", Value::Array(r.agents.iter().map(agent).collect())),
        ("next_page_token", r.next_page_token.as_str().into()),
    ])
}

pub(crate) fn list_federated_bundles_response(r: &bundlev1::ListFederatedBundlesResponse) -> Value {
    object([
        (
            "bundles",
            Value::Array(r.bundles.iter().map(bundle).collect()),
        ),
        ("next_page_token", r.next_page_token.as_str().into()),
    ])
}

pub(crate) fn set_federated_bundle_response(
    r: &bundlev1::BatchSetFederatedBundleResponse,
) -> Value {
    let results = r
        .results
        .iter()
        .map(|r| {
            let mut fields = vec![("status", status(r.status.as_ref()))];
            if let Some(b) = &r.bundle {
                fields.push(("bundle", bundle(b)));
            }
            object(fields)
        })
        .collect();
    object([("results", Value::Array(results))])
}

pub(crate) fn delete_federated_bundle_response(
    r: &bundlev1::BatchDeleteFederatedBundleResponse,
) -> Value {
    let results = r
        .results
        .iter()
        .map(|r| {
            object([
                ("status", status(r.status.as_ref())),
                ("trust_domain", r.trust_domain.as_str().into()),
            ])
        })
        .collect();
    object([("results", Value::Array(results))])
}

pub(crate) fn authority_state(a: &AuthorityState) -> Value {
    object([
        ("authority_id", Value::from(a.authority_id.as_str())),
        ("expires_at", int64(a.expires_at)),
        (
            "upstream_authority_subject_key_id",
            a.upstream_authority_subject_key_id.as_str().into(),
        ),
    ])
}

/// A message whose fields are all `AuthorityState`s; unset ones are left
/// out (protojson writes them as null, which SPIRE then drops).
pub(crate) fn authority_states<'a>(
    fields: impl IntoIterator<Item = (&'a str, Option<&'a AuthorityState>)>,
) -> Value {
    object(
        fields
            .into_iter()
            .filter_map(|(name, state)| state.map(|s| (name, authority_state(s)))),
    )
}

/// A message holding one string field.
pub(crate) fn string_field(name: &str, value: &str) -> Value {
    object([(name, Value::from(value))])
}

pub(crate) fn logger(l: &Logger) -> Value {
    object([
        ("current_level", log_level(l.current_level)),
        ("launch_level", log_level(l.launch_level)),
    ])
}

pub(crate) fn debug_info(r: &debugv1::GetInfoResponse) -> Value {
    let chain = r
        .svid_chain
        .iter()
        .map(|c| {
            let mut fields = vec![
                ("expires_at", int64(c.expires_at)),
                ("subject", c.subject.as_str().into()),
            ];
            if let Some(id) = &c.id {
                fields.push(("id", spiffe_id(id)));
            }
            object(fields)
        })
        .collect();
    object([
        ("svid_chain", Value::Array(chain)),
        ("uptime", r.uptime.into()),
        ("agents_count", r.agents_count.into()),
        ("federated_bundles_count", r.federated_bundles_count.into()),
        ("entries_count", r.entries_count.into()),
    ])
}

pub(crate) fn mint_jwt_svid_response(r: &svidv1::MintJwtsvidResponse) -> Value {
    let Some(svid) = &r.svid else {
        return empty();
    };
    let mut fields = vec![
        ("token", Value::from(svid.token.as_str())),
        ("expires_at", int64(svid.expires_at)),
        ("issued_at", int64(svid.issued_at)),
        ("hint", svid.hint.as_str().into()),
    ];
    if let Some(id) = &svid.id {
        fields.push(("id", spiffe_id(id)));
    }
    object([("svid", object(fields))])
}

/// Bytes as protojson and Go's `encoding/json` write them: standard base64.
pub(crate) fn base64(bytes: &[u8]) -> Value {
    Value::String(STANDARD.encode(bytes))
}

/// protojson writes a known enum value by name, an unknown one as a number.
fn log_level(v: i32) -> Value {
    match LogLevel::try_from(v) {
        Ok(level) => level.as_str_name().into(),
        Err(_) => v.into(),
    }
}

fn x509_certificate(c: &X509Certificate) -> Value {
    object([
        ("asn1", Value::String(STANDARD.encode(&c.asn1))),
        ("tainted", c.tainted.into()),
    ])
}

fn jwt_key(k: &JwtKey) -> Value {
    object([
        ("public_key", Value::String(STANDARD.encode(&k.public_key))),
        ("key_id", k.key_id.as_str().into()),
        ("expires_at", int64(k.expires_at)),
        ("tainted", k.tainted.into()),
    ])
}

fn wit_key(k: &WitKey) -> Value {
    object([
        ("public_key", Value::String(STANDARD.encode(&k.public_key))),
        ("key_id", k.key_id.as_str().into()),
        ("expires_at", int64(k.expires_at)),
        ("tainted", k.tainted.into()),
    ])
}

/// protojson writes 64-bit integers as strings.
fn int64(n: i64) -> Value {
    Value::String(n.to_string())
}

fn strings(v: &[String]) -> Value {
    Value::Array(v.iter().map(|s| Value::from(s.as_str())).collect())
}

fn object<'a>(fields: impl IntoIterator<Item = (&'a str, Value)>) -> Value {
    Value::Object(fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

fn write_value(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            // Sorted here rather than trusting the map: serde_json keeps
            // insertion order when another crate turns on `preserve_order`.
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(out, k);
                out.push(':');
                write_value(out, v);
            }
            out.push('}');
        }
    }
}

fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoder_sorts_keys_compacts_and_escapes_like_go() {
        let v = object([
            ("b", Value::from("<a&b>")),
            ("a", Value::from(1)),
            ("c", Value::Array(vec![Value::Bool(false)])),
        ]);
        assert_eq!(
            encode(&v),
            "{\"a\":1,\"b\":\"\\u003ca\\u0026b\\u003e\",\"c\":[false]}\n"
        );
    }

    #[test]
    fn bundle_json_uses_base64_and_string_int64s() {
        let b = Bundle {
            trust_domain: "example.org".into(),
            x509_authorities: vec![X509Certificate {
                asn1: vec![1, 2, 3],
                tainted: false,
            }],
            refresh_hint: 60,
            sequence_number: 7,
            ..Default::default()
        };
        assert_eq!(
            encode(&bundle(&b)),
            "{\"jwt_authorities\":[],\"refresh_hint\":\"60\",\"sequence_number\":\"7\",\
             \"trust_domain\":\"example.org\",\"wit_authorities\":[],\
             \"x509_authorities\":[{\"asn1\":\"AQID\",\"tainted\":false}]}\n"
        );
    }
}
