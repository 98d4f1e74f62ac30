//! Reading a recipient list: a CSV file with a header row holding an `email`
//! column; every other column is a merge field. Bad rows are reported with their
//! line numbers and skipped; nothing else is lost.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// One accepted recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// Line of the CSV file where the row starts (1-based; the header is line 1).
    pub line: u64,
    /// The address, trimmed.
    pub email: String,
    /// Merge values, in [`RecipientList::fields`] order, exactly as in the file.
    pub values: Vec<Vec<u8>>,
}

/// A row that was skipped, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// Line where the row starts.
    pub line: u64,
    /// The address column as found (may be empty).
    pub email: String,
    /// Why it was skipped.
    pub reason: String,
}

/// A parsed recipient list.
#[derive(Debug, Clone, Default)]
pub struct RecipientList {
    /// Merge field names: the header's columns other than `email`, in file order.
    pub fields: Vec<String>,
    /// Accepted rows, in file order.
    pub rows: Vec<Row>,
    /// Skipped rows, in file order.
    pub rejected: Vec<Rejected>,
}

/// Why the list as a whole cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    /// The file could not be read.
    #[error("cannot read {}: {io}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        io: std::io::Error,
    },
    /// The header row is missing or unusable.
    #[error("{}:1: {reason}", path.display())]
    Header {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

impl RecipientList {
    /// Reads a CSV file (see the module doc).
    pub fn read(path: &Path) -> Result<RecipientList, ListError> {
        let data = std::fs::read(path).map_err(|io| ListError::Read {
            path: path.to_owned(),
            io,
        })?;
        RecipientList::parse(&data, path)
    }

    /// Parses CSV `data`; `path` is only used in messages. Line numbers are the
    /// file's own (a line break inside a quoted value counts, as in an editor).
    pub fn parse(data: &[u8], path: &Path) -> Result<RecipientList, ListError> {
        let mut lines = LineCounter::default();
        let header_err = |reason: String| ListError::Header {
            path: path.to_owned(),
            reason,
        };
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(true)
            .from_reader(data);
        let header = reader
            .byte_headers()
            .map_err(|e| header_err(format!("cannot read the header row: {e}")))?
            .clone();
        let names: Vec<String> = header
            .iter()
            .map(|h| {
                String::from_utf8_lossy(h)
                    .trim()
                    .trim_start_matches('\u{feff}')
                    .to_owned()
            })
            .collect();
        let email_col = names
            .iter()
            .position(|n| n.eq_ignore_ascii_case("email"))
            .ok_or_else(|| {
                header_err(format!("no `email` column (columns: {})", names.join(", ")))
            })?;
        let mut seen_names = HashMap::new();
        for (i, n) in names.iter().enumerate() {
            if n.is_empty() {
                return Err(header_err(format!("column {} has no name", i + 1)));
            }
            if let Some(first) = seen_names.insert(n.to_ascii_lowercase(), i) {
                return Err(header_err(format!(
                    "column {n:?} appears twice (columns {} and {})",
                    first + 1,
                    i + 1
                )));
            }
        }
        let mut list = RecipientList {
            fields: names
                .iter()
                .enumerate()
                .filter(|&(i, _)| i != email_col)
                .map(|(_, n)| n.clone())
                .collect(),
            ..RecipientList::default()
        };
        let mut seen: HashMap<String, u64> = HashMap::new();
        let mut record = csv::ByteRecord::new();
        loop {
            let start = reader.position().byte();
            match reader.read_byte_record(&mut record) {
                Ok(false) => break,
                Ok(true) => {}
                Err(e) => {
                    let at = e.position().map(|p| p.byte()).unwrap_or(start);
                    let line = lines.line_at(data, at);
                    list.rejected.push(Rejected {
                        line,
                        email: String::new(),
                        reason: format!("unreadable CSV: {e}"),
                    });
                    continue;
                }
            }
            let at = record.position().map(|p| p.byte()).unwrap_or(start);
            let line = lines.line_at(data, at);
            let email =
                String::from_utf8_lossy(record.get(email_col).unwrap_or_default()).into_owned();
            if record.len() != names.len() {
                let reason = format!("expected {} fields, found {}", names.len(), record.len());
                list.rejected.push(Rejected {
                    line,
                    email,
                    reason,
                });
                continue;
            }
            let checked = match std::str::from_utf8(record.get(email_col).unwrap_or_default()) {
                Ok(text) => crate::address::check(text).map(str::to_owned),
                Err(_) => Err("address is not UTF-8".to_owned()),
            };
            let address = match checked {
                Ok(a) => a,
                Err(reason) => {
                    list.rejected.push(Rejected {
                        line,
                        email,
                        reason: format!("bad address: {reason}"),
                    });
                    continue;
                }
            };
            if let Some(first) = seen.insert(address.to_lowercase(), line) {
                list.rejected.push(Rejected {
                    line,
                    email,
                    reason: format!("duplicate of line {first}"),
                });
                continue;
            }
            let values = record
                .iter()
                .enumerate()
                .filter(|&(i, _)| i != email_col)
                .map(|(_, v)| v.to_vec())
                .collect();
            list.rows.push(Row {
                line,
                email: address,
                values,
            });
        }
        Ok(list)
    }

    /// Writes the rejected rows as CSV (`line,email,reason`) to `path`.
    pub fn write_rejects(&self, path: &Path) -> std::io::Result<()> {
        write_rejected(path, &self.rejected)
    }
}

/// Writes rejected rows as CSV (`line,email,reason`) to `path`, in the order given.
pub fn write_rejected<'a>(
    path: &Path,
    rows: impl IntoIterator<Item = &'a Rejected>,
) -> std::io::Result<()> {
    let mut w = csv::Writer::from_path(path)?;
    w.write_record(["line", "email", "reason"])?;
    for r in rows {
        w.write_record([
            r.line.to_string().as_str(),
            r.email.as_str(),
            r.reason.as_str(),
        ])?;
    }
    w.flush()
}

