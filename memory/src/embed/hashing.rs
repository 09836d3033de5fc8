//! A deterministic, offline embedder based on signed feature hashing.
//!
//! Features of a text are its lowercased word unigrams, word bigrams and the
//! character 3-grams of each word (with `<` `>` boundary markers); each is
//! hashed with FNV-1a 64 into one of `dimension` buckets, with a sign taken
//! from another bit of the hash so collisions cancel out on average instead of
//! piling up. The vector is then L2-normalised.
//!
//! Invariant: the output for a given text and dimension never changes, since
//! stored vectors would silently stop matching new ones. Any change to the
//! features, weights or hash must come with a new name (`hashing-v2-…`); the
//! golden-value tests below fail if that is forgotten.

use crate::dimension::{MAX_DIMENSION, MIN_DIMENSION};
use crate::embed::Embedder;
use crate::error::MemoryError;

/// A dimension that balances collisions against storage for short texts.
pub const DEFAULT_DIMENSION: usize = 384;

/// Weight of one word occurrence.
const WORD_WEIGHT: f32 = 1.0;
/// Weight of one adjacent word pair; below a word because pairs are rarer
/// and mostly add word-order information.
const BIGRAM_WEIGHT: f32 = 0.5;
/// Total L2 weight of one word's character 3-grams, spread over them, so a
/// long word does not outweigh its own unigram; they only add robustness to
/// inflections and typos.
const CHAR_GRAMS_WEIGHT: f32 = 0.5;

/// Feature namespaces, hashed first so that the word "cat" and the 3-gram
/// "cat" land in unrelated buckets.
const WORD_TAG: u8 = b'w';
const BIGRAM_TAG: u8 = b'b';
const CHAR_GRAM_TAG: u8 = b'c';
/// Separates the two words of a bigram; never part of a token, since tokens
/// are alphanumeric.
const BIGRAM_SEPARATOR: u8 = b' ';

const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Embeds text by signed feature hashing; cheap, deterministic, no network.
#[derive(Debug, Clone)]
pub struct HashingEmbedder {
    dimension: usize,
    name: String,
}

impl HashingEmbedder {
    /// An embedder producing vectors of `dimension` elements, which must be
    /// within [`MIN_DIMENSION`]..=[`MAX_DIMENSION`].
    pub fn new(dimension: usize) -> Result<Self, MemoryError> {
        if !(MIN_DIMENSION..=MAX_DIMENSION).contains(&dimension) {
            return Err(MemoryError::InvalidDimension(dimension));
        }
        Ok(Self { dimension, name: format!("hashing-v1-{dimension}") })
    }

    /// Embeds one text: a unit vector, or the zero vector if the text has no
    /// alphanumeric characters.
    pub fn embed_one(&self, text: &str) -> Vec<f32> {
        let mut vector = vec![0.0_f32; self.dimension];
        let lowered = text.to_lowercase();
        let words: Vec<&str> = lowered.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).collect();
        for word in &words {
            self.add(&mut vector, fnv1a64(WORD_TAG, &[word.as_bytes()]), WORD_WEIGHT);
            self.add_char_grams(&mut vector, word);
        }
        for pair in words.windows(2) {
            let hash = fnv1a64(BIGRAM_TAG, &[pair[0].as_bytes(), &[BIGRAM_SEPARATOR], pair[1].as_bytes()]);
            self.add(&mut vector, hash, BIGRAM_WEIGHT);
        }
        normalize(&mut vector);
        vector
    }

    fn add_char_grams(&self, vector: &mut [f32], word: &str) {
        let marked: Vec<char> = std::iter::once('<').chain(word.chars()).chain(std::iter::once('>')).collect();
        // A word has at least one char, so `marked` has at least three.
        let grams = marked.windows(3);
        let weight = CHAR_GRAMS_WEIGHT / (grams.len() as f32).sqrt();
        let mut buffer = String::new();
        for gram in grams {
            buffer.clear();
            buffer.extend(gram);
            self.add(vector, fnv1a64(CHAR_GRAM_TAG, &[buffer.as_bytes()]), weight);
        }
    }

    fn add(&self, vector: &mut [f32], hash: u64, weight: f32) {
        let hash = mix(hash);
        // `dimension` <= MAX_DIMENSION, so both conversions are lossless.
        let bucket = (hash % self.dimension as u64) as usize;
        let sign = if hash >> 63 == 0 { 1.0 } else { -1.0 };
        vector[bucket] += sign * weight;
    }
}

