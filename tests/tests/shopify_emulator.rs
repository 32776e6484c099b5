//! The Shopify emulator answers like Shopify: schema validation against the real 2026-10 Admin
//! schema, compare-and-swap, idempotency, calculated cost with a leaky bucket, and a storefront
//! that sells and tells by signed webhooks.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use fixtures::emulator::shopify::{ShopifyConfig, ShopifyEmulator};
use fixtures::emulator::signing;
use serde_json::{json, Value};

const SET: &str = r#"mutation Set($input: InventorySetQuantitiesInput!) {
  inventorySetQuantities(input: $input) @idempotent(key: "KEY") {
    inventoryAdjustmentGroup { reason changes { name delta quantityAfterChange } }
    userErrors { code field message }
  }
}"#;

async fn gql(emu: &ShopifyEmulator, query: &str, variables: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(emu.graphql_url())
        .header("x-shopify-access-token", "shpat_emulator")
        .json(&json!({"query": query, "variables": variables}))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

fn set_input(item: u64, qty: i64, from: Option<i64>) -> Value {
    let mut q = json!({"inventoryItemId": format!("gid://shopify/InventoryItem/{item}"), "locationId": "gid://shopify/Location/1", "quantity": qty});
    if let Some(f) = from {
        q["changeFromQuantity"] = json!(f);
    }
    json!({"input": {"name": "available", "reason": "correction", "referenceDocumentUri": "odoo://stock.quant/1", "quantities": [q]}})
}

#[tokio::test]
async fn schema_violations_are_graphql_errors_with_http_200() {
    let emu = ShopifyEmulator::start(ShopifyConfig::default(), 0)
        .await
        .unwrap();
    let bad = "mutation { inventorySetQuantities(input: {name: \"available\", reason: \"correction\", quantities: []}, ignoreCompareQuantity: true) { userErrors { code } } }";
    let (status, body) = gql(&emu, bad, json!({})).await;
    assert_eq!(status, 200);
    assert!(body.get("data").is_none(), "{body}");
    let msg = body["errors"][0]["message"].as_str().unwrap();
    assert!(msg.contains("ignoreCompareQuantity"), "{msg}");
    let (_, body) = gql(&emu, "{ shop { nonexistentField } }", json!({})).await;
    let errors = body["errors"].as_array().unwrap();
    assert!(
        errors
            .iter()
            .any(|e| e["message"].as_str().unwrap().contains("nonexistentField")),
        "{body}"
    );
    let r = reqwest::Client::new()
        .post(emu.graphql_url())
        .json(&json!({"query": "{ shop { name } }"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn set_quantities_compare_and_swap_and_idempotency() {
    let emu = ShopifyEmulator::start(ShopifyConfig::default(), 0)
        .await
        .unwrap();
    let item = emu.add_item("SKU-00001", &[(1, 10)]);

    // Without @idempotent, and with an empty key: refused.
    let (_, body) = gql(
        &emu,
        &SET.replace(" @idempotent(key: \"KEY\")", ""),
        set_input(item, 7, Some(10)),
    )
    .await;
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("@idempotent"),
        "{body}"
    );
    let (_, body) = gql(
        &emu,
        &SET.replace("KEY", "  "),
        set_input(item, 7, Some(10)),
    )
    .await;
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("empty"),
        "{body}"
    );
    // Without changeFromQuantity: COMPARE_QUANTITY_REQUIRED.
    let (_, body) = gql(&emu, &SET.replace("KEY", "k0"), set_input(item, 7, None)).await;
    assert_eq!(
        body["data"]["inventorySetQuantities"]["userErrors"][0]["code"],
        "COMPARE_QUANTITY_REQUIRED"
    );
    assert_eq!(emu.level(item, 1).unwrap().available, 10);

    // Stale compare quantity: CHANGE_FROM_QUANTITY_STALE, nothing changes.
    let (_, body) = gql(&emu, &SET.replace("KEY", "k1"), set_input(item, 7, Some(9))).await;
    let errs = &body["data"]["inventorySetQuantities"]["userErrors"];
    assert_eq!(errs[0]["code"], "CHANGE_FROM_QUANTITY_STALE", "{body}");
    assert_eq!(
        errs[0]["field"],
        json!(["input", "quantities", "0", "changeFromQuantity"])
    );
    assert!(body["data"]["inventorySetQuantities"]["inventoryAdjustmentGroup"].is_null());
    assert_eq!(emu.level(item, 1).unwrap().available, 10);

    // Current compare quantity: applied; cost reported with the throttle status.
    let (_, first) = gql(
        &emu,
        &SET.replace("KEY", "k2"),
        set_input(item, 7, Some(10)),
    )
    .await;
    let change = &first["data"]["inventorySetQuantities"]["inventoryAdjustmentGroup"]["changes"][0];
    assert_eq!(change["delta"], -3);
    assert_eq!(change["quantityAfterChange"], 7);
    assert_eq!(emu.level(item, 1).unwrap().available, 7);
    assert_eq!(emu.level(item, 1).unwrap().on_hand, 7);
    let cost = &first["extensions"]["cost"];
    assert!(cost["requestedQueryCost"].as_u64().unwrap() >= 10);
    assert_eq!(cost["throttleStatus"]["maximumAvailable"], 2000.0);
    assert_eq!(cost["throttleStatus"]["restoreRate"], 100.0);

    // Replay with the same key: the original result, applied once.
    let (_, again) = gql(
        &emu,
        &SET.replace("KEY", "k2"),
        set_input(item, 7, Some(10)),
    )
    .await;
    assert_eq!(again["data"], first["data"]);
    assert_eq!(emu.level(item, 1).unwrap().available, 7);
    assert_eq!(emu.counters()["idempotent_replays"], 1);
    // Same key, other input: IDEMPOTENCY_KEY_PARAMETER_MISMATCH.
    let (_, other) = gql(&emu, &SET.replace("KEY", "k2"), set_input(item, 5, Some(7))).await;
    assert_eq!(
        other["data"]["inventorySetQuantities"]["userErrors"][0]["code"],
        "IDEMPOTENCY_KEY_PARAMETER_MISMATCH"
    );

    // Queries: find the item by SKU, read its level through aliases and nested arguments.
    let q = r#"query($loc: ID!) { inventoryItems(first: 5, query: "sku:SKU-00001") { edges { node { id sku
        lvl: inventoryLevel(locationId: $loc) { quantities(names: ["available", "on_hand"]) { name quantity } } } } } }"#;
    let (_, body) = gql(&emu, q, json!({"loc": "gid://shopify/Location/1"})).await;
    let node = &body["data"]["inventoryItems"]["edges"][0]["node"];
    assert_eq!(node["id"], format!("gid://shopify/InventoryItem/{item}"));
    assert_eq!(
        node["lvl"]["quantities"],
        json!([{"name": "available", "quantity": 7}, {"name": "on_hand", "quantity": 7}])
    );
}

