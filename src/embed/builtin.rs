//! The `builtin` embedder: deterministic, local, no network. A text becomes a bag of features —
//! words, pairs of neighbouring words, and character trigrams of each word — each hashed (with a
//! fixed hash, the same on every machine and release) to one of 1536 dimensions with a sign, and
//! the vector is L2-normalised.
//!
//! It is lexical, not semantic: texts are similar when they share words or word stems
//! ("limiter" and "limiting" share trigrams), not when they mean the same thing in other words.
//! That is enough for "find patterns about authentication" over descriptions that say so, with no
//! API key. Changing anything here changes the vectors: bump [`MODEL`] so stored embeddings are
//! recognised as stale and `nexusd embed --reembed` rebuilds them.

use std::collections::HashMap;

use super::{DIMENSIONS, normalise};

/// Recorded with every vector made here (as `builtin:hash-ngrams-v1`).
pub const MODEL: &str = "hash-ngrams-v1";

/// Feature weights: a shared word counts most, a shared word pair adds order, trigrams give
/// partial credit to other forms of a word.
const WORD: f32 = 1.0;
const PAIR: f32 = 0.5;
const TRIGRAM: f32 = 0.3;

/// Words too common to say anything about a pattern.
const STOP_WORDS: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "been", "but", "by", "can", "do", "does", "for",
    "from", "has", "have", "how", "if", "in", "into", "is", "it", "its", "of", "on", "or", "so",
    "such", "than", "that", "the", "their", "them", "then", "there", "these", "this", "those",
    "to", "use", "used", "uses", "using", "via", "was", "we", "were", "what", "when", "where",
    "which", "while", "who", "will", "with", "you", "your",
];

/// The embedding of `text`: 1536 values, unit length (all zero only for a text without any
/// letter or digit).
pub fn embed(text: &str) -> Vec<f32> {
    let words = words(text);
    let mut kept: Vec<&str> = words
        .iter()
        .map(String::as_str)
        .filter(|w| !STOP_WORDS.contains(w))
        .collect();
    if kept.is_empty() {
        // Only stop words ("How to"): they are all there is to compare.
        kept = words.iter().map(String::as_str).collect();
    }

    let mut features: HashMap<u64, (f32, u32)> = HashMap::new();
    let mut add = |key: u64, weight: f32| {
        let entry = features.entry(key).or_insert((weight, 0));
        entry.1 += 1;
    };
    for w in &kept {
        add(hash(b'w', &[w]), WORD);
        let bounded: Vec<char> = format!("^{w}$").chars().collect();
        for tri in bounded.windows(3) {
            let tri: String = tri.iter().collect();
            add(hash(b't', &[&tri]), TRIGRAM);
        }
    }
    for pair in kept.windows(2) {
        add(hash(b'p', pair), PAIR);
    }

    let mut v = vec![0.0f32; DIMENSIONS];
    for (key, (weight, count)) in features {
        // Sub-linear in repetitions: a word said five times is not five times as telling.
        let value = weight * (1.0 + (count as f32).ln());
        let index = (key % DIMENSIONS as u64) as usize;
        // The sign spreads collisions around zero instead of piling them up.
        let sign = if key >> 63 == 1 { -1.0 } else { 1.0 };
        v[index] += sign * value;
    }
    normalise(&mut v);
    v
}

/// Lower-case words: runs of letters and digits, also split where camelCase turns upper-case
/// (`JwtAuthMiddleware` → jwt, auth, middleware).
fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut previous_lower = false;
    for c in text.chars() {
        if c.is_alphanumeric() {
            if c.is_uppercase() && previous_lower && !current.is_empty() {
                out.push(std::mem::take(&mut current));
            }
            previous_lower = c.is_lowercase() || c.is_numeric();
            current.extend(c.to_lowercase());
        } else {
            previous_lower = false;
            if !current.is_empty() {
                out.push(std::mem::take(&mut current));
            }
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// FNV-1a over a feature kind and its parts, then a SplitMix64 finaliser so that every bit,
/// including the low ones that pick the dimension, depends on every input byte.
fn hash(kind: u8, parts: &[&str]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    let mut feed = |byte: u8| {
        h ^= u64::from(byte);
        h = h.wrapping_mul(PRIME);
    };
    feed(kind);
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            feed(0x1f);
        }
        part.bytes().for_each(&mut feed);
    }
    let mut z = h.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cosine(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn vectors_are_1536_wide_unit_length_and_deterministic() {
        let v = embed("JWT authentication middleware");
        assert_eq!(v.len(), DIMENSIONS);
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "{norm}");
        assert_eq!(v, embed("JWT authentication middleware"));
        assert!(embed("   ").iter().all(|x| *x == 0.0));
        assert!(embed("How to").iter().any(|x| *x != 0.0));
    }

    #[test]
    fn the_hash_is_fixed_across_builds_and_machines() {
        // Stored vectors depend on these exact values; changing them needs a new MODEL.
        assert_eq!(hash(b'w', &["jwt"]), hash(b'w', &["jwt"]));
        assert_eq!(hash(b'w', &["jwt"]), 0xd2aa_a8ab_ce1a_2ae1);
        assert_ne!(hash(b'w', &["ab", "c"]), hash(b'w', &["a", "bc"]));
    }

    #[test]
    fn words_split_on_punctuation_and_camel_case() {
        assert_eq!(
            words("JwtAuthMiddleware, rate-limiter v2 (HTTP)"),
            ["jwt", "auth", "middleware", "rate", "limiter", "v2", "http"]
        );
    }

    #[test]
    fn shared_words_and_stems_make_texts_similar() {
        let query = embed("throttle requests per client");
        let limiter = embed(
            "Token bucket rate limiter\n\nLimits requests per client with a token bucket; \
             throttles bursts",
        );
        let cache = embed("Read-through cache\n\nCaches database reads in Redis with a TTL");
        assert!(
            cosine(&query, &limiter) > 0.3,
            "{}",
            cosine(&query, &limiter)
        );
        assert!(cosine(&query, &cache) < 0.1, "{}", cosine(&query, &cache));
        // Stop words alone do not make texts alike.
        assert!(cosine(&embed("the use of a thing"), &embed("the use of an idea")) < 0.3);
    }
}
