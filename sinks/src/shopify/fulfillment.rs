//! The Shopify fulfillment sink: an Odoo delivery of a Shopify order that is validated
//! (`DeliveryDone`, seen in the stream) becomes a Shopify fulfillment of exactly what it
//! shipped, with the warehouse's tracking, once per picking.
//!
//! `fulfillmentCreate` takes no idempotency key, so before creating the sink reads the order:
//! a fulfillment already recorded for the picking, or one carrying its tracking number, is the
//! effect already there; otherwise it fulfils the shipped quantities from the fulfillment
//! orders' `remainingQuantity` (never more), partial shipments as partial fulfillments, and
//! reads the answer back before the picking counts as fulfilled.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use rust_decimal::prelude::ToPrimitive;
use serde_json::{json, Value};
use transforms::{RetailEvent, Sourced};

use super::client::ShopifyClient;
use crate::policy::SinkError;

/// What the warehouse reported for a picking.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Shipped {
    /// Carrier.
    pub carrier: Option<String>,
    /// Tracking number.
    pub number: Option<String>,
    /// Tracking URL.
    pub url: Option<String>,
}

/// What the fulfillment sink asks of odoo-cdc's own records.
pub trait Deliveries: Send + Sync {
    /// The Shopify order id of an Odoo sale order, when odoo-cdc wrote it from Shopify.
    fn shopify_order(&self, sale_id: i64) -> BoxFuture<'_, Result<Option<String>, SinkError>>;
    /// The warehouse's shipment that validated a picking, if one did.
    fn shipment<'a>(
        &'a self,
        picking: &'a str,
    ) -> BoxFuture<'a, Result<Option<Shipped>, SinkError>>;
    /// The Shopify fulfillment made for a picking, if one was recorded.
    fn fulfillment_of<'a>(
        &'a self,
        picking: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, SinkError>>;
    /// Records the fulfillment made for a picking (and the shipment-to-fulfillment latency).
    fn fulfilled<'a>(
        &'a self,
        picking: &'a str,
        order: &'a str,
        fulfillment: &'a str,
    ) -> BoxFuture<'a, Result<(), SinkError>>;
}

// Shopify's calculated cost multiplies a connection's `first` by what each node costs: the
// usual read (an order at one or two locations, up to 25 lines) costs about 60 points; an order
// beyond it (`hasNextPage`) is read again with the wide query (about 850 points).
const ORDER: &str = "query Order($id: ID!) { order(id: $id) { id \
 fulfillmentOrders(first: 2) { pageInfo { hasNextPage } nodes { id status lineItems(first: 25) { pageInfo { hasNextPage } nodes { id sku remainingQuantity } } } } \
 fulfillments(first: 50) { id status trackingInfo(first: 3) { number } } } }";
const ORDER_WIDE: &str = "query Order($id: ID!) { order(id: $id) { id \
 fulfillmentOrders(first: 10) { pageInfo { hasNextPage } nodes { id status lineItems(first: 80) { pageInfo { hasNextPage } nodes { id sku remainingQuantity } } } } \
 fulfillments(first: 250) { id status trackingInfo(first: 3) { number } } } }";
/// The points the cheap read and the create cost, for pacing.
const COST: f64 = 80.0;

const CREATE: &str = "mutation Ship($fulfillment: FulfillmentInput!, $message: String) { \
 fulfillmentCreate(fulfillment: $fulfillment, message: $message) { \
 fulfillment { id status trackingInfo(first: 3) { number } } userErrors { field message } } }";

/// The sink.
pub struct FulfillmentSink {
    client: Arc<tokio::sync::Mutex<ShopifyClient>>,
    notify_customer: bool,
    deliveries: Arc<dyn Deliveries>,
}

impl FulfillmentSink {
    /// A sink over a client; `notify_customer`: whether Shopify emails the customer.
    pub fn new(
        client: ShopifyClient,
        notify_customer: bool,
        deliveries: Arc<dyn Deliveries>,
    ) -> Self {
        Self {
            client: Arc::new(tokio::sync::Mutex::new(client)),
            notify_customer,
            deliveries,
        }
    }

    /// One GraphQL call, paced so the fulfillments never take the shop's bucket below half: the
    /// inventory sink (oversell) shares it and comes first.
    async fn call(&self, query: &str, variables: Value) -> Result<Value, SinkError> {
        let mut client = self.client.lock().await;
        let half = client.throttle.map_or(0.0, |t| t.maximum / 2.0);
        client.pace(COST + half).await;
        client.graphql(query, variables).await
    }

    /// Whether the sink takes an event.
    pub fn wants(event: &RetailEvent) -> bool {
        matches!(
            event,
            RetailEvent::DeliveryDone {
                sale_id: Some(_),
                ..
            }
        )
    }

