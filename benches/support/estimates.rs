//! Reads back criterion's own results, so a bench can print its cases as ratios of each
//! other after the run.

use std::path::PathBuf;

/// Criterion's point estimate (mean, in ns) for `case` of `group` in the last run, or
/// `None` if that case did not run.
pub(crate) fn mean_ns(group: &str, case: &str) -> Option<f64> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    let path = target
        .join("criterion")
        .join(group)
        .join(case)
        .join("new/estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    json["mean"]["point_estimate"].as_f64()
}
