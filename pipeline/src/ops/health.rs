//! `/healthz` (alive), `/readyz` (everything that must work, works) and `/metrics`
//! (Prometheus text format, every family with its HELP and TYPE) of a running pipeline.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::http::Served;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::runtime::stats::Kind;
use crate::runtime::Shared;

/// Every metric family: name, kind, HELP text. Names and labels are a contract (dashboards and
/// alerts rely on them).
const FAMILIES: &[(&str, Kind, &str)] = &[
    ("odoo_cdc_read_lsn", Kind::Gauge, "Commit end of the newest transaction read from the slot."),
    ("odoo_cdc_confirmed_lsn", Kind::Gauge, "Position confirmed to PostgreSQL (the slot's confirmed_flush_lsn)."),
    ("odoo_cdc_unconfirmed_bytes", Kind::Gauge, "WAL read but not yet confirmed (waiting for a sink)."),
    ("odoo_cdc_transactions_total", Kind::Counter, "Transactions read from the slot."),
    ("odoo_cdc_replication_lag_bytes", Kind::Gauge, "Server WAL position minus the confirmed position."),
    ("odoo_cdc_replication_lag_seconds", Kind::Gauge, "How long the oldest transaction read but not confirmed has waited (0 when caught up)."),
    ("odoo_cdc_replication_up", Kind::Gauge, "1 while the replication stream is connected."),
    ("odoo_cdc_state_up", Kind::Gauge, "1 while the connection to odoo-cdc's state database works."),
    ("odoo_cdc_state_reconnects_total", Kind::Counter, "Connections to odoo-cdc's state database replaced after one was lost."),
    ("odoo_cdc_sink_delivered_total", Kind::Counter, "Events a sink acknowledged."),
    ("odoo_cdc_sink_retries_total", Kind::Counter, "Transient delivery failures retried."),
    ("odoo_cdc_sink_parked_total", Kind::Counter, "Events parked in the outbox (sink down past max_hold)."),
    ("odoo_cdc_sink_deliveries_total", Kind::Counter, "Deliveries by what sent them (urgent, interval, queued, released)."),
    ("odoo_cdc_sink_queue_depth", Kind::Gauge, "Events queued for a sink and not yet delivered, dead-lettered or parked."),
    ("odoo_cdc_sink_failing_seconds", Kind::Gauge, "How long a sink has been failing (0 while it delivers)."),
    ("odoo_cdc_sink_latency_seconds", Kind::Histogram, "From Odoo's commit to the sink's acknowledgement."),
    ("odoo_cdc_sink_dead_lettered_total", Kind::Counter, "Events a sink refused for good (see `odoo-cdc dlq list`)."),
    ("odoo_cdc_webhooks_total", Kind::Counter, "Shopify webhooks by result."),
    ("odoo_cdc_webhook_responses_total", Kind::Counter, "Every answer of the webhook receiver, by HTTP status (413 and 503 included)."),
    ("odoo_cdc_webhook_answer_seconds", Kind::Histogram, "Time to commit an accepted webhook and answer 200."),
    ("odoo_cdc_inbox_total", Kind::Counter, "Inbox rows by what applying them came to."),
    ("odoo_cdc_writeback_rounding_lines_total", Kind::Counter, "Rounding lines added so an Odoo total equals Shopify's to the cent."),
    ("odoo_cdc_writeback_total_mismatches_total", Kind::Counter, "Orders and credit notes whose Odoo total still differs from Shopify's (see the audit trail)."),
    ("odoo_cdc_inbox_apply_seconds", Kind::Histogram, "From a webhook's receipt to its effect in Odoo."),
    ("odoo_cdc_inbox_topic_total", Kind::Counter, "Inbox rows by topic (Shopify's and the warehouse's) and what applying them came to."),
    ("odoo_cdc_wms_webhooks_total", Kind::Counter, "Warehouse webhooks by result."),
    ("odoo_cdc_fulfillments_total", Kind::Counter, "Validated deliveries of Shopify orders by result: a fulfillment created, or one there already."),
    ("odoo_cdc_shipment_to_fulfillment_seconds", Kind::Histogram, "From the warehouse's shipment webhook reaching odoo-cdc to the Shopify fulfillment."),
    ("odoo_cdc_reconcile_runs_total", Kind::Counter, "Scheduled reconciliation runs by result (ok, failed)."),
    ("odoo_cdc_reconcile_drifts", Kind::Gauge, "Drifts the last scheduled reconciliation left open, by system."),
];

