//! The inbox worker: applies committed webhooks to Odoo, in order per Shopify order and in
//! parallel across orders. It is woken the moment a webhook is committed (in-process, and by
//! PostgreSQL `LISTEN odoo_cdc_inbox` so several instances can share the inbox); a slow sweep
//! only picks up rows a crash left behind, and a row that failed transiently is retried at its
//! `next_attempt_at` with capped backoff. One order's failure never blocks another's. A
//! permanent failure (unknown SKU or tax, an Odoo validation error) moves the row to the
//! dead-letter queue with Odoo's error text; `odoo-cdc dlq replay` applies it again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;
use sinks::SinkError;
use tokio::sync::{mpsc, Notify};
use tokio_postgres::Client;
use transforms::shopify::{self, Topic};

pub use crate::runtime::stats::InboxStats;
use crate::writeback::{Applied, Ctx, Writeback};

/// How long a refund waits for its order's `orders/create` webhook (Shopify retries a
/// webhook for 4 hours).
pub const REFUND_WAIT: Duration = Duration::from_secs(4 * 3600);

/// How often the sweep looks for rows nobody was woken for (after a crash).
pub const SWEEP: Duration = Duration::from_secs(30);

/// A row of the inbox.
#[derive(Debug, Clone)]
pub struct Row {
    /// Inbox id.
    pub id: i64,
    /// Topic.
    pub topic: String,
    /// Shopify order id.
    pub order_key: String,
    /// Raw body.
    pub payload: String,
    /// Attempts so far.
    pub attempts: i32,
    /// Seconds since receipt.
    pub age_secs: f64,
}

/// What applying a row came to.
pub enum Outcome {
    /// Applied (or refused on purpose).
    Applied(Applied),
    /// Try again later.
    Retry(SinkError),
    /// Dead-letter with the reason.
    Dead(String),
}

/// Applies one inbox row to Odoo.
pub async fn apply(db: &Client, wb: &Writeback, row: &Row) -> Outcome {
    let cx = Ctx {
        db,
        shopify_id: &row.order_key,
        inbox_id: row.id,
    };
    let body: Value = match serde_json::from_str(&row.payload) {
        Ok(v) => v,
        Err(e) => return Outcome::Dead(format!("stored payload is not JSON: {e}")),
    };
    if let Some(topic) = crate::writeback::wms::Topic::parse(&row.topic) {
        return apply_wms(db, wb, row, topic, &body, &cx).await;
    }
    let result = match Topic::parse(&row.topic) {
        Some(Topic::OrderCreate) => match shopify::parse_order(&body) {
            Ok(order) => {
                let cancelled_first = match db
                    .query_opt(
                        "SELECT 1 FROM odoo_cdc.inbox WHERE order_key = $1 AND topic = 'orders/cancelled' \
                         AND status = 'done' AND id <> $2 LIMIT 1",
                        &[&row.order_key, &row.id],
                    )
                    .await
                {
                    Ok(r) => r.is_some(),
                    Err(e) => return Outcome::Retry(SinkError::transient(format!("inbox: {e}"))),
                };
                wb.order_create(&cx, &order, cancelled_first).await
            }
            Err(e) => return Outcome::Dead(e.to_string()),
        },
        Some(Topic::OrderCancelled) => match shopify::parse_cancel(&body) {
            Ok(id) => wb.order_cancel(&cx, &id).await,
            Err(e) => return Outcome::Dead(e.to_string()),
        },
        Some(Topic::RefundCreate) => {
            let refund = match shopify::parse_refund(&body) {
                Ok(r) => r,
                Err(e) => return Outcome::Dead(e.to_string()),
            };
            // The order's own payload says what each refunded line was.
            let original = db
                .query_opt(
                    "SELECT payload, status FROM odoo_cdc.inbox WHERE order_key = $1 AND topic = 'orders/create' ORDER BY id LIMIT 1",
                    &[&row.order_key],
                )
                .await;
            match original {
                Err(e) => return Outcome::Retry(SinkError::transient(format!("inbox: {e}"))),
                // Shopify does not promise order: the create may still be on its way.
                Ok(None) if row.age_secs < REFUND_WAIT.as_secs_f64() => {
                    return Outcome::Retry(SinkError::transient(format!(
                        "refund {} of order {}: waiting for the order's orders/create webhook",
                        refund.id, refund.order_id
                    )))
                }
                Ok(None) => {
                    return Outcome::Dead(format!(
                        "refund {} of order {}: the order's orders/create webhook never came",
                        refund.id, refund.order_id
                    ))
                }
                Ok(Some(r)) => {
                    let status: String = r.get(1);
                    if status == "pending" {
                        return Outcome::Retry(SinkError::transient(format!(
                            "refund {} of order {}: the order is not in Odoo yet",
                            refund.id, refund.order_id
                        )));
                    }
                    if status != "done" {
                        return Outcome::Dead(format!(
                            "refund {} of order {}: the order did not reach Odoo ({status})",
                            refund.id, refund.order_id
                        ));
                    }
                    let order = serde_json::from_str::<Value>(&r.get::<_, String>(0))
                        .map_err(|e| e.to_string())
                        .and_then(|v| shopify::parse_order(&v).map_err(|e| e.to_string()));
                    match order {
                        Ok(order) => wb.refund(&cx, &order, &refund).await,
                        Err(e) => return Outcome::Dead(e),
                    }
                }
            }
        }
        None => return Outcome::Dead(format!("topic {} is not applied", row.topic)),
    };
    match result {
        Ok(a) => Outcome::Applied(a),
        Err(e) if e.is_transient() => Outcome::Retry(e),
        Err(e) => Outcome::Dead(e.message),
    }
}

