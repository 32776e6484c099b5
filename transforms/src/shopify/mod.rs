//! Shopify webhook payloads (orders/create, orders/cancelled, refunds/create) read into typed,
//! exact values, and turned into what Odoo is asked to create ([`odoo`]). Pure: no I/O; the
//! ids Odoo assigns (partner, products, taxes) come in as data.
//!
//! Real payloads are messier than Shopify's examples, and every shape below is one a real store
//! sends: orders without a customer (`customer: null`, `email: ""`, no addresses: draft orders,
//! POS, app imports), empty or null SKUs, zero-rate and several tax lines per item, prices that
//! include tax (`taxes_included`), another currency than the shop's, refunds made only of
//! `order_adjustments` and `refund_shipping_lines`. None of them is malformed: a payload is
//! refused here only when it cannot be read at all (no order id, no lines, a quantity that is
//! not a positive number, a price that is not a decimal).
//!
//! Ids are int64 above 2^53, so they are kept as their decimal digits; money is a decimal
//! string in Shopify and a `Decimal` here.

pub mod odoo;

use rust_decimal::Decimal;
use serde_json::Value;

pub use odoo::*;

/// A topic odoo-cdc applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topic {
    /// `orders/create`.
    OrderCreate,
    /// `orders/cancelled`.
    OrderCancelled,
    /// `refunds/create`.
    RefundCreate,
}

impl Topic {
    /// From the `X-Shopify-Topic` header.
    pub fn parse(topic: &str) -> Option<Self> {
        match topic {
            "orders/create" => Some(Self::OrderCreate),
            "orders/cancelled" => Some(Self::OrderCancelled),
            "refunds/create" => Some(Self::RefundCreate),
            _ => None,
        }
    }

    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OrderCreate => "orders/create",
            Self::OrderCancelled => "orders/cancelled",
            Self::RefundCreate => "refunds/create",
        }
    }
}

/// A postal address.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Address {
    /// Full name.
    pub name: String,
    /// Street.
    pub street: String,
    /// Second street line.
    pub street2: String,
    /// City.
    pub city: String,
    /// Postcode.
    pub zip: String,
    /// ISO 3166-1 alpha-2 country code (`US`).
    pub country_code: String,
    /// State or province code within the country (`CA`, `ON`).
    pub province_code: String,
    /// Phone.
    pub phone: String,
}

/// One tax charged on a line.
#[derive(Debug, Clone, PartialEq)]
pub struct TaxLine {
    /// Rate (0.15 for 15 %; 0 is a real rate, sent for exempt items).
    pub rate: Decimal,
    /// Amount charged.
    pub price: Decimal,
    /// Title (`GST`, `PST`, `VAT`).
    pub title: String,
}

/// One order line.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderLine {
    /// Shopify line item id.
    pub id: String,
    /// SKU; empty for stores that never set SKUs and for custom items.
    pub sku: String,
    /// Shopify variant id (none for custom line items).
    pub variant_id: Option<String>,
    /// Title.
    pub title: String,
    /// Units.
    pub quantity: Decimal,
    /// Unit price (tax included when the order's `taxes_included`).
    pub price: Decimal,
    /// Total discount allocated to the line.
    pub discount: Decimal,
    /// Taxes charged, one entry per tax line (several for Canada's GST + PST).
    pub taxes: Vec<TaxLine>,
}

impl OrderLine {
    /// The line's distinct tax rates.
    pub fn tax_rates(&self) -> Vec<Decimal> {
        rates(&self.taxes)
    }

    /// Net amount of the line: units times price, less its discount.
    pub fn net(&self) -> Decimal {
        self.price * self.quantity - self.discount
    }
}

fn rates(taxes: &[TaxLine]) -> Vec<Decimal> {
    let mut out: Vec<Decimal> = Vec::new();
    for t in taxes {
        let r = t.rate.normalize();
        if !out.contains(&r) {
            out.push(r);
        }
    }
    out
}

