use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde_json::{json, Value};

use super::*;

fn d(s: &str) -> Decimal {
    s.parse().unwrap()
}

fn order_json() -> Value {
    serde_json::from_str(
        r##"{"id": 9007199254740993, "name": "#1001", "email": "Ann@Example.com", "currency": "USD",
            "customer": {"first_name": "Ann", "last_name": "Lee"},
            "shipping_address": {"first_name": "Ann", "last_name": "Lee", "address1": "1 Main St", "city": "Springfield", "zip": "12345", "country_code": "US", "province_code": "IL"},
            "line_items": [
              {"id": 11, "sku": "SKU-1", "title": "Mug", "quantity": 3, "price": "10.00",
               "tax_lines": [{"title": "VAT", "rate": 0.15, "price": "4.50"}],
               "discount_allocations": [{"amount": "5.00"}]},
              {"id": 12, "sku": "SKU-2", "title": "Cap", "quantity": 1, "price": "19.99", "tax_lines": []}],
            "shipping_lines": [{"title": "Standard", "price": "4.90", "tax_lines": [{"rate": "0.15", "price": "0.74"}]}]}"##,
    )
    .unwrap()
}

fn ids() -> OdooIds {
    OdooIds {
        partner_id: 7,
        line_products: [("11".to_string(), 101), ("12".to_string(), 102)].into(),
        taxes: [((d("0.15"), false), 1)].into(),
        shipping_product: Some(900),
        ..OdooIds::default()
    }
}

#[test]
fn an_order_reads_exactly_with_big_ids() {
    let o = parse_order(&order_json()).unwrap();
    assert_eq!(o.id, "9007199254740993");
    assert_eq!(o.email, "ann@example.com");
    assert_eq!(o.customer_name, "Ann Lee");
    assert!(o.has_customer());
    assert_eq!(o.currency, "USD");
    assert!(!o.taxes_included);
    assert_eq!(o.lines[0].discount, d("5.00"));
    assert_eq!(o.lines[0].tax_rates(), vec![d("0.15")]);
    assert_eq!(o.lines[1].price, d("19.99"));
    assert_eq!(o.shipping[0].price, d("4.90"));
    let a = o.shipping_address.as_ref().unwrap();
    assert_eq!(
        (
            a.city.as_str(),
            a.country_code.as_str(),
            a.province_code.as_str()
        ),
        ("Springfield", "US", "IL")
    );
    // Lines net of discount plus the tax lines: 25.00 + 4.50 + 19.99 + 4.90 + 0.74.
    assert_eq!(o.expected_total(), d("55.13"));
}