/// Applies a warehouse webhook: a parcel after the warehouse's earlier parcels of its order,
/// a stock count after the shipments and receipts received before it.
async fn apply_wms(
    db: &Client,
    wb: &Writeback,
    row: &Row,
    topic: crate::writeback::wms::Topic,
    body: &Value,
    cx: &Ctx<'_>,
) -> Outcome {
    use crate::writeback::wms::{self, Topic as Wms};
    let result = match topic {
        Wms::Shipment | Wms::Receipt => {
            let t = match wms::parse_transfer(topic, body) {
                Ok(t) => t,
                Err(e) => return Outcome::Dead(e),
            };
            if t.sequence > 1 {
                let before = db
                    .query_one(
                        "SELECT (SELECT count(DISTINCT sequence) FROM odoo_cdc.transfers WHERE reference = $1 \
                         AND status = 'done' AND sequence < $2) \
                         + (SELECT count(*) FROM odoo_cdc.inbox WHERE order_key = $1 AND status = 'dead' \
                            AND seq < $2)",
                        &[&t.reference, &(t.sequence as i32)],
                    )
                    .await;
                match before {
                    Err(e) => return Outcome::Retry(SinkError::transient(format!("inbox: {e}"))),
                    Ok(r) if r.get::<_, i64>(0) < i64::from(t.sequence) - 1 => {
                        let why = format!(
                            "parcel {} of {} ({}) waits for the warehouse's earlier parcels",
                            t.sequence, t.reference, t.id
                        );
                        return if row.age_secs < wms::SEQUENCE_WAIT.as_secs_f64() {
                            Outcome::Retry(SinkError::transient(why))
                        } else {
                            Outcome::Dead(format!("{why}, which never came"))
                        };
                    }
                    Ok(_) => {}
                }
            }
            let r = wb.transfer(cx, &t).await;
            if r.is_ok() {
                // The parcels after this one need not wait for their backoff.
                let _ = db
                    .execute(
                        "UPDATE odoo_cdc.inbox SET next_attempt_at = now() WHERE order_key = $1 AND status = 'pending' AND id <> $2",
                        &[&row.order_key, &row.id],
                    )
                    .await;
            }
            r
        }
        Wms::InventoryAdjusted | Wms::InventorySnapshot => {
            let c = match wms::parse_count(body) {
                Ok(c) => c,
                Err(e) => return Outcome::Dead(e),
            };
            // A count includes what the warehouse shipped and received before it: those go
            // into Odoo first, or the count would undo them when they land.
            let earlier = db
                .query_opt(
                    "SELECT id FROM odoo_cdc.inbox WHERE shop_domain = 'wms' AND status = 'pending' \
                     AND topic IN ('shipment/created', 'receipt/received') AND id < $1 LIMIT 1",
                    &[&row.id],
                )
                .await;
            match earlier {
                Err(e) => return Outcome::Retry(SinkError::transient(format!("inbox: {e}"))),
                Ok(Some(r)) => {
                    return Outcome::Retry(SinkError::transient(format!(
                        "stock count of {} waits for the warehouse's earlier webhook (inbox {})",
                        c.warehouse,
                        r.get::<_, i64>(0)
                    )))
                }
                Ok(None) => {}
            }
            wb.stock_count(cx, &c).await
        }
    };
    match result {
        Ok(a) => Outcome::Applied(a),
        Err(e) if e.is_transient() => Outcome::Retry(e),
        Err(e) => Outcome::Dead(e.message),
    }
}

