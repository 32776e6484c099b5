//! The counters every part reports into, read by `/metrics` and `/readyz`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sinks::SinkError;

use super::histogram::Histogram;

/// Counters of one sink.
#[derive(Debug, Default)]
pub struct SinkStats {
    /// Events delivered.
    pub delivered: AtomicU64,
    /// Transient failures retried.
    pub retries: AtomicU64,
    /// Events dead-lettered.
    pub dead: AtomicU64,
    /// Events parked in the outbox.
    pub parked: AtomicU64,
    /// Delivery latency from Odoo's commit (the server's commit time) to the sink's acknowledgement.
    pub latency: Histogram,
    /// Events put on the queue.
    pub enqueued: AtomicU64,
    /// Newest commit marker fully delivered.
    pub delivered_marker: AtomicU64,
    /// Newest commit marker enqueued.
    pub enqueued_marker: AtomicU64,
    /// Levels wait to be written again (a storefront order's hold was released) and have
    /// not been yet.
    pub rewrite_pending: std::sync::atomic::AtomicBool,
    /// Storefront orders written to Odoo whose units are still held back until the stream
    /// passes their fence.
    pub fenced: AtomicU64,
    /// Deliveries by what sent them, in the order of [`DELIVERY_CAUSES`].
    pub deliveries: [AtomicU64; 4],
    /// Since when (Unix seconds) the sink has been failing: retrying, or parked with an outbox
    /// it cannot drain; 0 while it delivers.
    pub failing_since: AtomicU64,
    /// The newest failure while failing.
    pub last_error: Mutex<Option<String>>,
}

impl SinkStats {
    /// Counters of sink `name` whose latency is exported to `metrics`.
    pub fn new(metrics: &Metrics, name: &str) -> Self {
        Self {
            latency: Histogram::exported_to(
                metrics.histogram("odoo_cdc_sink_latency_seconds", &[("sink", name)]),
            ),
            ..Self::default()
        }
    }

    /// Marks the sink failing (from now, unless it already is).
    pub fn failing(&self, e: &SinkError) {
        let now = unix_us() as u64 / 1_000_000;
        let _ =
            self.failing_since
                .compare_exchange(0, now.max(1), Ordering::SeqCst, Ordering::SeqCst);
        if let Ok(mut g) = self.last_error.lock() {
            *g = Some(e.message.clone());
        }
    }

    /// Marks the sink delivering again.
    pub fn healthy(&self) {
        if self.failing_since.swap(0, Ordering::SeqCst) != 0 {
            if let Ok(mut g) = self.last_error.lock() {
                *g = None;
            }
        }
    }

    /// For how long the sink has been failing.
    pub fn failing_for(&self) -> Option<Duration> {
        match self.failing_since.load(Ordering::SeqCst) {
            0 => None,
            t => Some(Duration::from_secs(
                (unix_us() as u64 / 1_000_000).saturating_sub(t),
            )),
        }
    }
}

/// Why a sink delivered: a change that could not wait (near sell-out), the write interval of
/// the oldest change ran out, the changes were there already (a backlog, or a sink without a
/// write interval), or levels released from a storefront order's hold were written again.
pub const DELIVERY_CAUSES: [&str; 4] = ["urgent", "interval", "queued", "released"];

/// Now, in Unix microseconds.
pub(crate) fn unix_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// Counters of the receiver.
#[derive(Debug, Default)]
pub struct ReceiverStats {
    /// Webhooks committed to the inbox.
    pub accepted: AtomicU64,
    /// Deliveries of an event already in the inbox.
    pub duplicates: AtomicU64,
    /// Refused with 401.
    pub unauthorized: AtomicU64,
    /// Refused with 400.
    pub malformed: AtomicU64,
    /// Answer time of accepted webhooks.
    pub latency: Histogram,
    /// Every answer, by HTTP status (413 from the body limit and 503 included).
    pub answers: std::sync::Mutex<std::collections::BTreeMap<u16, u64>>,
}

impl ReceiverStats {
    /// Counters whose answer time is exported to `metrics`.
    pub fn new(metrics: &Metrics) -> Self {
        Self::for_source(metrics, "shopify")
    }

    /// Counters of the receiver of `source`'s webhooks (`shopify`, `wms`).
    pub fn for_source(metrics: &Metrics, source: &'static str) -> Self {
        Self {
            latency: Histogram::exported_to(
                metrics.histogram("odoo_cdc_webhook_answer_seconds", &[("source", source)]),
            ),
            ..Self::default()
        }
    }

    /// Answers so far, by status.
    pub fn answers(&self) -> Vec<(u16, u64)> {
        self.answers
            .lock()
            .map(|m| m.iter().map(|(k, v)| (*k, *v)).collect())
            .unwrap_or_default()
    }
}

/// Counters of the Shopify fulfillment sink.
#[derive(Debug, Default)]
pub struct FulfillmentStats {
    /// Shopify fulfillments created.
    pub created: AtomicU64,
    /// Deliveries whose fulfillment was there already (a repeat after a crash or a retry).
    pub already: AtomicU64,
    /// From the warehouse's shipment webhook reaching odoo-cdc to the Shopify fulfillment.
    pub latency: Histogram,
}

