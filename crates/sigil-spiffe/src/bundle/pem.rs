//! PEM (RFC 7468) encoding of certificates, written by hand: only the
//! `CERTIFICATE` label, standard base64 in 64-character lines, as Go's
//! `encoding/pem` writes it.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::BundleError;

const LINE_LEN: usize = 64;
const CERTIFICATE: &str = "CERTIFICATE";

/// DER certificates as concatenated PEM `CERTIFICATE` blocks, each line
/// ending in `\n`.
pub fn certificates_to_pem(ders: &[Vec<u8>]) -> String {
    let mut out = String::new();
    for der in ders {
        let body = STANDARD.encode(der);
        out.push_str("-----BEGIN CERTIFICATE-----\n");
        // Standard base64 is ASCII, so every 64-byte chunk is valid UTF-8.
        for line in body.as_bytes().chunks(LINE_LEN) {
            out.push_str(std::str::from_utf8(line).expect("base64 output is ASCII"));
            out.push('\n');
        }
        out.push_str("-----END CERTIFICATE-----\n");
    }
    out
}

/// The DER bodies of the PEM `CERTIFICATE` blocks in `pem`, in order. Text
/// between blocks is ignored; a block of any other type is an error, as is
/// input with no blocks. The DER is not parsed here.
pub fn certificates_from_pem(pem: &[u8]) -> Result<Vec<Vec<u8>>, BundleError> {
    let mut certs = Vec::new();
    let mut open: Option<(String, Vec<u8>)> = None;
    let mut index = 0;
    for raw_line in pem.split(|b| *b == b'\n') {
        let line = raw_line.trim_ascii();
        match &mut open {
            None => {
                if let Some(label) = boundary_label(line, b"-----BEGIN ") {
                    if label != CERTIFICATE {
                        return Err(BundleError::UnexpectedPemBlock { index, label });
                    }
                    open = Some((label, Vec::new()));
                }
            }
            Some((label, body)) => {
                if let Some(end) = boundary_label(line, b"-----END ") {
                    if end != *label {
                        return Err(BundleError::UnterminatedPemBlock {
                            index,
                            label: label.clone(),
                        });
                    }
                    let der = STANDARD
                        .decode(&body)
                        .map_err(|_| BundleError::InvalidPemBase64 { index })?;
                    certs.push(der);
                    open = None;
                    index += 1;
                } else {
                    body.extend(line.iter().filter(|b| !b.is_ascii_whitespace()));
                }
            }
        }
    }
    if let Some((label, _)) = open {
        return Err(BundleError::UnterminatedPemBlock { index, label });
    }
    if certs.is_empty() {
        return Err(BundleError::NoPemCertificates);
    }
    Ok(certs)
}

/// The label of a `-----BEGIN LABEL-----` / `-----END LABEL-----` line.
fn boundary_label(line: &[u8], prefix: &[u8]) -> Option<String> {
    let label = line.strip_prefix(prefix)?.strip_suffix(b"-----")?;
    Some(String::from_utf8_lossy(label).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_lines_are_64_chars_and_round_trip() {
        let der: Vec<u8> = (0..=255u8).cycle().take(500).collect();
        let pem = certificates_to_pem(&[der.clone(), vec![1, 2, 3]]);
        let lines: Vec<&str> = pem.lines().collect();
        assert_eq!(lines[0], "-----BEGIN CERTIFICATE-----");
        assert!(lines.iter().all(|l| l.len() <= 64));
        assert_eq!(lines[1].len(), 64);
        assert!(pem.ends_with("-----END CERTIFICATE-----\n"));
        let back = certificates_from_pem(pem.as_bytes()).unwrap();
        assert_eq!(back, vec![der, vec![1, 2, 3]]);
    }

    #[test]
    fn pem_reader_skips_text_and_tolerates_crlf() {
        let pem = "subject=CN=x\r\n-----BEGIN CERTIFICATE-----\r\nAQID\r\n-----END CERTIFICATE-----\r\ntrailer";
        assert_eq!(
            certificates_from_pem(pem.as_bytes()).unwrap(),
            vec![vec![1, 2, 3]]
        );
    }

    #[test]
    fn pem_reader_errors_are_precise() {
        assert_eq!(
            certificates_from_pem(b"nothing here"),
            Err(BundleError::NoPemCertificates)
        );
        assert_eq!(
            certificates_from_pem(
                b"-----BEGIN PRIVATE KEY-----\nAQID\n-----END PRIVATE KEY-----\n"
            ),
            Err(BundleError::UnexpectedPemBlock {
                index: 0,
                label: "PRIVATE KEY".into()
            })
        );
        assert_eq!(
            certificates_from_pem(b"-----BEGIN CERTIFICATE-----\nAQID\n"),
            Err(BundleError::UnterminatedPemBlock {
                index: 0,
                label: "CERTIFICATE".into()
            })
        );
        assert_eq!(
            certificates_from_pem(
                b"-----BEGIN CERTIFICATE-----\nAQID\n-----END CERTIFICATE-----\n-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----\n"
            ),
            Err(BundleError::InvalidPemBase64 { index: 1 })
        );
    }
}
