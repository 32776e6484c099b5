//! `/metrics` is a contract: dashboards and alerts rely on its names and labels. Rendered by
//! the `metrics` facade and its Prometheus exporter, it keeps exactly the series the
//! hand-written renderer had (the list below is what that renderer produced for a pipeline with
//! the three sinks and webhooks), parses as Prometheus text, and every family has HELP.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use odoo_cdc_tests::Db;
use pipeline::runtime::stats::{InboxStats, ReceiverStats, SinkStats};
use pipeline::runtime::Shared;

/// Every series of the hand-written renderer (labels sorted by name; `le` left out).
const SERIES: &[&str] = &[
    "odoo_cdc_confirmed_lsn",
    "odoo_cdc_inbox_apply_seconds_bucket{target=odoo}",
    "odoo_cdc_inbox_apply_seconds_count{target=odoo}",
    "odoo_cdc_inbox_apply_seconds_sum{target=odoo}",
    "odoo_cdc_inbox_total{result=applied}",
    "odoo_cdc_inbox_total{result=dead}",
    "odoo_cdc_inbox_total{result=refused}",
    "odoo_cdc_inbox_total{result=retried}",
    "odoo_cdc_read_lsn",
    "odoo_cdc_replication_lag_bytes",
    "odoo_cdc_replication_lag_seconds",
    "odoo_cdc_replication_up",
    "odoo_cdc_sink_dead_lettered_total{sink=accounting}",
    "odoo_cdc_sink_dead_lettered_total{sink=shopify}",
    "odoo_cdc_sink_dead_lettered_total{sink=wms}",
    "odoo_cdc_sink_delivered_total{sink=accounting}",
    "odoo_cdc_sink_delivered_total{sink=shopify}",
    "odoo_cdc_sink_delivered_total{sink=wms}",
    "odoo_cdc_sink_deliveries_total{cause=interval,sink=accounting}",
    "odoo_cdc_sink_deliveries_total{cause=interval,sink=shopify}",
    "odoo_cdc_sink_deliveries_total{cause=interval,sink=wms}",
    "odoo_cdc_sink_deliveries_total{cause=queued,sink=accounting}",
    "odoo_cdc_sink_deliveries_total{cause=queued,sink=shopify}",
    "odoo_cdc_sink_deliveries_total{cause=queued,sink=wms}",
    "odoo_cdc_sink_deliveries_total{cause=released,sink=accounting}",
    "odoo_cdc_sink_deliveries_total{cause=released,sink=shopify}",
    "odoo_cdc_sink_deliveries_total{cause=released,sink=wms}",
    "odoo_cdc_sink_deliveries_total{cause=urgent,sink=accounting}",
    "odoo_cdc_sink_deliveries_total{cause=urgent,sink=shopify}",
    "odoo_cdc_sink_deliveries_total{cause=urgent,sink=wms}",
    "odoo_cdc_sink_failing_seconds{sink=accounting}",
    "odoo_cdc_sink_failing_seconds{sink=shopify}",
    "odoo_cdc_sink_failing_seconds{sink=wms}",
    "odoo_cdc_sink_latency_seconds_bucket{sink=accounting}",
    "odoo_cdc_sink_latency_seconds_bucket{sink=shopify}",
    "odoo_cdc_sink_latency_seconds_bucket{sink=wms}",
    "odoo_cdc_sink_latency_seconds_count{sink=accounting}",
    "odoo_cdc_sink_latency_seconds_count{sink=shopify}",
    "odoo_cdc_sink_latency_seconds_count{sink=wms}",
    "odoo_cdc_sink_latency_seconds_sum{sink=accounting}",
    "odoo_cdc_sink_latency_seconds_sum{sink=shopify}",
    "odoo_cdc_sink_latency_seconds_sum{sink=wms}",
    "odoo_cdc_sink_parked_total{sink=accounting}",
    "odoo_cdc_sink_parked_total{sink=shopify}",
    "odoo_cdc_sink_parked_total{sink=wms}",
    "odoo_cdc_sink_queue_depth{sink=accounting}",
    "odoo_cdc_sink_queue_depth{sink=shopify}",
    "odoo_cdc_sink_queue_depth{sink=wms}",
    "odoo_cdc_sink_retries_total{sink=accounting}",
    "odoo_cdc_sink_retries_total{sink=shopify}",
    "odoo_cdc_sink_retries_total{sink=wms}",
    "odoo_cdc_state_reconnects_total",
    "odoo_cdc_state_up",
    "odoo_cdc_transactions_total",
    "odoo_cdc_unconfirmed_bytes",
    "odoo_cdc_webhook_answer_seconds_bucket{source=shopify}",
    "odoo_cdc_webhook_answer_seconds_count{source=shopify}",
    "odoo_cdc_webhook_answer_seconds_sum{source=shopify}",
    "odoo_cdc_webhook_responses_total{status=200}",
    "odoo_cdc_webhooks_total{result=accepted}",
    "odoo_cdc_webhooks_total{result=duplicate}",
    "odoo_cdc_webhooks_total{result=malformed}",
    "odoo_cdc_webhooks_total{result=unauthorized}",
    "odoo_cdc_writeback_rounding_lines_total",
    "odoo_cdc_writeback_total_mismatches_total",
];

