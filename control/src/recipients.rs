//! Reading a recipient list: a CSV file with a header row holding an `email`
//! column; every other column is a merge field. Bad rows are reported with their
//! line numbers and skipped; nothing else is lost.

use std::collections::HashMap;
use std::io::Read;
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

/// Reads a recipient list one row at a time, so a list of any length is read in
/// bounded memory (the partitioning sorts it on disk). Line numbers are the
/// file's own: a line break inside a quoted value counts, as in an editor.
pub struct RecipientReader<R: Read> {
    path: PathBuf,
    fields: Vec<String>,
    email_col: usize,
    width: usize,
    reader: csv::Reader<R>,
    record: csv::ByteRecord,
    scratch: Vec<u8>,
}

impl<R: Read> std::fmt::Debug for RecipientReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecipientReader")
            .field("path", &self.path)
            .field("fields", &self.fields)
            .finish_non_exhaustive()
    }
}

/// One accepted row, borrowed from the reader until the next call.
#[derive(Debug, Clone, Copy)]
pub struct RowRef<'a> {
    /// Line where the row starts.
    pub line: u64,
    /// The checked address, trimmed.
    pub email: &'a str,
    record: &'a csv::ByteRecord,
    email_col: usize,
}

impl<'a> RowRef<'a> {
    /// Merge values in [`RecipientReader::fields`] order, exactly as in the file.
    pub fn values(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        let email_col = self.email_col;
        self.record
            .iter()
            .enumerate()
            .filter(move |&(i, _)| i != email_col)
            .map(|(_, v)| v)
    }
}

impl RecipientReader<std::io::BufReader<std::fs::File>> {
    /// Opens a CSV file and reads its header row.
    pub fn open(path: &Path) -> Result<Self, ListError> {
        let file = std::fs::File::open(path).map_err(|io| ListError::Read {
            path: path.to_owned(),
            io,
        })?;
        RecipientReader::new(std::io::BufReader::with_capacity(1 << 16, file), path)
    }
}

impl<R: Read> RecipientReader<R> {
    /// Reads the header row from `input`; `path` is only used in messages.
    pub fn new(input: R, path: &Path) -> Result<Self, ListError> {
        let header_err = |reason: String| ListError::Header {
            path: path.to_owned(),
            reason,
        };
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(true)
            // Records end at LF only: with csv's default (CR, LF or CRLF), a record
            // after a CRLF is reported as starting at its LF, one line early. The CR
            // of a CRLF is then the last field's last byte, removed in next_row.
            .terminator(csv::Terminator::Any(b'\n'))
            .from_reader(input);
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
        Ok(RecipientReader {
            path: path.to_owned(),
            fields: names
                .iter()
                .enumerate()
                .filter(|&(i, _)| i != email_col)
                .map(|(_, n)| n.clone())
                .collect(),
            email_col,
            width: names.len(),
            reader,
            record: csv::ByteRecord::new(),
            scratch: Vec::new(),
        })
    }

    /// Merge field names: the header's columns other than `email`, in file order.
    pub fn fields(&self) -> &[String] {
        &self.fields
    }

    /// The file being read (for messages).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The next row: `Some(Ok(row))` if it is usable, `Some(Err(rejected))` if it
    /// is skipped (unreadable CSV, wrong field count, bad address), `None` at the
    /// end. Duplicates are not detected here (see [`crate::partition`]).
    pub fn next_row(&mut self) -> Option<Result<RowRef<'_>, Rejected>> {
        let mut start_line;
        loop {
            start_line = self.reader.position().line();
            match self.reader.read_byte_record(&mut self.record) {
                Ok(false) => return None,
                Ok(true) => {}
                Err(e) => {
                    let line = e.position().map_or(start_line, |p| p.line());
                    return Some(Err(Rejected {
                        line,
                        email: String::new(),
                        reason: format!("unreadable CSV: {e}"),
                    }));
                }
            }
            let last = self.record.len().saturating_sub(1);
            if let Some(field) = self.record.get(last).filter(|f| f.ends_with(b"\r")) {
                self.scratch.clear();
                self.scratch.extend_from_slice(&field[..field.len() - 1]);
                self.record.truncate(last);
                self.record.push_field(&self.scratch);
            }
            // A blank line (CRLF files: a lone CR) is not a row.
            if self.record.len() > 1 || self.record.get(0).is_some_and(|f| !f.is_empty()) {
                break;
            }
        }
        let line = self.record.position().map_or(start_line, |p| p.line());
        let raw = self.record.get(self.email_col).unwrap_or_default();
        if self.record.len() != self.width {
            return Some(Err(Rejected {
                line,
                email: String::from_utf8_lossy(raw).into_owned(),
                reason: format!(
                    "expected {} fields, found {}",
                    self.width,
                    self.record.len()
                ),
            }));
        }
        let checked = match std::str::from_utf8(raw) {
            Ok(text) => crate::address::check(text),
            Err(_) => Err("address is not UTF-8".to_owned()),
        };
        match checked {
            Ok(email) => Some(Ok(RowRef {
                line,
                email,
                record: &self.record,
                email_col: self.email_col,
            })),
            Err(reason) => Some(Err(Rejected {
                line,
                email: String::from_utf8_lossy(raw).into_owned(),
                reason: format!("bad address: {reason}"),
            })),
        }
    }
}

impl RecipientList {
    /// Reads a whole CSV file into memory (see the module doc). For small lists
    /// (imports, tests); a campaign streams through [`RecipientReader`] instead.
    pub fn read(path: &Path) -> Result<RecipientList, ListError> {
        RecipientList::collect(RecipientReader::open(path)?)
    }

    /// Parses CSV `data`; `path` is only used in messages.
    pub fn parse(data: &[u8], path: &Path) -> Result<RecipientList, ListError> {
        RecipientList::collect(RecipientReader::new(data, path)?)
    }

    fn collect<R: Read>(mut reader: RecipientReader<R>) -> Result<RecipientList, ListError> {
        let mut list = RecipientList {
            fields: reader.fields.clone(),
            ..RecipientList::default()
        };
        let mut seen: HashMap<String, u64> = HashMap::new();
        while let Some(row) = reader.next_row() {
            match row {
                Err(rejected) => list.rejected.push(rejected),
                Ok(row) => {
                    if let Some(&first) = seen.get(&row.email.to_lowercase()) {
                        list.rejected.push(Rejected {
                            line: row.line,
                            email: row.email.to_owned(),
                            reason: format!("duplicate of line {first}"),
                        });
                        continue;
                    }
                    seen.insert(row.email.to_lowercase(), row.line);
                    list.rows.push(Row {
                        line: row.line,
                        email: row.email.to_owned(),
                        values: row.values().map(<[u8]>::to_vec).collect(),
                    });
                }
            }
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
