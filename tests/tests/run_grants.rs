//! `odoo-cdc run` under a role made by the README's grants block, word for word: it starts,
//! makes its own state schema, takes the initial snapshot, streams a new delivery to the WMS
//! and commits a webhook to its inbox. The grants are the README's contract with DBAs; this
//! test fails the day `run` needs one more.

use std::process::{Command, Stdio};
use std::time::Duration;

use fixtures::emulator::odoo_rpc::{OdooRpcConfig, OdooRpcEmulator};
use fixtures::emulator::signing::sign;
use fixtures::emulator::wms::{WmsConfig, WmsEmulator};
use fixtures::odoo::{self, SeedConfig};
use odoo_cdc_tests::{odoo_cdc_bin, scratch_dir, wait_bootstrapped, Db, Running};
use serde_json::json;

/// The SQL block under the README's `### Grants`.
fn readme_grants() -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let section = readme
        .split_once("### Grants")
        .expect("a ### Grants section in README.md")
        .1;
    let block = section
        .split_once("```sql\n")
        .expect("an sql block under ### Grants")
        .1;
    block
        .split_once("```")
        .expect("the end of the sql block")
        .0
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_works_with_exactly_the_readme_grants() {
    let db = Db::start();
    let c = db.cluster.superuser_client("odoo").await.unwrap();
    // Odoo's tables, owned by another role than odoo-cdc's (here the superuser, as Odoo's
    // own database user would own them).
    let info = odoo::create(
        &c,
        &SeedConfig {
            products: 3,
            customers: 1,
            ..SeedConfig::default()
        },
    )
    .await
    .unwrap();
    // The cluster's role had broader test grants: start from nothing, then the README.
    db.sql("DROP OWNED BY odoo_cdc; DROP ROLE odoo_cdc;");
    let grants = readme_grants()
        .replace("DATABASE TO", "odoo TO")
        .replace("'PASSWORD'", &format!("'{}'", db.cluster.role_password()));
    assert!(
        grants.contains("CREATE ROLE odoo_cdc LOGIN REPLICATION"),
        "{grants}"
    );
    db.sql(&grants);
    let privileges = db.sql(
        "SELECT rolsuper::text || rolcreatedb::text || rolcreaterole::text FROM pg_roles WHERE rolname = 'odoo_cdc'",
    );
    assert_eq!(privileges.trim(), "falsefalsefalse");

    let wms = WmsEmulator::start(
        WmsConfig {
            ship_delay: Duration::from_secs(3600),
            ..WmsConfig::default()
        },
        0,
    )
    .await
    .unwrap();
    let odoo_rpc = OdooRpcEmulator::start(OdooRpcConfig::new(&db.cluster.superuser_url("odoo")), 0)
        .await
        .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = scratch_dir();
    let config = dir.join("odoo-cdc.toml");
    std::fs::write(
        &config,
        format!(
            "[source]\nurl = \"{}\"\n\n[odoo]\nurl = \"{}\"\ndatabase = \"odoo\"\nlogin = \"admin\"\n\n\
             [webhooks]\nlisten = \"127.0.0.1:{port}\"\nshop_domain = \"shop.example\"\n\n[sinks.wms]\nbase_url = \"{}\"\n",
            db.url(),
            odoo_rpc.url(),
            wms.url()
        ),
    )
    .unwrap();
    let log = dir.join("run.log");
    let _run = Running(
        Command::new(odoo_cdc_bin())
            .args(["run", "--config", config.to_str().unwrap()])
            .env("ODOO_CDC_ODOO_API_KEY", "odoo-api-key")
            .env("ODOO_CDC_SHOPIFY_WEBHOOK_SECRET", "hush")
            .env("ODOO_CDC_WMS_API_KEY", "wms-key")
            .stdin(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    assert!(
        wait_bootstrapped(&db).await,
        "run did not start under the README's grants:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let owner =
        db.sql("SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'odoo_cdc'");
    assert_eq!(
        owner.trim(),
        "odoo_cdc",
        "the state schema is odoo-cdc's own"
    );

    // A new delivery streams to the WMS; a signed webhook is committed to the inbox.
    db.sql(&format!(
        "UPDATE stock_quant SET quantity = 40, reserved_quantity = 0 WHERE location_id = {} AND product_id = {}",
        info.warehouses[0].stock_location_id, info.products[0].id
    ));
    let mut oc = odoo::OdooClient::new(db.cluster.superuser_client("odoo").await.unwrap());
    let (_, name, ready) = odoo_cdc_tests::sell_one(&mut oc, &info, 0).await;
    assert!(ready, "the delivery is not ready");
    let body = json!({"id": 42, "email": "a@example.com", "line_items": [{"id": 1, "sku": info.products[0].sku, "quantity": 1, "price": "1.00"}]}).to_string();
    let status = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/webhooks/shopify"))
        .header("x-shopify-topic", "orders/create")
        .header("x-shopify-shop-domain", "shop.example")
        .header("x-shopify-event-id", "grants-1")
        .header("x-shopify-hmac-sha256", sign(b"hush", body.as_bytes()))
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16();
    assert_eq!(status, 200);
    for _ in 0..300 {
        let applied = db.sql("SELECT count(*) FROM odoo_cdc.inbox WHERE status = 'done'");
        if wms.orders().contains_key(&name) && applied.trim() == "1" {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "under the README's grants the delivery did not reach the WMS or the webhook was not applied\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}
