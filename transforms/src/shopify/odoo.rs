//! What a Shopify order or refund becomes in Odoo: `sale.order.create` values and credit note
//! lines. Pure: the ids Odoo assigned come in as [`OdooIds`].
//!
//! Money must come out to the cent. Odoo stores a line's `discount` with 2 decimals (8.3375 %
//! is kept as 8.34 %) and its `price_unit` with the Product Price precision (2), so a
//! percentage derived from Shopify's discount allocation can move a line by cents. Each line is
//! priced the exact way when there is one ([`price_line`]); what no exact price can carry is
//! left to the write-back, which reads Odoo's total back and adds a rounding line for the
//! difference.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde_json::{json, Value};

use super::{client_order_ref, Address, Order, Refund};

/// An Odoo sale tax by what it charges: (rate as a fraction, 0.15 for 15 %; price included).
pub type TaxKey = (Decimal, bool);

/// What Odoo already has, for building the order.
#[derive(Debug, Clone, Default)]
pub struct OdooIds {
    /// Customer partner.
    pub partner_id: i64,
    /// Delivery address partner (the customer when absent).
    pub shipping_partner_id: Option<i64>,
    /// Invoice address partner.
    pub invoice_partner_id: Option<i64>,
    /// product.product id by Shopify line item id.
    pub line_products: BTreeMap<String, i64>,
    /// account.tax id by what it charges.
    pub taxes: BTreeMap<TaxKey, i64>,
    /// The delivery product for shipping lines.
    pub shipping_product: Option<i64>,
    /// Warehouse to ship from.
    pub warehouse_id: Option<i64>,
    /// Pricelist in the order's currency (none: the company's currency).
    pub pricelist_id: Option<i64>,
}

/// Something the order needs that Odoo does not have: a permanent failure until fixed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unmapped {
    /// No product with that SKU (`default_code`) or barcode.
    #[error("unknown SKU {0:?}: no Odoo product has this internal reference or barcode")]
    Sku(String),
    /// A line without SKU whose variant is not mapped.
    #[error(
        "line {line} ({title:?}) has no SKU and its variant {variant} is not in [odoo] variant_map"
    )]
    NoSku {
        /// Line item id.
        line: String,
        /// Title.
        title: String,
        /// Variant id (`none` for a custom item).
        variant: String,
    },
    /// No sale tax with that rate (and price-included setting).
    #[error("unknown tax: no Odoo sale tax of {}{}", percent(.rate), if *.included { " included in the price" } else { "" })]
    Tax {
        /// Rate as a fraction.
        rate: Decimal,
        /// Price-included tax wanted.
        included: bool,
    },
    /// Shipping charged but no delivery product configured in Odoo.
    #[error("no delivery product for shipping line {0:?} (odoo.shipping_sku)")]
    Shipping(String),
    /// The order's currency has no Odoo pricelist.
    #[error("order currency {0}: no active Odoo currency and pricelist in {0} (the company's currency is {1})")]
    Currency(String, String),
}

fn percent(rate: &Decimal) -> String {
    format!("{} %", (rate * Decimal::ONE_HUNDRED).normalize())
}

/// What to look an order line's product up by: its SKU, or for a line without one the SKU or
/// barcode `variant_map` gives its Shopify variant.
pub fn product_ref(
    line: &super::OrderLine,
    variant_map: &BTreeMap<String, String>,
) -> Result<String, Unmapped> {
    if !line.sku.is_empty() {
        return Ok(line.sku.clone());
    }
    line.variant_id
        .as_ref()
        .and_then(|v| variant_map.get(v))
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().to_string())
        .ok_or_else(|| Unmapped::NoSku {
            line: line.id.clone(),
            title: line.title.clone(),
            variant: line.variant_id.clone().unwrap_or_else(|| "none".into()),
        })
}

