//! The warehouse's webhooks (`POST /webhooks/wms`) and what they do in Odoo.
//!
//! The receiver checks `X-WMS-Hmac-Sha256` (base64 HMAC-SHA256 of the raw body, current and
//! previous secret, constant time) and commits the webhook to the same `odoo_cdc.inbox` as
//! Shopify's before the 200, unique on `wms:<X-WMS-Event-Id>` (then the body's `event_id`,
//! then its digest). Rows of one picking (its reference) are applied in order, pickings in
//! parallel, with the inbox's retries, dead letters, `dlq replay` and audit trail.
//!
//! - `shipment/created`: each shipped move's done quantity (`stock.move.quantity`, `picked`),
//!   the tracking number (`carrier_tracking_ref` where the stock_delivery module has it),
//!   `button_validate` and Odoo's own backorder wizard (`process`, or `process_cancel_backorder`
//!   per `wms.backorder` once the warehouse closes the order), then the picking, its moves and
//!   its backorder read back. A second parcel of the same order lands on the backorder the
//!   first one left. Parcels are applied in the warehouse's order (`sequence`).
//! - `receipt/received`: the same for an incoming transfer, with the counted quantities (more
//!   than expected is received as Odoo does; less leaves a backorder or not, per `wms.backorder`).
//! - `inventory/adjusted`, `inventory/snapshot`: the counted quantity of each SKU in the
//!   warehouse's stock location as an Odoo inventory adjustment (`stock.quant.inventory_quantity`
//!   and `action_apply_inventory`), read back; Shopify hears of it through the stream.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use rust_decimal::Decimal;
use serde_json::{json, Value};
use sinks::SinkError;
use tokio::sync::Notify;

use super::webhook::{commit, header, hex_digest, verify, Entry, ReceiverStats};
use super::{as_id, decimal, Applied, Ctx, Writeback};

/// How long a parcel waits for the warehouse's earlier parcels of the same order (webhooks are
/// retried for hours).
pub const SEQUENCE_WAIT: std::time::Duration = std::time::Duration::from_secs(4 * 3600);

/// The warehouse topics odoo-cdc applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topic {
    /// A parcel left the warehouse.
    Shipment,
    /// An inbound shipment was counted at the dock.
    Receipt,
    /// Some SKUs were counted.
    InventoryAdjusted,
    /// Every SKU of the warehouse was counted.
    InventorySnapshot,
}

impl Topic {
    /// The topic of a name (`shipment/created`, ...).
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "shipment/created" => Self::Shipment,
            "receipt/received" => Self::Receipt,
            "inventory/adjusted" => Self::InventoryAdjusted,
            "inventory/snapshot" => Self::InventorySnapshot,
            _ => return None,
        })
    }

    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Shipment => "shipment/created",
            Self::Receipt => "receipt/received",
            Self::InventoryAdjusted => "inventory/adjusted",
            Self::InventorySnapshot => "inventory/snapshot",
        }
    }

    /// The inbox key rows of this topic are ordered by: the picking, or the warehouse's counts.
    pub fn key(self, payload: &Value) -> Option<String> {
        match self {
            Self::Shipment | Self::Receipt => payload["reference"]
                .as_str()
                .filter(|r| !r.trim().is_empty())
                .map(str::to_string),
            Self::InventoryAdjusted | Self::InventorySnapshot => Some(format!(
                "inventory:{}",
                payload["warehouse"].as_str().unwrap_or("")
            )),
        }
    }
}

