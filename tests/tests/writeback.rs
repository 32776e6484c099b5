//! Reverse ingestion end to end: storefront sales on the Shopify emulator reach `odoo-cdc run`
//! as signed webhooks, land in the inbox, and are written into Odoo through the Odoo RPC
//! emulator exactly once — through duplicate deliveries, a cancel before its create, an Odoo
//! outage and a SIGKILL between the 200 and the RPC call; bad input writes nothing; the Odoo
//! order then flows through CDC to a WMS fulfillment order.

use std::process::{Command, Stdio};
use std::time::Duration;

use fixtures::emulator::odoo_rpc::{OdooRpcConfig, OdooRpcEmulator};
use fixtures::emulator::shopify::{ShopifyConfig as ShopCfg, ShopifyEmulator};
use fixtures::emulator::signing::sign;
use fixtures::emulator::wms::{WmsConfig as WmsCfg, WmsEmulator};
use fixtures::emulator::{Faults, Outage};
use fixtures::odoo::{self, SeedConfig};
use odoo_cdc_tests::{odoo_cdc_bin, scratch_dir, Db, Running};
use rust_decimal::Decimal;
use serde_json::{json, Value};

const SHOP: &str = "odoo-cdc-demo.myshopify.com";
const SECRET: &str = "hush";

