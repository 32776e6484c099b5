//! The Shopify inventory sink against the emulator: coalescing, compare-and-swap, idempotency
//! keys, pacing under a small budget, batches of 250, and the oversell rule.

use std::collections::BTreeMap;
use std::time::Duration;

use fixtures::emulator::shopify::{ShopifyConfig as EmuCfg, ShopifyEmulator};
use rust_decimal::Decimal;
use serde_json::{json, Value};
use sinks::shopify::{ShopifyConfig, ShopifySink};
use transforms::RetailEvent;

fn cfg(emu: &ShopifyEmulator) -> ShopifyConfig {
    ShopifyConfig {
        graphql_url: emu.graphql_url(),
        access_token: "shpat_emulator".into(),
        location_map: [("WH".to_string(), "gid://shopify/Location/1".to_string())]
            .into_iter()
            .collect(),
        sku_map: BTreeMap::new(),
        safety_stock: 0,
        safety_stock_by_sku: BTreeMap::new(),
        timeout: Duration::from_secs(5),
        write_interval: Duration::ZERO,
        urgent_below: 10,
    }
}

fn sellable(sku: &str, qty: i64) -> RetailEvent {
    RetailEvent::SellableChanged {
        sku: sku.into(),
        warehouse: "WH".into(),
        qty: Decimal::from(qty),
    }
}

fn set_calls(emu: &ShopifyEmulator) -> Vec<Value> {
    emu.core()
        .requests()
        .iter()
        .filter(|r| r.body.contains("inventorySetQuantities"))
        .map(|r| serde_json::from_str(&r.body).unwrap())
        .collect()
}

#[tokio::test]
async fn coalesces_compares_and_swaps_with_idempotency_keys() {
    let emu = ShopifyEmulator::start(EmuCfg::default(), 0).await.unwrap();
    let item = emu.add_item("SKU-1", &[(1, 5)]);
    let mut sink = ShopifySink::new(ShopifyConfig {
        safety_stock_by_sku: [("SKU-1".to_string(), 1)].into_iter().collect(),
        ..cfg(&emu)
    })
    .unwrap();
    let report = sink
        .deliver(&[
            sellable("SKU-1", 9),
            sellable("SKU-1", 12),
            sellable("SKU-1", 11),
        ])
        .await
        .unwrap();
    assert_eq!(report.written, 1);
    assert_eq!(
        emu.level(item, 1).unwrap().available,
        10,
        "newest sellable 11 less safety stock 1"
    );
    let calls = set_calls(&emu);
    assert_eq!(calls.len(), 1, "coalesced into one call");
    let q = &calls[0]["variables"]["input"]["quantities"][0];
    assert_eq!(q["changeFromQuantity"], 5);
    assert!(calls[0]["query"]
        .as_str()
        .unwrap()
        .contains("@idempotent(key: \"odoo-cdc-"));
    // Already in sync: nothing is sent.
    sink.deliver(&[sellable("SKU-1", 11)]).await.unwrap();
    assert_eq!(set_calls(&emu).len(), 1);
    // Unknown SKU and unmapped warehouse are permanent, per key.
    let r = sink
        .deliver(&[
            sellable("NOPE", 3),
            RetailEvent::SellableChanged {
                sku: "SKU-1".into(),
                warehouse: "WH9".into(),
                qty: Decimal::ONE,
            },
        ])
        .await
        .unwrap();
    assert_eq!(r.failed.len(), 2);
    assert!(r.failed.iter().all(|(_, e)| !e.is_transient()));
}

#[tokio::test]
async fn never_gives_back_units_shopify_already_sold() {
    let emu = ShopifyEmulator::start(EmuCfg::default(), 0).await.unwrap();
    let item = emu.add_item("HOT", &[(1, 10)]);
    let mut sink = ShopifySink::new(cfg(&emu)).unwrap();
    sink.deliver(&[sellable("HOT", 10)]).await.unwrap();
    // A storefront sale: Shopify drops to 8 at once; Odoo knows nothing yet.
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{}/_emulator/storefront/orders", emu.url()))
        .json(&json!({"line_items": [{"sku": "HOT", "quantity": 2}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    // Odoo receives stock elsewhere: sellable 12. A naive set would write 12 over Shopify's 8.
    let report = sink.deliver(&[sellable("HOT", 12)]).await.unwrap();
    assert_eq!(report.stale, 1, "the compare-and-swap caught the sale");
    assert_eq!(
        emu.level(item, 1).unwrap().available,
        10,
        "12 - 2 units sold in Shopify, not in Odoo"
    );
    let key = (
        "gid://shopify/InventoryItem/".to_string() + &item.to_string(),
        "gid://shopify/Location/1".to_string(),
    );
    assert_eq!(sink.guard.get(&key), (0, 2));
    // The webhook arrives (pending), then Odoo reserves the order: sellable 10 includes it now.
    sink.guard.order_received(&key, 2);
    assert_eq!(sink.guard.get(&key), (2, 0));
    sink.guard.reservation_visible(&key, 2);
    sink.deliver(&[sellable("HOT", 10)]).await.unwrap();
    assert_eq!(emu.level(item, 1).unwrap().available, 10);
    // Shopify never showed more than Odoo could ship: after the sale, never above 10.
    let history: Vec<i64> = emu
        .history()
        .iter()
        .filter(|h| h.item == item)
        .map(|h| h.available)
        .collect();
    assert_eq!(history, vec![10, 8, 10]);
}

#[tokio::test]
async fn paces_on_the_bucket_and_batches_250() {
    let emu = ShopifyEmulator::start(
        EmuCfg {
            bucket_size: 100.0,
            restore_rate: 50.0,
            ..EmuCfg::default()
        },
        0,
    )
    .await
    .unwrap();
    let mut events = Vec::new();
    let mut sku_map = BTreeMap::new();
    for i in 0..300 {
        let sku = format!("S{i}");
        let id = emu.add_item(&sku, &[(1, 0)]);
        sku_map.insert(sku.clone(), format!("gid://shopify/InventoryItem/{id}"));
        events.push(sellable(&sku, 3));
    }
    let mut sink = ShopifySink::new(ShopifyConfig {
        sku_map,
        ..cfg(&emu)
    })
    .unwrap();
    let report = sink.deliver(&events).await.unwrap();
    assert_eq!(report.written, 300);
    let calls = set_calls(&emu);
    assert_eq!(calls.len(), 2, "250 + 50");
    assert_eq!(
        calls[0]["variables"]["input"]["quantities"]
            .as_array()
            .unwrap()
            .len(),
        250
    );
    assert_eq!(
        emu.counters().get("throttled").copied().unwrap_or(0),
        0,
        "paced, never throttled"
    );
}