/// Records an outcome on the row (and the audit trail, and the DLQ).
pub async fn record(
    db: &Client,
    row: &Row,
    outcome: &Outcome,
    fence: Option<String>,
) -> Result<(), tokio_postgres::Error> {
    match outcome {
        Outcome::Applied(Applied::Done { odoo_id, detail }) => {
            db.execute(
                "UPDATE odoo_cdc.inbox SET status = 'done', attempts = attempts + 1, applied_at = now(), odoo_id = $2, \
                 last_error = NULL, wal_fence = $3 WHERE id = $1",
                &[&row.id, odoo_id, &fence],
            )
            .await?;
            crate::state::audit(
                db,
                &row.order_key,
                Some(row.id),
                "applied",
                detail,
                *odoo_id,
            )
            .await;
        }
        Outcome::Applied(Applied::Refused(reason)) => {
            db.execute(
                "UPDATE odoo_cdc.inbox SET status = 'refused', attempts = attempts + 1, last_error = $2 WHERE id = $1",
                &[&row.id, reason],
            )
            .await?;
            crate::state::audit(db, &row.order_key, Some(row.id), "refused", reason, None).await;
        }
        Outcome::Retry(e) => {
            let secs = 2f64.powi(row.attempts.clamp(0, 8)).min(300.0);
            db.execute(
                "UPDATE odoo_cdc.inbox SET attempts = attempts + 1, last_error = $2, \
                 next_attempt_at = now() + make_interval(secs => $3) WHERE id = $1",
                &[&row.id, &e.message, &secs],
            )
            .await?;
            crate::state::audit(db, &row.order_key, Some(row.id), "retry", &e.message, None).await;
        }
        Outcome::Dead(reason) => {
            db.execute(
                "UPDATE odoo_cdc.inbox SET status = 'dead', attempts = attempts + 1, last_error = $2 WHERE id = $1",
                &[&row.id, reason],
            )
            .await?;
            let event = serde_json::json!({"inbox_id": row.id, "topic": row.topic, "order_id": row.order_key});
            db.execute(
                "INSERT INTO odoo_cdc.dead_letters (sink, key, reason, source_lsn, event) VALUES ('odoo', $1, $2, $3, $4)",
                &[&row.order_key, reason, &format!("inbox:{}", row.id), &event],
            )
            .await?;
            crate::state::audit(db, &row.order_key, Some(row.id), "dlq", reason, None).await;
        }
    }
    Ok(())
}

/// What Shopify sold in an `orders/create` payload, for the oversell guard: (sku, Shopify
/// location id, units).
pub fn sold(payload: &Value) -> Vec<(String, Option<String>, i64)> {
    use rust_decimal::prelude::ToPrimitive;
    let Ok(order) = shopify::parse_order(payload) else {
        return Vec::new();
    };
    let location = shopify::id_of(&payload["location_id"]);
    order
        .lines
        .iter()
        // A custom line (no SKU) holds no inventory.
        .filter(|l| !l.sku.is_empty())
        .filter_map(|l| Some((l.sku.clone(), location.clone(), l.quantity.ceil().to_i64()?)))
        .collect()
}