/// A shipping line.
#[derive(Debug, Clone, PartialEq)]
pub struct ShippingLine {
    /// Title (carrier service).
    pub title: String,
    /// Price.
    pub price: Decimal,
    /// Discount allocated to it.
    pub discount: Decimal,
    /// Taxes charged.
    pub taxes: Vec<TaxLine>,
}

impl ShippingLine {
    /// The line's distinct tax rates.
    pub fn tax_rates(&self) -> Vec<Decimal> {
        rates(&self.taxes)
    }
}

/// An `orders/create` payload.
#[derive(Debug, Clone, PartialEq)]
pub struct Order {
    /// Shopify order id (decimal digits).
    pub id: String,
    /// Order name (`#1001`).
    pub name: String,
    /// Customer email (lowercase; empty when the order has none).
    pub email: String,
    /// Customer name (empty when the order names no one: then the configured default
    /// customer takes it).
    pub customer_name: String,
    /// Ship-to address.
    pub shipping_address: Option<Address>,
    /// Bill-to address.
    pub billing_address: Option<Address>,
    /// The order's currency (ISO 4217, `USD`; empty when the payload does not say).
    pub currency: String,
    /// Line and shipping prices include tax.
    pub taxes_included: bool,
    /// Lines.
    pub lines: Vec<OrderLine>,
    /// Shipping lines.
    pub shipping: Vec<ShippingLine>,
    /// What the customer paid (`total_price`), when the payload says.
    pub total_price: Option<Decimal>,
    /// Tax charged (`total_tax`), when the payload says.
    pub total_tax: Option<Decimal>,
}

impl Order {
    /// Whether the order names a customer (an email or a name).
    pub fn has_customer(&self) -> bool {
        !self.email.is_empty() || !self.customer_name.is_empty()
    }

    /// The order's total as its lines add up: what Odoo must come to. Shopify's `total_price`
    /// when present (the amount paid), else lines and shipping net of discounts plus the tax
    /// lines (excluded taxes only).
    pub fn expected_total(&self) -> Decimal {
        if let Some(t) = self.total_price {
            return t;
        }
        let mut total = Decimal::ZERO;
        for l in &self.lines {
            total += l.net();
            if !self.taxes_included {
                total += l.taxes.iter().map(|t| t.price).sum::<Decimal>();
            }
        }
        for s in &self.shipping {
            total += s.price - s.discount;
            if !self.taxes_included {
                total += s.taxes.iter().map(|t| t.price).sum::<Decimal>();
            }
        }
        total
    }
}

/// A refunded line.
#[derive(Debug, Clone, PartialEq)]
pub struct RefundLine {
    /// The order line refunded.
    pub line_item_id: String,
    /// Units.
    pub quantity: Decimal,
    /// `no_restock`, `cancel`, `return` or `legacy_restock`.
    pub restock_type: String,
    /// Amount refunded for the line, before tax (tax included in a tax-included shop).
    pub subtotal: Decimal,
    /// Tax refunded for the line.
    pub total_tax: Decimal,
}

/// Money a refund returns that is not a line: shipping or a discrepancy.
#[derive(Debug, Clone, PartialEq)]
pub struct RefundMoney {
    /// `shipping_refund`, `refund_discrepancy` or `shipping_line`.
    pub kind: String,
    /// Refunded amount, before tax, positive.
    pub amount: Decimal,
    /// Tax refunded with it, positive.
    pub tax: Decimal,
}

/// A `refunds/create` payload.
#[derive(Debug, Clone, PartialEq)]
pub struct Refund {
    /// Refund id.
    pub id: String,
    /// Order id.
    pub order_id: String,
    /// Lines (may be empty: a refund of shipping or of an amount only).
    pub lines: Vec<RefundLine>,
    /// Shipping refunded (from `refund_shipping_lines`, else the `shipping_refund` order
    /// adjustments, else the legacy `shipping` field), before tax.
    pub shipping: Decimal,
    /// Tax refunded on shipping.
    pub shipping_tax: Decimal,
    /// Other refunded money (`refund_discrepancy` adjustments).
    pub adjustments: Vec<RefundMoney>,
    /// The money actually returned: the sum of the successful `refund` transactions; `None`
    /// when the payload carries no transaction (a restock without money).
    pub refunded: Option<Decimal>,
}