/// A shipment or a receipt, as the warehouse reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Transfer {
    /// Shipment or receipt.
    pub topic: Topic,
    /// The Odoo picking the warehouse order was made for.
    pub reference: String,
    /// The warehouse's id of the parcel (or receipt).
    pub id: String,
    /// 1 for an order's first parcel, 2 for the second, ...
    pub sequence: u32,
    /// Whether the warehouse closed the order with it.
    pub last: bool,
    /// Carrier.
    pub carrier: Option<String>,
    /// Tracking number.
    pub tracking_number: Option<String>,
    /// Tracking URL.
    pub tracking_url: Option<String>,
    /// Units by SKU.
    pub lines: BTreeMap<String, Decimal>,
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Reads a `shipment/created` or `receipt/received` body; the reason when it cannot be applied.
pub fn parse_transfer(topic: Topic, body: &Value) -> Result<Transfer, String> {
    let what = topic.as_str();
    let reference = text(&body["reference"])
        .ok_or_else(|| format!("{what}: no reference (the Odoo picking)"))?;
    let (id_field, qty_field) = match topic {
        Topic::Receipt => ("receipt_id", "received_quantity"),
        _ => ("shipment_id", "shipped_quantity"),
    };
    let id = text(&body[id_field])
        .or_else(|| text(&body["event_id"]))
        .ok_or_else(|| format!("{what} {reference}: no {id_field}"))?;
    let mut lines: BTreeMap<String, Decimal> = BTreeMap::new();
    for l in body["lines"].as_array().into_iter().flatten() {
        let sku =
            text(&l["sku"]).ok_or_else(|| format!("{what} {reference}: a line has no sku"))?;
        let q = decimal(&l[qty_field])
            .or_else(|| decimal(&l["quantity"]))
            .ok_or_else(|| format!("{what} {reference}: {sku} has no {qty_field}"))?;
        if q < Decimal::ZERO {
            return Err(format!(
                "{what} {reference}: {sku} has a negative quantity {q}"
            ));
        }
        *lines.entry(sku).or_default() += q;
    }
    lines.retain(|_, q| !q.is_zero());
    if lines.is_empty() {
        return Err(format!("{what} {reference}: no units in it"));
    }
    Ok(Transfer {
        topic,
        reference,
        id,
        sequence: body["sequence"].as_u64().unwrap_or(1).max(1) as u32,
        // A receipt closes what it counts; a parcel closes its order unless it says otherwise.
        last: topic == Topic::Receipt || body["final"].as_bool().unwrap_or(true),
        carrier: text(&body["carrier"]),
        tracking_number: text(&body["tracking_number"]),
        tracking_url: text(&body["tracking_url"]),
        lines,
    })
}

/// A stock count of a warehouse.
#[derive(Debug, Clone, PartialEq)]
pub struct Count {
    /// The warehouse's code in Odoo.
    pub warehouse: String,
    /// Counted on hand by SKU.
    pub lines: BTreeMap<String, Decimal>,
}

/// Reads an `inventory/adjusted` or `inventory/snapshot` body.
pub fn parse_count(body: &Value) -> Result<Count, String> {
    let warehouse = text(&body["warehouse"]).ok_or("stock count: no warehouse")?;
    let mut lines = BTreeMap::new();
    for l in body["lines"].as_array().into_iter().flatten() {
        let sku = text(&l["sku"]).ok_or("stock count: a line has no sku")?;
        let q = decimal(&l["on_hand"])
            .or_else(|| decimal(&l["quantity"]))
            .ok_or_else(|| format!("stock count: {sku} has no on_hand"))?;
        lines.insert(sku, q);
    }
    if lines.is_empty() {
        return Err("stock count: no lines".into());
    }
    Ok(Count { warehouse, lines })
}

/// The warehouse webhook receiver's state.
pub struct WmsReceiver {
    secrets: Vec<String>,
    db: Arc<crate::state::StateDb>,
    wake: Arc<Notify>,
    /// Counters.
    pub stats: Arc<ReceiverStats>,
}

impl WmsReceiver {
    /// A receiver writing to the inbox through `db` (secrets: current, then previous).
    pub fn new(
        secrets: Vec<String>,
        db: Arc<crate::state::StateDb>,
        wake: Arc<Notify>,
        stats: Arc<ReceiverStats>,
    ) -> Self {
        Self {
            secrets,
            db,
            wake,
            stats,
        }
    }
}

/// The route `POST /webhooks/wms`.
pub fn router(receiver: Arc<WmsReceiver>, max_body_bytes: usize) -> Router {
    let stats = receiver.stats.clone();
    Router::new()
        .route("/webhooks/wms", post(receive))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(axum::middleware::map_response(
            move |res: axum::response::Response| {
                let stats = stats.clone();
                async move {
                    if let Ok(mut m) = stats.answers.lock() {
                        *m.entry(res.status().as_u16()).or_default() += 1;
                    }
                    res
                }
            },
        ))
        .with_state(receiver)
}