/// After a restart: the orders whose units the guard must hold (received, and not yet known
/// to be in the stream), rebuilt from the inbox.
pub async fn held_orders(db: &crate::state::StateDb) -> Vec<sinks::shopify::GuardNote> {
    use sinks::shopify::GuardNote;
    let db = match db.client().await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "cannot rebuild the oversell guard from the inbox");
            return Vec::new();
        }
    };
    let rows = match db
        .query(
            "SELECT order_key, payload, status, wal_fence FROM odoo_cdc.inbox WHERE topic = 'orders/create' \
             AND (status = 'pending' OR (status = 'done' AND wal_fence IS NOT NULL AND applied_at > now() - interval '1 hour')) \
             ORDER BY id",
            &[],
        )
        .await
    {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "cannot rebuild the oversell guard from the inbox");
            return Vec::new();
        }
    };
    let mut notes = Vec::new();
    for r in rows {
        let order: String = r.get(0);
        let Ok(payload) = serde_json::from_str::<Value>(&r.get::<_, String>(1)) else {
            continue;
        };
        notes.push(GuardNote::Received {
            order: order.clone(),
            lines: sold(&payload),
        });
        if let Some(fence) = r
            .get::<_, Option<String>>(3)
            .and_then(|f| f.parse::<cdc::Lsn>().ok())
        {
            notes.push(GuardNote::Settled { order, fence });
        }
    }
    notes
}

/// The worker.
pub struct Inbox {
    db: Arc<crate::state::StateDb>,
    writeback: Writeback,
    wake: Arc<Notify>,
    workers: usize,
    /// Counters.
    pub stats: Arc<InboxStats>,
    guard: Option<Arc<sinks::shopify::GuardChannel>>,
}

impl Inbox {
    /// A worker on the state database `db`; it listens on `odoo_cdc_inbox` on a connection of
    /// its own (reopened when lost; until then the sweep still finds every row).
    pub fn new(
        db: Arc<crate::state::StateDb>,
        writeback: Writeback,
        wake: Arc<Notify>,
        workers: usize,
        stats: Arc<InboxStats>,
    ) -> Self {
        Self {
            db,
            writeback,
            wake,
            workers: workers.max(1),
            stats,
            guard: None,
        }
    }

    /// Feeds the runtime's oversell guard with what Odoo has applied.
    pub fn with_guard(mut self, guard: Arc<sinks::shopify::GuardChannel>) -> Self {
        self.guard = Some(guard);
        self
    }

    /// Opens the LISTEN connection when there is none (or it was lost).
    async fn listen(
        &self,
        current: &mut Option<(
            Client,
            mpsc::UnboundedReceiver<tokio_postgres::Notification>,
        )>,
    ) {
        if current.as_ref().is_some_and(|(c, _)| !c.is_closed()) {
            return;
        }
        *current = None;
        let Some(source) = self.db.source() else {
            return;
        };
        let attempt = tokio::time::timeout(crate::state::CONNECT_TIMEOUT, async {
            let (c, rx) = source
                .sql_client_listening()
                .await
                .map_err(|e| e.to_string())?;
            c.batch_execute("LISTEN odoo_cdc_inbox")
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>((c, rx))
        })
        .await;
        match attempt {
            Ok(Ok(l)) => *current = Some(l),
            Ok(Err(e)) => tracing::debug!(error = %e, "cannot listen for inbox notifications yet"),
            Err(_) => tracing::debug!("cannot listen for inbox notifications yet (timeout)"),
        }
    }

