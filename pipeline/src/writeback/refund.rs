//! `refunds/create` into Odoo: a posted credit note for the money Shopify returned, and a
//! return receipt, made through the return wizard of the original delivery, for the units
//! restocked as returns.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde_json::json;
use sinks::SinkError;
use transforms::shopify::{self, Order, Refund};

use super::{as_id, cents, decimal, Applied, Ctx, Writeback};

impl Writeback {
    /// `refunds/create`: the credit note, then the return receipt of restocked units.
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

    /// Posts a draft credit note after settling its total, and reads it back.
    async fn post_credit_note(
        &self,
        cx: &Ctx<'_>,
        id: i64,
        expected: Decimal,
    ) -> Result<Decimal, SinkError> {
        let total = self
            .settle_total(cx, "account.move", id, expected, "invoice_line_ids")
            .await?;
        self.method(cx, "account.move", "action_post", id, None)
            .await?;
        let state = self.state_of(cx, "account.move", id).await?;
        if state != "posted" {
            return Err(SinkError::transient(format!(
                "account.move {id}: action_post answered, but the credit note is {state:?}"
            )));
        }
        Ok(total)
    }

    /// The posted credit note of a refund, equal to what Shopify returned.
    async fn credit_note(
        &self,
        cx: &Ctx<'_>,
        order: &Order,
        refund: &Refund,
    ) -> Result<Applied, SinkError> {
        let reference = shopify::refund_ref(&refund.id);
        let expected = refund.expected_total();
        if let Some(id) = self
            .search(cx, "account.move", json!([["ref", "=", reference]]))
            .await?
        {
            let row = self
                .read_one(cx, "account.move", id, vec!["state", "amount_total"])
                .await?;
            let total = if row["state"] == "draft" {
                self.post_credit_note(cx, id, expected).await?
            } else {
                cents(&row["amount_total"])
            };
            return Ok(Applied::Done {
                odoo_id: Some(id),
                detail: format!("credit note already in Odoo, total {total}"),
            });
        }
        let Some(found) = self.find_order(cx, &order.id).await? else {
            return Err(SinkError::transient(format!(
                "order {} is not in Odoo yet; the refund waits for it",
                order.id
            )));
        };
        let partner = as_id(&found.row["partner_id"]).ok_or_else(|| {
            SinkError::permanent(format!("sale.order {} has no customer", found.id))
        })?;
        let planned = shopify::credit_lines(order, refund).map_err(SinkError::permanent)?;
        if planned.is_empty() && expected.is_zero() {
            return Ok(Applied::Done {
                odoo_id: None,
                detail: "refund of no money; no credit note".into(),
            });
        }
        let products = if planned.iter().any(|l| l.line_id.is_some()) {
            self.line_products(cx, order).await?
        } else {
            BTreeMap::new()
        };
        let taxes = if planned.iter().any(|l| !l.rates.is_empty()) {
            let fits = |t: &BTreeMap<shopify::TaxKey, i64>| {
                planned
                    .iter()
                    .all(|l| shopify::resolve_taxes(&l.rates, order.taxes_included, t).is_ok())
            };
            self.taxes_where(cx, fits).await?.as_ref().clone()
        } else {
            BTreeMap::new()
        };
        let mut invoice_lines = Vec::new();
        for l in &planned {
            let tax_ids = shopify::resolve_taxes(&l.rates, order.taxes_included, &taxes)
                .map_err(|e| SinkError::permanent(e.to_string()))?;
            let mut line = json!({
                "name": l.name, "quantity": l.quantity.to_string(),
                "price_unit": l.price_unit.to_string(), "tax_ids": [[6, 0, tax_ids]],
            });
            if let Some(p) = l.line_id.as_ref().and_then(|id| products.get(id)) {
                line["product_id"] = json!(p);
            }
            invoice_lines.push(json!([0, 0, line]));
        }
        let mut vals = json!({
            "move_type": "out_refund",
            "partner_id": partner,
            "invoice_origin": found.row["name"].as_str().unwrap_or(""),
            "ref": reference,
            "invoice_line_ids": invoice_lines,
        });
        if let Some(currency) = as_id(&found.row["currency_id"]) {
            vals["currency_id"] = json!(currency);
        }
        let id = self.create(cx, "account.move", vals).await?;
        let total = self.post_credit_note(cx, id, expected).await?;
        let restocked = refund.returned_units();
        Ok(Applied::Done {
            odoo_id: Some(id),
            detail: if restocked.is_zero() {
                format!("credit note {id} posted, total {total} (Shopify returned {expected})")
            } else {
                format!(
                    "credit note {id} posted, total {total} (Shopify returned {expected}); {restocked} unit(s) to come back by return receipt"
                )
            },
        })
    }