#[tokio::test]
async fn leaky_bucket_throttles_and_max_cost_is_enforced() {
    let emu = ShopifyEmulator::start(
        ShopifyConfig {
            bucket_size: 60.0,
            restore_rate: 1.0,
            ..ShopifyConfig::default()
        },
        0,
    )
    .await
    .unwrap();
    let item = emu.add_item("SKU-1", &[(1, 100)]);
    let mut throttled = None;
    for i in 0..10 {
        let current = emu.level(item, 1).unwrap().available;
        let (status, body) = gql(
            &emu,
            &SET.replace("KEY", &format!("t{i}")),
            set_input(item, current - 1, Some(current)),
        )
        .await;
        assert_eq!(status, 200);
        if body["errors"][0]["extensions"]["code"] == "THROTTLED" {
            throttled = Some((i, body));
            break;
        }
    }
    let (i, body) = throttled.expect("never throttled");
    assert!(i >= 2, "throttled after {i} calls");
    let status = &body["extensions"]["cost"]["throttleStatus"];
    assert!(
        status["currentlyAvailable"].as_f64().unwrap()
            < body["extensions"]["cost"]["requestedQueryCost"]
                .as_f64()
                .unwrap()
    );
    assert_eq!(emu.counters()["throttled"], 1);

    let big = "{ inventoryItems(first: 250) { edges { node { id inventoryLevels(first: 250) { edges { node { id } } } } } } }";
    let (_, body) = gql(&emu, big, json!({})).await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "MAX_COST_EXCEEDED",
        "{body}"
    );
}