impl Refund {
    /// Units restocked as returns (`restock_type = "return"`).
    pub fn returned_units(&self) -> Decimal {
        self.lines
            .iter()
            .filter(|l| l.restock_type == "return")
            .map(|l| l.quantity)
            .sum()
    }

    /// What the credit note must come to: the money returned, or, without transactions, the
    /// lines, shipping and adjustments with their tax.
    pub fn expected_total(&self) -> Decimal {
        if let Some(r) = self.refunded {
            return r;
        }
        self.lines
            .iter()
            .map(|l| l.subtotal + l.total_tax)
            .sum::<Decimal>()
            + self.shipping
            + self.shipping_tax
            + self
                .adjustments
                .iter()
                .map(|a| a.amount + a.tax)
                .sum::<Decimal>()
    }
}

/// A payload that cannot be read at all (no order id, no lines, a bad number).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed {topic} payload: {reason}")]
pub struct PayloadError {
    /// Topic.
    pub topic: &'static str,
    /// What is wrong.
    pub reason: String,
}

fn bad(topic: Topic, reason: impl Into<String>) -> PayloadError {
    PayloadError {
        topic: topic.as_str(),
        reason: reason.into(),
    }
}

/// An id: a JSON integer (any size) or a string of digits.
pub fn id_of(v: &Value) -> Option<String> {
    let s = match v {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        _ => return None,
    };
    (!s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit())).then_some(s)
}

/// A decimal: a string (Shopify's money) or a number; absent or null is zero.
fn money(topic: Topic, v: &Value, field: &str) -> Result<Decimal, PayloadError> {
    match v {
        Value::Null => Ok(Decimal::ZERO),
        Value::String(s) if s.trim().is_empty() => Ok(Decimal::ZERO),
        Value::String(s) => s
            .trim()
            .parse()
            .or_else(|_| Decimal::from_scientific(s.trim()))
            .map_err(|_| bad(topic, format!("{field} is not a decimal: {s:?}"))),
        Value::Number(n) => {
            let s = n.to_string();
            s.parse()
                .or_else(|_| Decimal::from_scientific(&s))
                .map_err(|_| bad(topic, format!("{field} is not a decimal: {n}")))
        }
        other => Err(bad(topic, format!("{field} is not a decimal: {other}"))),
    }
}

/// A money field that may come as a plain amount or as a `*_set` (`shop_money.amount`).
fn money_or_set(topic: Topic, v: &Value, plain: &str, set: &str) -> Result<Decimal, PayloadError> {
    if !v[plain].is_null() {
        return money(topic, &v[plain], plain);
    }
    money(topic, &v[set]["shop_money"]["amount"], set)
}

fn text(v: &Value) -> String {
    v.as_str().unwrap_or("").trim().to_string()
}

fn address(v: &Value) -> Option<Address> {
    if !v.is_object() {
        return None;
    }
    let name = [text(&v["first_name"]), text(&v["last_name"])]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    Some(Address {
        name: if name.is_empty() {
            text(&v["name"])
        } else {
            name
        },
        street: text(&v["address1"]),
        street2: text(&v["address2"]),
        city: text(&v["city"]),
        zip: text(&v["zip"]),
        country_code: text(&v["country_code"]).to_uppercase(),
        province_code: text(&v["province_code"]).to_uppercase(),
        phone: text(&v["phone"]),
    })
}

fn tax_lines(topic: Topic, v: &Value) -> Result<Vec<TaxLine>, PayloadError> {
    let mut out = Vec::new();
    for t in v.as_array().map(Vec::as_slice).unwrap_or(&[]) {
        out.push(TaxLine {
            rate: money(topic, &t["rate"], "tax_lines.rate")?.normalize(),
            price: money_or_set(topic, t, "price", "price_set")?,
            title: text(&t["title"]),
        });
    }
    Ok(out)
}

