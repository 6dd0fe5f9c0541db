//! The `telemetry { }` and `health_checks { }` blocks of `server.conf` and
//! `agent.conf`, with SPIRE's names and defaults.
//!
//! ```hcl
//! telemetry {
//!     Prometheus {
//!         host = "0.0.0.0"   # default "localhost", as SPIRE
//!         port = 9988
//!     }
//!     MetricPrefix = "spire_server"   # default: spire_server / spire_agent
//!     EnableHostnameLabel = true      # default true: a `host` label
//!     EnableTrustDomainLabel = false  # default false: a `trust_domain_id` label
//! }
//!
//! health_checks {
//!     listener_enabled = true
//!     bind_address = "localhost"  # default
//!     bind_port = "80"            # default
//!     live_path = "/live"         # default
//!     ready_path = "/ready"       # default
//! }
//! ```
//!
//! SPIRE's other sinks (`DogStatsd`, `Statsd`, `M3`, `InMem`), the
//! Prometheus `tls` block and the allow/block lists are refused by name.

use sigil_cli::config::{ConfigError, Section};

/// Telemetry options sigil knows from SPIRE but does not implement.
const UNSUPPORTED_TELEMETRY: &[&str] = &[
    "DogStatsd",
    "Statsd",
    "M3",
    "InMem",
    "AllowedPrefixes",
    "BlockedPrefixes",
    "AllowedLabels",
    "BlockedLabels",
];

/// The `telemetry { }` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelemetryConfig {
    /// `Prometheus { }`: serve `/metrics` there. `None`: metrics are not
    /// recorded at all.
    pub prometheus: Option<PrometheusConfig>,
    /// `MetricPrefix`; `None`: the binary's default (`spire_server`,
    /// `spire_agent`, as SPIRE).
    pub metric_prefix: Option<String>,
    /// `EnableHostnameLabel` (default true): every metric carries `host`.
    pub enable_hostname_label: bool,
    /// `EnableTrustDomainLabel` (default false): every metric carries
    /// `trust_domain_id`.
    pub enable_trust_domain_label: bool,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            prometheus: None,
            metric_prefix: None,
            enable_hostname_label: true,
            enable_trust_domain_label: false,
        }
    }
}

/// `telemetry { Prometheus { host, port } }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrometheusConfig {
    /// Listen host; default `localhost`, as SPIRE.
    pub host: String,
    /// Listen port; 0 picks a free port.
    pub port: u16,
}

/// The `health_checks { }` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthChecksConfig {
    /// `listener_enabled` (default false): serve the HTTP endpoints.
    pub listener_enabled: bool,
    /// `bind_address`; default `localhost`.
    pub bind_address: String,
    /// `bind_port`; default 80.
    pub bind_port: u16,
    /// `live_path`; default `/live`.
    pub live_path: String,
    /// `ready_path`; default `/ready`.
    pub ready_path: String,
}

impl Default for HealthChecksConfig {
    fn default() -> Self {
        HealthChecksConfig {
            listener_enabled: false,
            bind_address: "localhost".into(),
            bind_port: 80,
            live_path: "/live".into(),
            ready_path: "/ready".into(),
        }
    }
}

