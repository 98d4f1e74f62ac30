//! Plain-text tables for terminal output: numbers right-aligned, text left.

/// Renders rows under a header. A column whose cells are all numbers (or `-`) is
/// right-aligned; any other column is left-aligned.
pub fn render(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let numeric: Vec<bool> = (0..widths.len())
        .map(|col| {
            rows.iter().all(|row| {
                row.get(col).is_none_or(|c| {
                    c == "-"
                        || (!c.is_empty() && c.chars().all(|ch| ch.is_ascii_digit() || ch == '.'))
                })
            })
        })
        .collect();
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut parts = Vec::with_capacity(cells.len());
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            parts.push(if numeric[i] {
                format!("{cell:>w$}")
            } else {
                format!("{cell:<w$}")
            });
        }
        out.push_str(parts.join("  ").trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn aligns_columns() {
        let t = super::render(
            &["domain", "n"],
            &[
                vec!["a.test".into(), "5".into()],
                vec!["bb.test".into(), "100".into()],
            ],
        );
        assert_eq!(t, "domain     n\na.test     5\nbb.test  100\n");
    }
}
