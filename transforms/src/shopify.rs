//! Shopify webhook payloads (orders/create, orders/cancelled, refunds/create) read into typed,
//! exact values, and turned into what Odoo is asked to create. Pure: no I/O; the ids Odoo
//! assigns (partner, products, taxes) come in as data.
//!
//! Ids are int64 above 2^53, so they are kept as their decimal digits; money is a decimal
//! string in Shopify and a `Decimal` here.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde_json::{json, Value};

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
    /// ISO country code.
    pub country_code: String,
    /// Phone.
    pub phone: String,
}

/// One order line.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderLine {
    /// Shopify line item id.
    pub id: String,
    /// SKU.
    pub sku: String,
    /// Title.
    pub title: String,
    /// Units.
    pub quantity: Decimal,
    /// Unit price.
    pub price: Decimal,
    /// Total discount allocated to the line.
    pub discount: Decimal,
    /// Tax rates (0.15 for 15 %).
    pub tax_rates: Vec<Decimal>,
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
    /// Tax rates.
    pub tax_rates: Vec<Decimal>,
}

/// An `orders/create` payload.
#[derive(Debug, Clone, PartialEq)]
pub struct Order {
    /// Shopify order id (decimal digits).
    pub id: String,
    /// Order name (`#1001`).
    pub name: String,
    /// Customer email (lowercase).
    pub email: String,
    /// Customer name.
    pub customer_name: String,
    /// Ship-to address.
    pub shipping_address: Option<Address>,
    /// Bill-to address.
    pub billing_address: Option<Address>,
    /// Lines.
    pub lines: Vec<OrderLine>,
    /// Shipping lines.
    pub shipping: Vec<ShippingLine>,
}

/// A refunded line.
#[derive(Debug, Clone, PartialEq)]
pub struct RefundLine {
    /// The order line refunded.
    pub line_item_id: String,
    /// Units.
    pub quantity: Decimal,
    /// `no_restock`, `cancel` or `return`.
    pub restock_type: String,
    /// Amount refunded for the line, before tax.
    pub subtotal: Decimal,
}

/// A `refunds/create` payload.
#[derive(Debug, Clone, PartialEq)]
pub struct Refund {
    /// Refund id.
    pub id: String,
    /// Order id.
    pub order_id: String,
    /// Lines.
    pub lines: Vec<RefundLine>,
    /// Shipping refunded.
    pub shipping: Decimal,
}

/// A malformed payload.
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

/// A decimal: a string (Shopify's money) or a number; absent is zero.
fn money(topic: Topic, v: &Value, field: &str) -> Result<Decimal, PayloadError> {
    match v {
        Value::Null => Ok(Decimal::ZERO),
        Value::String(s) => s
            .trim()
            .parse()
            .map_err(|_| bad(topic, format!("{field} is not a decimal: {s:?}"))),
        Value::Number(n) => n
            .to_string()
            .parse()
            .map_err(|_| bad(topic, format!("{field} is not a decimal: {n}"))),
        other => Err(bad(topic, format!("{field} is not a decimal: {other}"))),
    }
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
        country_code: text(&v["country_code"]),
        phone: text(&v["phone"]),
    })
}

fn tax_rates(topic: Topic, v: &Value) -> Result<Vec<Decimal>, PayloadError> {
    let mut out = Vec::new();
    for t in v.as_array().map(Vec::as_slice).unwrap_or(&[]) {
        let rate = money(topic, &t["rate"], "tax_lines.rate")?;
        if !out.contains(&rate) {
            out.push(rate);
        }
    }
    Ok(out)
}

fn discounts(topic: Topic, v: &Value) -> Result<Decimal, PayloadError> {
    let mut sum = Decimal::ZERO;
    for d in v.as_array().map(Vec::as_slice).unwrap_or(&[]) {
        sum += money(topic, &d["amount"], "discount_allocations.amount")?;
    }
    Ok(sum)
}

