//! `orders/create` and `orders/cancelled` into Odoo.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use sinks::SinkError;
use transforms::shopify::{self, Order, Unmapped};

use super::{as_id, cents, many2one_name, Applied, Ctx, Writeback};

/// An Odoo order made from a Shopify order.
pub(super) struct FoundOrder {
    pub id: i64,
    pub state: String,
    pub row: Value,
}

fn unmapped(e: Unmapped) -> SinkError {
    SinkError::permanent(e.to_string())
}

impl Writeback {
    /// The Odoo order made from a Shopify order, with its state.
    pub(super) async fn find_order(
        &self,
        cx: &Ctx<'_>,
        order_id: &str,
    ) -> Result<Option<FoundOrder>, SinkError> {
        let rows = self
            .read(
                cx,
                "sale.order",
                json!([["client_order_ref", "=", shopify::client_order_ref(order_id)]]),
                vec!["id", "state", "name", "partner_id", "currency_id", "locked"],
            )
            .await?;
        Ok(rows.into_iter().next().and_then(|r| {
            Some(FoundOrder {
                id: as_id(&r["id"])?,
                state: r["state"].as_str().unwrap_or("").to_string(),
                row: r,
            })
        }))
    }

    /// Odoo's product for every line, by SKU or through `variant_map`; a line Odoo has no
    /// product for is a permanent failure naming it.
    pub(super) async fn line_products(
        &self,
        cx: &Ctx<'_>,
        order: &Order,
    ) -> Result<BTreeMap<String, i64>, SinkError> {
        let mut refs = BTreeMap::new();
        for l in &order.lines {
            refs.insert(
                l.id.clone(),
                shopify::product_ref(l, &self.cfg.variant_map).map_err(unmapped)?,
            );
        }
        let found = self.products(cx, refs.values().cloned().collect()).await?;
        refs.into_iter()
            .map(|(line, r)| {
                found
                    .get(&r)
                    .map(|id| (line, *id))
                    .ok_or_else(|| unmapped(Unmapped::Sku(r)))
            })
            .collect()
    }

    /// The pricelist to sell in the order's currency (none for the company's currency).
    async fn pricelist(&self, cx: &Ctx<'_>, order: &Order) -> Result<Option<i64>, SinkError> {
        if order.currency.is_empty() {
            return Ok(None);
        }
        let company_currency = match self.lookups.company_currency().await {
            Some(c) => c,
            None => {
                let company = self
                    .read(cx, "res.company", json!([]), vec!["id", "currency_id"])
                    .await?;
                let c = company
                    .first()
                    .map(|c| many2one_name(&c["currency_id"]).to_string())
                    .unwrap_or_default();
                if !c.is_empty() {
                    self.lookups.put_company_currency(c.clone()).await;
                }
                c
            }
        };
        if company_currency.eq_ignore_ascii_case(&order.currency) {
            return Ok(None);
        }
        let missing = || {
            unmapped(Unmapped::Currency(
                order.currency.clone(),
                company_currency.clone(),
            ))
        };
        let currency = self
            .search(
                cx,
                "res.currency",
                json!([["name", "=", order.currency], ["active", "=", true]]),
            )
            .await?
            .ok_or_else(missing)?;
        self.search(
            cx,
            "product.pricelist",
            json!([["currency_id", "=", currency]]),
        )
        .await?
        .map(Some)
        .ok_or_else(missing)
    }

    async fn country_state(
        &self,
        cx: &Ctx<'_>,
        a: &shopify::Address,
    ) -> Result<(Option<i64>, Option<i64>), SinkError> {
        if a.country_code.is_empty() {
            return Ok((None, None));
        }
        let Some(country) = self
            .search(cx, "res.country", json!([["code", "=", a.country_code]]))
            .await?
        else {
            return Ok((None, None));
        };
        let state = if a.province_code.is_empty() {
            None
        } else {
            self.search(
                cx,
                "res.country.state",
                json!([["country_id", "=", country], ["code", "=", a.province_code]]),
            )
            .await?
        };
        Ok((Some(country), state))
    }