#[async_trait::async_trait]
impl Embedder for HashingEmbedder {
    fn name(&self) -> &str {
        &self.name
    }

    fn dimension(&self) -> usize {
        self.dimension
    }

    /// Computed inline on the calling task: hashing is linear in the text
    /// length and far cheaper than a thread hop for typical batches; callers
    /// embedding megabytes at once should use `spawn_blocking`.
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, MemoryError> {
        Ok(texts.iter().map(|text| self.embed_one(text)).collect())
    }
}

/// FNV-1a 64 over `tag` followed by `parts`; written out here because std's
/// `DefaultHasher` may change between Rust releases.
fn fnv1a64(tag: u8, parts: &[&[u8]]) -> u64 {
    let mut hash = FNV_OFFSET_BASIS;
    for &byte in std::iter::once(&tag).chain(parts.iter().flat_map(|part| part.iter())) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    hash
}

/// MurmurHash3's 64-bit finaliser: FNV's high bits depend weakly on the last
/// bytes, and the sign comes from the top bit, so spread every input bit
/// over the whole word first.
fn mix(mut hash: u64) -> u64 {
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    hash ^ (hash >> 33)
}

/// Scales `vector` to unit length; leaves the zero vector as it is rather
/// than dividing by zero.
fn normalize(vector: &mut [f32]) {
    let norm = vector.iter().map(|x| f64::from(*x) * f64::from(*x)).sum::<f64>().sqrt();
    if norm > 0.0 {
        for x in vector.iter_mut() {
            *x = (f64::from(*x) / norm) as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn embedder() -> HashingEmbedder {
        HashingEmbedder::new(DEFAULT_DIMENSION).expect("valid dimension")
    }

    fn cosine(a: &[f32], b: &[f32]) -> f32 {
        // Inputs are unit vectors, so the dot product is the cosine.
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    fn norm(v: &[f32]) -> f32 {
        v.iter().map(|x| x * x).sum::<f32>().sqrt()
    }

    #[test]
    fn fnv1a64_matches_reference_vectors() {
        // Reference values from the FNV specification, for untagged input;
        // the tag is just the first byte.
        let untagged = |bytes: &[u8]| {
            let (first, rest) = bytes.split_first().expect("non-empty");
            fnv1a64(*first, &[rest])
        };
        assert_eq!(untagged(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(untagged(b"foobar"), 0x8594_4171_f739_67e8);
        // Splitting the input into parts must not change the hash.
        assert_eq!(fnv1a64(b'f', &[b"oo", b"", b"bar"]), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn name_and_dimension() {
        let e = embedder();
        assert_eq!(e.name(), "hashing-v1-384");
        assert_eq!(e.dimension(), 384);
        assert_eq!(HashingEmbedder::new(8).expect("valid").name(), "hashing-v1-8");
    }

    #[test]
    fn dimension_bounds() {
        for bad in [0, 7, 4097, usize::MAX] {
            match HashingEmbedder::new(bad) {
                Err(MemoryError::InvalidDimension(d)) => assert_eq!(d, bad),
                other => panic!("dimension {bad} accepted: {other:?}"),
            }
        }
        for good in [MIN_DIMENSION, DEFAULT_DIMENSION, MAX_DIMENSION] {
            assert_eq!(HashingEmbedder::new(good).expect("valid").embed_one("x").len(), good);
        }
        assert_eq!(
            MemoryError::InvalidDimension(7).to_string(),
            "invalid embedding dimension 7: must be between 8 and 4096"
        );
    }

    #[test]
    fn deterministic_across_calls_and_instances() {
        let text = "The quick brown fox jumps over the lazy dog";
        let first = embedder().embed_one(text);
        assert_eq!(first, embedder().embed_one(text));
        assert_eq!(first, embedder().clone().embed_one(text));
    }

    /// The non-zero elements of `text`'s embedding at dimension 8, rounded.
    fn nonzero_dim8(text: &str) -> Vec<(usize, String)> {
        HashingEmbedder::new(8)
            .expect("valid")
            .embed_one(text)
            .iter()
            .enumerate()
            .filter(|(_, x)| **x != 0.0)
            .map(|(i, x)| (i, format!("{x:.4}")))
            .collect()
    }

    #[test]
    fn golden_values_pin_version_1() {
        // If this fails, the vector space changed: bump the name to v2.
        let expect = |pairs: &[(usize, &str)]| -> Vec<(usize, String)> {
            pairs.iter().map(|&(i, x)| (i, x.to_owned())).collect()
        };
        assert_eq!(nonzero_dim8("a"), expect(&[(3, "-0.8944"), (7, "0.4472")]));
        assert_eq!(
            nonzero_dim8("go now"),
            expect(&[(0, "0.5119"), (2, "-0.2955"), (3, "0.2955"), (4, "0.6575"), (6, "0.3620")])
        );
    }

    #[test]
    fn unit_norm() {
        for text in ["hello", "The cat sat on the mat.", "Ünïcödé wörds 123", &"long text ".repeat(500)] {
            let v = embedder().embed_one(text);
            assert!((norm(&v) - 1.0).abs() < 1e-5, "{text}: {}", norm(&v));
        }
    }

    #[test]
    fn empty_text_is_the_zero_vector() {
        for text in ["", "   ", "?!., -- …"] {
            let v = embedder().embed_one(text);
            assert_eq!(v.len(), DEFAULT_DIMENSION);
            assert!(v.iter().all(|x| *x == 0.0 && !x.is_nan()), "{text}");
        }
    }

    #[test]
    fn shared_words_are_more_similar_than_unrelated_text() {
        let e = embedder();
        let cat = e.embed_one("the cat sat on the mat");
        let similar = e.embed_one("a cat on a mat");
        let unrelated = e.embed_one("quarterly revenue grew");
        let close = cosine(&cat, &similar);
        let far = cosine(&cat, &unrelated);
        assert!(close > 0.3, "close = {close}");
        assert!(far.abs() < 0.2, "far = {far}");
        assert!(close > far + 0.3, "close = {close}, far = {far}");
    }

    #[test]
    fn case_and_punctuation_do_not_matter() {
        let e = embedder();
        assert_eq!(e.embed_one("Café, RESUMÉ!"), e.embed_one("café resumé"));
    }

    #[test]
    fn char_grams_relate_inflections() {
        let e = embedder();
        let base = e.embed_one("deploying");
        let inflected = cosine(&base, &e.embed_one("deployed"));
        let other = cosine(&base, &e.embed_one("gardening"));
        assert!(inflected > 0.1, "inflected = {inflected}");
        assert!(inflected > other, "inflected = {inflected}, other = {other}");
    }

    #[test]
    fn word_order_matters_a_little() {
        let e = embedder();
        let a = e.embed_one("dog bites man");
        let b = e.embed_one("man bites dog");
        let similarity = cosine(&a, &b);
        assert!(similarity < 0.99 && similarity > 0.6, "{similarity}");
    }

    #[tokio::test]
    async fn embed_batch_matches_embed_one() {
        let e = embedder();
        let texts = vec!["first text".to_owned(), String::new(), "third".to_owned()];
        let vectors = e.embed(&texts).await.expect("embed");
        assert_eq!(vectors.len(), 3);
        for (text, vector) in texts.iter().zip(&vectors) {
            assert_eq!(vector, &e.embed_one(text));
        }
        assert_eq!(e.embed(&[]).await.expect("embed"), Vec::<Vec<f32>>::new());
        let as_trait: &dyn Embedder = &e;
        assert_eq!(as_trait.name(), "hashing-v1-384");
    }
}
