//! Shopify orders, cancellations and refunds written into Odoo through its external API.
//! Odoo has no idempotency key, so every write is preceded by a search for what an earlier
//! attempt may have left: the order by `client_order_ref = "shopify:<id>"`, the customer by
//! email, addresses by street, the credit note by `ref = "shopify-refund:<id>"`. Every RPC call
//! and its result goes to the audit trail.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde_json::{json, Map, Value};
use sinks::odoo::{Call, OdooRpc};
use sinks::SinkError;
use tokio_postgres::Client;
use transforms::shopify::{self, Order, Refund};

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

/// The write-back settings and client.
pub struct Writeback {
    rpc: OdooRpc,
    shipping_sku: String,
    warehouse: Option<String>,
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
        Value::Number(n) => n.to_string().parse().ok(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

impl Writeback {
    /// A write-back over a client.
    pub fn new(rpc: OdooRpc, shipping_sku: String, warehouse: Option<String>) -> Self {
        Self {
            rpc,
            shipping_sku,
            warehouse,
        }
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
            (Call::Create { .. }, Ok(v)) => as_id(v),
            (Call::Method { ids, .. }, _) => ids.first().copied(),
            _ => None,
        };
        crate::state::audit(
            cx.db,
            cx.shopify_id,
            Some(cx.inbox_id),
            "rpc",
            &detail,
            odoo_id,
        )
        .await;
        result
    }

    async fn search(
        &self,
        cx: &Ctx<'_>,
        model: &'static str,
        domain: Value,
    ) -> Result<Option<i64>, SinkError> {
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
        Ok(v.as_array().and_then(|a| a.first()).and_then(Value::as_i64))
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

    async fn method(
        &self,
        cx: &Ctx<'_>,
        model: &'static str,
        method: &'static str,
        id: i64,
    ) -> Result<Value, SinkError> {
        self.call(
            cx,
            Call::Method {
                model,
                method,
                ids: vec![id],
                kwargs: Map::new(),
            },
        )
        .await
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

    /// The Odoo order made from a Shopify order, with its state.
    async fn find_order(
        &self,
        cx: &Ctx<'_>,
        order_id: &str,
    ) -> Result<Option<(i64, String, Value)>, SinkError> {
        let rows = self
            .read(
                cx,
                "sale.order",
                json!([["client_order_ref", "=", shopify::client_order_ref(order_id)]]),
                vec!["id", "state", "name", "partner_id"],
            )
            .await?;
        Ok(rows.first().and_then(|r| {
            Some((
                as_id(&r["id"])?,
                r["state"].as_str().unwrap_or("").to_string(),
                r.clone(),
            ))
        }))
    }

    async fn partner(
        &self,
        cx: &Ctx<'_>,
        order: &Order,
    ) -> Result<(i64, Option<i64>, Option<i64>), SinkError> {
        let found = if order.email.is_empty() {
            None
        } else {
            self.search(
                cx,
                "res.partner",
                json!([["email", "=ilike", order.email], ["parent_id", "=", false]]),
            )
            .await?
        };
        let partner = match found {
            Some(p) => p,
            None => {
                let mut vals = json!({"name": order.customer_name, "customer_rank": 1});
                if !order.email.is_empty() {
                    vals["email"] = json!(order.email);
                }
                self.create(cx, "res.partner", vals).await?
            }
        };
        let address = |kind: &'static str, a: Option<&shopify::Address>| {
            let a = a.filter(|a| !a.street.is_empty()).cloned();
            async move {
                let Some(a) = a else {
                    return Ok::<_, SinkError>(None);
                };
                let existing = self
                    .search(
                        cx,
                        "res.partner",
                        json!([
                            ["parent_id", "=", partner],
                            ["type", "=", kind],
                            ["street", "=", a.street],
                            ["zip", "=", a.zip]
                        ]),
                    )
                    .await?;
                match existing {
                    Some(id) => Ok(Some(id)),
                    None => Ok(Some(
                        self.create(
                            cx,
                            "res.partner",
                            shopify::address_vals(&a, Some(partner), kind, &order.email),
                        )
                        .await?,
                    )),
                }
            }
        };
        let shipping = address("delivery", order.shipping_address.as_ref()).await?;
        let invoice = address("invoice", order.billing_address.as_ref()).await?;
        Ok((partner, shipping, invoice))
    }

    async fn products(
        &self,
        cx: &Ctx<'_>,
        skus: Vec<String>,
    ) -> Result<BTreeMap<String, i64>, SinkError> {
        let rows = self
            .read(
                cx,
                "product.product",
                json!([["default_code", "in", skus]]),
                vec!["id", "default_code"],
            )
            .await?;
        Ok(rows
            .iter()
            .filter_map(|r| Some((r["default_code"].as_str()?.to_string(), as_id(&r["id"])?)))
            .collect())
    }

    async fn taxes(&self, cx: &Ctx<'_>) -> Result<BTreeMap<Decimal, i64>, SinkError> {
        let rows = self
            .read(
                cx,
                "account.tax",
                json!([
                    ["type_tax_use", "=", "sale"],
                    ["amount_type", "=", "percent"]
                ]),
                vec!["id", "amount"],
            )
            .await?;
        let mut out = BTreeMap::new();
        for r in rows {
            if let (Some(id), Some(amount)) = (as_id(&r["id"]), decimal(&r["amount"])) {
                out.entry((amount / Decimal::ONE_HUNDRED).normalize())
                    .or_insert(id);
            }
        }
        Ok(out)
    }

    /// `orders/create`: the customer, the order with its lines, taxes, discounts and shipping,
    /// then `action_confirm` (which reserves the stock).
    pub async fn order_create(
        &self,
        cx: &Ctx<'_>,
        order: &Order,
        cancelled_first: bool,
    ) -> Result<Applied, SinkError> {
        if let Some((id, state, _)) = self.find_order(cx, &order.id).await? {
            if state == "draft" || state == "sent" {
                self.method(cx, "sale.order", "action_confirm", id).await?;
                return Ok(Applied::Done {
                    odoo_id: Some(id),
                    detail: "order was in Odoo unconfirmed (an interrupted attempt); confirmed"
                        .into(),
                });
            }
            return Ok(Applied::Done {
                odoo_id: Some(id),
                detail: format!("order already in Odoo ({state}); nothing to do"),
            });
        }
        if cancelled_first {
            return Ok(Applied::Refused(
                "the order was cancelled in Shopify before it reached Odoo; not created".into(),
            ));
        }
        let (partner_id, shipping_partner_id, invoice_partner_id) = self.partner(cx, order).await?;
        let skus: Vec<String> = order.lines.iter().map(|l| l.sku.clone()).collect();
        let products = self.products(cx, skus).await?;
        let needs_taxes = order.lines.iter().any(|l| !l.tax_rates.is_empty())
            || order.shipping.iter().any(|s| !s.tax_rates.is_empty());
        let taxes = if needs_taxes {
            self.taxes(cx).await?
        } else {
            BTreeMap::new()
        };
        let shipping_product = if order.shipping.iter().any(|s| !s.price.is_zero()) {
            self.search(
                cx,
                "product.product",
                json!([["default_code", "=", self.shipping_sku]]),
            )
            .await?
        } else {
            None
        };
        let warehouse_id = match &self.warehouse {
            Some(code) => Some(
                self.search(cx, "stock.warehouse", json!([["code", "=", code]]))
                    .await?
                    .ok_or_else(|| {
                        SinkError::permanent(format!(
                            "no Odoo warehouse with code {code:?} (odoo.warehouse)"
                        ))
                    })?,
            ),
            None => None,
        };
        let ids = shopify::OdooIds {
            partner_id,
            shipping_partner_id,
            invoice_partner_id,
            products,
            taxes: taxes.into_iter().map(|(k, v)| (k.normalize(), v)).collect(),
            shipping_product,
            warehouse_id,
        };
        let mut normalized = order.clone();
        for l in &mut normalized.lines {
            for r in &mut l.tax_rates {
                *r = r.normalize();
            }
        }
        for s in &mut normalized.shipping {
            for r in &mut s.tax_rates {
                *r = r.normalize();
            }
        }
        let vals = shopify::sale_order_vals(&normalized, &ids)
            .map_err(|e| SinkError::permanent(e.to_string()))?;
        let id = self.create(cx, "sale.order", vals).await?;
        self.method(cx, "sale.order", "action_confirm", id).await?;
        Ok(Applied::Done {
            odoo_id: Some(id),
            detail: format!("sale.order {id} created and confirmed"),
        })
    }

    /// `orders/cancelled`: cancels the Odoo order, or records that it never reached Odoo.
    pub async fn order_cancel(&self, cx: &Ctx<'_>, order_id: &str) -> Result<Applied, SinkError> {
        match self.find_order(cx, order_id).await? {
            Some((id, state, _)) if state == "cancel" => Ok(Applied::Done {
                odoo_id: Some(id),
                detail: "order already cancelled in Odoo".into(),
            }),
            Some((id, _, _)) => {
                self.method(cx, "sale.order", "action_cancel", id).await?;
                Ok(Applied::Done {
                    odoo_id: Some(id),
                    detail: format!("sale.order {id} cancelled"),
                })
            }
            None => Ok(Applied::Done {
                odoo_id: None,
                detail: "cancelled before the order reached Odoo: a later create is refused".into(),
            }),
        }
    }

    /// `refunds/create`: a posted credit note for the refunded lines and shipping.
    pub async fn refund(
        &self,
        cx: &Ctx<'_>,
        order: &Order,
        refund: &Refund,
    ) -> Result<Applied, SinkError> {
        let credit = self.credit_note(cx, order, refund).await?;
        let returned = self.return_receipt(cx, order, refund).await?;
        Ok(match (credit, returned) {
            (Applied::Done { odoo_id, detail }, Some(r)) => Applied::Done {
                odoo_id,
                detail: format!("{detail}; {r}"),
            },
            (a, _) => a,
        })
    }

    /// Restocked lines (`restock_type = "return"`) of a shipped order come back through
    /// Odoo's return wizard: a return receipt of the delivery. Once per refund.
    async fn return_receipt(
        &self,
        cx: &Ctx<'_>,
        order: &Order,
        refund: &Refund,
    ) -> Result<Option<String>, SinkError> {
        let lines = shopify::refund_lines(order, refund).map_err(SinkError::permanent)?;
        let restocked: Vec<(String, Decimal)> = refund
            .lines
            .iter()
            .filter(|r| r.restock_type == "return")
            .filter_map(|r| {
                let (l, q, _) = lines.iter().find(|(l, _, _)| l.id == r.line_item_id)?;
                Some((l.sku.clone(), *q))
            })
            .collect();
        if restocked.is_empty() {
            return Ok(None);
        }
        let done = cx
            .db
            .query_opt(
                "SELECT odoo_id FROM odoo_cdc.audit WHERE inbox_id = $1 AND kind = 'return' LIMIT 1",
                &[&cx.inbox_id],
            )
            .await
            .map_err(|e| SinkError::transient(format!("audit: {e}")))?;
        if let Some(r) = done {
            let id: Option<i64> = r.get(0);
            return Ok(Some(format!(
                "return receipt {} already made",
                id.unwrap_or(0)
            )));
        }
        let Some((order_odoo_id, _, _)) = self.find_order(cx, &order.id).await? else {
            return Ok(None);
        };
        let Some(delivery) = self
            .search(
                cx,
                "stock.picking",
                json!([["sale_id", "=", order_odoo_id], ["state", "=", "done"]]),
            )
            .await?
        else {
            return Ok(Some("not shipped yet: nothing to receive back".to_string()));
        };
        let products = self
            .products(cx, restocked.iter().map(|(s, _)| s.clone()).collect())
            .await?;
        let mut moves = Vec::new();
        for (sku, qty) in &restocked {
            if let Some(p) = products.get(sku) {
                moves.push(json!([0, 0, {"product_id": p, "quantity": qty.to_string()}]));
            }
        }
        let wizard = self
            .create(
                cx,
                "stock.return.picking",
                json!({"picking_id": delivery, "product_return_moves": moves}),
            )
            .await?;
        let action = self
            .method(cx, "stock.return.picking", "action_create_returns", wizard)
            .await?;
        let receipt = as_id(&action["res_id"]);
        crate::state::audit(
            cx.db,
            cx.shopify_id,
            Some(cx.inbox_id),
            "return",
            &format!(
                "return receipt {} of delivery {delivery}",
                receipt.unwrap_or(0)
            ),
            receipt,
        )
        .await;
        Ok(Some(format!(
            "return receipt {} for the restocked units",
            receipt.unwrap_or(0)
        )))
    }

    /// The posted credit note of a refund.
    async fn credit_note(
        &self,
        cx: &Ctx<'_>,
        order: &Order,
        refund: &Refund,
    ) -> Result<Applied, SinkError> {
        let reference = shopify::refund_ref(&refund.id);
        if let Some(id) = self
            .search(cx, "account.move", json!([["ref", "=", reference]]))
            .await?
        {
            let state = self
                .read(cx, "account.move", json!([["id", "=", id]]), vec!["state"])
                .await?
                .first()
                .and_then(|r| r["state"].as_str().map(str::to_string))
                .unwrap_or_default();
            if state == "draft" {
                self.method(cx, "account.move", "action_post", id).await?;
            }
            return Ok(Applied::Done {
                odoo_id: Some(id),
                detail: "credit note already in Odoo".into(),
            });
        }
        let Some((order_odoo_id, _, row)) = self.find_order(cx, &order.id).await? else {
            return Err(SinkError::transient(format!(
                "order {} is not in Odoo yet; the refund waits for it",
                order.id
            )));
        };
        let partner = as_id(&row["partner_id"]).ok_or_else(|| {
            SinkError::permanent(format!("sale.order {order_odoo_id} has no customer"))
        })?;
        let lines = shopify::refund_lines(order, refund).map_err(SinkError::permanent)?;
        let products = self
            .products(cx, lines.iter().map(|(l, _, _)| l.sku.clone()).collect())
            .await?;
        let taxes = if lines.iter().any(|(l, _, _)| !l.tax_rates.is_empty()) {
            self.taxes(cx).await?
        } else {
            BTreeMap::new()
        };
        let mut invoice_lines = Vec::new();
        for (l, qty, unit) in &lines {
            let product = products.get(&l.sku).ok_or_else(|| {
                SinkError::permanent(format!(
                    "unknown SKU {:?}: no Odoo product has this internal reference",
                    l.sku
                ))
            })?;
            let mut tax_ids = Vec::new();
            for r in &l.tax_rates {
                tax_ids.push(*taxes.get(&r.normalize()).ok_or_else(|| {
                    SinkError::permanent(format!(
                        "unknown tax rate {r}: no Odoo sale tax of this percentage"
                    ))
                })?);
            }
            invoice_lines.push(json!([0, 0, {
                "product_id": product, "name": l.title, "quantity": qty.to_string(),
                "price_unit": unit.to_string(), "tax_ids": [[6, 0, tax_ids]],
            }]));
        }
        if !refund.shipping.is_zero() {
            invoice_lines.push(json!([0, 0, {
                "name": "Shipping refund", "quantity": "1", "price_unit": refund.shipping.to_string(), "tax_ids": [[6, 0, []]],
            }]));
        }
        if invoice_lines.is_empty() {
            return Ok(Applied::Done {
                odoo_id: None,
                detail: "refund of nothing billable; no credit note".into(),
            });
        }
        let id = self
            .create(
                cx,
                "account.move",
                json!({
                    "move_type": "out_refund",
                    "partner_id": partner,
                    "invoice_origin": row["name"].as_str().unwrap_or(""),
                    "ref": reference,
                    "invoice_line_ids": invoice_lines,
                }),
            )
            .await?;
        self.method(cx, "account.move", "action_post", id).await?;
        let restocked: Decimal = refund
            .lines
            .iter()
            .filter(|l| l.restock_type == "return")
            .map(|l| l.quantity)
            .sum();
        Ok(Applied::Done {
            odoo_id: Some(id),
            detail: if restocked.is_zero() {
                format!("credit note {id} posted")
            } else {
                format!(
                    "credit note {id} posted; {restocked} unit(s) to come back by return receipt"
                )
            },
        })
    }
}