    /// The customer and its delivery and invoice addresses: found by email (or the default
    /// customer by name), else created.
    async fn partner(
        &self,
        cx: &Ctx<'_>,
        order: &Order,
    ) -> Result<(i64, Option<i64>, Option<i64>), SinkError> {
        if !order.has_customer() {
            let Some(name) = self.cfg.default_customer.as_deref() else {
                return Err(SinkError::permanent(
                    "the order has no customer (no email, no name) and [odoo] default_customer is not set",
                ));
            };
            let id = match self
                .search(
                    cx,
                    "res.partner",
                    json!([["name", "=", name], ["parent_id", "=", false]]),
                )
                .await?
            {
                Some(id) => id,
                None => {
                    self.create(cx, "res.partner", json!({"name": name, "customer_rank": 1}))
                        .await?
                }
            };
            return Ok((id, None, None));
        }
        let found = if order.email.is_empty() {
            self.search(
                cx,
                "res.partner",
                json!([
                    ["name", "=", order.customer_name],
                    ["email", "=", false],
                    ["parent_id", "=", false]
                ]),
            )
            .await?
        } else {
            self.search(
                cx,
                "res.partner",
                json!([["email", "=ilike", order.email], ["parent_id", "=", false]]),
            )
            .await?
        };
        let main = order
            .billing_address
            .as_ref()
            .or(order.shipping_address.as_ref());
        let partner = match found {
            Some(p) => p,
            None => {
                let mut vals = json!({"name": order.customer_name, "customer_rank": 1});
                if !order.email.is_empty() {
                    vals["email"] = json!(order.email);
                }
                if let Some(a) = main {
                    let (country, state) = self.country_state(cx, a).await?;
                    if let Some(c) = country {
                        vals["country_id"] = json!(c);
                    }
                    if let Some(s) = state {
                        vals["state_id"] = json!(s);
                    }
                }
                self.create(cx, "res.partner", vals).await?
            }
        };
        let mut addresses = Vec::new();
        for (kind, a) in [
            ("delivery", order.shipping_address.as_ref()),
            ("invoice", order.billing_address.as_ref()),
        ] {
            let Some(a) = a.filter(|a| !a.street.is_empty()) else {
                addresses.push(None);
                continue;
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
            let id = match existing {
                Some(id) => id,
                None => {
                    let (country, state) = self.country_state(cx, a).await?;
                    self.create(
                        cx,
                        "res.partner",
                        shopify::address_vals(a, Some(partner), kind, &order.email, country, state),
                    )
                    .await?
                }
            };
            addresses.push(Some(id));
        }
        Ok((partner, addresses[0], addresses[1]))
    }

    /// Confirms a draft order and reads its state back.
    async fn confirm(&self, cx: &Ctx<'_>, id: i64) -> Result<(), SinkError> {
        self.method(cx, "sale.order", "action_confirm", id, None)
            .await?;
        let state = self.state_of(cx, "sale.order", id).await?;
        if state != "sale" {
            return Err(SinkError::transient(format!(
                "sale.order {id}: action_confirm answered, but the order is {state:?}"
            )));
        }
        Ok(())
    }

    /// `orders/create`: the customer, the order with its lines, taxes, discounts and shipping,
    /// its total settled to Shopify's, then `action_confirm` (which reserves the stock).
    pub async fn order_create(
        &self,
        cx: &Ctx<'_>,
        order: &Order,
        cancelled_first: bool,
    ) -> Result<Applied, SinkError> {
        if let Some(found) = self.find_order(cx, &order.id).await? {
            if found.state == "draft" || found.state == "sent" {
                // An interrupted attempt: its total may not be settled yet.
                let total = self
                    .settle_total(
                        cx,
                        "sale.order",
                        found.id,
                        order.expected_total(),
                        "order_line",
                    )
                    .await?;
                self.confirm(cx, found.id).await?;
                return Ok(Applied::Done {
                    odoo_id: Some(found.id),
                    detail: format!(
                        "order was in Odoo unconfirmed (an interrupted attempt); confirmed, total {total}"
                    ),
                });
            }
            return Ok(Applied::Done {
                odoo_id: Some(found.id),
                detail: format!("order already in Odoo ({}); nothing to do", found.state),
            });
        }
        if cancelled_first {
            return Ok(Applied::Refused(
                "the order was cancelled in Shopify before it reached Odoo; not created".into(),
            ));
        }
        // Everything that can refuse the order, before anything is created.
        let line_products = self.line_products(cx, order).await?;
        let needs_taxes = order.lines.iter().any(|l| !l.taxes.is_empty())
            || order.shipping.iter().any(|s| !s.taxes.is_empty());
        let taxes = if needs_taxes {
            let probe = shopify::OdooIds {
                line_products: line_products.clone(),
                ..shopify::OdooIds::default()
            };
            let fits = |t: &BTreeMap<shopify::TaxKey, i64>| {
                let ids = shopify::OdooIds {
                    taxes: t.clone(),
                    ..probe.clone()
                };
                !matches!(
                    shopify::sale_order_vals(order, &ids),
                    Err(Unmapped::Tax { .. })
                )
            };
            self.taxes_where(cx, fits).await?.as_ref().clone()
        } else {
            BTreeMap::new()
        };
        let shipping_product = if order.shipping.iter().any(|s| !s.price.is_zero()) {
            self.search(
                cx,
                "product.product",
                json!([["default_code", "=", self.cfg.shipping_sku]]),
            )
            .await?
        } else {
            None
        };
        let warehouse_id = match &self.cfg.warehouse {
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
        let pricelist_id = self.pricelist(cx, order).await?;
        let mut ids = shopify::OdooIds {
            partner_id: 0,
            line_products,
            taxes,
            shipping_product,
            warehouse_id,
            pricelist_id,
            ..shopify::OdooIds::default()
        };
        // Build once with a placeholder customer: an unmapped tax or shipping product refuses
        // the order here, before the customer is created.
        shopify::sale_order_vals(order, &ids).map_err(unmapped)?;
        let (partner_id, shipping_partner_id, invoice_partner_id) = self.partner(cx, order).await?;
        ids.partner_id = partner_id;
        ids.shipping_partner_id = shipping_partner_id;
        ids.invoice_partner_id = invoice_partner_id;
        let vals = shopify::sale_order_vals(order, &ids).map_err(unmapped)?;
        let id = self.create(cx, "sale.order", vals).await?;
        let created = self
            .read_one(cx, "sale.order", id, vec!["currency_id", "amount_total"])
            .await?;
        let currency = many2one_name(&created["currency_id"]).to_string();
        if !order.currency.is_empty() && !currency.eq_ignore_ascii_case(&order.currency) {
            return Err(SinkError::permanent(format!(
                "sale.order {id} came out in {currency}, the Shopify order is in {}",
                order.currency
            )));
        }
        let total = self
            .settle_total(cx, "sale.order", id, order.expected_total(), "order_line")
            .await?;
        self.confirm(cx, id).await?;
        Ok(Applied::Done {
            odoo_id: Some(id),
            detail: format!(
                "sale.order {id} created and confirmed, total {total} {currency} (Odoo answered {} before settling)",
                cents(&created["amount_total"])
            ),
        })
    }

    /// `orders/cancelled`: cancels the Odoo order for real (Odoo 18 answers a plain
    /// `action_cancel` of a confirmed order with the `sale.order.cancel` wizard and cancels
    /// nothing), reads the state back, or records that the order never reached Odoo.
    pub async fn order_cancel(&self, cx: &Ctx<'_>, order_id: &str) -> Result<Applied, SinkError> {
        let Some(found) = self.find_order(cx, order_id).await? else {
            return Ok(Applied::Done {
                odoo_id: None,
                detail: "cancelled before the order reached Odoo: a later create is refused".into(),
            });
        };
        let id = found.id;
        if found.state == "cancel" {
            return Ok(Applied::Done {
                odoo_id: Some(id),
                detail: "order already cancelled in Odoo".into(),
            });
        }
        if found.row["locked"].as_bool() == Some(true) {
            self.method(cx, "sale.order", "action_unlock", id, None)
                .await?;
        }
        let answer = self
            .method(
                cx,
                "sale.order",
                "action_cancel",
                id,
                Some(json!({"disable_cancel_warning": true})),
            )
            .await?;
        let mut state = self.state_of(cx, "sale.order", id).await?;
        if state != "cancel" && answer["res_model"] == "sale.order.cancel" {
            // The context was not honoured: go through the wizard, as a person would.
            let wizard = self
                .create(cx, "sale.order.cancel", json!({"order_id": id}))
                .await?;
            self.method(cx, "sale.order.cancel", "action_cancel", wizard, None)
                .await?;
            state = self.state_of(cx, "sale.order", id).await?;
        }
        if state != "cancel" {
            return Err(SinkError::permanent(format!(
                "sale.order {id}: action_cancel answered {answer}, but the order is still {state:?}"
            )));
        }
        let pickings = self
            .read(
                cx,
                "stock.picking",
                json!([["sale_id", "=", id]]),
                vec!["name", "state"],
            )
            .await?;
        let open: Vec<String> = pickings
            .iter()
            .filter(|p| p["state"] != "cancel" && p["state"] != "done")
            .map(|p| {
                format!(
                    "{} {}",
                    p["name"].as_str().unwrap_or(""),
                    p["state"].as_str().unwrap_or("")
                )
            })
            .collect();
        if !open.is_empty() {
            return Err(SinkError::permanent(format!(
                "sale.order {id} is cancelled, but its deliveries are not: {}",
                open.join(", ")
            )));
        }
        Ok(Applied::Done {
            odoo_id: Some(id),
            detail: format!(
                "sale.order {id} cancelled (read back), {} deliver{} cancelled",
                pickings.len(),
                if pickings.len() == 1 { "y" } else { "ies" }
            ),
        })
    }
}
