//! Percentiles of latencies, shared by the benchmark and the suite reports.

use serde::{Deserialize, Serialize};

/// Nearest-rank percentile (`p` in 0..=100) of `sorted` (ascending); 0 when empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Summary of a set of latencies, in milliseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Percentiles {
    pub count: usize,
    pub min: f64,
    pub mean: f64,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

impl Percentiles {
    /// The summary of `values` in any order; non-finite values are left out.
    pub fn of(values: &[f64]) -> Self {
        let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        sorted.sort_by(f64::total_cmp);
        if sorted.is_empty() {
            return Self::default();
        }
        Self {
            count: sorted.len(),
            min: sorted[0],
            mean: sorted.iter().sum::<f64>() / sorted.len() as f64,
            p50: percentile(&sorted, 50.0),
            p95: percentile(&sorted, 95.0),
            p99: percentile(&sorted, 99.0),
            max: sorted[sorted.len() - 1],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&values, 50.0), 50.0);
        assert_eq!(percentile(&values, 95.0), 95.0);
        assert_eq!(percentile(&values, 99.0), 99.0);
        assert_eq!(percentile(&values, 100.0), 100.0);
        assert_eq!(percentile(&values, 0.0), 1.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
        // Unsorted input with a non-finite value: sorted, the NaN left out.
        let p = Percentiles::of(&[30.0, 10.0, f64::NAN, 20.0, 40.0]);
        assert_eq!(p, Percentiles { count: 4, min: 10.0, mean: 25.0, p50: 20.0, p95: 40.0, p99: 40.0, max: 40.0 });
        assert_eq!(Percentiles::of(&[]), Percentiles::default());
    }

    #[test]
    fn small_samples_round_up_to_a_real_value() {
        // Nearest rank never interpolates: p95 of three values is the largest, p50 the middle.
        let p = Percentiles::of(&[300.0, 100.0, 200.0]);
        assert_eq!((p.p50, p.p95), (200.0, 300.0));
        let p = Percentiles::of(&[5.0, 1.0]);
        assert_eq!((p.p50, p.p95), (1.0, 5.0));
        let twenty: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(Percentiles::of(&twenty).p95, 19.0);
    }
}