#[test]
fn real_shapes_are_read_not_refused() {
    // A POS / draft order: no customer at all, an empty and a null SKU, a custom item,
    // a zero-rate tax line, two tax lines (GST + PST), another currency, prices with tax.
    let body = json!({
        "id": 5500000000000001_u64, "name": "#D12", "email": "", "contact_email": null,
        "customer": null, "billing_address": null, "shipping_address": null,
        "currency": "hkd", "presentment_currency": "HKD", "taxes_included": true,
        "total_price": "897.29", "total_tax": "12.00",
        "line_items": [
            {"id": 1, "sku": "", "variant_id": 42, "title": "Tea", "quantity": 1, "price": "100.00",
             "tax_lines": [{"rate": 0, "price": "0.00", "title": "Exempt"}]},
            {"id": 2, "sku": null, "variant_id": null, "title": "Gift wrap", "quantity": 1, "price": "5.00", "tax_lines": []},
            {"id": 3, "sku": "MAPLE", "variant_id": 43, "title": "Syrup", "quantity": 2,
             "price_set": {"shop_money": {"amount": "20.00", "currency_code": "HKD"}},
             "tax_lines": [{"rate": 0.05, "price": "2.00", "title": "GST"}, {"rate": 0.07, "price": "2.80", "title": "PST"}],
             "discount_allocations": [{"amount_set": {"shop_money": {"amount": "1.00"}}}]}
        ]
    });
    let o = parse_order(&body).unwrap();
    assert!(!o.has_customer());
    assert_eq!(o.customer_name, "");
    assert_eq!(o.currency, "HKD");
    assert!(o.taxes_included);
    assert_eq!(o.lines[0].sku, "");
    assert_eq!(o.lines[0].variant_id.as_deref(), Some("42"));
    assert_eq!(o.lines[0].tax_rates(), vec![Decimal::ZERO]);
    assert_eq!(o.lines[1].variant_id, None);
    assert_eq!(o.lines[2].price, d("20.00"));
    assert_eq!(o.lines[2].discount, d("1.00"));
    assert_eq!(o.lines[2].tax_rates(), vec![d("0.05"), d("0.07")]);
    assert_eq!(o.expected_total(), d("897.29"));

    // Products: by SKU, by the variant map, or a clear reason.
    let map: BTreeMap<String, String> = [("42".to_string(), "TEA-BARCODE".to_string())].into();
    assert_eq!(product_ref(&o.lines[0], &map).unwrap(), "TEA-BARCODE");
    assert_eq!(product_ref(&o.lines[2], &map).unwrap(), "MAPLE");
    let e = product_ref(&o.lines[1], &map).unwrap_err();
    assert!(
        e.to_string().contains("no SKU") && e.to_string().contains("none"),
        "{e}"
    );

    // Taxes: a zero rate maps to no tax when Odoo has no 0 % tax, to it when it has; included
    // taxes only to price-included ones.
    let mut taxes: BTreeMap<TaxKey, i64> = [((d("0.05"), true), 5), ((d("0.07"), true), 7)].into();
    assert_eq!(
        resolve_taxes(&[Decimal::ZERO], true, &taxes).unwrap(),
        Vec::<i64>::new()
    );
    assert_eq!(
        resolve_taxes(&o.lines[2].tax_rates(), true, &taxes).unwrap(),
        vec![5, 7]
    );
    assert_eq!(
        resolve_taxes(&o.lines[2].tax_rates(), false, &taxes),
        Err(Unmapped::Tax {
            rate: d("0.05"),
            included: false
        })
    );
    taxes.insert((Decimal::ZERO, true), 9);
    assert_eq!(
        resolve_taxes(&[Decimal::ZERO], true, &taxes).unwrap(),
        vec![9]
    );
}

#[test]
fn unreadable_orders_are_refused_with_the_reason() {
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
    ] {
        let e = parse_order(&body).unwrap_err();
        assert!(e.reason.contains(reason), "{body}: {e}");
    }
}

#[test]
fn lines_are_priced_exactly_where_odoo_can_store_it() {
    // 10 % is a 2-decimal percentage: kept as a discount.
    assert_eq!(
        price_line(d("10.00"), d("3"), d("3.00")),
        Priced {
            price_unit: d("10.00"),
            discount: d("10")
        }
    );
    // 5.00 off 3 x 10.00 is 16.6667 %: Odoo would store 16.67 % and drift by a cent; the
    // discounted unit price 8.33.. is not exact either, so the percentage goes rounded.
    assert_eq!(
        price_line(d("10.00"), d("3"), d("5.00")),
        Priced {
            price_unit: d("10.00"),
            discount: d("16.67")
        }
    );
    // 1.50 off 2 x 9.99 = 7.5075 %: the unit price 9.24 is exact.
    assert_eq!(
        price_line(d("9.99"), d("2"), d("1.50")),
        Priced {
            price_unit: d("9.24"),
            discount: d("0")
        }
    );
    assert_eq!(
        price_line(d("4.90"), d("1"), Decimal::ZERO),
        Priced {
            price_unit: d("4.90"),
            discount: d("0")
        }
    );
}

#[test]
fn order_values_carry_discounts_taxes_shipping_and_currency() {
    let o = parse_order(&order_json()).unwrap();
    let mut ids = ids();
    ids.pricelist_id = Some(3);
    let v = sale_order_vals(&o, &ids).unwrap();
    assert_eq!(v["client_order_ref"], "shopify:9007199254740993");
    assert_eq!(v["pricelist_id"], 3);
    let lines = v["order_line"].as_array().unwrap();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0][2]["discount"], "16.67");
    assert_eq!(lines[0][2]["tax_id"], json!([[6, 0, [1]]]));
    assert_eq!(lines[1][2]["tax_id"], json!([[6, 0, []]]));
    assert_eq!(lines[2][2]["product_id"], 900);
    assert_eq!(lines[2][2]["price_unit"], "4.90");
    ids.taxes.clear();
    assert_eq!(
        sale_order_vals(&o, &ids),
        Err(Unmapped::Tax {
            rate: d("0.15"),
            included: false
        })
    );
    ids.taxes.insert((d("0.15"), false), 1);
    ids.line_products.remove("12");
    assert!(matches!(sale_order_vals(&o, &ids), Err(Unmapped::Sku(s)) if s == "SKU-2"));
}