/// Renders the metrics: the counters the pipeline keeps are set into its registry (histograms
/// are recorded there as they are observed), which renders them with their HELP lines.
pub fn render(shared: &Shared) -> String {
    let m = &shared.metrics;
    m.describe(FAMILIES);
    let gauge = |name: &'static str, labels: &[(&'static str, &str)], v: f64| {
        m.gauge(name, labels).set(v);
    };
    let counter = |name: &'static str, labels: &[(&'static str, &str)], v: u64| {
        m.counter(name, labels).absolute(v);
    };
    let read = shared.read.load(Ordering::Relaxed);
    let confirmed = shared.confirmed.load(Ordering::Relaxed);
    gauge("odoo_cdc_read_lsn", &[], read as f64);
    gauge("odoo_cdc_confirmed_lsn", &[], confirmed as f64);
    gauge(
        "odoo_cdc_unconfirmed_bytes",
        &[],
        read.saturating_sub(confirmed) as f64,
    );
    counter(
        "odoo_cdc_transactions_total",
        &[],
        shared.transactions.load(Ordering::Relaxed),
    );
    // Lag is absent until measured: before the server has reported its WAL position and the
    // slot's position is known, any number would be false.
    let wal = shared.server_wal.load(Ordering::Relaxed);
    if wal > 0 && confirmed > 0 {
        gauge(
            "odoo_cdc_replication_lag_bytes",
            &[],
            wal.saturating_sub(confirmed) as f64,
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
        gauge("odoo_cdc_replication_lag_seconds", &[], lag_secs);
    }
    let streaming = matches!(
        shared.replication.lock().ok().as_deref(),
        Some(Some(Ok(())))
    );
    gauge(
        "odoo_cdc_replication_up",
        &[],
        f64::from(u8::from(streaming)),
    );
    if let Some(state) = &shared.state {
        gauge("odoo_cdc_state_up", &[], f64::from(u8::from(state.is_up())));
        counter("odoo_cdc_state_reconnects_total", &[], state.reconnects());
    }
    let stats = shared.stats.lock().map(|v| v.clone()).unwrap_or_default();
    for (sink, s) in &stats {
        let l = [("sink", *sink)];
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        counter("odoo_cdc_sink_delivered_total", &l, load(&s.delivered));
        counter("odoo_cdc_sink_retries_total", &l, load(&s.retries));
        counter("odoo_cdc_sink_parked_total", &l, load(&s.parked));
        for (why, n) in crate::runtime::DELIVERY_CAUSES.iter().zip(&s.deliveries) {
            counter(
                "odoo_cdc_sink_deliveries_total",
                &[("sink", *sink), ("cause", *why)],
                load(n),
            );
        }
        let done = load(&s.delivered) + load(&s.dead) + load(&s.parked);
        gauge(
            "odoo_cdc_sink_queue_depth",
            &l,
            load(&s.enqueued).saturating_sub(done) as f64,
        );
        gauge(
            "odoo_cdc_sink_failing_seconds",
            &l,
            s.failing_for().map_or(0, |d| d.as_secs()) as f64,
        );
        counter("odoo_cdc_sink_dead_lettered_total", &l, load(&s.dead));
    }
    let writeback = shared.writeback.lock().ok().and_then(|g| g.clone());
    if let Some((r, i)) = writeback {
        for (result, n) in [
            ("accepted", &r.accepted),
            ("duplicate", &r.duplicates),
            ("unauthorized", &r.unauthorized),
            ("malformed", &r.malformed),
        ] {
            counter(
                "odoo_cdc_webhooks_total",
                &[("result", result)],
                n.load(Ordering::Relaxed),
            );
        }
        for (status, n) in r.answers() {
            counter(
                "odoo_cdc_webhook_responses_total",
                &[("status", &status.to_string())],
                n,
            );
        }
        for (result, n) in [
            ("applied", &i.applied),
            ("refused", &i.refused),
            ("dead", &i.dead),
            ("retried", &i.retries),
        ] {
            counter(
                "odoo_cdc_inbox_total",
                &[("result", result)],
                n.load(Ordering::Relaxed),
            );
        }
        for ((topic, result), n) in i.by_topic() {
            counter(
                "odoo_cdc_inbox_topic_total",
                &[("topic", &topic), ("result", result)],
                n,
            );
        }
        counter(
            "odoo_cdc_writeback_rounding_lines_total",
            &[],
            i.writeback.rounding_lines.load(Ordering::Relaxed),
        );
        counter(
            "odoo_cdc_writeback_total_mismatches_total",
            &[],
            i.writeback.total_mismatches.load(Ordering::Relaxed),
        );
    }
    if let Some(r) = shared.wms_receiver.lock().ok().and_then(|g| g.clone()) {
        for (result, n) in [
            ("accepted", &r.accepted),
            ("duplicate", &r.duplicates),
            ("unauthorized", &r.unauthorized),
        ] {
            counter(
                "odoo_cdc_wms_webhooks_total",
                &[("result", result)],
                n.load(Ordering::Relaxed),
            );
        }
    }
    if let Some(f) = shared.fulfillments.lock().ok().and_then(|g| g.clone()) {
        for (result, n) in [("created", &f.created), ("already", &f.already)] {
            counter(
                "odoo_cdc_fulfillments_total",
                &[("result", result)],
                n.load(Ordering::Relaxed),
            );
        }
    }
    let r = &shared.reconcile;
    if r.runs_ok.load(Ordering::Relaxed) + r.runs_failed.load(Ordering::Relaxed) > 0 {
        counter(
            "odoo_cdc_reconcile_runs_total",
            &[("result", "ok")],
            r.runs_ok.load(Ordering::Relaxed),
        );
        counter(
            "odoo_cdc_reconcile_runs_total",
            &[("result", "failed")],
            r.runs_failed.load(Ordering::Relaxed),
        );
        if let Ok(open) = r.open.lock() {
            for (sink, n) in open.iter() {
                gauge("odoo_cdc_reconcile_drifts", &[("sink", sink)], *n as f64);
            }
        }
    }
    m.render()
}