    /// Fulfils one validated delivery; the fulfillment's gid, or `None` when there is nothing
    /// to fulfil in Shopify (not a Shopify order, nothing left).
    pub async fn deliver(&self, event: &RetailEvent) -> Result<Option<String>, SinkError> {
        let RetailEvent::DeliveryDone {
            reference,
            sale_id: Some(sale_id),
            lines,
            tracking,
            carrier,
        } = event
        else {
            return Ok(None);
        };
        let Some(order) = self.deliveries.shopify_order(*sale_id).await? else {
            tracing::debug!(%reference, sale_id, "delivery of an order odoo-cdc did not write from Shopify; not fulfilled there");
            return Ok(None);
        };
        if let Some(f) = self.deliveries.fulfillment_of(reference).await? {
            return Ok(Some(f));
        }
        let shipped = self
            .deliveries
            .shipment(reference)
            .await?
            .unwrap_or_default();
        let number = tracking.clone().or(shipped.number.clone());
        let company = shipped.carrier.clone().or(carrier.clone());
        let gid = format!("gid://shopify/Order/{order}");
        let mut data = self.call(ORDER, json!({ "id": gid })).await?;
        let truncated = |d: &Value| {
            let fos = &d["order"]["fulfillmentOrders"];
            fos["pageInfo"]["hasNextPage"] == true
                || fos["nodes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|f| f["lineItems"]["pageInfo"]["hasNextPage"] == true)
        };
        if truncated(&data) {
            data = self.call(ORDER_WIDE, json!({ "id": gid })).await?;
            if truncated(&data) {
                return Err(SinkError::permanent(format!(
                    "{reference}: Shopify order {order} has more fulfillment orders or lines than one read holds (10 x 80)"
                )));
            }
        }
        let o = &data["order"];
        if o.is_null() {
            return Err(SinkError::permanent(format!(
                "{reference}: Shopify has no order {order}"
            )));
        }
        // Already fulfilled under this tracking number (an earlier attempt that was not
        // recorded): the effect is there.
        if let Some(n) = &number {
            if let Some(f) = o["fulfillments"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|f| {
                    f["status"] != "CANCELLED"
                        && f["trackingInfo"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .any(|t| t["number"].as_str() == Some(n))
                })
            {
                let id = f["id"].as_str().unwrap_or("").to_string();
                self.deliveries.fulfilled(reference, &order, &id).await?;
                return Ok(Some(id));
            }
        }
        // What is left to fulfil, by SKU, in the fulfillment orders' order.
        let mut want: BTreeMap<&str, i64> = BTreeMap::new();
        for l in lines {
            let q = l.quantity.ceil().to_i64().unwrap_or(0);
            if q > 0 {
                *want.entry(l.sku.as_str()).or_default() += q;
            }
        }
        let mut groups: Vec<Value> = Vec::new();
        for fo in o["fulfillmentOrders"]["nodes"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if fo["status"] != "OPEN" && fo["status"] != "IN_PROGRESS" {
                continue;
            }
            let mut items = Vec::new();
            for li in fo["lineItems"]["nodes"].as_array().into_iter().flatten() {
                let sku = li["sku"].as_str();
                let (Some(sku), Some(remaining)) = (sku, li["remainingQuantity"].as_i64()) else {
                    continue;
                };
                let Some(w) = want.get_mut(sku) else { continue };
                let take = (*w).min(remaining);
                if take > 0 {
                    items.push(json!({"id": li["id"], "quantity": take}));
                    *w -= take;
                }
            }
            if !items.is_empty() {
                groups.push(
                    json!({"fulfillmentOrderId": fo["id"], "fulfillmentOrderLineItems": items}),
                );
            }
        }
        let beyond: Vec<String> = want
            .iter()
            .filter(|(_, q)| **q > 0)
            .map(|(s, q)| format!("{q} x {s}"))
            .collect();
        if !beyond.is_empty() {
            tracing::warn!(%reference, %order, beyond = %beyond.join(", "), "the delivery shipped more than Shopify has left to fulfil");
        }
        if groups.is_empty() {
            tracing::warn!(%reference, %order, "nothing of this delivery is left to fulfil in Shopify");
            return Ok(None);
        }
        let mut input =
            json!({"lineItemsByFulfillmentOrder": groups, "notifyCustomer": self.notify_customer});
        if number.is_some() || company.is_some() {
            input["trackingInfo"] =
                json!({"company": company, "number": number, "url": shipped.url});
        }
        let data = self
            .call(
                CREATE,
                json!({"fulfillment": input, "message": format!("odoo-cdc {reference}")}),
            )
            .await?;
        let payload = &data["fulfillmentCreate"];
        if let Some(e) = payload["userErrors"].as_array().filter(|e| !e.is_empty()) {
            return Err(SinkError::permanent(format!(
                "{reference}: fulfillmentCreate for order {order}: {}",
                e.iter()
                    .filter_map(|x| x["message"].as_str())
                    .collect::<Vec<_>>()
                    .join("; ")
            )));
        }
        let f = &payload["fulfillment"];
        let id = f["id"].as_str().unwrap_or("").to_string();
        if id.is_empty() || f["status"] != "SUCCESS" {
            return Err(SinkError::transient(format!(
                "{reference}: fulfillmentCreate for order {order} answered {f}"
            )));
        }
        self.deliveries.fulfilled(reference, &order, &id).await?;
        tracing::info!(%reference, %order, fulfillment = %id, tracking = ?number, "Shopify fulfillment created");
        Ok(Some(id))
    }
}

impl crate::sink::Sink for FulfillmentSink {
    fn name(&self) -> &'static str {
        "shopify_fulfillment"
    }

    fn wants(&self) -> crate::sink::Wants {
        Arc::new(FulfillmentSink::wants)
    }

    fn batching(&self, partitions: usize) -> crate::sink::Batching {
        crate::sink::Batching::at_once(partitions)
    }

    fn deliver<'a>(
        &'a mut self,
        batch: &'a [Sourced],
        partitions: usize,
    ) -> BoxFuture<'a, Vec<crate::sink::Outcome>> {
        let sink = &*self;
        Box::pin(crate::sink::per_key(
            batch,
            partitions,
            |e| crate::sink::Sink::key(sink, e),
            move |s| async move { sink.deliver(&s.event).await.map(|_| ()) },
        ))
    }
}
