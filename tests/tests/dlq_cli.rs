//! `odoo-cdc dlq list` and `dlq replay`: a dead letter stays pending while its cause lasts and
//! is delivered once the cause is fixed.

use fixtures::emulator::shopify::{ShopifyConfig as ShopCfg, ShopifyEmulator};
use odoo_cdc_tests::{odoo_cdc_env, scratch_dir, Db};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_and_replayed_after_the_fix() {
    let db = Db::start();
    let shopify = ShopifyEmulator::start(ShopCfg::default(), 0).await.unwrap();
    let dir = scratch_dir();
    let config = dir.join("odoo-cdc.toml");
    std::fs::write(
        &config,
        format!(
            "[source]\nurl = \"{}\"\n\n[sinks.shopify]\ngraphql_url = \"{}\"\nlocation_map = {{ WH = \"gid://shopify/Location/1\" }}\n",
            db.url(),
            shopify.graphql_url()
        ),
    )
    .unwrap();
    let env = [("ODOO_CDC_SHOPIFY_ACCESS_TOKEN", "shpat_emulator")];
    let cfg = config.to_str().unwrap().to_string();
    let run = move |args: &[&str]| {
        let mut a = vec!["dlq"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["--config", &cfg]);
        odoo_cdc_env(&a, &env)
    };
    // A dead letter as the runtime records it: a SKU Shopify does not have yet.
    let list = tokio::task::spawn_blocking({
        let run = run.clone();
        move || run(&["list"])
    })
    .await
    .unwrap();
    assert!(
        list.status.success(),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    db.sql(
        r#"INSERT INTO odoo_cdc.dead_letters (sink, key, reason, source_lsn, event) VALUES ('shopify', 'NEW-1@WH',
           'SKU NEW-1 is not in Shopify', '0/16B3800', '{"SellableChanged": {"sku": "NEW-1", "warehouse": "WH", "qty": "7"}}')"#,
    );
    let still = tokio::task::spawn_blocking({
        let run = run.clone();
        move || run(&["replay", "--all"])
    })
    .await
    .unwrap();
    assert_eq!(
        still.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&still.stderr)
    );
    assert!(String::from_utf8_lossy(&still.stdout)
        .contains("still failing: SKU NEW-1 is not in Shopify"));

    // The fix: the product now exists in Shopify.
    let item = shopify.add_item("NEW-1", &[(1, 0)]);
    let done = tokio::task::spawn_blocking({
        let run = run.clone();
        move || run(&["replay", "--all"])
    })
    .await
    .unwrap();
    assert!(
        done.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&done.stdout),
        String::from_utf8_lossy(&done.stderr)
    );
    assert_eq!(shopify.level(item, 1).unwrap().available, 7);
    let listed = tokio::task::spawn_blocking(move || run(&["list", "--json"]))
        .await
        .unwrap();
    let line: serde_json::Value = serde_json::from_str(
        String::from_utf8_lossy(&listed.stdout)
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(line["key"], "NEW-1@WH");
    assert!(line["replayed_at"].is_string());
}