    /// Runs until `stopping` is set.
    pub async fn run(self, stopping: Arc<AtomicBool>) {
        let mut backoff = cdc::backoff::Backoff::default();
        let mut listening = None;
        while !stopping.load(Ordering::SeqCst) {
            self.listen(&mut listening).await;
            let db = match self.db.client().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the inbox");
                    tokio::time::sleep(backoff.next_delay()).await;
                    continue;
                }
            };
            let keys = match db
                .query(
                    "SELECT order_key FROM odoo_cdc.inbox WHERE status = 'pending' AND next_attempt_at <= now() \
                     GROUP BY order_key ORDER BY min(id) LIMIT 256",
                    &[],
                )
                .await
            {
                Ok(rows) => rows.iter().map(|r| r.get::<_, String>(0)).collect::<Vec<_>>(),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the inbox");
                    tokio::time::sleep(backoff.next_delay()).await;
                    continue;
                }
            };
            backoff.reset();
            if keys.is_empty() {
                let next = db
                    .query_one(
                        "SELECT extract(epoch FROM min(next_attempt_at) - now())::float8 FROM odoo_cdc.inbox WHERE status = 'pending'",
                        &[],
                    )
                    .await
                    .ok()
                    .and_then(|r| r.get::<_, Option<f64>>(0));
                let wait = next.map_or(SWEEP, |s| {
                    Duration::from_secs_f64(s.clamp(0.01, SWEEP.as_secs_f64()))
                });
                // Without a LISTEN connection, look again soon (it is reopened on the next turn).
                let wait = if listening.is_some() {
                    wait
                } else {
                    wait.min(Duration::from_secs(1))
                };
                drop(db);
                let notified = async {
                    match listening.as_mut() {
                        Some((_, rx)) => rx.recv().await.is_some(),
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    () = self.wake.notified() => {}
                    alive = notified => {
                        if !alive {
                            tracing::warn!("inbox notification connection ended; reopening it");
                            listening = None;
                        }
                    }
                    () = tokio::time::sleep(wait) => {}
                }
                continue;
            }
            futures_util::stream::iter(keys)
                .for_each_concurrent(self.workers, |key| self.process_key(&db, key))
                .await;
        }
    }

    /// Applies a Shopify order's due rows in order (refunds after the order's create and
    /// cancel, whatever order they arrived in); stops at a transient failure.
    async fn process_key(&self, db: &Client, key: String) {
        // Several instances share the inbox: one of them takes an order at a time.
        let lock = format!("odoo_cdc_inbox:{key}");
        match db
            .query_one("SELECT pg_try_advisory_lock(hashtext($1))", &[&lock])
            .await
        {
            Ok(r) if r.get::<_, bool>(0) => {}
            _ => return,
        }
        let rows = db
            .query(
                "SELECT id, topic, order_key, payload, attempts, next_attempt_at <= now(), \
                 extract(epoch FROM now() - received_at)::float8 \
                 FROM odoo_cdc.inbox WHERE order_key = $1 AND status = 'pending' \
                 ORDER BY topic = 'refunds/create', seq NULLS FIRST, id",
                &[&key],
            )
            .await;
        if let Ok(rows) = rows {
            for r in rows {
                if !r.get::<_, bool>(5) {
                    break;
                }
                let row = Row {
                    id: r.get(0),
                    topic: r.get(1),
                    order_key: r.get(2),
                    payload: r.get(3),
                    attempts: r.get(4),
                    age_secs: r.get(6),
                };
                if let (Some(guard), true) = (&self.guard, row.topic == "orders/create") {
                    // Before Odoo is written, so the guard holds the units first (the
                    // receiver told it already; a repeat is ignored).
                    if let Ok(payload) = serde_json::from_str::<Value>(&row.payload) {
                        guard.send(sinks::shopify::GuardNote::Received {
                            order: row.order_key.clone(),
                            lines: sold(&payload),
                        });
                    }
                }
                let outcome = apply(db, &self.writeback, &row).await;
                let fence = match &outcome {
                    // The WAL position after the write: once the stream passes it, Odoo's
                    // reservation for this order is in the sellable quantities.
                    Outcome::Applied(Applied::Done { .. }) => db
                        .query_one("SELECT pg_current_wal_lsn()::text", &[])
                        .await
                        .ok()
                        .map(|r| r.get::<_, String>(0)),
                    _ => None,
                };
                if let Err(e) = record(db, &row, &outcome, fence.clone()).await {
                    tracing::warn!(error = %e, "cannot record an inbox outcome; it is applied again later");
                    break;
                }
                if matches!(outcome, Outcome::Applied(_)) && row.topic == "orders/create" {
                    // A Shopify worker in another process (scale-out) follows the inbox.
                    let _ = db
                        .execute("SELECT pg_notify('odoo_cdc_guard', $1)", &[&row.order_key])
                        .await;
                }
                if let (Some(guard), Outcome::Applied(a)) = (&self.guard, &outcome) {
                    // Confirmed, cancelled or refused: once the stream passes the fence, the
                    // order's units are in Odoo's numbers (or never will be, if refused).
                    let fence = match a {
                        Applied::Done { .. } => fence.and_then(|f| f.parse::<cdc::Lsn>().ok()),
                        Applied::Refused(_) => Some(cdc::Lsn::ZERO),
                    };
                    if let (Some(fence), true) = (fence, row.topic != "refunds/create") {
                        guard.send(sinks::shopify::GuardNote::Settled {
                            order: row.order_key.clone(),
                            fence,
                        });
                    }
                }
                self.stats.count_topic(
                    &row.topic,
                    match &outcome {
                        Outcome::Applied(Applied::Done { .. }) => "applied",
                        Outcome::Applied(Applied::Refused(_)) => "refused",
                        Outcome::Dead(_) => "dead",
                        Outcome::Retry(_) => "retried",
                    },
                );
                let stop = match &outcome {
                    Outcome::Applied(Applied::Done { .. }) => {
                        self.stats.applied.fetch_add(1, Ordering::Relaxed);
                        self.stats.latency.observe(row.age_secs.max(0.0));
                        false
                    }
                    Outcome::Applied(Applied::Refused(_)) => {
                        self.stats.refused.fetch_add(1, Ordering::Relaxed);
                        false
                    }
                    Outcome::Dead(reason) => {
                        tracing::error!(order = %row.order_key, inbox = row.id, %reason, "webhook dead-lettered");
                        self.stats.dead.fetch_add(1, Ordering::Relaxed);
                        false
                    }
                    Outcome::Retry(e) => {
                        tracing::warn!(order = %row.order_key, inbox = row.id, error = %e, "webhook not applied yet; retrying");
                        self.stats.retries.fetch_add(1, Ordering::Relaxed);
                        true
                    }
                };
                if stop {
                    break;
                }
            }
        }
        let _ = db
            .query_one("SELECT pg_advisory_unlock(hashtext($1))", &[&lock])
            .await;
    }
}

