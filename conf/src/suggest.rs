//! "Did you mean ...?" for misspelled keys.

/// The known name closest to `unknown`, if it is close enough to be a likely
/// typo: at most 2 edits, or a third of the length for long names. Case is
/// ignored (TOML keys are case-sensitive, so `Batch_Size` is a typo too).
pub(crate) fn closest<'a>(unknown: &str, known: &[&'a str]) -> Option<&'a str> {
    let unknown = unknown.to_lowercase();
    let limit = 2.max(unknown.chars().count() / 3);
    known
        .iter()
        .map(|name| (levenshtein(&unknown, &name.to_lowercase()), *name))
        .filter(|(distance, _)| *distance <= limit)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, name)| name)
}

/// Edit distance (insertions, deletions, substitutions) counted in characters.
/// A dozen lines: too small to justify a dependency.
fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    // previous[j]: distance between the first i chars of `a` and the first j of `b`.
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, char_a) in a.chars().enumerate() {
        let mut current = Vec::with_capacity(b.len() + 1);
        current.push(i + 1);
        for (j, char_b) in b.iter().enumerate() {
            let substitute = previous[j] + usize::from(char_a != *char_b);
            let delete = previous[j + 1] + 1;
            let insert = current[j] + 1;
            current.push(substitute.min(delete).min(insert));
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances() {
        assert_eq!(levenshtein("", ""), 0);
        assert_eq!(levenshtein("abc", ""), 3);
        assert_eq!(levenshtein("", "abc"), 3);
        assert_eq!(levenshtein("kitten", "sitting"), 3);
        assert_eq!(levenshtein("batchsize", "batch_size"), 1);
        assert_eq!(levenshtein("spoool", "spool"), 1);
        assert_eq!(levenshtein("héllo", "hello"), 1);
    }

    #[test]
    fn suggestions() {
        let keys = ["batch_size", "sync_interval"];
        assert_eq!(closest("batchsize", &keys), Some("batch_size"));
        assert_eq!(closest("batch-size", &keys), Some("batch_size"));
        assert_eq!(closest("BATCH_SIZE", &keys), Some("batch_size"));
        assert_eq!(closest("sync", &keys), None);
        assert_eq!(closest("interval", &keys), None);
        // Long names tolerate more edits: 3 edits in 10 characters.
        assert_eq!(closest("syncinterv", &keys), Some("sync_interval"));
        assert_eq!(closest("anything", &[]), None);
        // The first of equally close names wins.
        assert_eq!(closest("ab", &["aa", "bb"]), Some("aa"));
    }
}