fn start(config: &std::path::Path, log: &std::path::Path) -> Running {
    Running(
        Command::new(odoo_cdc_bin())
            .args(["run", "--config", config.to_str().unwrap()])
            .env("ODOO_CDC_ODOO_API_KEY", "odoo-api-key")
            .env("ODOO_CDC_SHOPIFY_WEBHOOK_SECRET", SECRET)
            .env("ODOO_CDC_WMS_API_KEY", "wms-key")
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

async fn wait_for(what: &str, (db, log): (&Db, &std::path::Path), mut f: impl FnMut() -> bool) {
    for _ in 0..600 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "timed out waiting for {what}\ninbox:\n{}\n{}",
        db.sql("SELECT id, topic, order_key, status, attempts, last_error FROM odoo_cdc.inbox ORDER BY id"),
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

async fn post(
    url: &str,
    topic: &str,
    event: &str,
    body: &str,
    sig: Option<String>,
    shop: &str,
) -> u16 {
    let mut req = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .header("x-shopify-topic", topic)
        .header("x-shopify-shop-domain", shop)
        .header("x-shopify-event-id", event)
        .header("x-shopify-webhook-id", format!("w-{event}"))
        .body(body.to_string());
    if let Some(s) = sig {
        req = req.header("x-shopify-hmac-sha256", s);
    }
    req.send().await.unwrap().status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storefront_orders_land_in_odoo_exactly_once_through_every_failure() {
    let db = Db::start();
    let c = db.cluster.superuser_client("odoo").await.unwrap();
    let info = odoo::create(
        &c,
        &SeedConfig {
            products: 6,
            customers: 2,
            max_opening_qty: 50,
            ..SeedConfig::default()
        },
    )
    .await
    .unwrap();
    c.batch_execute(&format!(
        "CREATE PUBLICATION odoo_cdc FOR TABLE {}",
        cdc::slot::ODOO_TABLES.join(", ")
    ))
    .await
    .unwrap();
    // Make sure the first products can be sold and reserved.
    c.batch_execute(&format!(
        "UPDATE stock_quant SET quantity = 40 WHERE location_id = {} AND product_id IN ({}, {}, {})",
        info.warehouses[0].stock_location_id, info.products[0].id, info.products[1].id, info.products[2].id
    ))
    .await
    .unwrap();
    let odoo_rpc = OdooRpcEmulator::start(OdooRpcConfig::new(&db.cluster.superuser_url("odoo")), 0)
        .await
        .unwrap();
    let hook_port = odoo_cdc_tests::free_port();
    let hook_url = format!("http://127.0.0.1:{hook_port}/webhooks/shopify");
    let shopify = ShopifyEmulator::start(
        ShopCfg {
            webhook_url: Some(hook_url.clone()),
            webhook_delay: Duration::from_millis(100),
            webhook_backoff: vec![Duration::from_millis(500); 8],
            duplicate_rate: 1.0,
            ..ShopCfg::default()
        },
        0,
    )
    .await
    .unwrap();
    for p in &info.products {
        shopify.add_item(&p.sku, &[(1, 20)]);
    }
    let wms = WmsEmulator::start(
        WmsCfg {
            ship_delay: Duration::from_secs(3600),
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
             [webhooks]\nlisten = \"127.0.0.1:{hook_port}\"\nshop_domain = \"{SHOP}\"\nmax_body_bytes = 65536\n\n\
             [sinks.wms]\nbase_url = \"{}\"\n",
            db.url(),
            odoo_rpc.url(),
            wms.url()
        ),
    )
    .unwrap();
    let log = dir.join("run.log");
    let mut child = start(&config, &log);
    let url = hook_url.clone();
    wait_for("the webhook receiver", (&db, &log), || {
        std::net::TcpStream::connect(("127.0.0.1", hook_port)).is_ok()
    })
    .await;
    let orders_in_odoo = |r: &str| {
        db.sql(&format!(
            "SELECT count(*) FROM sale_order WHERE client_order_ref = 'shopify:{r}'"
        ))
        .trim()
        .parse::<i64>()
        .unwrap()
    };
    let count_orders = || db.sql("SELECT count(*) FROM sale_order").trim().to_string();

    // Bad input: each gets its status, and nothing reaches the inbox or Odoo.
    let before = count_orders();
    let good = json!({"id": 77, "email": "x@example.com", "line_items": [{"id": 1, "sku": info.products[0].sku, "quantity": 1, "price": "1.00"}]}).to_string();
    let sig = sign(SECRET.as_bytes(), good.as_bytes());
    assert_eq!(
        post(&url, "orders/create", "bad-1", &good, None, SHOP).await,
        401,
        "missing signature"
    );
    assert_eq!(
        post(
            &url,
            "orders/create",
            "bad-2",
            &good,
            Some(sign(b"wrong", good.as_bytes())),
            SHOP
        )
        .await,
        401,
        "wrong secret"
    );
    assert_eq!(
        post(
            &url,
            "orders/create",
            "bad-3",
            &format!("{good} "),
            Some(sig.clone()),
            SHOP
        )
        .await,
        401,
        "body changed after signing"
    );
    assert_eq!(
        post(
            &url,
            "orders/create",
            "bad-4",
            &good,
            Some(sig.clone()),
            "evil.myshopify.com"
        )
        .await,
        401,
        "another shop"
    );
    // Correctly signed but unreadable: Shopify's word all the same. Committed (200, so
    // Shopify does not retry and drop it), then dead-lettered with the reason, never applied.
    let shapeless = json!({"id": "not-a-number", "line_items": "none"}).to_string();
    assert_eq!(
        post(
            &url,
            "orders/create",
            "bad-5",
            &shapeless,
            Some(sign(SECRET.as_bytes(), shapeless.as_bytes())),
            SHOP
        )
        .await,
        200
    );
    let not_json = "{\"id\": 1,";
    assert_eq!(
        post(
            &url,
            "orders/create",
            "bad-6",
            not_json,
            Some(sign(SECRET.as_bytes(), not_json.as_bytes())),
            SHOP
        )
        .await,
        200
    );
    let huge = format!("{{\"pad\": \"{}\"}}", "x".repeat(100_000));
    assert_eq!(
        post(
            &url,
            "orders/create",
            "bad-7",
            &huge,
            Some(sign(SECRET.as_bytes(), huge.as_bytes())),
            SHOP
        )
        .await,
        413
    );
    wait_for("the unreadable webhooks dead-lettered", (&db, &log), || {
        db.sql("SELECT count(*) FROM odoo_cdc.inbox WHERE status = 'dead'")
            .trim()
            == "2"
    })
    .await;
    assert_eq!(
        db.sql("SELECT count(*) FROM odoo_cdc.inbox").trim(),
        "2",
        "refused webhooks were written"
    );
    let reasons =
        db.sql("SELECT reason FROM odoo_cdc.dead_letters WHERE sink = 'odoo' ORDER BY id");
    assert!(
        reasons.contains("id is missing") && reasons.contains("not JSON"),
        "{reasons}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(count_orders(), before, "bad input reached Odoo");
    assert_eq!(
        odoo_rpc.core().requests().len(),
        0,
        "bad input made RPC calls"
    );

    // A storefront sale: two lines (one discounted, taxed), shipping; every webhook twice.
    let (p0, p1) = (&info.products[0], &info.products[1]);
    let sale = json!({
        "line_items": [
            {"sku": p0.sku, "quantity": 3, "price": "10.00", "discount": "3.00", "tax_lines": [{"title": "Tax", "rate": "0.15", "price": "4.05"}]},
            {"sku": p1.sku, "quantity": 1, "price": "20.00"},
        ],
        "customer": {"email": "Ann.Lee@example.com", "first_name": "Ann", "last_name": "Lee"},
        "shipping_lines": [{"title": "Standard", "price": "4.90", "tax_lines": []}],
    });
    let http = reqwest::Client::new();
    let placed: Value = http
        .post(format!("{}/_emulator/storefront/orders", shopify.url()))
        .json(&sale)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let order_id = placed["id"].to_string();
    wait_for("the order in Odoo", (&db, &log), || {
        db.sql(&format!(
            "SELECT state FROM sale_order WHERE client_order_ref = 'shopify:{order_id}'"
        ))
        .trim()
            == "sale"
    })
    .await;
    wait_for("both deliveries", (&db, &log), || {
        shopify
            .deliveries()
            .iter()
            .filter(|d| d["topic"] == "orders/create" && d["status"] == 200)
            .count()
            >= 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        orders_in_odoo(&order_id),
        1,
        "duplicate delivery created a second order"
    );
    let lines = db.sql(&format!(
        "SELECT pp.default_code || ':' || l.product_uom_qty::text || ':' || l.price_unit::text || ':' || coalesce(l.discount, 0)::text \
         || ':' || (coalesce(l.price_tax, 0) > 0)::text \
         FROM sale_order_line l JOIN sale_order o ON o.id = l.order_id JOIN product_product pp ON pp.id = l.product_id \
         WHERE o.client_order_ref = 'shopify:{order_id}' ORDER BY l.id"
    ));
    let lines: Vec<&str> = lines.lines().map(str::trim).collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(lines[0], format!("{}:3:10.00:10:true", p0.sku), "{lines:?}");
    assert_eq!(lines[1], format!("{}:1:20.00:0:false", p1.sku), "{lines:?}");
    assert_eq!(lines[2], "SHIP:1:4.90:0:false", "{lines:?}");
    let partner = db.sql(&format!(
        "SELECT p.name || '|' || p.email FROM sale_order o JOIN res_partner p ON p.id = o.partner_id WHERE o.client_order_ref = 'shopify:{order_id}'"
    ));
    assert_eq!(partner.trim(), "Ann Lee|ann.lee@example.com");
    // Odoo's amounts: 27.00 + 20.00 + 4.90 untaxed, 15 % tax on the first line only.
    let amounts = db.sql(&format!(
        "SELECT amount_untaxed::text || '|' || amount_tax::text FROM sale_order WHERE client_order_ref = 'shopify:{order_id}'"
    ));
    let parts: Vec<Decimal> = amounts
        .trim()
        .split('|')
        .map(|v| v.parse().unwrap())
        .collect();
    assert_eq!(parts[0], Decimal::new(5190, 2), "{amounts}");
    assert_eq!(parts[1], Decimal::new(405, 2), "{amounts}");

    // A replayed old delivery (same event id, valid signature): 200 and no effect.
    let first = db.sql(&format!(
        "SELECT event_id || '|' || payload FROM odoo_cdc.inbox WHERE order_key = '{order_id}' AND topic = 'orders/create'"
    ));
    let (event, body) = first.trim().split_once('|').unwrap();
    assert_eq!(
        post(
            &url,
            "orders/create",
            event,
            body,
            Some(sign(SECRET.as_bytes(), body.as_bytes())),
            SHOP
        )
        .await,
        200
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(orders_in_odoo(&order_id), 1);

    // The full loop: the Odoo order's delivery reaches the WMS through CDC.
    let picking = db.sql(&format!(
        "SELECT p.name FROM stock_picking p JOIN sale_order o ON o.id = p.sale_id WHERE o.client_order_ref = 'shopify:{order_id}' AND p.state = 'assigned'"
    ));
    let picking = picking.trim().to_string();
    assert!(
        !picking.is_empty(),
        "the Shopify order's delivery is not ready in Odoo"
    );
    wait_for("the WMS fulfillment order", (&db, &log), || {
        wms.orders().contains_key(&picking)
    })
    .await;

    // Cancel before create: the create that follows is refused, nothing in Odoo.
    let ghost = "9007199254749999";
    let cancel =
        json!({"id": 9007199254749999_u64, "cancelled_at": "2026-11-29T00:00:00Z"}).to_string();
    assert_eq!(
        post(
            &url,
            "orders/cancelled",
            "ghost-cancel",
            &cancel,
            Some(sign(SECRET.as_bytes(), cancel.as_bytes())),
            SHOP
        )
        .await,
        200
    );
    let create = json!({"id": 9007199254749999_u64, "email": "late@example.com",
                        "line_items": [{"id": 1, "sku": p0.sku, "quantity": 1, "price": "10.00"}]})
    .to_string();
    assert_eq!(
        post(
            &url,
            "orders/create",
            "ghost-create",
            &create,
            Some(sign(SECRET.as_bytes(), create.as_bytes())),
            SHOP
        )
        .await,
        200
    );
    wait_for("the late create refused", (&db, &log), || {
        db.sql(&format!("SELECT status FROM odoo_cdc.inbox WHERE order_key = '{ghost}' AND topic = 'orders/create'")).trim() == "refused"
    })
    .await;
    assert_eq!(orders_in_odoo(ghost), 0);

    // An Odoo outage: the webhook is accepted, retried, and applied once Odoo is back.
    odoo_rpc.core().set_faults(Faults {
        outages: vec![Outage {
            start_secs: 0.0,
            end_secs: 1e12,
        }],
        ..Faults::default()
    });
    let sale2 = json!({"line_items": [{"sku": p1.sku, "quantity": 2, "price": "20.00"}], "customer": {"email": "bob@example.com", "first_name": "Bob"}});
    let placed2: Value = http
        .post(format!("{}/_emulator/storefront/orders", shopify.url()))
        .json(&sale2)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let order2 = placed2["id"].to_string();
    wait_for("a retried attempt", (&db, &log), || {
        db.sql(&format!("SELECT attempts > 0 AND status = 'pending' FROM odoo_cdc.inbox WHERE order_key = '{order2}' AND topic = 'orders/create'")).trim() == "t"
    })
    .await;
    assert_eq!(orders_in_odoo(&order2), 0);

    // SIGKILL while the webhook is committed but not applied; Odoo recovers; a restart applies it.
    child.0.kill().unwrap();
    let _ = child.0.wait();
    odoo_rpc.core().set_faults(Faults::default());
    let mut child = start(&config, &log);
    wait_for("the order after the restart", (&db, &log), || {
        orders_in_odoo(&order2) == 1
    })
    .await;
    assert_eq!(
        db.sql(&format!(
            "SELECT state FROM sale_order WHERE client_order_ref = 'shopify:{order2}'"
        ))
        .trim(),
        "sale"
    );

    // The first order ships; then a refund: a posted credit note for the refunded unit, once,
    // and, as the unit is restocked ("return"), a return receipt of the delivery.
    let picking_id: i32 = db
        .sql(&format!(
            "SELECT id FROM stock_picking WHERE name = '{picking}'"
        ))
        .trim()
        .parse()
        .unwrap();
    let mut oc =
        fixtures::odoo::OdooClient::new(db.cluster.superuser_client("odoo").await.unwrap());
    fixtures::odoo::actions::stock::validate_picking(&mut oc, picking_id)
        .await
        .unwrap();
    let refund: Value = http
        .post(format!("{}/_emulator/storefront/orders/{order_id}/refunds", shopify.url()))
        .json(&json!({"refund_line_items": [{"line_item_id": placed["line_items"][1]["id"], "quantity": 1, "restock_type": "return"}]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let refund_ref = format!("shopify-refund:{}", refund["id"]);
    wait_for("the credit note", (&db, &log), || {
        db.sql(&format!(
            "SELECT state FROM account_move WHERE ref = '{refund_ref}'"
        ))
        .trim()
            == "posted"
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        db.sql(&format!(
            "SELECT count(*) FROM account_move WHERE ref = '{refund_ref}'"
        ))
        .trim(),
        "1"
    );
    assert_eq!(
        db.sql(&format!(
            "SELECT amount_untaxed::text FROM account_move WHERE ref = '{refund_ref}'"
        ))
        .trim()
        .parse::<Decimal>()
        .unwrap(),
        Decimal::new(2000, 2)
    );

    // An unknown SKU: the webhook is dead-lettered with the reason; after the product is
    // created in Odoo, `odoo-cdc dlq replay` applies it, once.
    let unknown = json!({"id": 4242, "email": "new@example.com",
                         "line_items": [{"id": 1, "sku": "NEW-SKU-1", "quantity": 1, "price": "5.00"}]})
    .to_string();
    assert_eq!(
        post(
            &url,
            "orders/create",
            "unknown-sku",
            &unknown,
            Some(sign(SECRET.as_bytes(), unknown.as_bytes())),
            SHOP
        )
        .await,
        200
    );
    wait_for("the dead letter", (&db, &log), || {
        db.sql("SELECT status FROM odoo_cdc.inbox WHERE order_key = '4242'")
            .trim()
            == "dead"
    })
    .await;
    let cli = |args: &[&str]| {
        Command::new(odoo_cdc_bin())
            .args(args)
            .args(["--config", config.to_str().unwrap()])
            .env("ODOO_CDC_ODOO_API_KEY", "odoo-api-key")
            .env("ODOO_CDC_SHOPIFY_WEBHOOK_SECRET", SECRET)
            .env("ODOO_CDC_WMS_API_KEY", "wms-key")
            .output()
            .unwrap()
    };
    let listed = cli(&["dlq", "list"]);
    let listed = String::from_utf8_lossy(&listed.stdout).to_string();
    let line = listed
        .lines()
        .find(|l| l.contains("\todoo\t4242\t"))
        .unwrap_or_else(|| panic!("no dead letter for order 4242:\n{listed}"));
    assert!(line.contains("unknown SKU \"NEW-SKU-1\""), "{line}");
    let dead_id = line.split('\t').next().unwrap().to_string();
    // Still unknown: the replay says so and exits 3.
    let again = cli(&["dlq", "replay", "--id", &dead_id]);
    assert_eq!(
        again.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );
    assert_eq!(orders_in_odoo("4242"), 0);
    c.batch_execute(&format!(
        "WITH t AS (INSERT INTO product_template (categ_id, uom_id, uom_po_id, company_id, type, service_tracking, default_code, \
         name, list_price, sale_ok, purchase_ok, active, is_storable, tracking, sale_line_warn, purchase_line_warn, invoice_policy, \
         create_date, write_date) VALUES (1, {0}, {0}, {1}, 'consu', 'no', 'NEW-SKU-1', '{{\"en_US\": \"New\"}}', 5, true, true, \
         true, true, 'none', 'no-message', 'no-message', 'order', now(), now()) RETURNING id) \
         INSERT INTO product_product (product_tmpl_id, default_code, active, create_date, write_date) SELECT id, 'NEW-SKU-1', true, now(), now() FROM t",
        info.uom_id, info.company_id
    ))
    .await
    .unwrap();
    let replayed = cli(&["dlq", "replay", "--id", &dead_id]);
    let replay_out = String::from_utf8_lossy(&replayed.stdout).to_string();
    assert!(replayed.status.success(), "{replay_out}");
    assert!(replay_out.contains("replayed"), "{replay_out}");
    assert_eq!(orders_in_odoo("4242"), 1);
    assert_eq!(
        db.sql("SELECT status FROM odoo_cdc.inbox WHERE order_key = '4242'")
            .trim(),
        "done"
    );
    // What is left are the two unreadable webhooks: still failing, and 4242 is not applied twice.
    let rest = cli(&["dlq", "replay", "--all"]);
    let rest = String::from_utf8_lossy(&rest.stdout).to_string();
    assert_eq!(rest.matches("still failing").count(), 2, "{rest}");
    assert!(!rest.contains("\treplayed"), "{rest}");
    assert_eq!(orders_in_odoo("4242"), 1);

    // The return receipt came from the delivery's return wizard: linked to the delivered move,
    // waiting to be received.
    let returned = db.sql(&format!(
        "SELECT p.state || ':' || pp.default_code || ':' || m.quantity::text || ':' || (m.origin_returned_move_id IS NOT NULL)::text \
         || ':' || (p.return_id = {picking_id})::text FROM stock_picking p JOIN stock_move m ON m.picking_id = p.id \
         JOIN product_product pp ON pp.id = m.product_id WHERE p.origin LIKE 'Return of {picking} (shopify-refund:%'"
    ));
    assert_eq!(
        returned.trim(),
        format!("assigned:{}:1:true:true", p1.sku),
        "return receipt"
    );

    // The audit trail of the first order: webhooks, RPC calls, the outcome, with Odoo's id.
    let out = Command::new(odoo_cdc_bin())
        .args([
            "audit",
            "--config",
            config.to_str().unwrap(),
            "--order",
            &order_id,
        ])
        .env("ODOO_CDC_ODOO_API_KEY", "odoo-api-key")
        .env("ODOO_CDC_SHOPIFY_WEBHOOK_SECRET", SECRET)
        .env("ODOO_CDC_WMS_API_KEY", "wms-key")
        .output()
        .unwrap();
    let trail = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{trail}");
    for kind in [
        "\twebhook\t",
        "\twebhook-duplicate\t",
        "\trpc\t",
        "\tapplied\t",
    ] {
        assert!(
            trail.contains(kind),
            "no {kind:?} in the audit trail:\n{trail}"
        );
    }
    assert!(trail.contains("sale.order.create"), "{trail}");

    let _ = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status();
    let status = child.0.wait().unwrap();
    assert!(
        status.success(),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}
