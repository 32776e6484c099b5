//! The Shopify sink's write interval: while a level has plenty of stock, a change waits up to the
//! interval for the changes after it and they go together in one call (the newest quantity wins);
//! a change that lowers a level near sell-out (`urgent_below`) goes out at once.

use std::process::{Command, Stdio};
use std::time::Duration;

use fixtures::emulator::shopify::{ShopifyConfig as ShopCfg, ShopifyEmulator};
use fixtures::odoo::actions::stock;
use odoo_cdc_tests::{
    odoo_cdc_bin, scratch_dir, seeded_and_published, wait_bootstrapped, Db, Running,
};
use rust_decimal::Decimal;

/// `inventorySetQuantities` calls that wrote the item.
fn writes_of(shopify: &ShopifyEmulator, item: u64) -> usize {
    let gid = format!("\"gid://shopify/InventoryItem/{item}\"");
    shopify
        .core()
        .requests()
        .iter()
        .filter(|r| r.body.contains("inventorySetQuantities") && r.body.contains(&gid))
        .count()
}

async fn wait_level(shopify: &ShopifyEmulator, item: u64, want: i64) -> bool {
    for _ in 0..200 {
        if shopify.level(item, 1).map(|q| q.available) == Some(want) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// `odoo_cdc_sink_deliveries_total` of the Shopify sink for a cause.
async fn deliveries(port: u16, cause: &str) -> f64 {
    odoo_cdc_tests::series(
        &odoo_cdc_tests::metrics(port).await,
        &format!("odoo_cdc_sink_deliveries_total{{sink=\"shopify\",cause=\"{cause}\"}}"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_within_the_interval_share_a_write_and_near_sell_out_each_goes_at_once() {
    let db = Db::start();
    let (mut c, info) = seeded_and_published(&db, 3).await;
    let shopify = ShopifyEmulator::start(ShopCfg::default(), 0).await.unwrap();
    let items: Vec<u64> = info
        .products
        .iter()
        .map(|p| shopify.add_item(&p.sku, &[(1, 0), (2, 0)]))
        .collect();
    let dir = scratch_dir();
    let config = dir.join("odoo-cdc.toml");
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(
        &config,
        format!(
            "[source]\nurl = \"{}\"\n\n[runtime]\nmetrics_listen = \"127.0.0.1:{metrics_port}\"\n\n[sinks.shopify]\ngraphql_url = \"{}\"\n\
             location_map = {{ WH = \"gid://shopify/Location/1\", WH2 = \"gid://shopify/Location/2\" }}\n\
             write_interval_ms = 2000\nurgent_below = 10\n",
            db.url(),
            shopify.graphql_url(),
        ),
    )
    .unwrap();
    let log = dir.join("run.log");
    let child = Running(
        Command::new(odoo_cdc_bin())
            .args(["run", "--config", config.to_str().unwrap()])
            .env("ODOO_CDC_SHOPIFY_ACCESS_TOKEN", "shpat_emulator")
            .stdin(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(wait_bootstrapped(&db).await, "{}", log_text());
    let (product, item) = (info.products[0].id, items[0]);
    let stock_loc = info.warehouses[0].stock_location_id;

    // Plenty of stock: twelve counts, 100 ms apart, each its own transaction.
    stock::inventory_adjustment(&mut c, &info, product, stock_loc, Decimal::from(100))
        .await
        .unwrap();
    assert!(wait_level(&shopify, item, 100).await, "{}", log_text());
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let before = writes_of(&shopify, item);
    for n in (88..100).rev() {
        stock::inventory_adjustment(&mut c, &info, product, stock_loc, Decimal::from(n))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(wait_level(&shopify, item, 88).await, "{}", log_text());
    let calm = writes_of(&shopify, item) - before;
    let gathered = deliveries(metrics_port, "interval").await;
    assert!(
        gathered >= 1.0,
        "the calm changes were not delivered because their interval ran out ({gathered})"
    );
    let urgent_before = deliveries(metrics_port, "urgent").await;
    assert!(
        (1..=5).contains(&calm),
        "12 changes with plenty of stock took {calm} writes; the interval should gather them"
    );

    // Near sell-out: every count that lowers the level to 10 or fewer goes out on its own.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    stock::inventory_adjustment(&mut c, &info, product, stock_loc, Decimal::from(12))
        .await
        .unwrap();
    assert!(wait_level(&shopify, item, 12).await, "{}", log_text());
    let before = writes_of(&shopify, item);
    for n in (5..=10).rev() {
        stock::inventory_adjustment(&mut c, &info, product, stock_loc, Decimal::from(n))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(wait_level(&shopify, item, 5).await, "{}", log_text());
    let urgent = writes_of(&shopify, item) - before;
    let urgent_deliveries = deliveries(metrics_port, "urgent").await - urgent_before;
    assert!(
        urgent_deliveries >= 4.0,
        "{urgent_deliveries} deliveries counted as urgent for six changes near sell-out"
    );
    // Without urgency these six would share one or two writes, like the twelve above.
    assert!(
        urgent >= 4,
        "six changes near sell-out took {urgent} writes; each should go out at once"
    );
    drop(child);
}
