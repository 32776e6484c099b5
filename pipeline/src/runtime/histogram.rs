//! A fixed-bucket latency histogram: constant memory however long the pipeline runs, rendered
//! in Prometheus' format, with percentile estimates for summaries.

use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds of the buckets, in seconds.
pub const BOUNDS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0,
    30.0, 60.0,
];

/// Counts per bucket (the last one is +Inf), sum and count, for quantiles read in process (the
/// demo's summary); every observation also goes to the exported histogram, when there is one.
pub struct Histogram {
    buckets: Vec<AtomicU64>,
    sum_us: AtomicU64,
    count: AtomicU64,
    exported: Option<metrics::Histogram>,
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histogram")
            .field("count", &self.count())
            .finish()
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            buckets: (0..=BOUNDS.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_us: AtomicU64::new(0),
            count: AtomicU64::new(0),
            exported: None,
        }
    }
}

impl Histogram {
    /// A histogram whose observations also go to `exported` (rendered on `/metrics`).
    pub fn exported_to(exported: metrics::Histogram) -> Self {
        Self {
            exported: Some(exported),
            ..Self::default()
        }
    }

    /// Records one observation in seconds.
    pub fn observe(&self, secs: f64) {
        let i = BOUNDS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BOUNDS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us
            .fetch_add((secs * 1e6) as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        if let Some(e) = &self.exported {
            e.record(secs);
        }
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// The upper bound of the bucket holding the `p` quantile (seconds); +Inf as 2x the last.
    pub fn quantile(&self, p: f64) -> f64 {
        let total = self.count();
        if total == 0 {
            return 0.0;
        }
        let want = (p * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            seen += b.load(Ordering::Relaxed);
            if seen >= want {
                return BOUNDS
                    .get(i)
                    .copied()
                    .unwrap_or(BOUNDS[BOUNDS.len() - 1] * 2.0);
            }
        }
        BOUNDS[BOUNDS.len() - 1] * 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_quantiles_and_rendering() {
        let metrics = crate::runtime::stats::Metrics::default();
        let h = Histogram::exported_to(metrics.histogram("lat", &[("sink", "wms")]));
        for _ in 0..98 {
            h.observe(0.004);
        }
        h.observe(0.3);
        h.observe(100.0);
        assert_eq!(h.count(), 100);
        assert_eq!(h.quantile(0.5), 0.005);
        assert_eq!(h.quantile(0.99), 0.3);
        assert_eq!(h.quantile(1.0), 120.0);
        metrics.upkeep();
        let out = metrics.render();
        assert!(out.contains("lat_bucket{sink=\"wms\",le=\"0.005\"} 98"));
        assert!(out.contains("lat_bucket{sink=\"wms\",le=\"+Inf\"} 100"));
        assert!(out.contains("lat_count{sink=\"wms\"} 100"));
    }
}