/// One readiness check: whether it passes and what it found (a failure makes `ready` false).
fn check(ready: &mut bool, ok: bool, detail: impl Into<Value>) -> Value {
    *ready &= ok;
    json!({"ok": ok, "detail": detail.into()})
}

/// The readiness checks: replication streaming, the state database reachable, no sink failing
/// (retrying or parked) longer than `runtime.unready_after_secs`, the inbox not stuck.
pub async fn readiness(shared: &Shared) -> (bool, Value) {
    let limit = shared.unready_after();
    let mut ready = true;
    let r = &mut ready;
    let mut checks = serde_json::Map::new();
    let replication = match shared.replication.lock().ok().and_then(|g| g.clone()) {
        Some(Ok(())) => check(r, true, "streaming"),
        Some(Err(e)) => check(r, false, e),
        None => check(r, false, "starting"),
    };
    checks.insert("replication".into(), replication);
    let mut inbox_check = None;
    if let Some(state) = &shared.state {
        let ping = state.ping().await;
        checks.insert(
            "state".into(),
            match &ping {
                Ok(()) => check(r, true, "reachable"),
                Err(e) => check(r, false, e.to_string()),
            },
        );
        if ping.is_ok() && shared.writeback.lock().is_ok_and(|g| g.is_some()) {
            // A webhook due for longer than the limit and still pending: the worker is stuck
            // (Odoo unreachable, or the worker itself).
            let stuck = match state.client().await {
                Ok(c) => c
                    .query_one(
                        "SELECT count(*), count(*) FILTER (WHERE next_attempt_at < now() - make_interval(secs => $1)) \
                         FROM odoo_cdc.inbox WHERE status = 'pending'",
                        &[&(limit.as_secs_f64())],
                    )
                    .await
                    .map(|r| (r.get::<_, i64>(0), r.get::<_, i64>(1)))
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            inbox_check = Some(match stuck {
                Ok((pending, 0)) => check(r, true, format!("{pending} pending")),
                Ok((pending, overdue)) => check(
                    r,
                    false,
                    format!(
                        "{overdue} of {pending} pending webhooks overdue by more than {}s",
                        limit.as_secs()
                    ),
                ),
                Err(e) => check(r, false, e),
            });
        }
    }
    let stats = shared.stats.lock().map(|v| v.clone()).unwrap_or_default();
    let mut sinks = serde_json::Map::new();
    for (name, s) in &stats {
        let v = match s.failing_for() {
            Some(d) if d >= limit => {
                let e = s
                    .last_error
                    .lock()
                    .ok()
                    .and_then(|g| g.clone())
                    .unwrap_or_default();
                check(r, false, format!("failing for {}s: {e}", d.as_secs()))
            }
            Some(d) => check(r, true, format!("retrying for {}s", d.as_secs())),
            None => check(r, true, "delivering"),
        };
        sinks.insert((*name).to_string(), v);
    }
    if !sinks.is_empty() {
        checks.insert("sinks".into(), Value::Object(sinks));
    }
    if let Some(i) = inbox_check {
        checks.insert("inbox".into(), i);
    }
    (ready, json!({"ready": ready, "checks": checks}))
}

async fn readyz(State(s): State<Arc<Shared>>) -> (StatusCode, Json<Value>) {
    let (ok, body) = readiness(&s).await;
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}

/// Serves `/healthz`, `/readyz` and `/metrics` on 127.0.0.1:`port`.
pub async fn serve(shared: Arc<Shared>, port: u16) -> std::io::Result<Served> {
    serve_on(shared, &format!("127.0.0.1:{port}")).await
}

/// Serves `/healthz`, `/readyz` and `/metrics` on `addr` (`runtime.metrics_listen`: its host
/// is honoured, `0.0.0.0:9090` listens on every interface for a remote Prometheus).
pub async fn serve_on(shared: Arc<Shared>, addr: &str) -> std::io::Result<Served> {
    let app = Router::new()
        .route(
            "/healthz",
            get(|| async { Json(json!({"status": "ok", "alive": true})) }),
        )
        .route("/readyz", get(readyz))
        .route(
            "/metrics",
            get(|State(s): State<Arc<Shared>>| async move { render(&s) }),
        )
        .with_state(shared);
    Served::start(addr, app, "health").await
}
