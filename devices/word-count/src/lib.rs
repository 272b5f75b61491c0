//! The word count of the original Celery-on-Docker-Swarm experiment, exactly:
//! its tokenizer, its `mapper` and its reducer. The binary runs the mapper as
//! swarmq tasks; this library holds the pure parts, so they are tested alone.

use std::collections::HashMap;

/// Queue the word count uses.
pub const QUEUE: &str = "word_count";
/// Task name of the mapper.
pub const MAPPER: &str = "mapper";
/// Task name of the reduce, a workflow's last step: it takes the list of
/// mapper results and answers the top 5.
pub const REDUCE: &str = "reduce";

/// The reduce task's work: mapper results (`[word, n]`, or null for short
/// words) summed into the top `top`.
pub fn reduce_results(results: &[serde_json::Value], top: usize) -> Vec<(String, u64)> {
    let pairs = results.iter().filter_map(|v| {
        let pair = v.as_array()?;
        Some((pair.first()?.as_str()?.to_string(), pair.get(1)?.as_u64()?))
    });
    reduce(pairs, top)
}

/// Decodes a text as Latin-1 (every byte one character), as the original did.
pub fn decode_latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}

/// The original tokenizer: join all lines with a single space, delete every
/// `,` and `.`, split on whitespace. Case and other punctuation are kept.
pub fn tokenize(text: &str) -> Vec<String> {
    text.lines()
        .collect::<Vec<_>>()
        .join(" ")
        .replace([',', '.'], "")
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// The original mapper: `(word, 1)` for words of 5 characters or more, else `None`.
pub fn mapper(word: &str) -> Option<(String, u64)> {
    (word.chars().count() >= 5).then(|| (word.to_string(), 1))
}

/// The original reducer: sum per word, sort by `(count, word)` descending,
/// keep the first `top`.
pub fn reduce(pairs: impl IntoIterator<Item = (String, u64)>, top: usize) -> Vec<(String, u64)> {
    let mut counts: HashMap<String, u64> = HashMap::new();
    for (word, n) in pairs {
        *counts.entry(word).or_default() += n;
    }
    let mut v: Vec<(String, u64)> = counts.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| b.0.cmp(&a.0)));
    v.truncate(top);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(name: &str) -> String {
        let path = format!("{}/text/{name}", env!("CARGO_MANIFEST_DIR"));
        decode_latin1(&std::fs::read(path).unwrap())
    }

    fn top5(words: &[String]) -> Vec<(String, u64)> {
        reduce(words.iter().filter_map(|w| mapper(w)), 5)
    }

    fn pairs(v: &[(&str, u64)]) -> Vec<(String, u64)> {
        v.iter().map(|(w, n)| (w.to_string(), *n)).collect()
    }

    #[test]
    fn the_original_2190_words() {
        let words = tokenize(&text("aesop11.txt"));
        let first = &words[..2190];
        assert_eq!(first.iter().filter_map(|w| mapper(w)).count(), 715);
        assert_eq!(
            top5(first),
            pairs(&[
                ("would", 12),
                ("which", 8),
                ("their", 8),
                ("caught", 6),
                ("Farmer", 6)
            ])
        );
    }

    #[test]
    fn whole_texts_match_the_reference() {
        let aesop = tokenize(&text("aesop11.txt"));
        assert_eq!(aesop.len(), 40_861);
        assert_eq!(
            top5(&aesop),
            pairs(&[
                ("their", 155),
                ("which", 153),
                ("would", 108),
                ("himself", 95),
                ("should", 80)
            ])
        );
        let gulliver = tokenize(&text("gulliver.txt"));
        assert_eq!(gulliver.len(), 104_110);
        assert_eq!(
            top5(&gulliver),
            pairs(&[
                ("which", 838),
                ("their", 646),
                ("could", 385),
                ("would", 370),
                ("great", 280)
            ])
        );
    }

    #[test]
    fn mapper_counts_characters_with_punctuation() {
        assert_eq!(mapper("\"Indeed"), Some(("\"Indeed".into(), 1)));
        assert_eq!(mapper("four"), None);
        assert_eq!(mapper("é1234"), Some(("é1234".into(), 1)));
    }

    #[test]
    fn the_reduce_task_sums_mapper_results_and_skips_nulls() {
        let results = serde_json::json!([["which", 1], null, ["their", 1], ["which", 1], "junk"]);
        assert_eq!(
            reduce_results(results.as_array().unwrap(), 5),
            pairs(&[("which", 2), ("their", 1)])
        );
    }

    #[test]
    fn tokenizer_deletes_commas_and_periods_only() {
        assert_eq!(tokenize("a,b. c\nd!  e"), ["ab", "c", "d!", "e"]);
    }
}
