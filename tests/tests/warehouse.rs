//! The warehouse loop end to end: a storefront order becomes an Odoo order and a WMS
//! fulfillment order; the warehouse ships it in two parcels (2 of 3 units with tracking A,
//! then the last with tracking B), every webhook delivered twice and the second parcel first;
//! odoo-cdc is SIGKILLed while the first parcel waits for Odoo, and Shopify is down when the
//! fulfillments are due. Odoo validates the delivery and its backorder, Shopify gets one
//! partial fulfillment per parcel with its tracking and one customer notification each, the
//! WMS is never asked for the backorder, and Shopify's levels follow Odoo's stock. Then a
//! receipt counted at the dock and a stock count reach Odoo and, through the stream, Shopify.

use std::process::{Command, Stdio};
use std::time::Duration;

use fixtures::emulator::odoo_rpc::{OdooRpcConfig, OdooRpcEmulator};
use fixtures::emulator::shopify::{ShopifyConfig as ShopCfg, ShopifyEmulator};
use fixtures::emulator::signing::sign;
use fixtures::emulator::wms::{WmsConfig as WmsCfg, WmsEmulator};
use fixtures::emulator::{Faults, Outage};
use fixtures::odoo::{self, SeedConfig};
use odoo_cdc_tests::{odoo_cdc_bin, scratch_dir, Db, Running};
use serde_json::{json, Value};

const SHOP: &str = "odoo-cdc-demo.myshopify.com";
const WMS_SECRET: &str = "wms-webhook-secret";

fn start(config: &std::path::Path, log: &std::path::Path) -> Running {
    Running(
        Command::new(odoo_cdc_bin())
            .args(["run", "--config", config.to_str().unwrap()])
            .env("ODOO_CDC_ODOO_API_KEY", "odoo-api-key")
            .env("ODOO_CDC_SHOPIFY_WEBHOOK_SECRET", "hush")
            .env("ODOO_CDC_SHOPIFY_ACCESS_TOKEN", "shpat_emulator")
            .env("ODOO_CDC_WMS_API_KEY", "wms-key")
            .env("ODOO_CDC_WMS_WEBHOOK_SECRET", WMS_SECRET)
            .env("RUST_LOG", "info,pipeline=debug,sinks=debug")
            .stdin(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(log)
                    .unwrap(),
            )
            .spawn()
            .unwrap(),
    )
}

