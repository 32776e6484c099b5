//! The Now page's last hour: the pipeline's own counters sampled every few seconds on the
//! server (nothing fetched by the browser), drawn as SVG.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::runtime::Shared;

/// How often a sample is taken.
pub const EVERY: Duration = Duration::from_secs(5);
/// Samples kept: one hour.
const KEEP: usize = 720;

#[derive(Debug, Clone, Copy)]
struct Sample {
    at: f64,
    transactions: u64,
    delivered: u64,
    lag_secs: f64,
    lag_bytes: u64,
}

/// The samples of the last hour.
#[derive(Default)]
pub struct Series {
    samples: Mutex<VecDeque<Sample>>,
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl Series {
    /// Takes one sample of `shared`'s counters.
    pub fn sample(&self, shared: &Shared) {
        let delivered = shared.stats.lock().map_or(0, |v| {
            v.iter()
                .map(|(_, s)| s.delivered.load(Ordering::Relaxed))
                .sum()
        });
        let confirmed = shared.confirmed.load(Ordering::Relaxed);
        let wal = shared.server_wal.load(Ordering::Relaxed);
        let since = shared.behind_since_us.load(Ordering::Relaxed);
        let now = now_secs();
        let lag_secs = if since == 0 {
            0.0
        } else {
            (now - since as f64 / 1e6).max(0.0)
        };
        let s = Sample {
            at: now,
            transactions: shared.transactions.load(Ordering::Relaxed),
            delivered,
            lag_secs,
            lag_bytes: if confirmed > 0 {
                wal.saturating_sub(confirmed)
            } else {
                0
            },
        };
        if let Ok(mut g) = self.samples.lock() {
            g.push_back(s);
            while g.len() > KEEP {
                g.pop_front();
            }
        }
    }

    /// Samples every [`EVERY`] until `shared` stops.
    pub fn start(self: &Arc<Self>, shared: Arc<Shared>) {
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                me.sample(&shared);
                tokio::time::sleep(EVERY).await;
                if shared.stopping.load(Ordering::SeqCst) {
                    return;
                }
            }
        });
    }

    /// (seconds ago, value) points of: transactions per second, events delivered per second,
    /// replication lag in seconds, lag in bytes.
    pub fn points(&self) -> [Vec<(f64, f64)>; 4] {
        let g = self
            .samples
            .lock()
            .map(|g| g.iter().copied().collect::<Vec<_>>())
            .unwrap_or_default();
        let now = now_secs();
        let mut out: [Vec<(f64, f64)>; 4] = Default::default();
        for w in g.windows(2) {
            let dt = (w[1].at - w[0].at).max(0.001);
            let ago = now - w[1].at;
            out[0].push((
                ago,
                w[1].transactions.saturating_sub(w[0].transactions) as f64 / dt,
            ));
            out[1].push((
                ago,
                w[1].delivered.saturating_sub(w[0].delivered) as f64 / dt,
            ));
        }
        for s in &g {
            out[2].push((now - s.at, s.lag_secs));
            out[3].push((now - s.at, s.lag_bytes as f64));
        }
        out
    }
}

/// A line chart of `points` (seconds ago, value) over the last hour: `title`, the newest and
/// highest values, `unit`.
pub fn svg(title: &str, unit: &str, points: &[(f64, f64)]) -> String {
    const W: f64 = 560.0;
    const H: f64 = 110.0;
    let max = points.iter().map(|p| p.1).fold(0.0_f64, f64::max);
    let top = if max > 0.0 { max * 1.1 } else { 1.0 };
    let line: Vec<String> = points
        .iter()
        .map(|(ago, v)| {
            let x = W - (ago / 3600.0).clamp(0.0, 1.0) * W;
            let y = H - v / top * H;
            format!("{x:.1},{y:.1}")
        })
        .collect();
    let newest = points.last().map_or(0.0, |p| p.1);
    // A band under the plot for the time axis; the scale's top and middle on the left.
    const AXIS: f64 = 14.0;
    let full = H + AXIS;
    let mid = H / 2.0;
    format!(
        "<figure class=\"chart\"><figcaption>{} — now {} {}, peak {} {} (last hour)</figcaption>\
         <svg viewBox=\"0 0 {W} {full}\" width=\"{W}\" height=\"{full}\" role=\"img\" aria-label=\"{}\">\
         <rect x=\"0\" y=\"0\" width=\"{W}\" height=\"{H}\" class=\"bg\"/>\
         <line x1=\"0\" y1=\"{mid}\" x2=\"{W}\" y2=\"{mid}\" class=\"grid\"/>\
         <line x1=\"{half}\" y1=\"0\" x2=\"{half}\" y2=\"{H}\" class=\"grid\"/>\
         <text x=\"3\" y=\"11\" class=\"axis\">{} {}</text>\
         <text x=\"3\" y=\"{mid_text}\" class=\"axis\">{} {}</text>\
         <text x=\"0\" y=\"{label_y}\" class=\"axis\">60 min ago</text>\
         <text x=\"{half}\" y=\"{label_y}\" class=\"axis\" text-anchor=\"middle\">30 min</text>\
         <text x=\"{W}\" y=\"{label_y}\" class=\"axis\" text-anchor=\"end\">now</text>\
         <polyline fill=\"none\" class=\"line\" points=\"{}\"/></svg></figure>",
        super::html::esc(title),
        num(newest),
        unit,
        num(max),
        unit,
        super::html::esc(title),
        num(top),
        unit,
        num(top / 2.0),
        unit,
        line.join(" "),
        half = W / 2.0,
        mid_text = mid - 3.0,
        label_y = full - 3.0,
    )
}

fn num(v: f64) -> String {
    if v >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_come_from_counter_deltas_and_the_chart_scales_to_its_peak() {
        let series = Series::default();
        let shared = Shared::default();
        series.sample(&shared);
        shared.transactions.store(50, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(100));
        series.sample(&shared);
        let [tps, delivered, lag, _] = series.points();
        assert_eq!(tps.len(), 1);
        assert!(tps[0].1 > 100.0, "{tps:?}");
        assert_eq!(delivered[0].1, 0.0);
        assert_eq!(lag.len(), 2);
        let s = svg("Transactions", "/s", &[(60.0, 2.0), (0.0, 4.0)]);
        assert!(s.contains("now 4 /s, peak 4 /s"), "{s}");
        // The newest point is at the right edge, the peak near the top; the scale's top is
        // labelled, and the time axis runs from an hour ago to now.
        assert!(s.contains("560.0,10.0"), "{s}");
        assert!(s.contains(">4.40 /s</text>"), "{s}");
        assert!(
            s.contains(">60 min ago</text>") && s.contains(">now</text>"),
            "{s}"
        );
    }
}
