//! Shopify orders, cancellations and refunds written into Odoo through its external API.
//!
//! Two rules hold for every write:
//! - **Search before create.** Odoo has no idempotency key, so every write is preceded by a
//!   search for what an earlier attempt may have left: the order by
//!   `client_order_ref = "shopify:<id>"`, the customer by email, addresses by street, the credit
//!   note by `ref = "shopify-refund:<id>"`, the return receipt by its origin.
//! - **Done means read back.** A call that answered is not an effect: Odoo 18 answers
//!   `sale.order.action_cancel` on a confirmed order with a wizard and cancels nothing. Every
//!   effect is read back (the order's state and total, the credit note's state and total, the
//!   return receipt's link to its delivery) before the inbox row, the audit trail or a metric
//!   calls it done.
//!
//! Everything that can make an order fail (its products, taxes, currency, customer) is looked
//! up before anything is created, so an order that is going to be dead-lettered leaves nothing
//! in Odoo. Every RPC call and its result goes to the audit trail.

pub mod deliveries;
pub mod inbox;
pub mod lookups;
mod order;
mod refund;
pub mod webhook;
pub mod wms;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

pub use crate::runtime::stats::WritebackStats;
use rust_decimal::Decimal;
use serde_json::{json, Map, Value};
use sinks::odoo::{Call, OdooRpc};
use sinks::SinkError;
use tokio_postgres::Client;
use transforms::shopify::TaxKey;

/// What became of a webhook.
#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    /// Odoo has it (the Odoo record id when there is one).
    Done {
        /// sale.order or account.move id.
        odoo_id: Option<i64>,
        /// What was done.
        detail: String,
    },
    /// Deliberately not applied (a create after its cancel).
    Refused(String),
}

/// How Shopify's data maps onto this Odoo.
#[derive(Debug, Clone, Default)]
pub struct WritebackConfig {
    /// SKU of the delivery product shipping lines become.
    pub shipping_sku: String,
    /// SKU of the product rounding lines use (default: the shipping product).
    pub rounding_sku: Option<String>,
    /// Warehouse code orders ship from.
    pub warehouse: Option<String>,
    /// Partner name orders without a customer go to.
    pub default_customer: Option<String>,
    /// Shopify variant id -> Odoo SKU or barcode, for lines without a SKU.
    pub variant_map: BTreeMap<String, String>,
    /// How long lookups are cached at most (zero: not at all).
    pub cache_ttl: std::time::Duration,
    /// `wms.backorder = "cancel"`: what a closed warehouse order did not ship is cancelled.
    pub cancel_short_backorders: bool,
    /// Carrier -> tracking URL template (`{number}`), for parcels without a URL.
    pub tracking_urls: BTreeMap<String, String>,
}

/// The write-back settings and client.
pub struct Writeback {
    rpc: OdooRpc,
    cfg: WritebackConfig,
    /// Counters.
    pub stats: Arc<WritebackStats>,
    /// Caches of reference lookups.
    pub lookups: lookups::Lookups,
    /// Whether stock.picking has `carrier_tracking_ref` (asked once).
    tracking_field: std::sync::OnceLock<bool>,
}

/// Who is being written for, for the audit trail.
pub struct Ctx<'a> {
    /// State database (audit trail, inbox).
    pub db: &'a Client,
    /// Shopify order id.
    pub shopify_id: &'a str,
    /// Inbox row.
    pub inbox_id: i64,
}

impl Ctx<'_> {
    async fn audit(&self, kind: &str, detail: &str, odoo_id: Option<i64>) {
        crate::state::audit(
            self.db,
            self.shopify_id,
            Some(self.inbox_id),
            kind,
            detail,
            odoo_id,
        )
        .await;
    }
}

fn as_id(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        // Many2one reads as [id, "name"].
        Value::Array(a) => a.first().and_then(Value::as_i64),
        _ => None,
    }
}

