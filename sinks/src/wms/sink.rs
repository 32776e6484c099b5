//! The WMS sink: fulfillment requests and cancellations, idempotent by picking reference.

use transforms::RetailEvent;

use super::client::{Created, WmsClient};
use crate::policy::SinkError;

/// Delivers fulfillment events to the WMS. At-least-once from the source; the WMS dedupes by
/// reference: a repeated create with the same lines is success, with other lines (the
/// reservation changed) the order is amended, never duplicated; cancelling twice is harmless.
pub struct WmsSink {
    client: WmsClient,
}

impl WmsSink {
    /// A sink over a client.
    pub fn new(client: WmsClient) -> Self {
        Self { client }
    }

    /// Whether this sink wants the event.
    pub fn wants(event: &RetailEvent) -> bool {
        matches!(
            event,
            RetailEvent::FulfillmentRequested { .. }
                | RetailEvent::FulfillmentCancelled { .. }
                | RetailEvent::DeliveryDone { .. }
        )
    }

    /// Delivers one event; `Ok(true)` when the WMS already had it.
    pub async fn deliver(&self, event: &RetailEvent) -> Result<bool, SinkError> {
        match event {
            RetailEvent::FulfillmentRequested {
                reference,
                lines,
                ship_to,
                carrier,
                backorder_of,
                ..
            } => {
                if let Some(parent) = backorder_of {
                    // After a partial shipment the warehouse holds (or already shipped) the
                    // rest under the parent's reference: asking again would ship it twice.
                    let beyond = self.beyond_parent(parent).await?;
                    if covers(&beyond, lines) {
                        tracing::info!(%reference, parent = %parent.reference, "backorder: the warehouse has the rest under the parent's order; not requested again");
                        return Ok(true);
                    }
                    if !beyond.is_empty() {
                        tracing::warn!(%reference, parent = %parent.reference, ?beyond, "backorder: the warehouse holds part of it under the parent; requesting it as its own order");
                    }
                }
                let created = self
                    .client
                    .create(reference, lines, ship_to, carrier.as_deref())
                    .await?;
                if created == Created::Shipped {
                    tracing::warn!(%reference, "the WMS order shipped already; what Odoo reserves now cannot change it");
                }
                Ok(matches!(created, Created::AlreadyThere | Created::Shipped))
            }
            RetailEvent::FulfillmentCancelled {
                reference,
                backorder_of,
            } => {
                self.client.cancel(reference).await?;
                if let Some(parent) = backorder_of {
                    // The rest of a partial shipment is at the WMS under the parent: what has
                    // not shipped of it is cancelled there.
                    let open = self
                        .client
                        .order(&parent.reference)
                        .await?
                        .is_some_and(|o| {
                            o["status"] == "open" || o["status"] == "partially_shipped"
                        });
                    if open {
                        self.client.cancel(&parent.reference).await?;
                    }
                }
                Ok(false)
            }
            RetailEvent::DeliveryDone { reference, .. } => {
                // Validated in Odoo while the warehouse has not shipped any of it: someone
                // shipped it by other means; the warehouse order is cancelled so it does not
                // ship twice. A warehouse that shipped it (in part) is left alone.
                let untouched = self.client.order(reference).await?.is_some_and(|o| {
                    o["status"] == "open"
                        && o["shipments"].as_array().is_none_or(|s| s.is_empty())
                        && o["lines"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .all(|l| l["shipped_quantity"].as_u64().unwrap_or(0) == 0)
                });
                if untouched {
                    tracing::warn!(%reference, "validated in Odoo before the warehouse shipped it; cancelling the warehouse order so it does not ship twice");
                    self.client.cancel(reference).await?;
                }
                Ok(!untouched)
            }
            _ => Ok(false),
        }
    }
}

/// Whether what the warehouse holds under a backorder's parent covers the backorder's lines.
fn covers(
    beyond: &std::collections::BTreeMap<String, rust_decimal::Decimal>,
    lines: &[transforms::events::PickLine],
) -> bool {
    lines
        .iter()
        .all(|l| beyond.get(&l.sku).is_some_and(|q| *q >= l.quantity))
}

impl WmsSink {
    /// Reconciliation of one ready delivery (a `FulfillmentRequested` of a snapshot) against
    /// the warehouse: `None` when the warehouse has what Odoo asks of it (or holds it under the
    /// backorder's parent), else what the warehouse has, the drift, and whether delivering the
    /// event again heals it.
    pub async fn check(
        &self,
        event: &RetailEvent,
    ) -> Result<Option<(String, String, bool)>, SinkError> {
        let RetailEvent::FulfillmentRequested {
            reference,
            lines,
            backorder_of,
            ..
        } = event
        else {
            return Ok(None);
        };
        if let Some(parent) = backorder_of {
            if covers(&self.beyond_parent(parent).await?, lines) {
                return Ok(None);
            }
        }
        let Some(order) = self.client.order(reference).await? else {
            return Ok(Some((
                "no order".into(),
                "ready in Odoo, not at the WMS".into(),
                true,
            )));
        };
        let status = order["status"].as_str().unwrap_or("");
        let at_wms: std::collections::BTreeMap<String, u64> = order["lines"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|l| Some((l["sku"].as_str()?.to_string(), l["quantity"].as_u64()?)))
            .collect();
        let wanted: std::collections::BTreeMap<String, u64> = lines
            .iter()
            .map(|l| {
                (
                    l.sku.clone(),
                    rust_decimal::prelude::ToPrimitive::to_u64(&l.quantity.ceil()).unwrap_or(0),
                )
            })
            .collect();
        let has = format!("{status}: {at_wms:?}");
        Ok(match status {
            "cancelled" => Some((
                has,
                "cancelled at the WMS, still ready in Odoo: needs a person (cancel it in Odoo or                  send it again under a new reference)"
                    .into(),
                false,
            )),
            "shipped" => Some((
                has,
                "shipped by the WMS, not validated in Odoo: its shipment webhook has not been                  applied (see `odoo-cdc status` and `dlq list`)"
                    .into(),
                false,
            )),
            _ if at_wms != wanted => Some((
                has,
                format!("the WMS has {at_wms:?}, Odoo reserves {wanted:?}"),
                status == "open",
            )),
            _ => None,
        })
    }