/// Line numbers of byte offsets, counted incrementally (offsets only grow).
#[derive(Debug)]
struct LineCounter {
    offset: u64,
    line: u64,
}

impl Default for LineCounter {
    fn default() -> Self {
        LineCounter { offset: 0, line: 1 }
    }
}

impl LineCounter {
    fn line_at(&mut self, data: &[u8], offset: u64) -> u64 {
        // After a CRLF the csv reader reports a record as starting at the LF: that
        // LF ends the previous line.
        let mut to = (offset as usize).min(data.len());
        if data.get(to) == Some(&b'\n') {
            to += 1;
        }
        let from = self.offset as usize;
        if to > from {
            self.line += data[from..to].iter().filter(|&&b| b == b'\n').count() as u64;
            self.offset = to as u64;
        }
        self.line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> RecipientList {
        RecipientList::parse(text.as_bytes(), Path::new("list.csv")).unwrap()
    }

    #[test]
    fn reads_fields_and_keeps_values_exactly() {
        let list = parse("first_name,Email,note\r\nZoë,a@x.test,\"multi\r\nline, \"\"quoted\"\"\"\r\n,b@y.test,\r\n");
        assert_eq!(list.fields, ["first_name", "note"]);
        assert_eq!(list.rows.len(), 2);
        assert_eq!(
            list.rows[0].values,
            vec![
                b"Zo\xc3\xab".to_vec(),
                b"multi\r\nline, \"quoted\"".to_vec()
            ]
        );
        assert_eq!(list.rows[1].line, 4, "a quoted line break counts as a line");
        assert_eq!(list.rows[1].values, vec![Vec::<u8>::new(), Vec::new()]);
        assert!(list.rejected.is_empty());
    }

    #[test]
    fn bad_rows_are_rejected_with_their_line_numbers() {
        let text = "email,name\na@x.test,A\nnot-an-address,B\nc@x.test\nd@x.test,D,extra\nA@X.TEST,dup\n e@x.test ,E\n";
        let list = parse(text);
        let got: Vec<(u64, &str)> = list
            .rejected
            .iter()
            .map(|r| (r.line, r.reason.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                (3, "bad address: no @ in the address"),
                (4, "expected 2 fields, found 1"),
                (5, "expected 2 fields, found 3"),
                (6, "duplicate of line 2"),
            ]
        );
        let emails: Vec<&str> = list.rows.iter().map(|r| r.email.as_str()).collect();
        assert_eq!(emails, ["a@x.test", "e@x.test"]);
    }

    #[test]
    fn a_list_without_an_email_column_is_an_error() {
        let err = RecipientList::parse("name,mail\nA,a@x.test\n".as_bytes(), Path::new("l.csv"))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "l.csv:1: no `email` column (columns: name, mail)"
        );
        let err = RecipientList::parse("email,x,X\n".as_bytes(), Path::new("l.csv")).unwrap_err();
        assert!(err.to_string().contains("appears twice"), "{err}");
    }

    #[test]
    fn rejects_file_lists_line_email_and_reason() {
        let dir = tempfile::tempdir().unwrap();
        let list = parse("email\nbad\n");
        let path = dir.path().join("rejects.csv");
        list.write_rejects(&path).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "line,email,reason\n2,bad,bad address: no @ in the address\n"
        );
    }
}
