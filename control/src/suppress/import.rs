//! Reading a file of addresses to suppress: a CSV file with an `email` column (as
//! for recipient lists: [`crate::recipients`]), or plain text with one address
//! per line (blank lines and lines starting with `#` are skipped). Bad rows are
//! reported with their line numbers.

use std::path::Path;

use crate::recipients::{ListError, RecipientList, Rejected};

/// The addresses of an import file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportList {
    /// Valid addresses with their line numbers, in file order.
    pub addresses: Vec<(u64, String)>,
    /// Rows skipped, with their line numbers and why.
    pub rejected: Vec<Rejected>,
}

/// Whether `data` is CSV: its first non-blank line is the header `email` or has
/// a comma.
fn is_csv(data: &[u8]) -> bool {
    let text = String::from_utf8_lossy(data);
    let first = text
        .lines()
        .map(|l| l.trim().trim_start_matches('\u{feff}'))
        .find(|l| !l.is_empty())
        .unwrap_or_default();
    first.contains(',') || first.eq_ignore_ascii_case("email")
}

impl ImportList {
    /// Reads `path` (see the module doc).
    pub fn read(path: &Path) -> Result<ImportList, ListError> {
        let data = std::fs::read(path).map_err(|io| ListError::Read {
            path: path.to_owned(),
            io,
        })?;
        ImportList::parse(&data, path)
    }

    /// Parses `data`; `path` is only used in messages.
    pub fn parse(data: &[u8], path: &Path) -> Result<ImportList, ListError> {
        if is_csv(data) {
            let list = RecipientList::parse(data, path)?;
            return Ok(ImportList {
                addresses: list.rows.into_iter().map(|r| (r.line, r.email)).collect(),
                rejected: list.rejected,
            });
        }
        let mut out = ImportList::default();
        let mut seen = std::collections::HashMap::new();
        for (i, line) in data.split(|&b| b == b'\n').enumerate() {
            let line_no = i as u64 + 1;
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let text = String::from_utf8_lossy(line);
            let trimmed = text.trim().trim_start_matches('\u{feff}');
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let reject = |reason: String| Rejected {
                line: line_no,
                email: trimmed.to_owned(),
                reason,
            };
            let checked = match std::str::from_utf8(line) {
                Ok(text) => {
                    crate::address::check(text.trim_start_matches('\u{feff}')).map(str::to_owned)
                }
                Err(_) => Err("address is not UTF-8".to_owned()),
            };
            match checked {
                Err(reason) => out.rejected.push(reject(format!("bad address: {reason}"))),
                Ok(address) => {
                    if let Some(first) = seen.insert(super::normalize(&address), line_no) {
                        out.rejected
                            .push(reject(format!("duplicate of line {first}")));
                    } else {
                        out.addresses.push((line_no, address));
                    }
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> ImportList {
        ImportList::parse(text.as_bytes(), Path::new("in.txt")).unwrap()
    }

    fn lines(l: &ImportList) -> Vec<(u64, &str)> {
        l.rejected
            .iter()
            .map(|r| (r.line, r.reason.as_str()))
            .collect()
    }

    #[test]
    fn plain_lists_take_one_address_per_line() {
        let l = parse(
            "# exported 2024\r\na@x.test\r\n\r\nnobody\r\n B@X.test \na@X.TEST\nc d@x.test\n",
        );
        let got: Vec<(u64, &str)> = l.addresses.iter().map(|(n, a)| (*n, a.as_str())).collect();
        assert_eq!(got, [(2, "a@x.test"), (5, "B@X.test")]);
        assert_eq!(
            lines(&l),
            [
                (4, "bad address: no @ in the address"),
                (6, "duplicate of line 2"),
                (7, "bad address: address contains ' '"),
            ]
        );
    }

    #[test]
    fn csv_files_use_the_email_column() {
        let l = parse("name,email\nAnn,a@x.test\nBo,bad\n");
        assert_eq!(l.addresses, [(2, "a@x.test".to_owned())]);
        assert_eq!(lines(&l), [(3, "bad address: no @ in the address")]);
        // A single column named email is CSV too (its header is not an address).
        let l = parse("Email\na@x.test\n");
        assert_eq!(l.addresses, [(2, "a@x.test".to_owned())]);
        assert!(l.rejected.is_empty());
        // CSV without an email column: an error naming the file.
        let err = ImportList::parse(b"name,mail\nA,a@x.test\n", Path::new("in.csv")).unwrap_err();
        assert!(
            err.to_string().starts_with("in.csv:1: no `email` column"),
            "{err}"
        );
    }
}
