//! What the Shopify fulfillment sink asks of odoo-cdc's own records: which Shopify order an
//! Odoo sale order came from (the inbox row that created it), the warehouse shipment that
//! validated a picking (`odoo_cdc.transfers`, recorded before the validation, so the stream
//! never sees a picking done before its tracking is known), and the fulfillment made for it.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use sinks::shopify::Shipped;
use sinks::SinkError;

use crate::runtime::stats::FulfillmentStats;
use crate::state::StateDb;

/// [`sinks::shopify::Deliveries`] over the state database.
pub struct StateDeliveries {
    db: Arc<StateDb>,
    stats: Arc<FulfillmentStats>,
}

impl StateDeliveries {
    /// Over `db`, counting into `stats`.
    pub fn new(db: Arc<StateDb>, stats: Arc<FulfillmentStats>) -> Self {
        Self { db, stats }
    }
}

fn state(e: impl std::fmt::Display) -> SinkError {
    SinkError::transient(format!("state database: {e}"))
}

impl sinks::shopify::Deliveries for StateDeliveries {
    fn shopify_order(&self, sale_id: i64) -> BoxFuture<'_, Result<Option<String>, SinkError>> {
        Box::pin(async move {
            let c = self.db.client().await.map_err(state)?;
            Ok(c.query_opt(
                "SELECT order_key FROM odoo_cdc.inbox WHERE topic = 'orders/create' AND status = 'done' \
                 AND odoo_id = $1 ORDER BY id LIMIT 1",
                &[&sale_id],
            )
            .await
            .map_err(state)?
            .map(|r| r.get(0)))
        })
    }

    fn shipment<'a>(
        &'a self,
        picking: &'a str,
    ) -> BoxFuture<'a, Result<Option<Shipped>, SinkError>> {
        Box::pin(async move {
            let c = self.db.client().await.map_err(state)?;
            Ok(c.query_opt(
                "SELECT carrier, tracking_number, tracking_url FROM odoo_cdc.transfers \
                 WHERE picking = $1 AND kind = 'shipment' ORDER BY sequence DESC LIMIT 1",
                &[&picking],
            )
            .await
            .map_err(state)?
            .map(|r| Shipped {
                carrier: r.get(0),
                number: r.get(1),
                url: r.get(2),
            }))
        })
    }

    fn fulfillment_of<'a>(
        &'a self,
        picking: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, SinkError>> {
        Box::pin(async move {
            let c = self.db.client().await.map_err(state)?;
            let found: Option<String> = c
                .query_opt(
                    "SELECT value FROM odoo_cdc.kv WHERE key = $1",
                    &[&format!("shopify-fulfillment:{picking}")],
                )
                .await
                .map_err(state)?
                .map(|r| r.get(0));
            if found.is_some() {
                self.stats.already.fetch_add(1, Ordering::Relaxed);
            }
            Ok(found)
        })
    }

    fn fulfilled<'a>(
        &'a self,
        picking: &'a str,
        order: &'a str,
        fulfillment: &'a str,
    ) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            let c = self.db.client().await.map_err(state)?;
            let first = c
                .execute(
                    "INSERT INTO odoo_cdc.kv (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
                    &[&format!("shopify-fulfillment:{picking}"), &fulfillment],
                )
                .await
                .map_err(state)?
                == 1;
            // From the shipment webhook's arrival; a picking validated in Odoo by hand has none.
            let since = c
                .query_opt(
                    "UPDATE odoo_cdc.transfers SET fulfillment = $2, fulfilled_at = coalesce(fulfilled_at, now()) \
                     WHERE picking = $1 AND kind = 'shipment' RETURNING extract(epoch FROM fulfilled_at - received_at)::float8",
                    &[&picking, &fulfillment],
                )
                .await
                .map_err(state)?
                .and_then(|r| r.get::<_, Option<f64>>(0));
            if first {
                self.stats.created.fetch_add(1, Ordering::Relaxed);
                if let Some(s) = since {
                    self.stats.latency.observe(s.max(0.0));
                }
                crate::state::audit(
                    &c,
                    order,
                    None,
                    "fulfillment",
                    &format!("{picking} fulfilled in Shopify as {fulfillment}"),
                    None,
                )
                .await;
            } else {
                self.stats.already.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        })
    }
}