async fn receive(
    State(r): State<Arc<WmsReceiver>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, &'static str) {
    let started = Instant::now();
    let Some(signature) = header(&headers, "x-wms-hmac-sha256") else {
        r.stats.unauthorized.fetch_add(1, Ordering::Relaxed);
        tracing::warn!("warehouse webhook refused: missing X-WMS-Hmac-Sha256");
        return (StatusCode::UNAUTHORIZED, "missing X-WMS-Hmac-Sha256");
    };
    if !verify(&r.secrets, &body, signature) {
        r.stats.unauthorized.fetch_add(1, Ordering::Relaxed);
        tracing::warn!("warehouse webhook refused: bad signature");
        return (StatusCode::UNAUTHORIZED, "bad signature");
    }
    // Signed: the warehouse's word. Committed whatever its content, then applied or
    // dead-lettered with the reason.
    let text = String::from_utf8_lossy(&body);
    let payload = serde_json::from_str::<Value>(&text).unwrap_or(Value::Null);
    let topic_name = header(&headers, "x-wms-topic")
        .map(str::to_string)
        .or_else(|| payload["topic"].as_str().map(str::to_string))
        .unwrap_or_else(|| "(missing)".into());
    let topic = Topic::parse(&topic_name);
    if topic.is_none() && topic_name != "(missing)" && payload.is_object() {
        tracing::info!(topic = %topic_name, "warehouse webhook topic not applied; acknowledged");
        return (StatusCode::OK, "ignored topic");
    }
    let digest;
    let event = match header(&headers, "x-wms-event-id").or(payload["event_id"].as_str()) {
        Some(e) => e,
        None => {
            digest = format!("sha256:{}", hex_digest(&body));
            &digest
        }
    };
    let event_id = format!("wms:{event}");
    let key = topic
        .and_then(|t| t.key(&payload))
        .unwrap_or_else(|| format!("wms-unknown:{event}"));
    let (inserted, db) = commit(
        &r.db,
        &Entry {
            event_id: &event_id,
            webhook_id: header(&headers, "x-wms-webhook-id"),
            topic: match topic {
                Some(t) => t.as_str(),
                None => topic_name.as_str(),
            },
            source: "wms",
            key: &key,
            payload: text.as_ref(),
            triggered_at: header(&headers, "x-wms-triggered-at"),
            seq: match topic {
                Some(Topic::Shipment) => payload["sequence"]
                    .as_u64()
                    .and_then(|s| i32::try_from(s).ok()),
                _ => None,
            },
        },
    )
    .await;
    match inserted {
        Ok(Some(_)) => {
            r.wake.notify_one();
            r.stats.accepted.fetch_add(1, Ordering::Relaxed);
            r.stats.latency.observe(started.elapsed().as_secs_f64());
            (StatusCode::OK, "accepted")
        }
        Ok(None) => {
            r.stats.duplicates.fetch_add(1, Ordering::Relaxed);
            if let Some(db) = db {
                crate::state::audit(
                    &db,
                    &key,
                    None,
                    "webhook-duplicate",
                    &format!("{topic_name} event {event_id} delivered again; ignored"),
                    None,
                )
                .await;
            }
            (StatusCode::OK, "duplicate")
        }
        Err(e) => {
            tracing::error!(error = %e, status = 503, "cannot commit a warehouse webhook to the inbox; the WMS retries it");
            (StatusCode::SERVICE_UNAVAILABLE, "inbox unavailable")
        }
    }
}

/// A transfer's state in Odoo, as read.
#[derive(Debug, Clone)]
struct Picking {
    id: i64,
    name: String,
    state: String,
    sale: Option<i64>,
}

const PICKING_FIELDS: &[&str] = &["id", "name", "state", "backorder_id", "sale_id"];

fn picking_of(v: &Value) -> Option<Picking> {
    Some(Picking {
        id: as_id(&v["id"])?,
        name: v["name"].as_str().unwrap_or("").to_string(),
        state: v["state"].as_str().unwrap_or("").to_string(),
        sale: as_id(&v["sale_id"]),
    })
}

