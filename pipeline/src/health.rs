//! `/healthz` and `/metrics` (Prometheus text format) of a running pipeline.

use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::Router;
use fixtures::emulator::Server;

use crate::runtime::Shared;

/// Renders the metrics.
pub fn render(shared: &Shared) -> String {
    let mut out = String::new();
    let read = shared.read.load(Ordering::Relaxed);
    let confirmed = shared.confirmed.load(Ordering::Relaxed);
    let _ = writeln!(
        out,
        "# TYPE odoo_cdc_read_lsn gauge\nodoo_cdc_read_lsn {read}"
    );
    let _ = writeln!(
        out,
        "# TYPE odoo_cdc_confirmed_lsn gauge\nodoo_cdc_confirmed_lsn {confirmed}"
    );
    let _ = writeln!(
        out,
        "# TYPE odoo_cdc_unconfirmed_bytes gauge\nodoo_cdc_unconfirmed_bytes {}",
        read.saturating_sub(confirmed)
    );
    let _ = writeln!(
        out,
        "# TYPE odoo_cdc_transactions_total counter\nodoo_cdc_transactions_total {}",
        shared.transactions.load(Ordering::Relaxed)
    );
    let wal = shared.server_wal.load(Ordering::Relaxed);
    let _ = writeln!(
        out,
        "# TYPE odoo_cdc_replication_lag_bytes gauge\nodoo_cdc_replication_lag_bytes {}",
        wal.saturating_sub(confirmed)
    );
    let since = shared.behind_since_us.load(Ordering::Relaxed);
    let lag_secs = if since == 0 {
        0.0
    } else {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        now.saturating_sub(since) as f64 / 1e6
    };
    let _ = writeln!(out, "# TYPE odoo_cdc_replication_lag_seconds gauge\nodoo_cdc_replication_lag_seconds {lag_secs}");
    let stats = shared.stats.lock().map(|v| v.clone()).unwrap_or_default();
    let _ = writeln!(out, "# TYPE odoo_cdc_sink_delivered_total counter");
    for (name, s) in &stats {
        let _ = writeln!(
            out,
            "odoo_cdc_sink_delivered_total{{sink=\"{name}\"}} {}",
            s.delivered.load(Ordering::Relaxed)
        );
    }
    let _ = writeln!(out, "# TYPE odoo_cdc_sink_retries_total counter");
    for (name, s) in &stats {
        let _ = writeln!(
            out,
            "odoo_cdc_sink_retries_total{{sink=\"{name}\"}} {}",
            s.retries.load(Ordering::Relaxed)
        );
    }
    let _ = writeln!(out, "# TYPE odoo_cdc_sink_parked_total counter");
    for (name, s) in &stats {
        let _ = writeln!(
            out,
            "odoo_cdc_sink_parked_total{{sink=\"{name}\"}} {}",
            s.parked.load(Ordering::Relaxed)
        );
    }
    let _ = writeln!(out, "# TYPE odoo_cdc_sink_deliveries_total counter");
    for (name, s) in &stats {
        for (why, n) in crate::runtime::DELIVERY_CAUSES.iter().zip(&s.deliveries) {
            let _ = writeln!(
                out,
                "odoo_cdc_sink_deliveries_total{{sink=\"{name}\",cause=\"{why}\"}} {}",
                n.load(Ordering::Relaxed)
            );
        }
    }
    let _ = writeln!(out, "# TYPE odoo_cdc_sink_queue_depth gauge");
    for (name, s) in &stats {
        let done = s.delivered.load(Ordering::Relaxed)
            + s.dead.load(Ordering::Relaxed)
            + s.parked.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "odoo_cdc_sink_queue_depth{{sink=\"{name}\"}} {}",
            s.enqueued.load(Ordering::Relaxed).saturating_sub(done)
        );
    }
    let _ = writeln!(out, "# TYPE odoo_cdc_sink_latency_seconds histogram");
    for (name, s) in &stats {
        s.latency.render(
            "odoo_cdc_sink_latency_seconds",
            &format!("sink=\"{name}\""),
            &mut out,
        );
    }
    let _ = writeln!(out, "# TYPE odoo_cdc_sink_dead_lettered_total counter");
    for (name, s) in &stats {
        let _ = writeln!(
            out,
            "odoo_cdc_sink_dead_lettered_total{{sink=\"{name}\"}} {}",
            s.dead.load(Ordering::Relaxed)
        );
    }
    let writeback = shared.writeback.lock().ok().and_then(|g| g.clone());
    if let Some((r, i)) = writeback {
        let _ = writeln!(out, "# TYPE odoo_cdc_webhooks_total counter");
        for (result, n) in [
            ("accepted", &r.accepted),
            ("duplicate", &r.duplicates),
            ("unauthorized", &r.unauthorized),
            ("malformed", &r.malformed),
        ] {
            let _ = writeln!(
                out,
                "odoo_cdc_webhooks_total{{result=\"{result}\"}} {}",
                n.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(out, "# TYPE odoo_cdc_webhook_answer_seconds histogram");
        r.latency.render(
            "odoo_cdc_webhook_answer_seconds",
            "source=\"shopify\"",
            &mut out,
        );
        let _ = writeln!(out, "# TYPE odoo_cdc_inbox_total counter");
        for (result, n) in [
            ("applied", &i.applied),
            ("refused", &i.refused),
            ("dead", &i.dead),
            ("retried", &i.retries),
        ] {
            let _ = writeln!(
                out,
                "odoo_cdc_inbox_total{{result=\"{result}\"}} {}",
                n.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP odoo_cdc_writeback_rounding_lines_total Rounding lines added so an Odoo total equals Shopify's to the cent."
        );
        let _ = writeln!(
            out,
            "# TYPE odoo_cdc_writeback_rounding_lines_total counter"
        );
        let _ = writeln!(
            out,
            "odoo_cdc_writeback_rounding_lines_total {}",
            i.writeback.rounding_lines.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP odoo_cdc_writeback_total_mismatches_total Orders and credit notes whose Odoo total still differs from Shopify's (see the audit trail)."
        );
        let _ = writeln!(
            out,
            "# TYPE odoo_cdc_writeback_total_mismatches_total counter"
        );
        let _ = writeln!(
            out,
            "odoo_cdc_writeback_total_mismatches_total {}",
            i.writeback.total_mismatches.load(Ordering::Relaxed)
        );
        let _ = writeln!(out, "# TYPE odoo_cdc_inbox_apply_seconds histogram");
        i.latency
            .render("odoo_cdc_inbox_apply_seconds", "target=\"odoo\"", &mut out);
    }
    out
}

/// Serves `/healthz` and `/metrics` on 127.0.0.1:`port`.
pub async fn serve(shared: Arc<Shared>, port: u16) -> std::io::Result<Server> {
    serve_on(shared, &format!("127.0.0.1:{port}")).await
}

/// Serves `/healthz` and `/metrics` on `addr` (`runtime.metrics_listen`: its host is honoured,
/// `0.0.0.0:9090` listens on every interface for a remote Prometheus).
pub async fn serve_on(shared: Arc<Shared>, addr: &str) -> std::io::Result<Server> {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/metrics",
            get(|State(s): State<Arc<Shared>>| async move { render(&s) }),
        )
        .with_state(shared);
    Server::start_on(app, addr).await
}