#[test]
fn refunds_read_lines_shipping_adjustments_and_the_money_returned() {
    let o = parse_order(&order_json()).unwrap();
    // The documented shape: lines and the legacy shipping field.
    let r = parse_refund(&json!({"id": 5, "order_id": 9007199254740993_u64,
        "refund_line_items": [{"line_item_id": 11, "quantity": 1, "restock_type": "return", "subtotal": "8.33", "total_tax": "1.25"}],
        "shipping": "4.90"}))
    .unwrap();
    assert_eq!(r.order_id, o.id);
    assert_eq!(r.returned_units(), Decimal::ONE);
    let lines = credit_lines(&o, &r).unwrap();
    assert_eq!(lines[0].price_unit, d("8.33"));
    assert_eq!(lines[0].rates, vec![d("0.15")]);
    assert_eq!(
        (lines[1].name.as_str(), lines[1].price_unit),
        ("Shipping refund", d("4.90"))
    );
    assert_eq!(r.refunded, None);
    assert_eq!(r.expected_total(), d("14.48"));

    // A real one: a line, shipping as a negative adjustment, money from the transactions
    // (a failed attempt returned nothing).
    let r = parse_refund(&json!({"id": 6, "order_id": "9007199254740993",
        "refund_line_items": [{"line_item_id": 11, "quantity": 2, "restock_type": "no_restock",
            "subtotal_set": {"shop_money": {"amount": "16.66"}}, "total_tax_set": {"shop_money": {"amount": "2.50"}}}],
        "order_adjustments": [{"kind": "shipping_refund", "amount": "-4.90", "tax_amount": "-0.74"}],
        "transactions": [{"kind": "refund", "status": "failure", "amount": "24.80"},
                         {"kind": "refund", "status": "success", "amount": "24.80"}]}))
    .unwrap();
    assert_eq!((r.shipping, r.shipping_tax), (d("4.90"), d("0.74")));
    assert_eq!(r.refunded, Some(d("24.80")));
    assert_eq!(r.expected_total(), d("24.80"));
    let lines = credit_lines(&o, &r).unwrap();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1].rates, vec![d("0.15")]);

    // No lines at all: a 1.00 goodwill refund is a refund_discrepancy adjustment.
    let r = parse_refund(&json!({"id": 7, "order_id": 9007199254740993_u64, "refund_line_items": [],
        "order_adjustments": [{"kind": "refund_discrepancy", "amount": "-1.00", "tax_amount": "0.00"}],
        "transactions": [{"kind": "refund", "status": "success", "amount": "1.00"}]}))
    .unwrap();
    let lines = credit_lines(&o, &r).unwrap();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0].price_unit, d("1.00"));
    assert_eq!(r.expected_total(), d("1.00"));

    // Newer versions: refund_shipping_lines, counted once even with a shipping adjustment.
    let r = parse_refund(&json!({"id": 8, "order_id": 1,
        "refund_shipping_lines": [{"shipping_line_id": 1, "subtotal_amount_set": {"shop_money": {"amount": "4.90"}}, "tax_amount_set": {"shop_money": {"amount": "0.74"}}}],
        "order_adjustments": [{"kind": "shipping_refund", "amount": "-4.90", "tax_amount": "-0.74"}]}))
    .unwrap();
    assert_eq!((r.shipping, r.shipping_tax), (d("4.90"), d("0.74")));
    assert!(parse_refund(&json!({"id": 5, "order_id": 1, "refund_line_items": [{"line_item_id": 1, "quantity": 1, "restock_type": "burn"}]})).is_err());
}
