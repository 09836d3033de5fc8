//! Small vector helpers shared by the index, the store and the benchmark.
//!
//! Invariant: every vector that reaches an index or a `memory_items.embedding` column has gone
//! through [`normalize`], so an inner product is a cosine similarity.

use crate::error::MemoryError;

/// Scales `vector` to unit L2 length; leaves the zero vector (and vectors with non-finite
/// norms) as they are rather than dividing by zero or spreading NaN.
pub fn normalize(vector: &mut [f32]) {
    let norm = vector.iter().map(|x| f64::from(*x) * f64::from(*x)).sum::<f64>().sqrt();
    if norm > 0.0 && norm.is_finite() {
        for x in vector.iter_mut() {
            *x = (f64::from(*x) / norm) as f32;
        }
    }
}

/// The inner product of two vectors of equal length.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Checks that `vector` has `expected` elements and only finite values.
pub fn check(vector: &[f32], expected: usize) -> Result<(), MemoryError> {
    if vector.len() != expected {
        return Err(MemoryError::DimensionMismatch { expected, actual: vector.len() });
    }
    if vector.iter().any(|x| !x.is_finite()) {
        return Err(MemoryError::Backend("embedding contains a NaN or infinite value".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_makes_unit_vectors_and_keeps_zero() {
        let mut v = vec![3.0, 4.0];
        normalize(&mut v);
        assert!((v[0] - 0.6).abs() < 1e-6 && (v[1] - 0.8).abs() < 1e-6, "{v:?}");
        let mut zero = vec![0.0; 4];
        normalize(&mut zero);
        assert_eq!(zero, vec![0.0; 4]);
    }

    #[test]
    fn dot_and_check() {
        assert_eq!(dot(&[1.0, 2.0], &[3.0, 4.0]), 11.0);
        assert!(check(&[1.0, 0.0], 2).is_ok());
        assert!(matches!(check(&[1.0], 2), Err(MemoryError::DimensionMismatch { expected: 2, actual: 1 })));
        assert!(check(&[f32::NAN, 0.0], 2).is_err());
    }
}
