//! Flag-value parsers shared by the configs that derive `clap::Args` (behind each
//! crate's `cli` feature): counts with ranges, finite numbers, library enums by their
//! serde names. A value outside its range is a clap error naming the flag, never a
//! panic or a silent fallback.

use clap::builder::{RangedU64ValueParser, TypedValueParser};

/// A library enum by its serde name (the names `--help` lists), so flags need no
/// mirror enums: `value_parser = named::<LossKind>(&["uae", "kl"])`.
pub fn named<T>(names: &'static [&'static str]) -> impl TypedValueParser<Value = T>
where
    T: serde::de::DeserializeOwned + Clone + Send + Sync + 'static,
{
    clap::builder::PossibleValuesParser::new(names)
        .try_map(|s: String| serde_json::from_value::<T>(serde_json::Value::String(s)))
}

/// A count of at least 1 (`--batch`, `--epochs`, ...): 0 would divide by zero, loop
/// forever or silently mean something else. [`count_in`]`(0, ..)` where 0 means none.
pub fn count() -> RangedU64ValueParser<usize> {
    count_in(1, u32::MAX as u64)
}

/// A count in `lo..=hi`.
pub fn count_in(lo: u64, hi: u64) -> RangedU64ValueParser<usize> {
    RangedU64ValueParser::<usize>::new().range(lo..=hi)
}

/// A `u64` in `lo..=hi` (milliseconds, seconds, steps).
pub fn u64_in(lo: u64, hi: u64) -> RangedU64ValueParser<u64> {
    RangedU64ValueParser::<u64>::new().range(lo..=hi)
}

/// A finite number in `[lo, hi]`, `lo` itself allowed or not.
pub fn float_in(s: &str, lo: f32, lo_ok: bool, hi: f32) -> Result<f32, String> {
    let v: f32 = s.parse().map_err(|e| format!("`{s}`: {e}"))?;
    let above = if lo_ok { v >= lo } else { v > lo };
    if v.is_finite() && above && v <= hi {
        Ok(v)
    } else {
        let op = if lo_ok { ">=" } else { ">" };
        Err(format!(
            "`{s}` must be a finite number {op} {lo} and <= {hi}"
        ))
    }
}

/// A finite number > 0 (learning rates, temperatures, GFLOP/s).
pub fn positive(s: &str) -> Result<f32, String> {
    float_in(s, 0.0, false, f32::MAX)
}

/// A finite number in [0, 1].
pub fn unit_interval(s: &str) -> Result<f32, String> {
    float_in(s, 0.0, true, 1.0)
}

/// Any finite number (utilities in nats may be negative).
pub fn finite(s: &str) -> Result<f32, String> {
    match s.parse::<f32>() {
        Ok(v) if v.is_finite() => Ok(v),
        Ok(_) => Err(format!("`{s}` must be a finite number")),
        Err(e) => Err(format!("`{s}`: {e}")),
    }
}

/// Any finite number, as f64 (thresholds compared with f64 values as given).
pub fn finite_f64(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        Ok(_) => Err(format!("`{s}` must be a finite number")),
        Err(e) => Err(format!("`{s}`: {e}")),
    }
}

/// A number in [0, 1], as f64 (probabilities).
pub fn unit_interval_f64(s: &str) -> Result<f64, String> {
    match finite_f64(s)? {
        v if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("`{s}` must be a number in [0, 1]")),
    }
}

/// A finite number >= 0.
pub fn non_negative(s: &str) -> Result<f32, String> {
    float_in(s, 0.0, true, f32::MAX)
}

/// Seconds, > 0 and at most a day (timeouts).
pub fn seconds(s: &str) -> Result<f32, String> {
    float_in(s, 0.0, false, 86_400.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_refuse_what_is_outside() {
        assert_eq!(positive("0.5"), Ok(0.5));
        for bad in ["0", "-1", "nan", "inf", "x", ""] {
            assert!(positive(bad).is_err(), "{bad}");
        }
        assert!(unit_interval("1").is_ok() && unit_interval("1.01").is_err());
        assert!(finite("-3").is_ok() && finite("NaN").is_err());
        assert!(non_negative("0").is_ok() && non_negative("-0.1").is_err());
        assert!(seconds("86400").is_ok() && seconds("86401").is_err());
    }
}
