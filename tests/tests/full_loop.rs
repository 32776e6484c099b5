//! The full loop under racing sales: storefront sales of a hot SKU race each other on the
//! Shopify emulator; their webhooks reach `odoo-cdc run`, become confirmed Odoo orders whose
//! reservations flow back through CDC to Shopify inventory. Shopify must never show more than
//! Odoo can ship (its recorded history, against the units already sold), every accepted sale
//! must be reservable in Odoo (no oversell), and at quiescence Shopify equals Odoo.

use std::process::{Command, Stdio};
use std::time::Duration;

use fixtures::emulator::odoo_rpc::{OdooRpcConfig, OdooRpcEmulator};
use fixtures::emulator::shopify::{ShopifyConfig as ShopCfg, ShopifyEmulator};
use fixtures::odoo::{self, SeedConfig};
use odoo_cdc_tests::{odoo_cdc_bin, scratch_dir, Db, Running};
use serde_json::json;

const STOCK: i64 = 12;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_storefront_sales_never_oversell_and_shopify_converges_to_odoo() {
    race(&[&[]], None).await;
}

/// The same with the inbox (in the reader) and the Shopify worker in different processes,
/// on a Fluvio cluster (`ODOO_CDC_FLUVIO_ENDPOINT`, `--features fluvio`): the worker's guard
/// follows the inbox through the state database; skipped, and said, without a cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaled_out_on_fluvio_racing_storefront_sales_never_oversell() {
    let Some(endpoint) = odoo_cdc_tests::fluvio_endpoint() else {
        return;
    };
    race(
        &[
            &["--role", "reader"],
            &["--role", "worker", "--sinks", "shopify"],
        ],
        Some(&endpoint),
    )
    .await;
}