#[tokio::test]
async fn metrics_keep_their_names_and_labels_and_every_family_has_help() {
    let db = Db::start();
    let source: cdc::SourceConfig = db.url().parse().expect("url");
    let state = pipeline::state::StateDb::connect(&source)
        .await
        .expect("state");
    let shared = Arc::new(Shared {
        state: Some(state),
        ..Shared::default()
    });
    for sink in ["shopify", "wms", "accounting"] {
        let stats = Arc::new(SinkStats::new(&shared.metrics, sink));
        stats.latency.observe(0.2);
        stats.delivered.fetch_add(1, Ordering::Relaxed);
        shared.stats.lock().unwrap().push((sink, stats));
    }
    let receiver = Arc::new(ReceiverStats::new(&shared.metrics));
    receiver.latency.observe(0.01);
    receiver.answers.lock().unwrap().insert(200, 1);
    let inbox = Arc::new(InboxStats::new(&shared.metrics));
    inbox.latency.observe(0.5);
    *shared.writeback.lock().unwrap() = Some((receiver, inbox));
    shared.set_replication(None);
    shared.server_wal.store(2_000, Ordering::SeqCst);
    shared.confirmed.store(1_000, Ordering::SeqCst);
    shared.read.store(1_500, Ordering::SeqCst);
    shared.metrics.upkeep();

    let text = pipeline::ops::health::render(&shared);
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("Prometheus text");
    let mut got = BTreeSet::new();
    for s in &scrape.samples {
        let name = match s.value {
            prometheus_parse::Value::Histogram(_) => format!("{}_bucket", s.metric),
            _ => s.metric.clone(),
        };
        let mut labels: Vec<String> = s
            .labels
            .iter()
            .filter(|(k, _)| k.as_str() != "le")
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        labels.sort();
        got.insert(if labels.is_empty() {
            name
        } else {
            format!("{name}{{{}}}", labels.join(","))
        });
    }
    let want: BTreeSet<String> = SERIES.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        got.difference(&want).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "series that are new"
    );
    assert_eq!(
        want.difference(&got).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "series that went missing:\n{text}"
    );
    // Every family has its HELP line.
    for s in &want {
        let family = s.split('{').next().unwrap_or(s);
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|x| {
                family
                    .strip_suffix(x)
                    .filter(|_| family.contains("_seconds_"))
            })
            .unwrap_or(family);
        assert!(
            text.contains(&format!("# HELP {family} ")),
            "no HELP for {family}:\n{text}"
        );
    }
    // Histograms keep their buckets.
    assert!(
        text.contains("odoo_cdc_sink_latency_seconds_bucket{sink=\"wms\",le=\"0.25\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("odoo_cdc_sink_latency_seconds_bucket{sink=\"wms\",le=\"0.1\"} 0"),
        "{text}"
    );
    assert!(
        text.contains("odoo_cdc_replication_lag_bytes 1000"),
        "{text}"
    );
}