/// Reads an `orders/create` payload.
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
    if customer_name.is_empty() {
        customer_name = shipping_address
            .as_ref()
            .map(|a| a.name.clone())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| email.clone());
    }
    if customer_name.is_empty() {
        return Err(bad(t, "the order has neither a customer email nor a name"));
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
                .unwrap_or_default(),
            sku,
            quantity,
            price: money(t, &l["price"], "line_items.price")?,
            discount: discounts(t, &l["discount_allocations"])?,
            tax_rates: tax_rates(t, &l["tax_lines"])?,
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
            price: money(t, &s["price"], "shipping_lines.price")?,
            discount: discounts(t, &s["discount_allocations"])?,
            tax_rates: tax_rates(t, &s["tax_lines"])?,
        });
    }
    Ok(Order {
        id,
        name: text(&body["name"]),
        email,
        customer_name,
        billing_address: address(&body["billing_address"]),
        shipping_address,
        lines,
        shipping,
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
        .ok_or_else(|| bad(t, "refund_line_items is missing"))?
    {
        let restock_type = text(&l["restock_type"]);
        if !["no_restock", "cancel", "return", "legacy_restock"].contains(&restock_type.as_str()) {
            return Err(bad(t, format!("unknown restock_type {restock_type:?}")));
        }
        lines.push(RefundLine {
            line_item_id: id_of(&l["line_item_id"])
                .ok_or_else(|| bad(t, "refund_line_items.line_item_id is missing"))?,
            quantity: money(t, &l["quantity"], "refund_line_items.quantity")?,
            restock_type,
            subtotal: money(t, &l["subtotal"], "refund_line_items.subtotal")?,
        });
    }
    Ok(Refund {
        id,
        order_id,
        lines,
        shipping: money(t, &body["shipping"], "shipping")?,
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

/// Odoo's percent discount for a line: the allocated amount over the line's gross, to 4
/// decimals (Odoo's `Discount` precision when configured for it).
pub fn discount_percent(price: Decimal, quantity: Decimal, discount: Decimal) -> Decimal {
    let gross = price * quantity;
    if gross.is_zero() || discount.is_zero() {
        return Decimal::ZERO;
    }
    (discount * Decimal::ONE_HUNDRED / gross)
        .round_dp(4)
        .min(Decimal::ONE_HUNDRED)
}

/// What Odoo already has, for building the order.
#[derive(Debug, Clone, Default)]
pub struct OdooIds {
    /// Customer partner.
    pub partner_id: i64,
    /// Delivery address partner (the customer when absent).
    pub shipping_partner_id: Option<i64>,
    /// Invoice address partner.
    pub invoice_partner_id: Option<i64>,
    /// product.product id by SKU.
    pub products: BTreeMap<String, i64>,
    /// account.tax id by rate (0.15).
    pub taxes: BTreeMap<Decimal, i64>,
    /// The delivery product for shipping lines.
    pub shipping_product: Option<i64>,
    /// Warehouse to ship from.
    pub warehouse_id: Option<i64>,
}

/// Something the order needs that Odoo does not have: a permanent failure until fixed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unmapped {
    /// No product with that SKU (`default_code`).
    #[error("unknown SKU {0:?}: no Odoo product has this internal reference")]
    Sku(String),
    /// No sale tax with that rate.
    #[error("unknown tax rate {0}: no Odoo sale tax of this percentage")]
    Tax(Decimal),
    /// Shipping charged but no delivery product configured in Odoo.
    #[error("no delivery product for shipping line {0:?} (writeback.shipping_sku)")]
    Shipping(String),
}

fn tax_command(rates: &[Decimal], ids: &OdooIds) -> Result<Value, Unmapped> {
    let mut out = Vec::new();
    for r in rates {
        out.push(*ids.taxes.get(r).ok_or(Unmapped::Tax(*r))?);
    }
    Ok(json!([[6, 0, out]]))
}

/// `sale.order.create` values for an order.
pub fn sale_order_vals(order: &Order, ids: &OdooIds) -> Result<Value, Unmapped> {
    let mut lines = Vec::new();
    for l in &order.lines {
        let product = *ids
            .products
            .get(&l.sku)
            .ok_or_else(|| Unmapped::Sku(l.sku.clone()))?;
        lines.push(json!([0, 0, {
            "product_id": product,
            "name": l.title,
            "product_uom_qty": l.quantity.to_string(),
            "price_unit": l.price.to_string(),
            "discount": discount_percent(l.price, l.quantity, l.discount).to_string(),
            "tax_id": tax_command(&l.tax_rates, ids)?,
        }]));
    }
    for s in &order.shipping {
        if s.price.is_zero() && s.discount.is_zero() {
            continue;
        }
        let product = ids
            .shipping_product
            .ok_or_else(|| Unmapped::Shipping(s.title.clone()))?;
        lines.push(json!([0, 0, {
            "product_id": product,
            "name": if s.title.is_empty() { "Shipping".to_string() } else { s.title.clone() },
            "product_uom_qty": "1",
            "price_unit": s.price.to_string(),
            "discount": discount_percent(s.price, Decimal::ONE, s.discount).to_string(),
            "tax_id": tax_command(&s.tax_rates, ids)?,
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
    Ok(vals)
}

/// `res.partner.create` values for an address of a customer.
pub fn address_vals(a: &Address, parent: Option<i64>, kind: &str, email: &str) -> Value {
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
    v
}

/// What a refund gives back, per refunded order line: (line, units, unit price after the
/// line's discount).
pub fn refund_lines<'a>(
    order: &'a Order,
    refund: &Refund,
) -> Result<Vec<(&'a OrderLine, Decimal, Decimal)>, String> {
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
        let unit = if r.quantity.is_zero() {
            Decimal::ZERO
        } else if !r.subtotal.is_zero() {
            (r.subtotal / r.quantity).round_dp(2)
        } else {
            line.price - (line.discount / line.quantity).round_dp(2)
        };
        out.push((line, r.quantity, unit));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    fn order_json() -> Value {
        serde_json::from_str(
            r##"{"id": 9007199254740993, "name": "#1001", "email": "Ann@Example.com",
                "customer": {"first_name": "Ann", "last_name": "Lee"},
                "shipping_address": {"first_name": "Ann", "last_name": "Lee", "address1": "1 Main St", "city": "Springfield", "zip": "12345", "country_code": "US"},
                "line_items": [
                  {"id": 11, "sku": "SKU-1", "title": "Mug", "quantity": 3, "price": "10.00",
                   "tax_lines": [{"title": "VAT", "rate": 0.15, "price": "4.50"}],
                   "discount_allocations": [{"amount": "5.00"}]},
                  {"id": 12, "sku": "SKU-2", "title": "Cap", "quantity": 1, "price": "19.99", "tax_lines": []}],
                "shipping_lines": [{"title": "Standard", "price": "4.90", "tax_lines": [{"rate": "0.15"}]}]}"##,
        )
        .unwrap()
    }

    #[test]
    fn an_order_reads_exactly_with_big_ids() {
        let o = parse_order(&order_json()).unwrap();
        assert_eq!(o.id, "9007199254740993");
        assert_eq!(o.email, "ann@example.com");
        assert_eq!(o.customer_name, "Ann Lee");
        assert_eq!(o.lines[0].discount, d("5.00"));
        assert_eq!(o.lines[0].tax_rates, vec![d("0.15")]);
        assert_eq!(o.lines[1].price, d("19.99"));
        assert_eq!(o.shipping[0].price, d("4.90"));
        assert_eq!(o.shipping_address.as_ref().unwrap().city, "Springfield");
    }

    #[test]
    fn malformed_orders_are_refused_with_the_reason() {
        for (body, reason) in [
            (json!({"line_items": []}), "id"),
            (json!({"id": "12x", "line_items": []}), "id"),
            (json!({"id": 1, "email": "a@b.c"}), "line_items is missing"),
            (
                json!({"id": 1, "email": "a@b.c", "line_items": [{"sku": "A", "quantity": 0, "price": "1"}]}),
                "quantity",
            ),
            (
                json!({"id": 1, "email": "a@b.c", "line_items": [{"sku": "A", "quantity": 1, "price": "ten"}]}),
                "price",
            ),
            (
                json!({"id": 1, "line_items": [{"sku": "A", "quantity": 1, "price": "1"}]}),
                "email",
            ),
        ] {
            let e = parse_order(&body).unwrap_err();
            assert!(e.reason.contains(reason), "{body}: {e}");
        }
    }

    #[test]
    fn order_values_carry_discounts_taxes_and_shipping() {
        let o = parse_order(&order_json()).unwrap();
        let mut ids = OdooIds {
            partner_id: 7,
            products: [("SKU-1".to_string(), 101), ("SKU-2".to_string(), 102)].into(),
            taxes: [(d("0.15"), 1)].into(),
            shipping_product: Some(900),
            ..OdooIds::default()
        };
        let v = sale_order_vals(&o, &ids).unwrap();
        assert_eq!(v["client_order_ref"], "shopify:9007199254740993");
        let lines = v["order_line"].as_array().unwrap();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0][2]["discount"], "16.6667");
        assert_eq!(lines[0][2]["tax_id"], json!([[6, 0, [1]]]));
        assert_eq!(lines[1][2]["tax_id"], json!([[6, 0, []]]));
        assert_eq!(lines[2][2]["product_id"], 900);
        assert_eq!(lines[2][2]["price_unit"], "4.90");
        ids.taxes.clear();
        assert_eq!(sale_order_vals(&o, &ids), Err(Unmapped::Tax(d("0.15"))));
        ids.taxes.insert(d("0.15"), 1);
        ids.products.remove("SKU-2");
        assert!(matches!(sale_order_vals(&o, &ids), Err(Unmapped::Sku(s)) if s == "SKU-2"));
    }

    #[test]
    fn refunds_read_and_price_their_lines() {
        let o = parse_order(&order_json()).unwrap();
        let r = parse_refund(&json!({"id": 5, "order_id": 9007199254740993_u64,
            "refund_line_items": [{"line_item_id": 11, "quantity": 1, "restock_type": "return", "subtotal": "8.33"}],
            "shipping": "4.90"}))
        .unwrap();
        assert_eq!(r.order_id, o.id);
        let lines = refund_lines(&o, &r).unwrap();
        assert_eq!(lines[0].1, Decimal::ONE);
        assert_eq!(lines[0].2, d("8.33"));
        assert_eq!(r.shipping, d("4.90"));
        assert!(parse_refund(&json!({"id": 5, "order_id": 1, "refund_line_items": [{"line_item_id": 1, "quantity": 1, "restock_type": "burn"}]})).is_err());
    }
}