impl FulfillmentStats {
    /// Counters whose latency is exported to `metrics`.
    pub fn new(metrics: &Metrics) -> Self {
        Self {
            latency: Histogram::exported_to(
                metrics.histogram("odoo_cdc_shipment_to_fulfillment_seconds", &[]),
            ),
            ..Self::default()
        }
    }
}

/// Counters of the inbox.
#[derive(Debug, Default)]
pub struct InboxStats {
    /// Webhooks applied to Odoo.
    pub applied: AtomicU64,
    /// Refused on purpose (a create after its cancel).
    pub refused: AtomicU64,
    /// Moved to the dead-letter queue.
    pub dead: AtomicU64,
    /// Transient failures (retried).
    pub retries: AtomicU64,
    /// From receipt to applied.
    pub latency: Histogram,
    /// Money that needed a rounding line, or still differs from Shopify's.
    pub writeback: Arc<WritebackStats>,
    /// Outcomes by topic.
    pub topics: std::sync::Mutex<std::collections::BTreeMap<(String, &'static str), u64>>,
}

impl InboxStats {
    /// Counts one outcome (`applied`, `refused`, `dead`, `retried`) of a row of `topic`.
    pub fn count_topic(&self, topic: &str, result: &'static str) {
        if let Ok(mut m) = self.topics.lock() {
            *m.entry((topic.to_string(), result)).or_default() += 1;
        }
    }

    /// Outcomes by (topic, result).
    pub fn by_topic(&self) -> Vec<((String, &'static str), u64)> {
        self.topics
            .lock()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), *v)).collect())
            .unwrap_or_default()
    }

    /// Counters whose apply time is exported to `metrics`.
    pub fn new(metrics: &Metrics) -> Self {
        Self {
            latency: Histogram::exported_to(
                metrics.histogram("odoo_cdc_inbox_apply_seconds", &[("target", "odoo")]),
            ),
            ..Self::default()
        }
    }
}

/// Counters of money that did not come out to the cent.
#[derive(Debug, Default)]
pub struct WritebackStats {
    /// Rounding lines added so an Odoo total equals Shopify's.
    pub rounding_lines: AtomicU64,
    /// Orders and credit notes whose Odoo total still differs from Shopify's after rounding.
    pub total_mismatches: AtomicU64,
}

/// The Prometheus registry of one pipeline, behind the `metrics` facade. Not a global
/// recorder: every [`super::Shared`] has its own, so pipelines (and tests) in one process never
/// mix their series. `/metrics` renders it.
pub struct Metrics {
    recorder: metrics_exporter_prometheus::PrometheusRecorder,
    described: std::sync::Once,
}

/// The kind of a metric family.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
    /// Observations in [`super::histogram::BOUNDS`] buckets.
    Histogram,
}

const META: metrics::Metadata<'static> =
    metrics::Metadata::new("odoo_cdc", metrics::Level::INFO, None);

fn key(name: &'static str, labels: &[(&'static str, &str)]) -> metrics::Key {
    let labels: Vec<metrics::Label> = labels
        .iter()
        .map(|(k, v)| metrics::Label::new(*k, v.to_string()))
        .collect();
    metrics::Key::from_parts(name, labels)
}

impl Default for Metrics {
    fn default() -> Self {
        let builder = metrics_exporter_prometheus::PrometheusBuilder::new();
        // BOUNDS is not empty, so this cannot fail; without it histograms would be summaries.
        let builder = match builder.set_buckets(super::histogram::BOUNDS) {
            Ok(b) => b,
            Err(_) => metrics_exporter_prometheus::PrometheusBuilder::new(),
        };
        Self {
            recorder: builder.build_recorder(),
            described: std::sync::Once::new(),
        }
    }
}

impl Metrics {
    /// The counter `name{labels}`.
    pub fn counter(&self, name: &'static str, labels: &[(&'static str, &str)]) -> metrics::Counter {
        use metrics::Recorder;
        self.recorder.register_counter(&key(name, labels), &META)
    }

    /// The gauge `name{labels}`.
    pub fn gauge(&self, name: &'static str, labels: &[(&'static str, &str)]) -> metrics::Gauge {
        use metrics::Recorder;
        self.recorder.register_gauge(&key(name, labels), &META)
    }

    /// The histogram `name{labels}`.
    pub fn histogram(
        &self,
        name: &'static str,
        labels: &[(&'static str, &str)],
    ) -> metrics::Histogram {
        use metrics::Recorder;
        self.recorder.register_histogram(&key(name, labels), &META)
    }

    /// Describes every family (its HELP line), once per registry.
    pub fn describe(&self, families: &[(&'static str, Kind, &'static str)]) {
        use metrics::Recorder;
        self.described.call_once(|| {
            for (name, kind, help) in families {
                let (name, help) = (metrics::KeyName::from_const_str(name), (*help).into());
                match kind {
                    Kind::Counter => self.recorder.describe_counter(name, None, help),
                    Kind::Gauge => self.recorder.describe_gauge(name, None, help),
                    Kind::Histogram => self.recorder.describe_histogram(name, None, help),
                }
            }
        });
    }

    /// The Prometheus text format of everything registered.
    pub fn render(&self) -> String {
        self.recorder.handle().render()
    }

    /// Folds recorded observations into the histograms (call every few seconds: they are
    /// buffered until then).
    pub fn upkeep(&self) {
        self.recorder.handle().run_upkeep();
    }
}