async fn race(processes: &[&[&str]], fluvio: Option<&str>) {
    let db = Db::start();
    let c = db.cluster.superuser_client("odoo").await.unwrap();
    let info = odoo::create(
        &c,
        &SeedConfig {
            products: 4,
            customers: 2,
            max_opening_qty: 30,
            ..SeedConfig::default()
        },
    )
    .await
    .unwrap();
    let hot = info.products[0].clone();
    let wh = &info.warehouses[0];
    c.batch_execute(&format!(
        "DELETE FROM stock_quant WHERE product_id = {0} AND location_id = {1}; \
         INSERT INTO stock_quant (product_id, company_id, location_id, quantity, reserved_quantity, in_date, create_date, write_date) \
         VALUES ({0}, {2}, {1}, {STOCK}, 0, now(), now(), now()); \
         CREATE PUBLICATION odoo_cdc FOR TABLE {3}",
        hot.id,
        wh.stock_location_id,
        info.company_id,
        cdc::slot::ODOO_TABLES.join(", ")
    ))
    .await
    .unwrap();
    let odoo_rpc = OdooRpcEmulator::start(OdooRpcConfig::new(&db.cluster.superuser_url("odoo")), 0)
        .await
        .unwrap();
    let hook_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let shopify = ShopifyEmulator::start(
        ShopCfg {
            webhook_url: Some(format!("http://127.0.0.1:{hook_port}/webhooks/shopify")),
            webhook_delay: Duration::from_millis(150),
            webhook_jitter: Duration::from_millis(400),
            webhook_backoff: vec![Duration::from_millis(300); 8],
            duplicate_rate: 0.3,
            ..ShopCfg::default()
        },
        0,
    )
    .await
    .unwrap();
    let mut items = Vec::new();
    for p in &info.products {
        items.push(shopify.add_item(&p.sku, &[(1, 0), (2, 0)]));
    }
    let hot_item = items[0];
    let dir = scratch_dir();
    let config = dir.join("odoo-cdc.toml");
    std::fs::write(
        &config,
        format!(
            "[source]\nurl = \"{}\"\n\n[odoo]\nurl = \"{}\"\ndatabase = \"odoo\"\nlogin = \"admin\"\n\n\
             [webhooks]\nlisten = \"127.0.0.1:{hook_port}\"\nshop_domain = \"odoo-cdc-demo.myshopify.com\"\n\n\
             [sinks.shopify]\ngraphql_url = \"{}\"\n\
             location_map = {{ {} = \"gid://shopify/Location/1\", {} = \"gid://shopify/Location/2\" }}\n{}",
            db.url(),
            odoo_rpc.url(),
            shopify.graphql_url(),
            info.warehouses[0].code,
            info.warehouses[1].code,
            fluvio.map_or_else(String::new, |e| format!(
                "\n[fluvio]\nendpoint = \"{e}\"\ntopic_prefix = \"race-{}\"\n",
                std::process::id()
            )),
        ),
    )
    .unwrap();
    let log = dir.join("run.log");
    let children: Vec<Running> = processes
        .iter()
        .map(|role| {
            Running(
                Command::new(odoo_cdc_bin())
                    .args(["run", "--config", config.to_str().unwrap()])
                    .args(*role)
                    .env("ODOO_CDC_ODOO_API_KEY", "odoo-api-key")
                    .env("ODOO_CDC_SHOPIFY_WEBHOOK_SECRET", "hush")
                    .env("ODOO_CDC_SHOPIFY_ACCESS_TOKEN", "shpat_emulator")
                    .env("RUST_LOG", "info,sinks=debug,pipeline=debug")
                    .stdin(Stdio::null())
                    .stderr(
                        std::fs::OpenOptions::new()
                            .create(true)
                            .append(true)
                            .open(&log)
                            .unwrap(),
                    )
                    .spawn()
                    .unwrap(),
            )
        })
        .collect();
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    // The initial synchronisation puts Odoo's stock into Shopify.
    let mut synced = false;
    for _ in 0..300 {
        if shopify.level(hot_item, 1).map(|q| q.available) == Some(STOCK) {
            synced = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(synced, "initial sync never reached Shopify\n{}", log_text());

    // 20 customers race for 12 units, in waves, while earlier orders are being reserved.
    let http = reqwest::Client::new();
    let mut accepted = Vec::new();
    let mut refused = 0;
    for wave in 0..5 {
        let mut tasks = Vec::new();
        for i in 0..4 {
            let http = http.clone();
            let url = format!("{}/_emulator/storefront/orders", shopify.url());
            let sku = hot.sku.clone();
            tasks.push(tokio::spawn(async move {
                let resp = http
                    .post(url)
                    .json(&json!({"line_items": [{"sku": sku, "quantity": 1, "price": "25.00"}],
                                  "customer": {"email": format!("buyer{wave}-{i}@example.com"), "first_name": "Buyer"}}))
                    .send()
                    .await
                    .unwrap();
                let status = resp.status().as_u16();
                let body: serde_json::Value = resp.json().await.unwrap_or_default();
                (status, body["id"].to_string())
            }));
        }
        for t in tasks {
            let (status, id) = t.await.unwrap();
            match status {
                201 => accepted.push(id),
                409 => refused += 1,
                s => panic!("storefront answered {s}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        accepted.len() as i64 <= STOCK,
        "the storefront sold {} of {STOCK}",
        accepted.len()
    );
    assert_eq!(accepted.len() + refused, 20);

    // Quiescence: every accepted sale is a confirmed Odoo order, and Shopify equals Odoo.
    let sellable = || -> i64 {
        db.sql(&format!(
            "SELECT coalesce(sum(quantity - reserved_quantity), 0)::int FROM stock_quant q JOIN stock_location l ON l.id = q.location_id \
             WHERE q.product_id = {} AND l.usage = 'internal' AND l.parent_path LIKE '%/{}/%'",
            hot.id, wh.view_location_id
        ))
        .trim()
        .parse()
        .unwrap()
    };
    let mut converged = false;
    for _ in 0..600 {
        let in_odoo: i64 = db
            .sql("SELECT count(*) FROM sale_order WHERE client_order_ref LIKE 'shopify:%' AND state = 'sale'")
            .trim()
            .parse()
            .unwrap();
        if in_odoo == accepted.len() as i64
            && shopify.level(hot_item, 1).map(|q| q.available) == Some(sellable())
        {
            converged = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        converged,
        "no convergence: Shopify {:?}, Odoo sellable {}, inbox:\n{}\n{}",
        shopify.level(hot_item, 1),
        sellable(),
        db.sql("SELECT id, topic, order_key, status, attempts, last_error FROM odoo_cdc.inbox ORDER BY id"),
        log_text()
    );
    assert_eq!(
        sellable(),
        STOCK - accepted.len() as i64,
        "accepted {accepted:?}\nquants:\n{}\nmoves:\n{}",
        db.sql(&format!("SELECT location_id, quantity, reserved_quantity FROM stock_quant WHERE product_id = {}", hot.id)),
        db.sql(&format!("SELECT o.client_order_ref, m.product_uom_qty, m.quantity, m.state FROM stock_move m JOIN sale_order_line l ON l.id = m.sale_line_id JOIN sale_order o ON o.id = l.order_id WHERE m.product_id = {}", hot.id))
    );

    // No oversell: every Shopify order is fully reserved in Odoo.
    let unreserved = db.sql(
        "SELECT count(*) FROM stock_picking p JOIN sale_order o ON o.id = p.sale_id \
         WHERE o.client_order_ref LIKE 'shopify:%' AND p.state <> 'assigned'",
    );
    assert_eq!(unreserved.trim(), "0", "orders Odoo could not reserve");

    // Shopify never showed more than Odoo could ship: at every point of the recorded history,
    // what it offered plus what it had already sold stays within the stock.
    let mut sold = 0;
    for h in shopify
        .history()
        .iter()
        .filter(|h| h.item == hot_item && h.location == 1)
    {
        if h.cause.starts_with("order") {
            sold += 1;
        }
        assert!(
            h.available + sold <= STOCK,
            "Shopify offered {} with {sold} already sold of {STOCK} ({}): {:?}",
            h.available,
            h.cause,
            shopify
                .history()
                .iter()
                .filter(|h| h.item == hot_item)
                .collect::<Vec<_>>()
        );
    }
    assert_eq!(sold, accepted.len() as i64);
    drop(children);
}