/// The Odoo taxes for a line's rates. A zero rate without a 0 % tax in Odoo charges nothing
/// either way and maps to no tax; any other rate must exist.
pub fn resolve_taxes(
    rates: &[Decimal],
    included: bool,
    taxes: &BTreeMap<TaxKey, i64>,
) -> Result<Vec<i64>, Unmapped> {
    let mut out = Vec::new();
    for r in rates {
        let rate = r.normalize();
        match taxes.get(&(rate, included)) {
            Some(id) => {
                if !out.contains(id) {
                    out.push(*id);
                }
            }
            None if rate.is_zero() => {}
            None => return Err(Unmapped::Tax { rate, included }),
        }
    }
    Ok(out)
}

/// A line's price as Odoo stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Priced {
    /// Unit price (2 decimals).
    pub price_unit: Decimal,
    /// Discount in percent (2 decimals).
    pub discount: Decimal,
}

/// Prices a line of `quantity` units at `price` with `discount` (an amount) allocated to it,
/// exactly when Odoo's 2-decimal fields can: the percentage when it has at most 2 decimals
/// (10 % stays visible as a discount), else the discounted unit price when that has at most 2
/// decimals, else the percentage rounded as Odoo would round it (the write-back then adds a
/// rounding line for the cents).
pub fn price_line(price: Decimal, quantity: Decimal, discount: Decimal) -> Priced {
    let gross = price * quantity;
    if discount.is_zero() || gross.is_zero() || quantity.is_zero() {
        return Priced {
            price_unit: price,
            discount: Decimal::ZERO,
        };
    }
    let pct = (discount * Decimal::ONE_HUNDRED / gross).min(Decimal::ONE_HUNDRED);
    if pct == pct.round_dp(2) {
        return Priced {
            price_unit: price,
            discount: pct.normalize(),
        };
    }
    let unit = (gross - discount) / quantity;
    if unit == unit.round_dp(2) {
        return Priced {
            price_unit: unit.normalize(),
            discount: Decimal::ZERO,
        };
    }
    Priced {
        price_unit: price,
        discount: pct.round_dp(2).normalize(),
    }
}

/// `sale.order.create` values for an order.
pub fn sale_order_vals(order: &Order, ids: &OdooIds) -> Result<Value, Unmapped> {
    let mut lines = Vec::new();
    for l in &order.lines {
        let product = *ids
            .line_products
            .get(&l.id)
            .ok_or_else(|| Unmapped::Sku(l.sku.clone()))?;
        let priced = price_line(l.price, l.quantity, l.discount);
        lines.push(json!([0, 0, {
            "product_id": product,
            "name": l.title,
            "product_uom_qty": l.quantity.normalize().to_string(),
            "price_unit": priced.price_unit.to_string(),
            "discount": priced.discount.to_string(),
            "tax_id": [[6, 0, resolve_taxes(&l.tax_rates(), order.taxes_included, &ids.taxes)?]],
        }]));
    }
    for s in &order.shipping {
        if s.price.is_zero() && s.discount.is_zero() {
            continue;
        }
        let product = ids
            .shipping_product
            .ok_or_else(|| Unmapped::Shipping(s.title.clone()))?;
        let priced = price_line(s.price, Decimal::ONE, s.discount);
        lines.push(json!([0, 0, {
            "product_id": product,
            "name": if s.title.is_empty() { "Shipping".to_string() } else { s.title.clone() },
            "product_uom_qty": "1",
            "price_unit": priced.price_unit.to_string(),
            "discount": priced.discount.to_string(),
            "tax_id": [[6, 0, resolve_taxes(&s.tax_rates(), order.taxes_included, &ids.taxes)?]],
        }]));
    }
    let mut vals = json!({
        "partner_id": ids.partner_id,
        "client_order_ref": client_order_ref(&order.id),
        "origin": order.name,
        "order_line": lines,
    });
    if let Some(p) = ids.shipping_partner_id {
        vals["partner_shipping_id"] = json!(p);
    }
    if let Some(p) = ids.invoice_partner_id {
        vals["partner_invoice_id"] = json!(p);
    }
    if let Some(w) = ids.warehouse_id {
        vals["warehouse_id"] = json!(w);
    }
    if let Some(p) = ids.pricelist_id {
        vals["pricelist_id"] = json!(p);
    }
    Ok(vals)
}