/// Reads a `telemetry { }` body.
pub fn parse_telemetry(mut t: Section) -> Result<TelemetryConfig, ConfigError> {
    let defaults = TelemetryConfig::default();
    let prometheus = match t.take_block("Prometheus")? {
        None => None,
        Some(b) => {
            let mut p = b.body;
            let host = p
                .take_string("host")?
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "localhost".into());
            let port = p.take_port("port")?.ok_or_else(|| p.missing("port"))?;
            p.finish(&["tls"])?;
            Some(PrometheusConfig { host, port })
        }
    };
    let metric_prefix = t.take_string("MetricPrefix")?.filter(|p| !p.is_empty());
    if let Some(p) = &metric_prefix
        && !valid_prefix(p)
    {
        return Err(t.invalid_value(
            "MetricPrefix",
            format!("{p:?} must be letters, digits and underscores, not starting with a digit"),
        ));
    }
    let enable_hostname_label = t
        .take_bool("EnableHostnameLabel")?
        .unwrap_or(defaults.enable_hostname_label);
    let enable_trust_domain_label = t
        .take_bool("EnableTrustDomainLabel")?
        .unwrap_or(defaults.enable_trust_domain_label);
    // SPIRE's sinks are both blocks (`InMem {}`) and lists of objects
    // (`Statsd = [...]`); either spelling is named by `finish`.
    t.finish(UNSUPPORTED_TELEMETRY)?;
    Ok(TelemetryConfig {
        prometheus,
        metric_prefix,
        enable_hostname_label,
        enable_trust_domain_label,
    })
}

/// Reads a `health_checks { }` body.
pub fn parse_health_checks(mut h: Section) -> Result<HealthChecksConfig, ConfigError> {
    let d = HealthChecksConfig::default();
    let listener_enabled = h
        .take_bool("listener_enabled")?
        .unwrap_or(d.listener_enabled);
    let bind_address = h
        .take_string("bind_address")?
        .filter(|a| !a.is_empty())
        .unwrap_or(d.bind_address);
    let bind_port = h.take_port("bind_port")?.unwrap_or(d.bind_port);
    let mut path = |key: &str, default: String| -> Result<String, ConfigError> {
        match h.take_string(key)?.filter(|p| !p.is_empty()) {
            None => Ok(default),
            Some(p) if p.starts_with('/') => Ok(p),
            Some(p) => Err(h.invalid_value(key, format!("{p:?} must start with '/'"))),
        }
    };
    let live_path = path("live_path", d.live_path)?;
    let ready_path = path("ready_path", d.ready_path)?;
    if live_path == ready_path {
        return Err(h.invalid_value("ready_path", format!("{ready_path:?} is also live_path")));
    }
    h.finish(&[])?;
    Ok(HealthChecksConfig {
        listener_enabled,
        bind_address,
        bind_port,
        live_path,
        ready_path,
    })
}

/// Takes the optional `telemetry` and `health_checks` blocks from the top
/// level of a config file.
pub fn take_blocks(
    top: &mut Section,
) -> Result<(TelemetryConfig, HealthChecksConfig), ConfigError> {
    let telemetry = match top.take_block("telemetry")? {
        Some(b) => parse_telemetry(b.body)?,
        None => TelemetryConfig::default(),
    };
    let health = match top.take_block("health_checks")? {
        Some(b) => parse_health_checks(b.body)?,
        None => HealthChecksConfig::default(),
    };
    Ok((telemetry, health))
}

