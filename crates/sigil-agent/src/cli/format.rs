//! Text and JSON forms shared by the client commands, matching what SPIRE's
//! Go CLI prints: Go's `time.Duration` and `time.Time` strings, and
//! protobuf messages as JSON with proto field names, every field present,
//! keys sorted, bytes in standard base64.

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use prost_types::value::Kind;
use serde_json::{Map, Value, json};
use sigil_proto::workload::{
    JwtBundlesResponse, JwtsvidResponse, ValidateJwtsvidResponse, X509svidResponse,
};

/// A duration as Go's `time.Duration.String` writes it: `1.234567ms`,
/// `850µs`, `2.5s`, `1m30s`, `1h0m0s`, `0s`.
pub fn go_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".to_owned();
    }
    if nanos < 1_000 {
        return format!("{nanos}ns");
    }
    if nanos < 1_000_000 {
        return format!("{}µs", decimal(nanos, 3));
    }
    if nanos < 1_000_000_000 {
        return format!("{}ms", decimal(nanos, 6));
    }
    let seconds = decimal(nanos % 60_000_000_000, 9);
    let minutes_total = nanos / 60_000_000_000;
    if minutes_total == 0 {
        return format!("{seconds}s");
    }
    let (hours, minutes) = (minutes_total / 60, minutes_total % 60);
    if hours == 0 {
        format!("{minutes}m{seconds}s")
    } else {
        format!("{hours}h{minutes}m{seconds}s")
    }
}

/// A time as Go's `time.Time.String` writes a UTC time:
/// `2024-05-01 12:00:00 +0000 UTC`, with fractional seconds (trailing zeros
/// dropped) only when there are any.
pub fn go_time(t: SystemTime) -> String {
    let dt = time::OffsetDateTime::from(t);
    let nanos = dt.nanosecond();
    let fraction = if nanos == 0 {
        String::new()
    } else {
        let digits = format!("{nanos:09}");
        format!(".{}", digits.trim_end_matches('0'))
    };
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}{fraction} +0000 UTC",
        dt.year(),
        u8::from(dt.month()),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second(),
    )
}

/// `value / 10^scale` in decimal, without trailing fractional zeros.
fn decimal(value: u128, scale: u32) -> String {
    let unit = 10u128.pow(scale);
    let (whole, fraction) = (value / unit, value % unit);
    if fraction == 0 {
        return whole.to_string();
    }
    let digits = format!("{fraction:0width$}", width = scale as usize);
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

/// An X509-SVID response as SPIRE's `-output json` prints it.
pub(crate) fn x509_response_json(resp: &X509svidResponse) -> Value {
    json!({
        "svids": resp.svids.iter().map(|s| json!({
            "spiffe_id": s.spiffe_id,
            "x509_svid": STANDARD.encode(&s.x509_svid),
            "x509_svid_key": STANDARD.encode(&s.x509_svid_key),
            "bundle": STANDARD.encode(&s.bundle),
            "hint": s.hint,
        })).collect::<Vec<_>>(),
        "crl": resp.crl.iter().map(|c| STANDARD.encode(c)).collect::<Vec<_>>(),
        "federated_bundles": bytes_map(&resp.federated_bundles),
    })
}

/// A JWT-SVID response followed by the JWT bundles, as one JSON array (what
/// SPIRE prints for two messages).
pub(crate) fn jwt_responses_json(svids: &JwtsvidResponse, bundles: &JwtBundlesResponse) -> Value {
    json!([
        {
            "svids": svids.svids.iter().map(|s| json!({
                "spiffe_id": s.spiffe_id,
                "svid": s.svid,
                "hint": s.hint,
            })).collect::<Vec<_>>(),
        },
        { "bundles": bytes_map(&bundles.bundles) },
    ])
}

/// A validation response as JSON.
pub(crate) fn validate_response_json(resp: &ValidateJwtsvidResponse) -> Value {
    json!({
        "spiffe_id": resp.spiffe_id,
        "claims": resp.claims.as_ref().map_or_else(|| Value::Object(Map::new()), struct_json),
    })
}

/// A `google.protobuf.Struct` as the JSON object it stands for. Whole
/// numbers print without a fraction, as Go's encoders write them.
pub(crate) fn struct_json(s: &prost_types::Struct) -> Value {
    Value::Object(
        s.fields
            .iter()
            .map(|(k, v)| (k.clone(), value_json(v)))
            .collect(),
    )
}

fn value_json(v: &prost_types::Value) -> Value {
    match &v.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(*b),
        Some(Kind::NumberValue(n)) => number_json(*n),
        Some(Kind::StringValue(s)) => Value::String(s.clone()),
        Some(Kind::ListValue(l)) => Value::Array(l.values.iter().map(value_json).collect()),
        Some(Kind::StructValue(s)) => struct_json(s),
    }
}

fn number_json(n: f64) -> Value {
    // Integral doubles within i64's exact range print as integers.
    const EXACT: f64 = 9_007_199_254_740_992.0;
    if n.fract() == 0.0 && n.abs() <= EXACT {
        #[allow(clippy::cast_possible_truncation)]
        return json!(n as i64);
    }
    serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number)
}

fn bytes_map(map: &std::collections::HashMap<String, Vec<u8>>) -> Value {
    Value::Object(
        map.iter()
            .map(|(k, v)| (k.clone(), Value::String(STANDARD.encode(v))))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_like_go() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_nanos(999), "999ns"),
            (Duration::from_nanos(1_500), "1.5µs"),
            (Duration::from_micros(850), "850µs"),
            (Duration::from_nanos(1_234_567), "1.234567ms"),
            (Duration::from_millis(5), "5ms"),
            (Duration::from_millis(2_500), "2.5s"),
            (Duration::from_secs(5), "5s"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_secs(3600), "1h0m0s"),
            (Duration::from_millis(3_723_500), "1h2m3.5s"),
        ];
        for (d, want) in cases {
            assert_eq!(go_duration(d), want, "{d:?}");
        }
    }

    #[test]
    fn times_print_like_go_utc_times() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_714_564_800);
        assert_eq!(go_time(t), "2024-05-01 12:00:00 +0000 UTC");
        let t = t + Duration::from_millis(250);
        assert_eq!(go_time(t), "2024-05-01 12:00:00.25 +0000 UTC");
    }

    #[test]
    fn struct_numbers_print_as_integers_when_whole() {
        let s = prost_types::Struct {
            fields: [
                (
                    "exp".to_owned(),
                    prost_types::Value {
                        kind: Some(Kind::NumberValue(1_700_000_000.0)),
                    },
                ),
                (
                    "ratio".to_owned(),
                    prost_types::Value {
                        kind: Some(Kind::NumberValue(0.5)),
                    },
                ),
            ]
            .into(),
        };
        assert_eq!(
            serde_json::to_string(&struct_json(&s)).expect("json"),
            r#"{"exp":1700000000,"ratio":0.5}"#
        );
    }
}