    /// What the warehouse was asked for under a backorder's parent beyond what the parent
    /// delivered in Odoo, by SKU: units still to ship there, or shipped and not yet in Odoo.
    async fn beyond_parent(
        &self,
        parent: &transforms::events::BackorderOf,
    ) -> Result<std::collections::BTreeMap<String, rust_decimal::Decimal>, SinkError> {
        use rust_decimal::Decimal;
        let mut out = std::collections::BTreeMap::new();
        let Some(order) = self.client.order(&parent.reference).await? else {
            return Ok(out);
        };
        let cancelled = order["status"] == "cancelled";
        for l in order["lines"].as_array().into_iter().flatten() {
            let Some(sku) = l["sku"].as_str() else {
                continue;
            };
            let asked = l["quantity"].as_u64().unwrap_or(0);
            let shipped = l["shipped_quantity"].as_u64().unwrap_or(0);
            let at_wms = Decimal::from(if cancelled {
                shipped
            } else {
                asked.max(shipped)
            });
            let done: Decimal = parent
                .done
                .iter()
                .filter(|d| d.sku == sku)
                .map(|d| d.quantity)
                .sum();
            if at_wms > done {
                *out.entry(sku.to_string()).or_default() += at_wms - done;
            }
        }
        Ok(out)
    }
}

impl crate::sink::Sink for WmsSink {
    fn name(&self) -> &'static str {
        "wms"
    }

    fn wants(&self) -> crate::sink::Wants {
        std::sync::Arc::new(WmsSink::wants)
    }

    fn key(&self, event: &RetailEvent) -> String {
        match event {
            // In order with the picking's requests.
            RetailEvent::DeliveryDone { reference, .. } => reference.clone(),
            e => e.key(),
        }
    }

    fn batching(&self, partitions: usize) -> crate::sink::Batching {
        crate::sink::Batching::at_once(partitions)
    }

    fn deliver<'a>(
        &'a mut self,
        batch: &'a [transforms::Sourced],
        partitions: usize,
    ) -> futures_util::future::BoxFuture<'a, Vec<crate::sink::Outcome>> {
        let sink = &*self;
        Box::pin(crate::sink::per_key(
            batch,
            partitions,
            |e| crate::sink::Sink::key(sink, e),
            move |s| async move { sink.deliver(&s.event).await.map(|_| ()) },
        ))
    }
}