/// What a Shopify worker in another process than the inbox (scale-out) has told its guard:
/// per order, whether it was settled and at which fence. [`GuardFeed::sync`] turns the inbox's
/// held orders into the notes that changed since.
#[derive(Debug, Default)]
pub struct GuardFeed {
    sent: std::collections::HashMap<String, Option<cdc::Lsn>>,
}

impl GuardFeed {
    /// A feed that knows `notes` were given already (the guard's own resume at start).
    pub fn seeded(notes: &[sinks::shopify::GuardNote]) -> Self {
        let mut feed = Self::default();
        let _ = feed.sync(notes.to_vec());
        feed
    }

    /// The notes to send for the inbox's held orders now (`held_orders`): orders not seen
    /// before are received, orders newly settled (or at a new fence) settled, and orders that
    /// left the inbox's held set without a fence (refused, dead) released.
    pub fn sync(&mut self, held: Vec<sinks::shopify::GuardNote>) -> Vec<sinks::shopify::GuardNote> {
        use sinks::shopify::GuardNote;
        let mut out = Vec::new();
        let mut now: std::collections::HashMap<String, Option<cdc::Lsn>> =
            std::collections::HashMap::new();
        for note in held {
            match note {
                GuardNote::Received { order, lines } => {
                    now.entry(order.clone()).or_insert(None);
                    if !self.sent.contains_key(&order) {
                        out.push(GuardNote::Received { order, lines });
                    }
                }
                GuardNote::Settled { order, fence } => {
                    if self.sent.get(&order).copied().flatten() != Some(fence) {
                        out.push(GuardNote::Settled {
                            order: order.clone(),
                            fence,
                        });
                    }
                    now.insert(order, Some(fence));
                }
                other => out.push(other),
            }
        }
        for (order, fence) in &self.sent {
            if fence.is_none() && !now.contains_key(order) {
                out.push(GuardNote::Settled {
                    order: order.clone(),
                    fence: cdc::Lsn::ZERO,
                });
            }
        }
        self.sent = now;
        out
    }
}