fn valid_prefix(p: &str) -> bool {
    let mut chars = p.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<(TelemetryConfig, HealthChecksConfig), ConfigError> {
        let mut top = Section::parse(text)?;
        let r = take_blocks(&mut top)?;
        top.finish(&[])?;
        Ok(r)
    }

    #[test]
    fn absent_blocks_mean_no_metrics_and_no_health_listener_with_spire_defaults() {
        let (t, h) = parse("").unwrap();
        assert_eq!(t, TelemetryConfig::default());
        assert_eq!(t.prometheus, None);
        assert!(t.enable_hostname_label);
        assert!(!t.enable_trust_domain_label);
        assert_eq!(
            h,
            HealthChecksConfig {
                listener_enabled: false,
                bind_address: "localhost".into(),
                bind_port: 80,
                live_path: "/live".into(),
                ready_path: "/ready".into(),
            }
        );
    }

    #[test]
    fn spire_prometheus_example_loads_with_localhost_default() {
        let (t, _) = parse("telemetry {\n Prometheus {\n port = 9988\n }\n}").unwrap();
        assert_eq!(
            t.prometheus,
            Some(PrometheusConfig {
                host: "localhost".into(),
                port: 9988
            })
        );
        let (t, _) = parse(
            r#"telemetry {
                Prometheus {
                    host = "0.0.0.0"
                    port = "9090"
                }
                MetricPrefix = "sigil"
                EnableHostnameLabel = false
                EnableTrustDomainLabel = true
            }"#,
        )
        .unwrap();
        assert_eq!(t.prometheus.unwrap().host, "0.0.0.0");
        assert_eq!(t.metric_prefix.as_deref(), Some("sigil"));
        assert!(!t.enable_hostname_label);
        assert!(t.enable_trust_domain_label);
    }

    #[test]
    fn health_checks_read_every_spire_option() {
        let (_, h) = parse(
            r#"health_checks {
                listener_enabled = true
                bind_address = "0.0.0.0"
                bind_port = "8080"
                live_path = "/alive"
                ready_path = "/readyz"
            }"#,
        )
        .unwrap();
        assert_eq!(
            h,
            HealthChecksConfig {
                listener_enabled: true,
                bind_address: "0.0.0.0".into(),
                bind_port: 8080,
                live_path: "/alive".into(),
                ready_path: "/readyz".into(),
            }
        );
    }

    #[test]
    fn unsupported_sinks_are_startup_errors_naming_them() {
        for (text, name) in [
            (
                r#"DogStatsd = [{ address = "localhost:8125" }]"#,
                "DogStatsd",
            ),
            (r#"Statsd = [{ address = "localhost:1337" }]"#, "Statsd"),
            (
                r#"M3 = [{ address = "localhost:9000", env = "prod" }]"#,
                "M3",
            ),
            ("InMem {}", "InMem"),
            ("AllowedPrefixes = []", "AllowedPrefixes"),
            ("BlockedLabels = []", "BlockedLabels"),
        ] {
            let e = parse(&format!("telemetry {{\n{text}\n}}"))
                .unwrap_err()
                .to_string();
            assert_eq!(
                e,
                format!("option {name:?} in telemetry is not supported by sigil yet"),
                "{text}"
            );
        }
        let e = parse("telemetry {\n Prometheus {\n port = 1\n tls {}\n }\n}")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "option \"tls\" in telemetry.Prometheus is not supported by sigil yet"
        );
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_option() {
        let cases = [
            (
                "telemetry {\n Prometheus {\n port = 1\n hots = \"x\"\n }\n}",
                "unknown option \"hots\" in telemetry.Prometheus",
            ),
            (
                "telemetry {\n Prometheus {}\n}",
                "\"port\" must be set in telemetry.Prometheus",
            ),
            (
                "telemetry {\n Prometheus {\n port = 70000\n }\n}",
                "invalid value for \"port\" in telemetry.Prometheus",
            ),
            (
                "telemetry {\n Prometheus {\n port = 1\n }\n Prometheus {\n port = 2\n }\n}",
                "block \"Prometheus\" appears more than once in telemetry",
            ),
            (
                "telemetry {\n MetricPrefix = \"a-b\"\n}",
                "invalid value for \"MetricPrefix\" in telemetry",
            ),
            (
                "telemetry {\n prometheus {}\n}",
                "unknown option \"prometheus\" in telemetry",
            ),
            (
                "health_checks {\n listener_enabled = \"yes\"\n}",
                "invalid value for \"listener_enabled\" in health_checks",
            ),
            (
                "health_checks {\n bind_prt = 1\n}",
                "unknown option \"bind_prt\" in health_checks",
            ),
            (
                "health_checks {\n live_path = \"live\"\n}",
                "invalid value for \"live_path\" in health_checks",
            ),
            (
                "health_checks {\n ready_path = \"/live\"\n}",
                "invalid value for \"ready_path\" in health_checks",
            ),
        ];
        for (text, want) in cases {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text}\n  got:  {e}\n  want: {want}");
        }
    }
}