fn discounts(topic: Topic, v: &Value) -> Result<Decimal, PayloadError> {
    let mut sum = Decimal::ZERO;
    for d in v.as_array().map(Vec::as_slice).unwrap_or(&[]) {
        sum += money_or_set(topic, d, "amount", "amount_set")?;
    }
    Ok(sum)
}

fn optional_money(topic: Topic, v: &Value, field: &str) -> Result<Option<Decimal>, PayloadError> {
    if v.is_null() {
        Ok(None)
    } else {
        money(topic, v, field).map(Some)
    }
}

/// Reads an `orders/create` (or `orders/cancelled`) payload.
pub fn parse_order(body: &Value) -> Result<Order, PayloadError> {
    let t = Topic::OrderCreate;
    let id = id_of(&body["id"]).ok_or_else(|| bad(t, "id is missing or not an integer"))?;
    let customer = &body["customer"];
    let email = [&body["email"], &body["contact_email"], &customer["email"]]
        .into_iter()
        .map(text)
        .find(|e| !e.is_empty())
        .unwrap_or_default()
        .to_lowercase();
    let mut customer_name = [text(&customer["first_name"]), text(&customer["last_name"])]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    let shipping_address = address(&body["shipping_address"]);
    let billing_address = address(&body["billing_address"]);
    if customer_name.is_empty() {
        customer_name = [&shipping_address, &billing_address]
            .into_iter()
            .flatten()
            .map(|a| a.name.clone())
            .find(|n| !n.is_empty())
            .unwrap_or_else(|| email.clone());
    }
    let items = body["line_items"]
        .as_array()
        .ok_or_else(|| bad(t, "line_items is missing"))?;
    if items.is_empty() {
        return Err(bad(t, "line_items is empty"));
    }
    let mut lines = Vec::new();
    for (n, l) in items.iter().enumerate() {
        let sku = text(&l["sku"]);
        let quantity = money(t, &l["quantity"], "line_items.quantity")?;
        if quantity <= Decimal::ZERO {
            return Err(bad(t, format!("line {n}: quantity must be positive")));
        }
        lines.push(OrderLine {
            id: id_of(&l["id"]).unwrap_or_else(|| n.to_string()),
            title: [text(&l["title"]), text(&l["name"]), sku.clone()]
                .into_iter()
                .find(|s| !s.is_empty())
                .unwrap_or_else(|| format!("line {}", n + 1)),
            sku,
            variant_id: id_of(&l["variant_id"]),
            quantity,
            price: money_or_set(t, l, "price", "price_set")?,
            discount: discounts(t, &l["discount_allocations"])?,
            taxes: tax_lines(t, &l["tax_lines"])?,
        });
    }
    let mut shipping = Vec::new();
    for s in body["shipping_lines"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
    {
        shipping.push(ShippingLine {
            title: text(&s["title"]),
            price: money_or_set(t, s, "price", "price_set")?,
            discount: discounts(t, &s["discount_allocations"])?,
            taxes: tax_lines(t, &s["tax_lines"])?,
        });
    }
    Ok(Order {
        id,
        name: text(&body["name"]),
        email,
        customer_name,
        billing_address,
        shipping_address,
        currency: text(&body["currency"]).to_uppercase(),
        taxes_included: body["taxes_included"].as_bool().unwrap_or(false),
        lines,
        shipping,
        total_price: optional_money(t, &body["total_price"], "total_price")?,
        total_tax: optional_money(t, &body["total_tax"], "total_tax")?,
    })
}

/// The order id of an `orders/cancelled` payload.
pub fn parse_cancel(body: &Value) -> Result<String, PayloadError> {
    id_of(&body["id"]).ok_or_else(|| bad(Topic::OrderCancelled, "id is missing or not an integer"))
}

/// Reads a `refunds/create` payload.
pub fn parse_refund(body: &Value) -> Result<Refund, PayloadError> {
    let t = Topic::RefundCreate;
    let id = id_of(&body["id"]).ok_or_else(|| bad(t, "id is missing or not an integer"))?;
    let order_id =
        id_of(&body["order_id"]).ok_or_else(|| bad(t, "order_id is missing or not an integer"))?;
    let mut lines = Vec::new();
    for l in body["refund_line_items"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
    {
        let restock_type = text(&l["restock_type"]);
        let restock_type = if restock_type.is_empty() {
            "no_restock".to_string()
        } else {
            restock_type
        };
        if !["no_restock", "cancel", "return", "legacy_restock"].contains(&restock_type.as_str()) {
            return Err(bad(t, format!("unknown restock_type {restock_type:?}")));
        }
        lines.push(RefundLine {
            line_item_id: id_of(&l["line_item_id"])
                .ok_or_else(|| bad(t, "refund_line_items.line_item_id is missing"))?,
            quantity: money(t, &l["quantity"], "refund_line_items.quantity")?,
            restock_type,
            subtotal: money_or_set(t, l, "subtotal", "subtotal_set")?,
            total_tax: money_or_set(t, l, "total_tax", "total_tax_set")?,
        });
    }
    // Shipping: the newer refund_shipping_lines, else the shipping_refund adjustments (whose
    // amounts are negative), else the legacy `shipping` field. One source only, never summed.
    let mut shipping = Decimal::ZERO;
    let mut shipping_tax = Decimal::ZERO;
    let shipping_lines = body["refund_shipping_lines"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    for s in shipping_lines {
        shipping += money_or_set(t, s, "subtotal_amount", "subtotal_amount_set")?;
        shipping_tax += money_or_set(t, s, "tax_amount", "tax_amount_set")?;
    }
    let mut adjustments = Vec::new();
    let mut adjusted_shipping = (Decimal::ZERO, Decimal::ZERO);
    for a in body["order_adjustments"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
    {
        let kind = text(&a["kind"]);
        let amount = -money_or_set(t, a, "amount", "amount_set")?;
        let tax = -money_or_set(t, a, "tax_amount", "tax_amount_set")?;
        if kind == "shipping_refund" {
            adjusted_shipping.0 += amount;
            adjusted_shipping.1 += tax;
        } else {
            adjustments.push(RefundMoney { kind, amount, tax });
        }
    }
    if shipping_lines.is_empty() {
        if adjusted_shipping != (Decimal::ZERO, Decimal::ZERO) {
            (shipping, shipping_tax) = adjusted_shipping;
        } else {
            let legacy = &body["shipping"];
            if legacy.is_object() {
                shipping = money(t, &legacy["amount"], "shipping.amount")?;
                shipping_tax = money(t, &legacy["tax"], "shipping.tax")?;
            } else {
                shipping = money(t, legacy, "shipping")?;
            }
        }
    }
    let mut refunded = None;
    for tr in body["transactions"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
    {
        let kind = text(&tr["kind"]);
        let status = text(&tr["status"]);
        if kind != "refund" {
            continue;
        }
        // A failed refund returned nothing; a pending one is on its way to the customer.
        let total = refunded.get_or_insert(Decimal::ZERO);
        if status != "failure" && status != "error" {
            *total += money(t, &tr["amount"], "transactions.amount")?;
        }
    }
    Ok(Refund {
        id,
        order_id,
        lines,
        shipping,
        shipping_tax,
        adjustments,
        refunded,
    })
}

/// The shopify order id a payload belongs to (the inbox orders work per order by it).
pub fn order_key(topic: Topic, body: &Value) -> Option<String> {
    match topic {
        Topic::OrderCreate | Topic::OrderCancelled => id_of(&body["id"]),
        Topic::RefundCreate => id_of(&body["order_id"]),
    }
}

/// `client_order_ref` of the Odoo order made from a Shopify order: Odoo's only idempotency.
pub fn client_order_ref(order_id: &str) -> String {
    format!("shopify:{order_id}")
}

/// `ref` of the credit note made from a Shopify refund.
pub fn refund_ref(refund_id: &str) -> String {
    format!("shopify-refund:{refund_id}")
}

#[cfg(test)]
mod tests;