fn decimal(v: &Value) -> Option<Decimal> {
    match v {
        Value::Number(n) => {
            let s = n.to_string();
            s.parse().ok().or_else(|| Decimal::from_scientific(&s).ok())
        }
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// A money amount Odoo read back, rounded to the cent (Odoo answers floats such as 897.33).
fn cents(v: &Value) -> Decimal {
    decimal(v).unwrap_or_default().round_dp(2)
}

fn many2one_name(v: &Value) -> &str {
    v.as_array()
        .and_then(|a| a.get(1))
        .and_then(Value::as_str)
        .unwrap_or("")
}

impl Writeback {
    /// A write-back over a client.
    pub fn new(rpc: OdooRpc, cfg: WritebackConfig) -> Self {
        let lookups = lookups::Lookups::new(Arc::default(), cfg.cache_ttl);
        Self {
            rpc,
            cfg,
            stats: Arc::default(),
            lookups,
            tracking_field: std::sync::OnceLock::new(),
        }
    }

    /// Caches lookups, invalidated by the stream's changes counted in `epochs`.
    pub fn with_epochs(mut self, epochs: Arc<crate::runtime::shared::TableEpochs>) -> Self {
        self.lookups = lookups::Lookups::new(epochs, self.cfg.cache_ttl);
        self
    }

    /// Counts into `stats` (shared with `/metrics`).
    pub fn with_stats(mut self, stats: Arc<WritebackStats>) -> Self {
        self.stats = stats;
        self
    }

    async fn call(&self, cx: &Ctx<'_>, call: Call) -> Result<Value, SinkError> {
        let what = call.describe();
        let result = self.rpc.call(&call).await;
        let detail = match &result {
            Ok(v) => format!(
                "{what} -> {}",
                v.to_string().chars().take(200).collect::<String>()
            ),
            Err(e) => format!("{what} failed: {e}"),
        };
        let odoo_id = match (&call, &result) {
            (Call::Create { .. } | Call::CreateWith { .. }, Ok(v)) => as_id(v),
            (Call::Method { ids, .. } | Call::Write { ids, .. }, _) => ids.first().copied(),
            _ => None,
        };
        cx.audit("rpc", &detail, odoo_id).await;
        result
    }

    async fn search(
        &self,
        cx: &Ctx<'_>,
        model: &'static str,
        domain: Value,
    ) -> Result<Option<i64>, SinkError> {
        let key = lookups::Lookups::caches(model).then(|| domain.to_string());
        if let Some(k) = &key {
            if let Some(id) = self.lookups.id(model, k).await {
                return Ok(Some(id));
            }
        }
        let epoch = self.lookups.epoch_of(model);
        let v = self
            .call(
                cx,
                Call::Search {
                    model,
                    domain,
                    limit: Some(1),
                },
            )
            .await?;
        let found = v.as_array().and_then(|a| a.first()).and_then(Value::as_i64);
        if let (Some(k), Some(id)) = (&key, found) {
            self.lookups.put_id(model, k, id, epoch).await;
        }
        Ok(found)
    }

    async fn read(
        &self,
        cx: &Ctx<'_>,
        model: &'static str,
        domain: Value,
        fields: Vec<&'static str>,
    ) -> Result<Vec<Value>, SinkError> {
        let v = self
            .call(
                cx,
                Call::SearchRead {
                    model,
                    domain,
                    fields,
                    limit: None,
                },
            )
            .await?;
        Ok(v.as_array().cloned().unwrap_or_default())
    }

    /// One record by id, read back: a missing one is a transient failure (the next attempt
    /// finds what is there).
    async fn read_one(
        &self,
        cx: &Ctx<'_>,
        model: &'static str,
        id: i64,
        fields: Vec<&'static str>,
    ) -> Result<Value, SinkError> {
        self.read(cx, model, json!([["id", "=", id]]), fields)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| SinkError::transient(format!("{model} {id} cannot be read back")))
    }

    /// A record's `state`, read back.
    async fn state_of(
        &self,
        cx: &Ctx<'_>,
        model: &'static str,
        id: i64,
    ) -> Result<String, SinkError> {
        Ok(self.read_one(cx, model, id, vec!["state"]).await?["state"]
            .as_str()
            .unwrap_or("")
            .to_string())
    }

    async fn method(
        &self,
        cx: &Ctx<'_>,
        model: &'static str,
        method: &'static str,
        id: i64,
        context: Option<Value>,
    ) -> Result<Value, SinkError> {
        let mut kwargs = Map::new();
        if let Some(c) = context {
            kwargs.insert("context".into(), c);
        }
        self.call(
            cx,
            Call::Method {
                model,
                method,
                ids: vec![id],
                kwargs,
            },
        )
        .await
    }

    async fn write(
        &self,
        cx: &Ctx<'_>,
        model: &'static str,
        id: i64,
        vals: Value,
    ) -> Result<(), SinkError> {
        self.call(
            cx,
            Call::Write {
                model,
                ids: vec![id],
                vals,
            },
        )
        .await
        .map(|_| ())
    }

    async fn create(
        &self,
        cx: &Ctx<'_>,
        model: &'static str,
        vals: Value,
    ) -> Result<i64, SinkError> {
        let v = self.call(cx, Call::Create { model, vals }).await?;
        as_id(&v)
            .ok_or_else(|| SinkError::permanent(format!("{model}.create answered {v}, not an id")))
    }

    /// Odoo's sale taxes by what they charge (rate, price included); `fits` says whether a map
    /// has every tax the caller needs: a cached one that does not is read again from Odoo
    /// (a tax created since), so a stale cache never refuses an order.
    async fn taxes_where(
        &self,
        cx: &Ctx<'_>,
        fits: impl Fn(&BTreeMap<TaxKey, i64>) -> bool,
    ) -> Result<Arc<BTreeMap<TaxKey, i64>>, SinkError> {
        if let Some(t) = self.lookups.taxes().await {
            if fits(&t) {
                return Ok(t);
            }
            self.lookups.forget_taxes().await;
        }
        let rows = self
            .read(
                cx,
                "account.tax",
                json!([
                    ["type_tax_use", "=", "sale"],
                    ["amount_type", "=", "percent"]
                ]),
                vec!["id", "amount", "price_include"],
            )
            .await?;
        let mut out = BTreeMap::new();
        for r in rows {
            if let (Some(id), Some(amount)) = (as_id(&r["id"]), decimal(&r["amount"])) {
                let included = r["price_include"].as_bool().unwrap_or(false);
                out.entry(((amount / Decimal::ONE_HUNDRED).normalize(), included))
                    .or_insert(id);
            }
        }
        let out = Arc::new(out);
        self.lookups.put_taxes(out.clone()).await;
        Ok(out)
    }

    /// Product ids by SKU or barcode (`refs`), as Odoo has them.
    async fn products(
        &self,
        cx: &Ctx<'_>,
        refs: Vec<String>,
    ) -> Result<BTreeMap<String, i64>, SinkError> {
        const MODEL: &str = "product.product";
        let mut out = BTreeMap::new();
        let mut missing = Vec::new();
        for r in refs {
            match self.lookups.id(MODEL, &format!("ref:{r}")).await {
                Some(id) => {
                    out.insert(r, id);
                }
                None => missing.push(r),
            }
        }
        if missing.is_empty() {
            return Ok(out);
        }
        let epoch = self.lookups.epoch_of(MODEL);
        let rows = self
            .read(
                cx,
                MODEL,
                json!([
                    "|",
                    ["default_code", "in", missing],
                    ["barcode", "in", missing]
                ]),
                vec!["id", "default_code", "barcode"],
            )
            .await?;
        for r in &rows {
            let Some(id) = as_id(&r["id"]) else { continue };
            for key in ["default_code", "barcode"] {
                if let Some(code) = r[key].as_str().filter(|c| missing.iter().any(|x| x == c)) {
                    if !out.contains_key(code) {
                        out.insert(code.to_string(), id);
                        self.lookups
                            .put_id(MODEL, &format!("ref:{code}"), id, epoch)
                            .await;
                    }
                }
            }
        }
        Ok(out)
    }

    /// Adds a rounding line so the record's total equals `expected`, when Odoo's 2-decimal
    /// prices left it off by cents; reads the total back, and records what still differs.
    /// `lines_field`: `order_line` (sale.order) or `invoice_line_ids` (account.move).
    async fn settle_total(
        &self,
        cx: &Ctx<'_>,
        model: &'static str,
        id: i64,
        expected: Decimal,
        lines_field: &'static str,
    ) -> Result<Decimal, SinkError> {
        let total =
            cents(&self.read_one(cx, model, id, vec!["amount_total"]).await?["amount_total"]);
        let diff = expected - total;
        if diff.is_zero() {
            return Ok(total);
        }
        // A credit note's amounts are positive like an invoice's.
        let mut line = json!({
            "name": "Rounding difference with Shopify",
            "price_unit": diff.to_string(),
        });
        if model == "sale.order" {
            let sku = self
                .cfg
                .rounding_sku
                .clone()
                .unwrap_or_else(|| self.cfg.shipping_sku.clone());
            let Some(product) = self
                .search(cx, "product.product", json!([["default_code", "=", sku]]))
                .await?
            else {
                return self
                    .mismatch(
                        cx,
                        model,
                        id,
                        expected,
                        total,
                        &format!("no rounding product {sku:?} (odoo.rounding_sku)"),
                    )
                    .await;
            };
            line["product_id"] = json!(product);
            line["product_uom_qty"] = json!("1");
            line["tax_id"] = json!([[6, 0, []]]);
        } else {
            line["quantity"] = json!("1");
            line["tax_ids"] = json!([[6, 0, []]]);
        }
        self.write(cx, model, id, json!({ lines_field: [[0, 0, line]] }))
            .await?;
        self.stats.rounding_lines.fetch_add(1, Ordering::Relaxed);
        let after =
            cents(&self.read_one(cx, model, id, vec!["amount_total"]).await?["amount_total"]);
        cx.audit(
            "rounding",
            &format!("{model} {id}: total {total} in Odoo for {expected} in Shopify; a rounding line of {diff} makes it {after}"),
            Some(id),
        )
        .await;
        if after != expected {
            return self
                .mismatch(cx, model, id, expected, after, "after the rounding line")
                .await;
        }
        Ok(after)
    }

    async fn mismatch(
        &self,
        cx: &Ctx<'_>,
        model: &str,
        id: i64,
        expected: Decimal,
        total: Decimal,
        why: &str,
    ) -> Result<Decimal, SinkError> {
        self.stats.total_mismatches.fetch_add(1, Ordering::Relaxed);
        let text = format!(
            "{model} {id}: total {total} in Odoo differs from {expected} in Shopify by {} ({why})",
            expected - total
        );
        tracing::warn!(%text, "odoo total differs from shopify's");
        cx.audit("total-mismatch", &text, Some(id)).await;
        Ok(total)
    }
}