fn qty(d: Decimal) -> Value {
    json!(d.normalize().to_string())
}

fn lines_text(lines: &BTreeMap<String, Decimal>) -> String {
    lines
        .iter()
        .map(|(s, q)| format!("{} x {s}", q.normalize()))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Writeback {
    async fn picking(&self, cx: &Ctx<'_>, domain: Value) -> Result<Vec<Picking>, SinkError> {
        Ok(self
            .read(cx, "stock.picking", domain, PICKING_FIELDS.to_vec())
            .await?
            .iter()
            .filter_map(picking_of)
            .collect())
    }

    /// The open transfer a parcel of `reference` lands on: the picking itself, or after an
    /// earlier partial shipment the backorder it left (followed down the chain).
    async fn open_transfer(
        &self,
        cx: &Ctx<'_>,
        reference: &str,
    ) -> Result<(Picking, Option<Picking>), SinkError> {
        let Some(mut cur) = self
            .picking(cx, json!([["name", "=", reference]]))
            .await?
            .into_iter()
            .next()
        else {
            return Err(SinkError::permanent(format!(
                "Odoo has no transfer named {reference}"
            )));
        };
        let first = cur.clone();
        for _ in 0..32 {
            if cur.state != "done" {
                return Ok((first, Some(cur)));
            }
            let children = self
                .picking(cx, json!([["backorder_id", "=", cur.id]]))
                .await?;
            match children
                .iter()
                .find(|p| p.state != "done" && p.state != "cancel")
                .or_else(|| children.iter().find(|p| p.state == "done"))
            {
                Some(next) => cur = next.clone(),
                None => return Ok((first, None)),
            }
        }
        Ok((first, None))
    }

    /// Whether Odoo's stock.picking has `carrier_tracking_ref` (the stock_delivery module).
    async fn has_tracking_field(&self, cx: &Ctx<'_>) -> Result<bool, SinkError> {
        if let Some(b) = self.tracking_field.get() {
            return Ok(*b);
        }
        let fields = self
            .call(
                cx,
                sinks::odoo::Call::Method {
                    model: "stock.picking",
                    method: "fields_get",
                    ids: Vec::new(),
                    kwargs: [("attributes".to_string(), json!(["type"]))]
                        .into_iter()
                        .collect(),
                },
            )
            .await?;
        let has = fields.get("carrier_tracking_ref").is_some();
        let _ = self.tracking_field.set(has);
        Ok(has)
    }

    /// Validates a picking the way Odoo's UI does: `button_validate`, then whatever wizard it
    /// answers (`confirm.stock.sms`: not sent; `stock.backorder.confirmation`: `process` or
    /// `process_cancel_backorder`), each created from the action's context when it has no record.
    async fn validate(&self, cx: &Ctx<'_>, id: i64, backorder: bool) -> Result<(), SinkError> {
        let mut answer = self
            .method(cx, "stock.picking", "button_validate", id, None)
            .await?;
        for _ in 0..4 {
            let Some(model) = answer["res_model"].as_str().map(str::to_string) else {
                return Ok(());
            };
            let context = answer["context"].clone();
            let wizard = match as_id(&answer["res_id"]) {
                Some(w) => w,
                None => {
                    let v = self
                        .call(
                            cx,
                            sinks::odoo::Call::CreateWith {
                                model: leak(&model)?,
                                vals: json!({}),
                                context: context.clone(),
                            },
                        )
                        .await?;
                    as_id(&v).ok_or_else(|| {
                        SinkError::permanent(format!("{model}.create answered {v}, not an id"))
                    })?
                }
            };
            let method = match model.as_str() {
                "stock.backorder.confirmation" if backorder => "process",
                "stock.backorder.confirmation" => "process_cancel_backorder",
                "confirm.stock.sms" => "dont_send_sms",
                other => {
                    return Err(SinkError::permanent(format!(
                        "validating stock.picking {id}: Odoo answered the wizard {other}, which odoo-cdc does not answer"
                    )))
                }
            };
            answer = self
                .method(cx, leak(&model)?, method, wizard, Some(context))
                .await?;
        }
        Ok(())
    }

    /// Applies a shipment or a receipt (see the module documentation). `seen`: whether an
    /// earlier attempt recorded it as done.
    pub async fn transfer(&self, cx: &Ctx<'_>, t: &Transfer) -> Result<Applied, SinkError> {
        let state = |e: tokio_postgres::Error| SinkError::transient(format!("state: {e}"));
        let kind = if t.topic == Topic::Receipt {
            "receipt"
        } else {
            "shipment"
        };
        let recorded = cx
            .db
            .query_opt(
                "SELECT status, picking, backorder FROM odoo_cdc.transfers WHERE id = $1",
                &[&t.id],
            )
            .await
            .map_err(state)?;
        if let Some(r) = &recorded {
            if r.get::<_, String>(0) == "done" {
                return Ok(Applied::Done {
                    odoo_id: None,
                    detail: format!(
                        "{kind} {} of {} applied before (to {})",
                        t.id,
                        t.reference,
                        r.get::<_, Option<String>>(1).unwrap_or_default()
                    ),
                });
            }
        }
        let (first, open) = self.open_transfer(cx, &t.reference).await?;
        // An attempt that validated and then stopped (a crash) left its picking recorded.
        let intended = match recorded
            .as_ref()
            .and_then(|r| r.get::<_, Option<String>>(1))
        {
            Some(name) if open.as_ref().is_none_or(|o| o.name != name) => self
                .picking(cx, json!([["name", "=", name]]))
                .await?
                .into_iter()
                .next()
                .filter(|p| p.state == "done"),
            _ => None,
        };
        if let Some(done) = intended {
            return self.finish_transfer(cx, t, &done, kind).await;
        }
        let Some(target) = open else {
            return Err(SinkError::permanent(format!(
                "the warehouse reports {kind} {} of {} ({}), but {} is done in Odoo with nothing left open: \
                 these units left the warehouse beyond what Odoo expected",
                t.id,
                t.reference,
                lines_text(&t.lines),
                first.name
            )));
        };
        if target.state == "cancel" {
            return Err(SinkError::permanent(format!(
                "the warehouse reports {kind} {} of {} ({}) after Odoo cancelled {}: the goods moved all the same; \
                 check the customer's order",
                t.id,
                t.reference,
                lines_text(&t.lines),
                target.name
            )));
        }
        // Everything that can fail is known before anything is written.
        let products = self.products(cx, t.lines.keys().cloned().collect()).await?;
        if let Some(sku) = t.lines.keys().find(|s| !products.contains_key(*s)) {
            return Err(SinkError::permanent(format!(
                "{kind} {} of {}: Odoo has no product with SKU {sku:?}",
                t.id, t.reference
            )));
        }
        let moves = self
            .read(
                cx,
                "stock.move",
                json!([
                    ["picking_id", "=", target.id],
                    ["state", "not in", ["done", "cancel"]]
                ]),
                vec!["id", "product_id", "product_uom_qty", "quantity"],
            )
            .await?;
        let mut writes: Vec<(i64, Decimal)> = Vec::new();
        let (mut short, mut unreserved) = (Decimal::ZERO, Decimal::ZERO);
        for (sku, shipped) in &t.lines {
            let product = products[sku];
            let of: Vec<&Value> = moves
                .iter()
                .filter(|m| as_id(&m["product_id"]) == Some(product))
                .collect();
            if of.is_empty() {
                return Err(SinkError::permanent(format!(
                    "{kind} {} of {}: {} x {sku} is not in {} (nothing of it is open there)",
                    t.id,
                    t.reference,
                    shipped.normalize(),
                    target.name
                )));
            }
            let mut left = *shipped;
            for (i, m) in of.iter().enumerate() {
                let demand = decimal(&m["product_uom_qty"]).unwrap_or_default();
                // The last move takes what is beyond the demand (Odoo validates more than asked).
                let take = if i + 1 == of.len() {
                    left
                } else {
                    left.min(demand)
                };
                left -= take;
                if let Some(id) = as_id(&m["id"]) {
                    writes.push((id, take));
                }
            }
        }
        for m in &moves {
            let demand = decimal(&m["product_uom_qty"]).unwrap_or_default();
            let reserved = decimal(&m["quantity"]).unwrap_or_default();
            let done = writes
                .iter()
                .find(|(id, _)| Some(*id) == as_id(&m["id"]))
                .map_or(Decimal::ZERO, |w| w.1);
            short += (reserved.min(demand) - done).max(Decimal::ZERO);
            unreserved += (demand - reserved).max(Decimal::ZERO);
        }
        // A parcel that says more is coming leaves a backorder for it; a closed order's
        // shortfall follows `wms.backorder`; what was never reserved (never asked of the
        // warehouse) always stays an order.
        let backorder = !t.last || !self.cfg.cancel_short_backorders || unreserved > Decimal::ZERO;
        let lines = serde_json::to_value(
            t.lines
                .iter()
                .map(|(s, q)| (s.clone(), q.normalize().to_string()))
                .collect::<BTreeMap<_, _>>(),
        )
        .unwrap_or(Value::Null);
        cx.db
            .execute(
                "INSERT INTO odoo_cdc.transfers (id, kind, reference, picking, sequence, final, carrier, tracking_number, \
                 tracking_url, lines, inbox_id, received_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, \
                 (SELECT received_at FROM odoo_cdc.inbox WHERE id = $11)) \
                 ON CONFLICT (id) DO UPDATE SET picking = EXCLUDED.picking",
                &[
                    &t.id,
                    &kind,
                    &t.reference,
                    &target.name,
                    &(t.sequence as i32),
                    &t.last,
                    &t.carrier,
                    &t.tracking_number,
                    &self.tracking_url(t),
                    &lines,
                    &cx.inbox_id,
                ],
            )
            .await
            .map_err(state)?;
        for (id, q) in &writes {
            self.write(
                cx,
                "stock.move",
                *id,
                json!({"quantity": qty(*q), "picked": true}),
            )
            .await?;
        }
        if let (Some(number), true) = (&t.tracking_number, t.topic == Topic::Shipment) {
            if self.has_tracking_field(cx).await? {
                self.write(
                    cx,
                    "stock.picking",
                    target.id,
                    json!({ "carrier_tracking_ref": number }),
                )
                .await?;
            }
        }
        self.validate(cx, target.id, backorder).await?;
        if short > Decimal::ZERO && !backorder {
            cx.audit(
                kind,
                &format!(
                    "{}: {} unit(s) the warehouse was asked for did not ship and are cancelled (wms.backorder = \"cancel\")",
                    target.name,
                    short.normalize()
                ),
                Some(target.id),
            )
            .await;
        }
        self.finish_transfer(cx, t, &target, kind).await
    }

    fn tracking_url(&self, t: &Transfer) -> Option<String> {
        t.tracking_url.clone().or_else(|| {
            let (carrier, number) = (t.carrier.as_ref()?, t.tracking_number.as_ref()?);
            self.cfg
                .tracking_urls
                .get(carrier)
                .map(|u| u.replace("{number}", number))
        })
    }

    /// Reads a validated transfer back (done, its done quantities, its backorder), records it
    /// and writes the order's audit trail.
    async fn finish_transfer(
        &self,
        cx: &Ctx<'_>,
        t: &Transfer,
        target: &Picking,
        kind: &str,
    ) -> Result<Applied, SinkError> {
        let state = |e: tokio_postgres::Error| SinkError::transient(format!("state: {e}"));
        let now = self
            .picking(cx, json!([["id", "=", target.id]]))
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| SinkError::transient(format!("{} cannot be read back", target.name)))?;
        if now.state != "done" {
            return Err(SinkError::transient(format!(
                "{} is {} in Odoo after validating it",
                now.name, now.state
            )));
        }
        let moves = self
            .read(
                cx,
                "stock.move",
                json!([["picking_id", "=", target.id], ["state", "=", "done"]]),
                vec!["product_id", "quantity"],
            )
            .await?;
        let products = self.products(cx, t.lines.keys().cloned().collect()).await?;
        for (sku, q) in &t.lines {
            let id = products.get(sku).copied();
            let got: Decimal = moves
                .iter()
                .filter(|m| as_id(&m["product_id"]) == id)
                .map(|m| decimal(&m["quantity"]).unwrap_or_default())
                .sum();
            if got != *q {
                return Err(SinkError::transient(format!(
                    "{}: Odoo shows {} x {sku} done, the warehouse {kind} {}",
                    now.name,
                    got.normalize(),
                    q.normalize()
                )));
            }
        }
        let backorder = self
            .picking(cx, json!([["backorder_id", "=", target.id]]))
            .await?
            .into_iter()
            .next()
            .map(|p| p.name);
        cx.db
            .execute(
                "UPDATE odoo_cdc.transfers SET status = 'done', picking = $2, backorder = $3, applied_at = now() WHERE id = $1",
                &[&t.id, &now.name, &backorder],
            )
            .await
            .map_err(state)?;
        let detail = format!(
            "{kind} {} of {} ({}{}): {} done in Odoo{}",
            t.id,
            t.reference,
            lines_text(&t.lines),
            match (&t.carrier, &t.tracking_number) {
                (Some(c), Some(n)) => format!(", {c} {n}"),
                (None, Some(n)) => format!(", tracking {n}"),
                _ => String::new(),
            },
            now.name,
            backorder
                .as_ref()
                .map(|b| format!(", the rest in backorder {b}"))
                .unwrap_or_default()
        );
        // The order's own audit trail shows its shipments.
        if let Some(sale) = now.sale {
            let refs = self
                .read(
                    cx,
                    "sale.order",
                    json!([["id", "=", sale]]),
                    vec!["client_order_ref"],
                )
                .await?;
            if let Some(order) = refs
                .first()
                .and_then(|r| r["client_order_ref"].as_str())
                .and_then(|r| r.strip_prefix("shopify:"))
            {
                crate::state::audit(cx.db, order, Some(cx.inbox_id), kind, &detail, Some(now.id))
                    .await;
            }
        }
        Ok(Applied::Done {
            odoo_id: Some(now.id),
            detail,
        })
    }

    /// Applies a stock count: each SKU's counted quantity in the warehouse's stock location
    /// becomes Odoo's through an inventory adjustment, read back.
    pub async fn stock_count(&self, cx: &Ctx<'_>, c: &Count) -> Result<Applied, SinkError> {
        let wh = self
            .read(
                cx,
                "stock.warehouse",
                json!([["code", "=", c.warehouse]]),
                vec!["id", "lot_stock_id"],
            )
            .await?;
        let Some(location) = wh.first().and_then(|w| as_id(&w["lot_stock_id"])) else {
            return Err(SinkError::permanent(format!(
                "stock count: Odoo has no warehouse with code {:?}",
                c.warehouse
            )));
        };
        let products = self.products(cx, c.lines.keys().cloned().collect()).await?;
        let unknown: Vec<&String> = c
            .lines
            .keys()
            .filter(|s| !products.contains_key(*s))
            .collect();
        if !unknown.is_empty() {
            return Err(SinkError::permanent(format!(
                "stock count of {}: Odoo has no product with SKU {unknown:?} (nothing was adjusted)",
                c.warehouse
            )));
        }
        let mut changed = Vec::new();
        for (sku, counted) in &c.lines {
            let product = products[sku];
            let domain = json!([["product_id", "=", product], ["location_id", "=", location]]);
            let quants = self
                .read(cx, "stock.quant", domain.clone(), vec!["id", "quantity"])
                .await?;
            let on_hand: Decimal = quants
                .iter()
                .map(|q| decimal(&q["quantity"]).unwrap_or_default())
                .sum();
            if on_hand == *counted {
                continue;
            }
            let quant = match quants.first().and_then(|q| as_id(&q["id"])) {
                Some(q) => {
                    // Several quants (lots, packages): the first takes the difference.
                    let own = decimal(&quants[0]["quantity"]).unwrap_or_default();
                    self.write(
                        cx,
                        "stock.quant",
                        q,
                        json!({"inventory_quantity": qty(own + *counted - on_hand)}),
                    )
                    .await?;
                    q
                }
                None => {
                    let v = self
                        .call(
                            cx,
                            sinks::odoo::Call::CreateWith {
                                model: "stock.quant",
                                vals: json!({"product_id": product, "location_id": location,
                                             "inventory_quantity": qty(*counted)}),
                                context: json!({"inventory_mode": true}),
                            },
                        )
                        .await?;
                    as_id(&v).ok_or_else(|| {
                        SinkError::permanent(format!("stock.quant.create answered {v}, not an id"))
                    })?
                }
            };
            self.method(cx, "stock.quant", "action_apply_inventory", quant, None)
                .await?;
            let after: Decimal = self
                .read(cx, "stock.quant", domain, vec!["quantity"])
                .await?
                .iter()
                .map(|q| decimal(&q["quantity"]).unwrap_or_default())
                .sum();
            if after != *counted {
                return Err(SinkError::transient(format!(
                    "stock count: Odoo shows {} x {sku} in {} after the adjustment, the warehouse counted {}",
                    after.normalize(),
                    c.warehouse,
                    counted.normalize()
                )));
            }
            changed.push(format!(
                "{sku} {} -> {}",
                on_hand.normalize(),
                counted.normalize()
            ));
        }
        Ok(Applied::Done {
            odoo_id: None,
            detail: if changed.is_empty() {
                format!(
                    "stock count of {}: {} SKU(s), Odoo agreed already",
                    c.warehouse,
                    c.lines.len()
                )
            } else {
                format!(
                    "stock count of {}: adjusted {}",
                    c.warehouse,
                    changed.join(", ")
                )
            },
        })
    }
}

