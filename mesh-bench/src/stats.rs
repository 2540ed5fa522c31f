//! Small statistics helpers.

/// The median of `v` (NaN when empty).
pub(crate) fn median(v: &[f64]) -> f64 {
    percentile(v, 50.0)
}

/// The `p`th percentile of `v` (NaN when empty).
pub(crate) fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let idx = ((p / 100.0) * (s.len() - 1) as f64).round() as usize;
    s[idx.min(s.len() - 1)]
}