    /// Restocked lines (`restock_type = "return"`) of a shipped order come back through the
    /// return wizard of the delivery that shipped them, so the receipt's moves point at the
    /// delivered moves (`origin_returned_move_id`) and Odoo does not invoice them again. One
    /// receipt per refund, found again by its origin however often the refund arrives.
    async fn return_receipt(
        &self,
        cx: &Ctx<'_>,
        order: &Order,
        refund: &Refund,
    ) -> Result<Option<String>, SinkError> {
        let mut wanted: BTreeMap<String, Decimal> = BTreeMap::new();
        for r in refund
            .lines
            .iter()
            .filter(|r| r.restock_type == "return" || r.restock_type == "legacy_restock")
        {
            *wanted.entry(r.line_item_id.clone()).or_default() += r.quantity;
        }
        if wanted.values().all(|q| q.is_zero()) {
            return Ok(None);
        }
        let reference = shopify::refund_ref(&refund.id);
        if let Some(r) = self
            .search(cx, "stock.picking", json!([["origin", "ilike", reference]]))
            .await?
        {
            return Ok(Some(format!("return receipt {r} already made")));
        }
        let Some(found) = self.find_order(cx, &order.id).await? else {
            return Ok(None);
        };
        let deliveries = self
            .read(
                cx,
                "stock.picking",
                json!([
                    ["sale_id", "=", found.id],
                    ["state", "=", "done"],
                    ["return_id", "=", false]
                ]),
                vec!["id", "name"],
            )
            .await?;
        if deliveries.is_empty() {
            return Ok(Some("not shipped yet: nothing to receive back".to_string()));
        }
        let line_products = self.line_products(cx, order).await?;
        // Units to return per product.
        let mut left: BTreeMap<i64, Decimal> = BTreeMap::new();
        for (line, qty) in &wanted {
            if let Some(p) = line_products.get(line) {
                *left.entry(*p).or_default() += *qty;
            }
        }
        let mut made = Vec::new();
        for d in &deliveries {
            if left.values().all(|q| q.is_zero()) {
                break;
            }
            let (Some(delivery), Some(name)) = (as_id(&d["id"]), d["name"].as_str()) else {
                continue;
            };
            if let Some(receipt) = self
                .return_from(cx, delivery, name, &reference, &mut left)
                .await?
            {
                made.push(receipt);
            }
        }
        let short: Vec<String> = left
            .iter()
            .filter(|(_, q)| !q.is_zero())
            .map(|(p, q)| format!("{q} of product {p}"))
            .collect();
        if made.is_empty() {
            return Err(SinkError::permanent(format!(
                "refund {}: no delivery of the order shipped what was restocked ({})",
                refund.id,
                short.join(", ")
            )));
        }
        Ok(Some(format!(
            "return receipt{} {} linked to the delivery, waiting to be received{}",
            if made.len() == 1 { "" } else { "s" },
            made.iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            if short.is_empty() {
                String::new()
            } else {
                format!(
                    " ({} more than was delivered, not returned)",
                    short.join(", ")
                )
            }
        )))
    }

    /// One delivery's return: the wizard opened on it, quantities set on the lines it
    /// proposes (one per delivered move), the returns created and the receipt read back.
    async fn return_from(
        &self,
        cx: &Ctx<'_>,
        delivery: i64,
        delivery_name: &str,
        reference: &str,
        left: &mut BTreeMap<i64, Decimal>,
    ) -> Result<Option<i64>, SinkError> {
        let context = json!({"active_id": delivery, "active_ids": [delivery], "active_model": "stock.picking"});
        let wizard = self
            .call(
                cx,
                sinks::odoo::Call::CreateWith {
                    model: "stock.return.picking",
                    vals: json!({"picking_id": delivery}),
                    context,
                },
            )
            .await?;
        let wizard = as_id(&wizard).ok_or_else(|| {
            SinkError::permanent(format!("stock.return.picking.create answered {wizard}"))
        })?;
        let lines = self
            .read(
                cx,
                "stock.return.picking.line",
                json!([["wizard_id", "=", wizard]]),
                vec!["id", "product_id", "move_id", "move_quantity"],
            )
            .await?;
        let mut commands = Vec::new();
        for l in &lines {
            let (Some(line), Some(product)) = (as_id(&l["id"]), as_id(&l["product_id"])) else {
                continue;
            };
            let Some(want) = left.get_mut(&product).filter(|q| !q.is_zero()) else {
                continue;
            };
            let delivered = decimal(&l["move_quantity"]).unwrap_or(*want);
            let qty = (*want).min(delivered);
            if qty <= Decimal::ZERO {
                continue;
            }
            *want -= qty;
            commands.push(json!([1, line, {"quantity": qty.to_string()}]));
        }
        if commands.is_empty() {
            return Ok(None);
        }
        self.write(
            cx,
            "stock.return.picking",
            wizard,
            json!({"product_return_moves": commands}),
        )
        .await?;
        let action = self
            .method(
                cx,
                "stock.return.picking",
                "action_create_returns",
                wizard,
                None,
            )
            .await?;
        let receipt = as_id(&action["res_id"]).ok_or_else(|| {
            SinkError::permanent(format!(
                "stock.return.picking.action_create_returns answered {action}, not a picking"
            ))
        })?;
        self.write(
            cx,
            "stock.picking",
            receipt,
            json!({"origin": format!("Return of {delivery_name} ({reference})")}),
        )
        .await?;
        let back = self
            .read_one(cx, "stock.picking", receipt, vec!["state", "return_id"])
            .await?;
        if as_id(&back["return_id"]) != Some(delivery) {
            return Err(SinkError::permanent(format!(
                "return receipt {receipt} is not linked to delivery {delivery_name}: {back}"
            )));
        }
        cx.audit(
            "return",
            &format!(
                "return receipt {receipt} of delivery {delivery_name} for {reference} ({})",
                back["state"].as_str().unwrap_or("")
            ),
            Some(receipt),
        )
        .await;
        Ok(Some(receipt))
    }
}