/// The wizard models odoo-cdc answers, as the `'static` names the RPC client takes.
fn leak(model: &str) -> Result<&'static str, SinkError> {
    [
        "stock.backorder.confirmation",
        "confirm.stock.sms",
        "stock.picking",
        "stock.quant",
    ]
    .into_iter()
    .find(|m| *m == model)
    .ok_or_else(|| {
        SinkError::permanent(format!(
            "Odoo answered the wizard {model}, which odoo-cdc does not answer"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_contract_and_names_what_is_missing() {
        let t = parse_transfer(
            Topic::Shipment,
            &json!({"reference": "WH/OUT/00012", "shipment_id": "SHP-1-1", "sequence": 1, "final": false,
                    "carrier": "UPS", "tracking_number": "1ZA", "lines": [{"sku": "A", "shipped_quantity": 2},
                    {"sku": "A", "shipped_quantity": 1}, {"sku": "B", "shipped_quantity": 0}]}),
        )
        .unwrap();
        assert_eq!(
            t.lines,
            [("A".to_string(), Decimal::from(3))].into_iter().collect()
        );
        assert!(!t.last);
        assert_eq!(t.tracking_number.as_deref(), Some("1ZA"));
        let e =
            parse_transfer(Topic::Shipment, &json!({"shipment_id": "S", "lines": []})).unwrap_err();
        assert!(e.contains("no reference"), "{e}");
        let e = parse_transfer(
            Topic::Shipment,
            &json!({"reference": "R", "shipment_id": "S", "lines": [{"sku": "A", "shipped_quantity": -1}]}),
        )
        .unwrap_err();
        assert!(e.contains("negative"), "{e}");
        let r = parse_transfer(
            Topic::Receipt,
            &json!({"reference": "WH/IN/00007", "receipt_id": "RCV-1", "lines": [{"sku": "A", "received_quantity": "4.5"}]}),
        )
        .unwrap();
        assert!(r.last);
        assert_eq!(r.lines["A"], "4.5".parse::<Decimal>().unwrap());
        let c = parse_count(&json!({"warehouse": "WH", "lines": [{"sku": "A", "on_hand": 7}]}))
            .unwrap();
        assert_eq!(c.lines["A"], Decimal::from(7));
        assert!(parse_count(&json!({"lines": []})).is_err());
        assert_eq!(
            Topic::parse("inventory/snapshot"),
            Some(Topic::InventorySnapshot)
        );
        assert_eq!(
            Topic::InventoryAdjusted
                .key(&json!({"warehouse": "WH"}))
                .as_deref(),
            Some("inventory:WH")
        );
    }
}
