//! Certificate names printed the way Go's `crypto/x509/pkix` prints them, so
//! sigil's debug APIs and CLIs show what SPIRE shows.

/// A certificate subject as Go's `pkix.Name.String` prints it (RFC 2253
/// style: most specific attribute first, comma separated), so operators
/// see what SPIRE shows.
pub fn go_subject_string(der: &[u8]) -> String {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return String::new();
    };
    // Go's field order (see pkix.Name.ToRDNSequence); printed in reverse.
    const ORDER: [(&str, &str); 9] = [
        ("2.5.4.6", "C"),
        ("2.5.4.8", "ST"),
        ("2.5.4.7", "L"),
        ("2.5.4.9", "STREET"),
        ("2.5.4.17", "POSTALCODE"),
        ("2.5.4.10", "O"),
        ("2.5.4.11", "OU"),
        ("2.5.4.3", "CN"),
        ("2.5.4.5", "SERIALNUMBER"),
    ];
    let mut known: Vec<Vec<String>> = vec![Vec::new(); ORDER.len()];
    let mut extra: Vec<String> = Vec::new();
    for rdn in cert.subject().iter_rdn() {
        for atv in rdn.iter() {
            let oid = atv.attr_type().to_id_string();
            match ORDER.iter().position(|(o, _)| *o == oid) {
                Some(i) => {
                    let v = atv.as_str().unwrap_or_default().to_owned();
                    // Go keeps only the last CommonName and SerialNumber.
                    if ORDER[i].1 == "CN" || ORDER[i].1 == "SERIALNUMBER" {
                        known[i] = vec![v];
                    } else {
                        known[i].push(v);
                    }
                }
                None => {
                    let value = atv.attr_value();
                    let mut der = der_header(value.tag().0, value.data.len());
                    der.extend_from_slice(value.data);
                    extra.push(format!("{oid}=#{}", hex_lower(&der)));
                }
            }
        }
    }
    let mut rdns: Vec<String> = extra;
    for (i, values) in known.iter().enumerate() {
        if values.is_empty() {
            continue;
        }
        let name = ORDER[i].1;
        rdns.push(
            values
                .iter()
                .map(|v| format!("{name}={}", escape_dn_value(v)))
                .collect::<Vec<_>>()
                .join("+"),
        );
    }
    rdns.reverse();
    rdns.join(",")
}

fn escape_dn_value(v: &str) -> String {
    let n = v.chars().count();
    let mut out = String::with_capacity(v.len());
    for (k, c) in v.chars().enumerate() {
        let escape = match c {
            ',' | '+' | '"' | '\\' | '<' | '>' | ';' => true,
            ' ' => k == 0 || k + 1 == n,
            '#' => k == 0,
            _ => false,
        };
        if escape {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn der_header(tag: u32, len: usize) -> Vec<u8> {
    let mut out = vec![u8::try_from(tag).unwrap_or(0x04)];
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn subjects_print_like_go() {
        let key = crate::key::SoftwareKey::generate(crate::key::KeyType::EcP256).unwrap();
        let td = sigil_spiffe::TrustDomain::new("example.org").unwrap();
        let subject = crate::x509::CaSubject {
            country: vec!["US".into()],
            organization: vec!["A, B".into()],
            common_name: "root".into(),
        };
        let now = std::time::SystemTime::now();
        let der =
            crate::x509::self_signed_ca(&key, &td, &subject, now, now + Duration::from_secs(60))
                .unwrap();
        assert_eq!(go_subject_string(&der), "CN=root,O=A\\, B,C=US");
    }

    #[test]
    fn dn_values_are_escaped_like_go() {
        assert_eq!(escape_dn_value(" a#b "), "\\ a#b\\ ");
        assert_eq!(escape_dn_value("#x"), "\\#x");
        assert_eq!(escape_dn_value("a+b;c"), "a\\+b\\;c");
    }
}