/// `res.partner.create` values for an address of a customer (`country_id` and `state_id` as
/// Odoo resolved the address's codes).
pub fn address_vals(
    a: &Address,
    parent: Option<i64>,
    kind: &str,
    email: &str,
    country_id: Option<i64>,
    state_id: Option<i64>,
) -> Value {
    let mut v = json!({
        "name": if a.name.is_empty() { email.to_string() } else { a.name.clone() },
        "type": kind,
        "street": a.street,
        "city": a.city,
        "zip": a.zip,
    });
    if !a.street2.is_empty() {
        v["street2"] = json!(a.street2);
    }
    if !a.phone.is_empty() {
        v["phone"] = json!(a.phone);
    }
    if let Some(p) = parent {
        v["parent_id"] = json!(p);
    }
    if let Some(c) = country_id {
        v["country_id"] = json!(c);
    }
    if let Some(s) = state_id {
        v["state_id"] = json!(s);
    }
    v
}

/// One line of a refund's credit note.
#[derive(Debug, Clone, PartialEq)]
pub struct CreditLine {
    /// The refunded order line (none for shipping and adjustments).
    pub line_id: Option<String>,
    /// Label.
    pub name: String,
    /// Units.
    pub quantity: Decimal,
    /// Unit price (2 decimals).
    pub price_unit: Decimal,
    /// Tax rates charged on it (the order line's, or the shipping line's).
    pub rates: Vec<Decimal>,
}

/// The credit note lines of a refund: each refunded order line at the price Shopify refunded
/// it for, its shipping with the shipping's tax, and every other refunded amount (a
/// `refund_discrepancy`) as its own line. What rounding leaves between these and the money
/// actually returned ([`Refund::expected_total`]) is a difference line the write-back adds
/// after reading Odoo's total back.
pub fn credit_lines(order: &Order, refund: &Refund) -> Result<Vec<CreditLine>, String> {
    let mut out = Vec::new();
    for r in &refund.lines {
        let line = order
            .lines
            .iter()
            .find(|l| l.id == r.line_item_id)
            .ok_or_else(|| {
                format!(
                    "refunded line {} is not in order {}",
                    r.line_item_id, order.id
                )
            })?;
        if r.quantity.is_zero() {
            continue;
        }
        let unit = if r.subtotal.is_zero() {
            (line.net() / line.quantity).round_dp(2)
        } else {
            (r.subtotal / r.quantity).round_dp(2)
        };
        out.push(CreditLine {
            line_id: Some(line.id.clone()),
            name: line.title.clone(),
            quantity: r.quantity,
            price_unit: unit,
            rates: line.tax_rates(),
        });
    }
    if !refund.shipping.is_zero() {
        let rates = if refund.shipping_tax.is_zero() {
            Vec::new()
        } else {
            order
                .shipping
                .iter()
                .find(|s| !s.taxes.is_empty())
                .map(|s| s.tax_rates())
                .unwrap_or_default()
        };
        out.push(CreditLine {
            line_id: None,
            name: "Shipping refund".into(),
            quantity: Decimal::ONE,
            price_unit: refund.shipping,
            rates,
        });
    }
    for a in &refund.adjustments {
        let amount = a.amount + a.tax;
        if amount.is_zero() {
            continue;
        }
        out.push(CreditLine {
            line_id: None,
            name: format!("Refund adjustment ({})", a.kind),
            quantity: Decimal::ONE,
            price_unit: amount,
            rates: Vec::new(),
        });
    }
    Ok(out)
}
