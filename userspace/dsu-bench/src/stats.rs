//! Repeated trials and their median.

use serde::Serialize;
use std::time::Instant;

/// The trials of one measurement: every sample (nanoseconds) and the median.
#[derive(Serialize, Clone, Debug, Default)]
pub struct Samples {
    /// Median of `ns`.
    pub median_ns: f64,
    /// Smallest sample.
    pub min_ns: f64,
    /// Largest sample.
    pub max_ns: f64,
    /// Every sample, in the order taken.
    pub ns: Vec<f64>,
}

impl Samples {
    /// Adds one sample.
    pub fn push(&mut self, ns: f64) {
        self.ns.push(ns);
        self.median_ns = median(&self.ns);
        self.min_ns = self.ns.iter().copied().fold(f64::INFINITY, f64::min);
        self.max_ns = self.ns.iter().copied().fold(0.0, f64::max);
    }
}

/// Median of the values (mean of the two middle ones for an even count); 0 when empty.
pub fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// A monotonic stopwatch in nanoseconds.
pub struct Clock(Instant);

impl Clock {
    /// Starts now.
    pub fn start() -> Self {
        Clock(Instant::now())
    }
    /// Nanoseconds since the start.
    pub fn ns(&self) -> f64 {
        self.0.elapsed().as_nanos() as f64
    }
}

/// The smallest non-zero step of the clock, in nanoseconds (its resolution in practice),
/// and what one reading costs.
pub fn clock_resolution() -> (f64, f64) {
    let mut step = f64::INFINITY;
    for _ in 0..1000 {
        let a = Instant::now();
        let mut b = Instant::now();
        while b == a {
            b = Instant::now();
        }
        step = step.min((b - a).as_nanos() as f64);
    }
    let n = 10_000;
    let c = Instant::now();
    for _ in 0..n {
        std::hint::black_box(Instant::now());
    }
    (step, c.elapsed().as_nanos() as f64 / n as f64)
}

/// Formats nanoseconds with a unit that keeps three significant digits or so.
pub fn fmt_ns(ns: f64) -> String {
    if ns >= 1e9 {
        format!("{:.2} s", ns / 1e9)
    } else if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.1} µs", ns / 1e3)
    } else {
        format!("{ns:.1} ns")
    }
}

/// Formats a byte count as KiB/MiB.
pub fn fmt_size(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{} KiB", bytes >> 10)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_odd_even_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
    }

    #[test]
    fn samples_track_median_min_max() {
        let mut s = Samples::default();
        for x in [5.0, 1.0, 9.0] {
            s.push(x);
        }
        assert_eq!((s.median_ns, s.min_ns, s.max_ns), (5.0, 1.0, 9.0));
        assert_eq!(s.ns, vec![5.0, 1.0, 9.0]);
    }

    #[test]
    fn formats() {
        assert_eq!(fmt_ns(12.34), "12.3 ns");
        assert_eq!(fmt_ns(1234.0), "1.2 µs");
        assert_eq!(fmt_ns(2.5e6), "2.50 ms");
        assert_eq!(fmt_size(4096), "4 KiB");
        assert_eq!(fmt_size(256 << 20), "256 MiB");
    }
}