/// Feeds the guard of a Shopify worker that runs apart from the inbox: on every inbox
/// notification (`odoo_cdc_inbox`: a webhook committed; `odoo_cdc_guard`: an order applied
/// to Odoo) the inbox's held orders are read again and what changed is told to the guard;
/// a lost LISTEN connection is opened again and followed by a full sync. Runs until aborted.
pub async fn feed_guard(db: Arc<crate::state::StateDb>, guard: Arc<sinks::shopify::GuardChannel>) {
    let mut feed = GuardFeed::seeded(&held_orders(&db).await);
    let mut backoff = cdc::backoff::Backoff::default();
    loop {
        let Some(source) = db.source().cloned() else {
            return;
        };
        let listening = async {
            let (c, rx) = source
                .sql_client_listening()
                .await
                .map_err(|e| e.to_string())?;
            c.batch_execute("LISTEN odoo_cdc_inbox; LISTEN odoo_cdc_guard")
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>((c, rx))
        };
        let (client, mut rx) =
            match tokio::time::timeout(crate::state::CONNECT_TIMEOUT, listening).await {
                Ok(Ok(l)) => l,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "oversell guard: cannot follow the inbox yet");
                    tokio::time::sleep(backoff.next_delay()).await;
                    continue;
                }
                Err(_) => {
                    tokio::time::sleep(backoff.next_delay()).await;
                    continue;
                }
            };
        backoff = cdc::backoff::Backoff::default();
        loop {
            for note in feed.sync(held_orders(&db).await) {
                guard.send(note);
            }
            // Woken by the next notification; a quiet minute syncs anyway.
            match tokio::time::timeout(Duration::from_secs(60), rx.recv()).await {
                Ok(Some(_)) => while rx.try_recv().is_ok() {},
                Ok(None) => break,
                Err(_) => {}
            }
            if client.is_closed() {
                break;
            }
        }
    }
}

#[cfg(test)]
mod feed_tests {
    use super::GuardFeed;
    use sinks::shopify::GuardNote;

    fn received(order: &str) -> GuardNote {
        GuardNote::Received {
            order: order.into(),
            lines: vec![("SKU".into(), Some("1".into()), 2)],
        }
    }

    fn settled(order: &str, fence: u64) -> GuardNote {
        GuardNote::Settled {
            order: order.into(),
            fence: cdc::Lsn(fence),
        }
    }

    fn names(notes: &[GuardNote]) -> Vec<String> {
        notes
            .iter()
            .map(|n| match n {
                GuardNote::Received { order, .. } => format!("received {order}"),
                GuardNote::Settled { order, fence } => format!("settled {order} at {}", fence.0),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn the_feed_tells_the_guard_only_what_changed_in_the_inbox() {
        // Resumed with order 1 held: nothing to say again.
        let mut feed = GuardFeed::seeded(&[received("1")]);
        assert!(feed.sync(vec![received("1")]).is_empty());
        // Order 2 arrives; order 1 is applied to Odoo.
        let said = feed.sync(vec![received("1"), settled("1", 100), received("2")]);
        assert_eq!(names(&said), ["settled 1 at 100", "received 2"]);
        // Nothing new: nothing said.
        assert!(feed
            .sync(vec![received("1"), settled("1", 100), received("2")])
            .is_empty());
        // Order 2 leaves the held set without a fence (refused): released.
        let said = feed.sync(vec![received("1"), settled("1", 100)]);
        assert_eq!(names(&said), ["settled 2 at 0"]);
        // Order 1 ages out of the inbox's window: already settled, nothing to say.
        assert!(feed.sync(Vec::new()).is_empty());
    }
}