#[tokio::test]
async fn storefront_sells_never_below_zero_and_tells_by_signed_webhooks() {
    let received: Arc<Mutex<Vec<(String, Value, String)>>> = Arc::default();
    let fail_first = Arc::new(Mutex::new(true));
    let app = {
        let received = received.clone();
        let fail_first = fail_first.clone();
        axum::Router::new().route(
            "/webhooks/shopify",
            axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
                let received = received.clone();
                let fail_first = fail_first.clone();
                async move {
                    let sig = headers["x-shopify-hmac-sha256"]
                        .to_str()
                        .unwrap()
                        .to_string();
                    assert!(signing::verify(b"hush", body.as_bytes(), &sig));
                    assert_eq!(
                        headers["x-shopify-shop-domain"],
                        "odoo-cdc-demo.myshopify.com"
                    );
                    assert_eq!(headers["x-shopify-api-version"], "2026-10");
                    assert!(
                        headers.contains_key("x-shopify-event-id")
                            && headers.contains_key("x-shopify-webhook-id")
                    );
                    if std::mem::replace(&mut *fail_first.lock().unwrap(), false) {
                        return axum::http::StatusCode::SERVICE_UNAVAILABLE;
                    }
                    let topic = headers["x-shopify-topic"].to_str().unwrap().to_string();
                    received.lock().unwrap().push((
                        topic,
                        serde_json::from_str(&body).unwrap(),
                        sig,
                    ));
                    axum::http::StatusCode::OK
                }
            }),
        )
    };
    let receiver = fixtures::emulator::Server::start(app, 0).await.unwrap();
    let emu = ShopifyEmulator::start(
        ShopifyConfig {
            webhook_url: Some(format!("{}/webhooks/shopify", receiver.url())),
            time_scale: 100.0,
            ..ShopifyConfig::default()
        },
        0,
    )
    .await
    .unwrap();
    let item = emu.add_item("SKU-HOT", &[(1, 3)]);
    let http = reqwest::Client::new();
    let sell = |qty: i64| {
        http.post(format!("{}/_emulator/storefront/orders", emu.url()))
            .json(&json!({"line_items": [{"sku": "SKU-HOT", "quantity": qty, "price": "19.99"}], "customer": {"email": "ada@example.com"}}))
            .send()
    };
    let r = sell(2).await.unwrap();
    assert_eq!(r.status(), 201);
    let order: Value = r.json().await.unwrap();
    assert_eq!(
        emu.level(item, 1).unwrap().available,
        1,
        "available drops at once"
    );
    assert_eq!(sell(2).await.unwrap().status(), 409, "never below zero");
    assert_eq!(emu.level(item, 1).unwrap().available, 1);
    let id = order["id"].as_u64().unwrap();
    assert!(id > 1 << 53, "ids above 2^53");

    let r = http
        .post(format!(
            "{}/_emulator/storefront/orders/{id}/cancel",
            emu.url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(emu.level(item, 1).unwrap().available, 3);

    for _ in 0..200 {
        if received.lock().unwrap().len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got = received.lock().unwrap().clone();
    let topics: Vec<&str> = got.iter().map(|(t, _, _)| t.as_str()).collect();
    assert!(
        topics.contains(&"orders/create") && topics.contains(&"orders/cancelled"),
        "{topics:?} {:?}",
        emu.deliveries()
    );
    let created = &got.iter().find(|(t, _, _)| t == "orders/create").unwrap().1;
    assert_eq!(created["id"].as_u64(), Some(id));
    assert_eq!(created["line_items"][0]["sku"], "SKU-HOT");
    assert!(
        emu.deliveries().iter().any(|d| d["status"] == 503),
        "the failed first attempt was retried"
    );
    let history: Vec<i64> = emu
        .history()
        .iter()
        .filter(|h| h.item == item)
        .map(|h| h.available)
        .collect();
    assert_eq!(history, vec![3, 1, 3]);
}

#[tokio::test]
async fn inventory_items_are_searched_by_sku_terms_joined_by_or() {
    let emu = ShopifyEmulator::start(ShopifyConfig::default(), 0)
        .await
        .unwrap();
    let a = emu.add_item("A-1", &[(1, 0)]);
    let b = emu.add_item("B 2", &[(1, 0)]);
    emu.add_item("C-3", &[(1, 0)]);
    let q = "query R($q: String!) { inventoryItems(first: 10, query: $q) { nodes { id sku } } }";
    let (_, body) = gql(&emu, q, json!({"q": "sku:\"A-1\" OR sku:\"B 2\""})).await;
    let mut found: Vec<String> = body["data"]["inventoryItems"]["nodes"]
        .as_array()
        .unwrap_or_else(|| panic!("{body}"))
        .iter()
        .map(|n| n["id"].as_str().unwrap().to_string())
        .collect();
    found.sort();
    let mut want = vec![
        format!("gid://shopify/InventoryItem/{a}"),
        format!("gid://shopify/InventoryItem/{b}"),
    ];
    want.sort();
    assert_eq!(found, want);
    let (_, body) = gql(&emu, q, json!({"q": "sku:C-3"})).await;
    assert_eq!(body["data"]["inventoryItems"]["nodes"][0]["sku"], "C-3");
    // A search the emulator cannot answer faithfully is an error, never "everything".
    let (_, body) = gql(&emu, q, json!({"q": "title:shirt"})).await;
    assert!(body["errors"][0]["message"].is_string(), "{body}");
}

#[tokio::test]
async fn storefront_payloads_have_the_shapes_real_stores_send() {
    use rust_decimal::Decimal;
    use transforms::shopify::{parse_order, parse_refund};
    let emu = ShopifyEmulator::start(ShopifyConfig::default(), 0)
        .await
        .unwrap();
    emu.add_item("SKU-EU", &[(1, 10)]);
    let http = reqwest::Client::new();
    // A POS sale in another currency with tax-included prices and a custom line.
    let order: Value = http
        .post(format!("{}/_emulator/storefront/orders", emu.url()))
        .json(&json!({"anonymous": true, "currency": "EUR", "taxes_included": true,
            "line_items": [
                {"sku": "SKU-EU", "quantity": 2, "price": "24.00", "discount": "4.00",
                 "tax_lines": [{"title": "VAT", "rate": "0.2", "price": "7.33"}]},
                {"custom": true, "quantity": 1, "price": "3.00", "tax_lines": [{"title": "VAT", "rate": "0", "price": "0.00"}]}],
            "shipping_lines": [{"id": 1, "title": "Standard", "price": "5.00", "tax_lines": []}]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        order["customer"].is_null()
            && order["shipping_address"].is_null()
            && order["billing_address"].is_null(),
        "{order}"
    );
    assert_eq!(order["email"], "");
    assert_eq!(
        (
            order["currency"].as_str(),
            order["taxes_included"].as_bool()
        ),
        (Some("EUR"), Some(true))
    );
    let custom = &order["line_items"][1];
    assert!(
        custom["sku"].is_null() && custom["variant_id"].is_null(),
        "{custom}"
    );
    // Tax included: the total is what was paid, 48 - 4 + 3 + 5.
    assert_eq!(order["total_price"], "52.00");
    assert_eq!(
        order["total_price_set"]["shop_money"]["currency_code"],
        "EUR"
    );
    assert_eq!(
        order["line_items"][0]["price_set"]["presentment_money"]["amount"],
        "24.00"
    );
    let parsed = parse_order(&order).unwrap();
    assert!(!parsed.has_customer());
    assert_eq!(parsed.expected_total(), Decimal::new(5200, 2));
    // A refund of one unit with the shipping and a goodwill amount: shipping as an adjustment
    // and a shipping line, the extra as a discrepancy, the money as a successful transaction.
    let id = order["id"].as_u64().unwrap();
    let line = order["line_items"][0]["id"].clone();
    let refund: Value = http
        .post(format!("{}/_emulator/storefront/orders/{id}/refunds", emu.url()))
        .json(&json!({"refund_line_items": [{"line_item_id": line, "quantity": 1, "restock_type": "return"}],
                      "shipping": "5.00", "extra": "1.50"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kinds: Vec<&str> = refund["order_adjustments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, vec!["shipping_refund", "refund_discrepancy"]);
    assert_eq!(refund["order_adjustments"][0]["amount"], "-5.00");
    assert_eq!(
        refund["refund_shipping_lines"][0]["subtotal_amount_set"]["shop_money"]["amount"],
        "5.00"
    );
    // One of two units: half of the 44.00 paid for the line, plus shipping and the extra.
    assert_eq!(refund["refund_line_items"][0]["subtotal"], "22.00");
    assert_eq!(refund["transactions"][0]["status"], "success");
    assert_eq!(refund["transactions"][0]["amount"], "28.50");
    let parsed = parse_refund(&refund).unwrap();
    assert_eq!(
        parsed.shipping,
        Decimal::new(500, 2),
        "shipping counted once"
    );
    assert_eq!(parsed.expected_total(), Decimal::new(2850, 2));
    // Refunds without lines are real too.
    let refund: Value = http
        .post(format!(
            "{}/_emulator/storefront/orders/{id}/refunds",
            emu.url()
        ))
        .json(&json!({"extra": "1.00"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(refund["refund_line_items"], json!([]));
    assert_eq!(
        parse_refund(&refund).unwrap().expected_total(),
        Decimal::ONE
    );
}

/// Fulfillment orders and `fulfillmentCreate`, validated against the real schema: a partial
/// fulfillment leaves the rest, more than remains is a user error, `@idempotent` is refused
/// (fulfillmentCreate offers no key), the customer notification is recorded, shipped units
/// leave `committed` and `on_hand`, and a query past the cost limit is refused.
#[tokio::test]
async fn fulfillment_orders_ship_what_remains_and_notify_the_customer() {
    let emu = ShopifyEmulator::start(ShopifyConfig::default(), 0)
        .await
        .unwrap();
    let item = emu.add_item("TEE", &[(1, 5)]);
    let http = reqwest::Client::new();
    let order: Value = http
        .post(format!("{}/_emulator/storefront/orders", emu.url()))
        .json(&json!({"line_items": [{"sku": "TEE", "quantity": 3}, {"custom": true, "quantity": 1, "price": "2.00"}]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = order["id"].as_u64().unwrap();
    const READ: &str = "query O($id: ID!) { order(id: $id) { displayFulfillmentStatus fulfillmentOrders(first: 5) { nodes { id status \
        lineItems(first: 10) { nodes { id sku totalQuantity remainingQuantity lineItem { sku } } } } } \
        fulfillments(first: 10) { status trackingInfo(first: 3) { company number url } } } }";
    let (_, read) = gql(
        &emu,
        READ,
        json!({"id": format!("gid://shopify/Order/{id}")}),
    )
    .await;
    let fo = &read["data"]["order"]["fulfillmentOrders"]["nodes"][0];
    assert_eq!(fo["status"], "OPEN");
    let lines = fo["lineItems"]["nodes"].as_array().unwrap();
    assert_eq!(
        lines.len(),
        1,
        "a custom line holds no inventory to fulfil: {read}"
    );
    assert_eq!(
        (
            lines[0]["totalQuantity"].as_i64(),
            lines[0]["remainingQuantity"].as_i64()
        ),
        (Some(3), Some(3))
    );
    const SHIP: &str = "mutation S($f: FulfillmentInput!) { fulfillmentCreate(fulfillment: $f) { \
        fulfillment { id status trackingInfo(first: 3) { number } } userErrors { field message } } }";
    let input = |q: i64, number: &str| {
        json!({"f": {"lineItemsByFulfillmentOrder": [{"fulfillmentOrderId": fo["id"], "fulfillmentOrderLineItems": [{"id": lines[0]["id"], "quantity": q}]}],
                     "notifyCustomer": true, "trackingInfo": {"company": "UPS", "number": number, "url": format!("https://ups.example/{number}")}}})
    };
    // More than remains: a user error, nothing shipped.
    let (_, r) = gql(&emu, SHIP, input(4, "X")).await;
    assert_eq!(
        r["data"]["fulfillmentCreate"]["userErrors"][0]["message"],
        "Invalid fulfillment order line item quantity requested."
    );
    // @idempotent is not accepted on fulfillmentCreate.
    let (_, r) = gql(
        &emu,
        &SHIP.replace(
            "fulfillmentCreate(fulfillment: $f)",
            "fulfillmentCreate(fulfillment: $f) @idempotent(key: \"k\")",
        ),
        input(2, "A"),
    )
    .await;
    assert!(
        r["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("@idempotent"),
        "{r}"
    );
    assert!(emu.fulfillments().is_empty());
    // 2 of 3, then the last one.
    let (_, r) = gql(&emu, SHIP, input(2, "A")).await;
    assert_eq!(
        r["data"]["fulfillmentCreate"]["fulfillment"]["status"], "SUCCESS",
        "{r}"
    );
    let (_, read) = gql(
        &emu,
        READ,
        json!({"id": format!("gid://shopify/Order/{id}")}),
    )
    .await;
    let o = &read["data"]["order"];
    assert_eq!(o["displayFulfillmentStatus"], "PARTIALLY_FULFILLED");
    assert_eq!(o["fulfillmentOrders"]["nodes"][0]["status"], "IN_PROGRESS");
    assert_eq!(
        o["fulfillmentOrders"]["nodes"][0]["lineItems"]["nodes"][0]["remainingQuantity"],
        1
    );
    assert_eq!(o["fulfillments"][0]["trackingInfo"][0]["number"], "A");
    let level = emu.level(item, 1).unwrap();
    assert_eq!((level.available, level.committed, level.on_hand), (2, 1, 3));
    let (_, r) = gql(&emu, SHIP, input(1, "B")).await;
    assert!(
        r["data"]["fulfillmentCreate"]["userErrors"]
            .as_array()
            .unwrap()
            .is_empty(),
        "{r}"
    );
    let (_, read) = gql(
        &emu,
        READ,
        json!({"id": format!("gid://shopify/Order/{id}")}),
    )
    .await;
    assert_eq!(
        read["data"]["order"]["displayFulfillmentStatus"],
        "FULFILLED"
    );
    assert_eq!(
        read["data"]["order"]["fulfillmentOrders"]["nodes"][0]["status"],
        "CLOSED"
    );
    let (_, r) = gql(&emu, SHIP, input(1, "C")).await;
    assert!(
        r["data"]["fulfillmentCreate"]["userErrors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("cannot be fulfilled"),
        "{r}"
    );
    assert_eq!(
        emu.notifications()
            .iter()
            .map(|n| n.tracking_numbers.clone())
            .collect::<Vec<_>>(),
        vec![vec!["A".to_string()], vec!["B".to_string()]]
    );
    let level = emu.level(item, 1).unwrap();
    assert_eq!((level.available, level.committed, level.on_hand), (2, 0, 2));
    // Shopify's cost limit holds for these queries too.
    let (_, r) = gql(
        &emu,
        "query O($id: ID!) { order(id: $id) { fulfillmentOrders(first: 50) { nodes { lineItems(first: 250) { nodes { id } } } } } }",
        json!({"id": format!("gid://shopify/Order/{id}")}),
    )
    .await;
    assert_eq!(
        r["errors"][0]["extensions"]["code"], "MAX_COST_EXCEEDED",
        "{r}"
    );
}
