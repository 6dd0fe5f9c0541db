//! Splitting `cmd_args` into an argument vector the way spiffe-helper does.
//!
//! spiffe-helper reads `cmd_args` as one record of CSV whose separator is a
//! single space (Go's `encoding/csv` with `Comma = ' '`), so the rules are
//! CSV's, not a shell's: every space separates (two spaces make an empty
//! argument), a field that starts with `"` runs to the next `"` that is
//! followed by a space or the end, `""` inside it is one literal `"`, and a
//! `"` anywhere in an unquoted field is an error. Single quotes are ordinary
//! characters. Only the first record counts: blank lines before it are
//! skipped and lines after it ignored (a quoted field may span lines). This
//! module owns that grammar and nothing else.

/// Why `cmd_args` cannot be split.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CmdArgsError {
    /// A `"` inside a field that did not start with one.
    #[error(
        "bare \" in unquoted argument {field}: quote the whole argument (\"...\") and double the quote inside it"
    )]
    BareQuote {
        /// The argument (1-based).
        field: usize,
    },
    /// A quoted argument followed by something other than a space, or never
    /// closed.
    #[error("extraneous or missing \" in quoted argument {field}")]
    Quote {
        /// The argument (1-based).
        field: usize,
    },
    /// Only blank lines: spiffe-helper fails to start the command then.
    #[error("only blank lines: leave cmd_args out or empty to pass no arguments")]
    BlankLines,
}

/// Splits `args` into arguments (see the module documentation).
pub fn split_cmd_args(args: &str) -> Result<Vec<String>, CmdArgsError> {
    if args.is_empty() {
        return Ok(Vec::new());
    }
    let text = args.replace("\r\n", "\n");
    // Skip blank lines before the record, as encoding/csv does.
    let mut rest = text.as_str();
    loop {
        match rest.split_once('\n') {
            Some(("", after)) => rest = after,
            _ if rest.is_empty() => return Err(CmdArgsError::BlankLines),
            _ => break,
        }
    }
    let mut out = Vec::new();
    let mut chars = rest.chars().peekable();
    loop {
        let field = out.len() + 1;
        let mut arg = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err(CmdArgsError::Quote { field }),
                    Some('"') => match chars.peek() {
                        Some('"') => {
                            chars.next();
                            arg.push('"');
                        }
                        Some(' ') | Some('\n') | None => break,
                        Some(_) => return Err(CmdArgsError::Quote { field }),
                    },
                    Some(c) => arg.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                match c {
                    ' ' | '\n' => break,
                    '"' => return Err(CmdArgsError::BareQuote { field }),
                    _ => {
                        arg.push(c);
                        chars.next();
                    }
                }
            }
        }
        out.push(arg);
        match chars.next() {
            Some(' ') => continue,
            // End of the first record (or of the text).
            _ => return Ok(out),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn split(s: &str) -> Vec<String> {
        split_cmd_args(s).unwrap()
    }

    #[test]
    fn empty_cmd_args_is_no_arguments() {
        assert!(split("").is_empty());
    }

    #[test]
    fn arguments_are_split_at_each_space() {
        assert_eq!(
            split("server --listen localhost:8002 --target localhost:8001"),
            [
                "server",
                "--listen",
                "localhost:8002",
                "--target",
                "localhost:8001"
            ]
        );
        // Every space separates: two make an empty argument, as in spiffe-helper.
        assert_eq!(split("a  b"), ["a", "", "b"]);
        assert_eq!(split(" a"), ["", "a"]);
        assert_eq!(split("a "), ["a", ""]);
    }

    #[test]
    fn double_quotes_group_and_doubled_quotes_are_literal() {
        assert_eq!(split("\"this is one argument\""), ["this is one argument"]);
        assert_eq!(
            split("-c \"echo \"\"hi\"\" there\" x"),
            ["-c", "echo \"hi\" there", "x"]
        );
        assert_eq!(split("\"\""), [""]);
    }

    #[test]
    fn single_quotes_do_not_group() {
        assert_eq!(
            split("-c 'echo hello world'"),
            ["-c", "'echo", "hello", "world'"]
        );
    }

    #[test]
    fn stray_quotes_are_errors_naming_the_argument() {
        assert_eq!(
            split_cmd_args("a b\"c"),
            Err(CmdArgsError::BareQuote { field: 2 })
        );
        assert_eq!(
            split_cmd_args("\"abc\"d"),
            Err(CmdArgsError::Quote { field: 1 })
        );
        assert_eq!(
            split_cmd_args("x \"never closed"),
            Err(CmdArgsError::Quote { field: 2 })
        );
    }

    #[test]
    fn only_the_first_record_counts_and_quoted_newlines_are_kept() {
        assert_eq!(split("\n\na b\nc d"), ["a", "b"]);
        assert_eq!(split("a\r\nb"), ["a"]);
        assert_eq!(split("\"two\nlines\" x"), ["two\nlines", "x"]);
        assert_eq!(split_cmd_args("\n\n"), Err(CmdArgsError::BlankLines));
    }
}