async fn until(what: &str, db: &Db, log: &std::path::Path, mut f: impl FnMut() -> bool) {
    for _ in 0..900 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "timed out waiting for {what}\ninbox:\n{}\ntransfers:\n{}\npickings:\n{}\n{}",
        db.sql("SELECT id, topic, order_key, status, attempts, last_error FROM odoo_cdc.inbox ORDER BY id"),
        db.sql("SELECT id, reference, picking, status, backorder, fulfillment FROM odoo_cdc.transfers"),
        db.sql("SELECT id, name, state, backorder_id FROM stock_picking ORDER BY id"),
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

async fn wms_post(url: &str, topic: &str, event: &str, body: &str, sig: Option<String>) -> u16 {
    let mut req = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .header("x-wms-topic", topic)
        .header("x-wms-event-id", event)
        .body(body.to_string());
    if let Some(s) = sig {
        req = req.header("x-wms-hmac-sha256", s);
    }
    req.send().await.unwrap().status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipments_receipts_and_counts_flow_into_odoo_and_shopify_exactly_once() {
    let db = Db::start();
    let c = db.cluster.superuser_client("odoo").await.unwrap();
    let info = odoo::create(
        &c,
        &SeedConfig {
            products: 3,
            customers: 2,
            max_opening_qty: 20,
            ..SeedConfig::default()
        },
    )
    .await
    .unwrap();
    let wh = info.warehouses[0].clone();
    let (a, b) = (info.products[0].clone(), info.products[1].clone());
    // 3 units of A (all of them go to one order), 10 of B.
    c.batch_execute(&format!(
        "DELETE FROM stock_quant WHERE product_id IN ({0}, {1}); \
         INSERT INTO stock_quant (product_id, company_id, location_id, quantity, reserved_quantity, in_date, create_date, write_date) \
         VALUES ({0}, {3}, {2}, 3, 0, now(), now(), now()), ({1}, {3}, {2}, 10, 0, now(), now(), now()); \
         CREATE PUBLICATION odoo_cdc FOR TABLE {4}",
        a.id,
        b.id,
        wh.stock_location_id,
        info.company_id,
        cdc::slot::ODOO_TABLES.join(", ")
    ))
    .await
    .unwrap();
    let odoo_rpc = OdooRpcEmulator::start(OdooRpcConfig::new(&db.cluster.superuser_url("odoo")), 0)
        .await
        .unwrap();
    let hook_port = odoo_cdc_tests::free_port();
    let shopify = ShopifyEmulator::start(
        ShopCfg {
            webhook_url: Some(format!("http://127.0.0.1:{hook_port}/webhooks/shopify")),
            webhook_delay: Duration::from_millis(100),
            webhook_backoff: vec![Duration::from_millis(300); 8],
            duplicate_rate: 1.0,
            ..ShopCfg::default()
        },
        0,
    )
    .await
    .unwrap();
    let item_a = shopify.add_item(&a.sku, &[(1, 0)]);
    let item_b = shopify.add_item(&b.sku, &[(1, 0)]);
    let wms = WmsEmulator::start(
        WmsCfg {
            webhook_url: Some(format!("http://127.0.0.1:{hook_port}/webhooks/wms")),
            webhook_secret: WMS_SECRET.into(),
            ship_delay: Duration::from_secs(36_000),
            webhook_backoff: Duration::from_millis(300),
            duplicate_rate: 1.0,
            warehouse: wh.code.clone(),
            ..WmsCfg::default()
        },
        0,
    )
    .await
    .unwrap();
    let dir = scratch_dir();
    let config = dir.join("odoo-cdc.toml");
    std::fs::write(
        &config,
        format!(
            "[source]\nurl = \"{}\"\n\n[odoo]\nurl = \"{}\"\ndatabase = \"odoo\"\nlogin = \"admin\"\n\n\
             [webhooks]\nlisten = \"127.0.0.1:{hook_port}\"\nshop_domain = \"{SHOP}\"\n\n\
             [wms]\nbackorder = \"create\"\n\n\
             [sinks.wms]\nbase_url = \"{}\"\n\n\
             [sinks.shopify]\ngraphql_url = \"{}\"\nlocation_map = {{ {} = \"gid://shopify/Location/1\" }}\nfulfillments = true\n",
            db.url(),
            odoo_rpc.url(),
            wms.url(),
            shopify.graphql_url(),
            wh.code,
        ),
    )
    .unwrap();
    let log = dir.join("run.log");
    let mut child = start(&config, &log);
    let available = |item: u64| shopify.level(item, 1).map(|q| q.available);
    until("the initial sync", &db, &log, || {
        available(item_a) == Some(3) && available(item_b) == Some(10)
    })
    .await;
    let hook = format!("http://127.0.0.1:{hook_port}/webhooks/wms");

    // Bad signatures are refused; a signed body that cannot be applied is committed (200)
    // and dead-lettered with the reason.
    let junk = json!({"topic": "shipment/created", "lines": []}).to_string();
    assert_eq!(
        wms_post(&hook, "shipment/created", "bad-1", &junk, None).await,
        401
    );
    assert_eq!(
        wms_post(
            &hook,
            "shipment/created",
            "bad-2",
            &junk,
            Some(sign(b"wrong", junk.as_bytes()))
        )
        .await,
        401
    );
    assert_eq!(
        wms_post(
            &hook,
            "shipment/created",
            "bad-3",
            &junk,
            Some(sign(WMS_SECRET.as_bytes(), junk.as_bytes()))
        )
        .await,
        200
    );

    // A storefront order for all 3 units of A.
    let http = reqwest::Client::new();
    let placed: Value = http
        .post(format!("{}/_emulator/storefront/orders", shopify.url()))
        .json(
            &json!({"line_items": [{"sku": a.sku, "quantity": 3, "price": "20.00"}],
                      "customer": {"email": "ada@example.com", "first_name": "Ada"}}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let order_id = placed["id"].as_u64().unwrap();
    let picking = || {
        db.sql(&format!(
            "SELECT p.name FROM stock_picking p JOIN sale_order s ON s.id = p.sale_id \
             WHERE s.client_order_ref = 'shopify:{order_id}' AND p.backorder_id IS NULL"
        ))
        .trim()
        .to_string()
    };
    until("the delivery at the WMS", &db, &log, || {
        let p = picking();
        !p.is_empty() && wms.orders().contains_key(&p)
    })
    .await;
    let reference = picking();
    assert_eq!(wms.orders()[&reference].lines[0].quantity, 3);

    // Odoo is down; the warehouse ships 2 (tracking A), then the last one (tracking B); the
    // second parcel's webhook arrives first, and every webhook arrives twice.
    odoo_rpc.core().set_faults(Faults {
        outages: vec![Outage {
            start_secs: 0.0,
            end_secs: 1e9,
        }],
        ..Faults::default()
    });
    let ship = |body: Value| {
        let http = http.clone();
        let url = format!(
            "{}/_emulator/fulfillment_orders/{}/ship",
            wms.url(),
            reference.replace('/', "%2F")
        );
        async move {
            let r = http.post(url).json(&body).send().await.unwrap();
            assert_eq!(r.status().as_u16(), 200);
            r.json::<Value>().await.unwrap()
        }
    };
    let first = ship(json!({"lines": [{"sku": a.sku, "quantity": 2}], "tracking_number": "TRACK-A", "delay_ms": 1500})).await;
    let second = ship(json!({"tracking_number": "TRACK-B"})).await;
    assert_eq!(
        (first["sequence"].as_u64(), second["sequence"].as_u64()),
        (Some(1), Some(2))
    );
    assert_eq!(second["final"], true);
    let inbox = |topic: &str, status: &str| {
        db.sql(&format!(
            "SELECT count(*) FROM odoo_cdc.inbox WHERE topic = '{topic}' AND status = '{status}'"
        ))
        .trim()
        .parse::<i64>()
        .unwrap()
    };
    until("both parcels in the inbox, delivered twice", &db, &log, || {
        inbox("shipment/created", "pending") == 2
            && wms.deliveries().iter().filter(|d| d["topic"] == "shipment/created").count() >= 4
            && db.sql("SELECT count(*) FROM odoo_cdc.inbox WHERE topic = 'shipment/created' AND attempts > 0").trim() != "0"
    })
    .await;
    // SIGKILL while the first parcel waits for Odoo; Odoo comes back, Shopify goes down.
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    odoo_rpc.core().set_faults(Faults::default());
    shopify.core().set_faults(Faults {
        error_rate: 1.0,
        ..Faults::default()
    });
    let mut child = start(&config, &log);
    let state_of = |name: &str| {
        db.sql(&format!(
            "SELECT state FROM stock_picking WHERE name = '{name}'"
        ))
        .trim()
        .to_string()
    };
    let backorder = || {
        db.sql(&format!(
            "SELECT b.name FROM stock_picking b JOIN stock_picking p ON p.id = b.backorder_id WHERE p.name = '{reference}'"
        ))
        .trim()
        .to_string()
    };
    until("both parcels validated in Odoo", &db, &log, || {
        let b = backorder();
        state_of(&reference) == "done" && !b.is_empty() && state_of(&b) == "done"
    })
    .await;
    let back = backorder();
    let done = |name: &str| {
        db.sql(&format!(
            "SELECT sum(m.quantity) FROM stock_move m JOIN stock_picking p ON p.id = m.picking_id \
             WHERE p.name = '{name}' AND m.state = 'done'"
        ))
        .trim()
        .to_string()
    };
    println!(
        "parcels: {reference} done {} (TRACK-A), backorder {back} done {} (TRACK-B)",
        done(&reference),
        done(&back)
    );
    assert_eq!(done(&reference).parse::<f64>().unwrap(), 2.0);
    assert_eq!(done(&back).parse::<f64>().unwrap(), 1.0);
    assert_eq!(
        db.sql(&format!(
            "SELECT sum(l.qty_delivered) FROM sale_order_line l JOIN sale_order s ON s.id = l.order_id \
             WHERE s.client_order_ref = 'shopify:{order_id}'"
        ))
        .trim()
        .parse::<f64>()
        .unwrap(),
        3.0,
        "delivered exactly what was ordered"
    );
    // Shopify is down: no fulfillment yet, and nothing dead-lettered for it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(shopify.fulfillments().is_empty());
    shopify.core().set_faults(Faults::default());
    until("two Shopify fulfillments", &db, &log, || {
        shopify.fulfillments().len() >= 2
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let fulfillments = shopify.fulfillments();
    let summary: Vec<(Option<String>, i64)> = fulfillments
        .iter()
        .map(|f| {
            (
                f.tracking.first().and_then(|t| t.1.clone()),
                f.lines.iter().map(|l| l.3).sum(),
            )
        })
        .collect();
    println!(
        "Shopify fulfillments: {summary:?}, notifications: {}",
        shopify.notifications().len()
    );
    assert_eq!(
        summary,
        vec![(Some("TRACK-A".into()), 2), (Some("TRACK-B".into()), 1)],
        "one partial fulfillment per parcel, with its tracking"
    );
    assert!(fulfillments.iter().all(|f| f.order == order_id));
    assert_eq!(
        shopify.notifications().len(),
        2,
        "one customer notification per fulfillment"
    );
    assert_eq!(
        shopify
            .fulfillment_orders()
            .iter()
            .find(|f| f.order == order_id)
            .map(|f| f.status.clone()),
        Some("CLOSED".into())
    );
    // The WMS was asked once: never for the backorder (the rest was in the first order).
    assert_eq!(
        wms.orders().len(),
        1,
        "{:?}",
        wms.orders().keys().collect::<Vec<_>>()
    );
    assert_eq!(inbox("shipment/created", "done"), 2);
    assert_eq!(
        db.sql("SELECT count(*) FROM odoo_cdc.dead_letters WHERE reason LIKE '%no reference%'")
            .trim(),
        "1",
        "the signed junk is a dead letter"
    );
    // Shopify's level and Odoo's stock agree: A is sold out and shipped, on hand 0.
    until("Shopify's levels after shipping", &db, &log, || {
        shopify
            .level(item_a, 1)
            .map(|q| (q.available, q.on_hand, q.committed))
            == Some((0, 0, 0))
    })
    .await;
    // The order's audit trail shows its shipments and fulfillments.
    let audit = db.sql(&format!(
        "SELECT kind FROM odoo_cdc.audit WHERE shopify_id = '{order_id}' AND kind IN ('shipment', 'fulfillment') ORDER BY id"
    ));
    assert_eq!(
        audit.lines().filter(|k| *k == "shipment").count(),
        2,
        "{audit}"
    );
    assert_eq!(
        audit.lines().filter(|k| *k == "fulfillment").count(),
        2,
        "{audit}"
    );

    // A receipt counted at the dock: 5 of B where 4 were expected.
    let (_, receipt) = {
        let mut oc = odoo_cdc_tests::reconnect(&db).await;
        fixtures::odoo::actions::stock::expect_receipt(
            &mut oc,
            &info,
            &wh,
            "P00001",
            &[fixtures::odoo::actions::stock::StockLine {
                product_id: b.id,
                qty: 4.into(),
            }],
        )
        .await
        .unwrap()
    };
    let r = http
        .post(format!("{}/_emulator/receipts", wms.url()))
        .json(&json!({"reference": receipt, "lines": [{"sku": b.sku, "quantity": 5}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    until("the receipt in Odoo and Shopify", &db, &log, || {
        state_of(&receipt) == "done" && available(item_b) == Some(15)
    })
    .await;
    assert_eq!(
        done(&receipt).parse::<f64>().unwrap(),
        5.0,
        "over-receipt received as counted"
    );
    // A stock count: the warehouse finds 12 of B.
    let r = http
        .post(format!("{}/_emulator/inventory", wms.url()))
        .json(&json!({"topic": "inventory/snapshot", "lines": [{"sku": b.sku, "on_hand": 12}, {"sku": a.sku, "on_hand": 0}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    until("the count in Odoo and Shopify", &db, &log, || {
        available(item_b) == Some(12)
    })
    .await;
    assert_eq!(
        db.sql(&format!(
            "SELECT sum(quantity) FROM stock_quant WHERE product_id = {} AND location_id = {}",
            b.id, wh.stock_location_id
        ))
        .trim()
        .parse::<f64>()
        .unwrap(),
        12.0
    );
    until("every warehouse webhook applied", &db, &log, || {
        inbox("inventory/snapshot", "done") == 1 && inbox("receipt/received", "done") == 1
    })
    .await;
    assert!(odoo_cdc_tests::stop_term(&mut child));
}
