//! `odoo-cdc run` with the accounting sink in batch mode: posted moves go through the batch
//! endpoint, each booked once.

use std::process::{Command, Stdio};
use std::time::Duration;

use fixtures::emulator::accounting::{AccountingConfig as AcctCfg, AccountingEmulator};
use fixtures::odoo::actions::{account, sales};
use fixtures::odoo::{self, OdooClient, SeedConfig};
use odoo_cdc_tests::{odoo_cdc_bin, scratch_dir, Db};
use rust_decimal::Decimal;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_mode_books_each_posted_move_once_through_the_batch_endpoint() {
    let db = Db::start();
    let mut c = OdooClient::new(db.cluster.superuser_client("odoo").await.unwrap());
    let info = odoo::create(
        &c,
        &SeedConfig {
            products: 5,
            customers: 2,
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
    let acct_cfg = AcctCfg::default();
    let acct = AccountingEmulator::start(acct_cfg.clone(), 0)
        .await
        .unwrap();
    let dir = scratch_dir();
    let config = dir.join("odoo-cdc.toml");
    std::fs::write(
        &config,
        format!(
            "[source]\nurl = \"{}\"\n\n[sinks.accounting]\nbase_url = \"{}\"\nrealm_id = \"{}\"\nclient_id = \"{}\"\nrefresh_token = \"{}\"\n\
             mode = \"batch\"\naccount_map = {{ \"121000\" = \"84\", \"400000\" = \"79\", \"251000\" = \"89\", \"101401\" = \"35\" }}\n",
            db.url(),
            acct.url(),
            acct_cfg.realm_id,
            acct_cfg.client_id,
            acct_cfg.refresh_token
        ),
    )
    .unwrap();
    let log = dir.join("run.log");
    let mut child = Command::new(odoo_cdc_bin())
        .args(["run", "--config", config.to_str().unwrap()])
        .env("ODOO_CDC_ACCOUNTING_CLIENT_SECRET", "emulator-secret")
        .stdin(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    for _ in 0..200 {
        if db.sql("SELECT count(*) FROM pg_replication_slots").trim() == "1" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for i in 0..4 {
        let p = &info.products[i];
        let q = sales::Quotation {
            partner_id: info.customers[0],
            warehouse_id: info.warehouses[0].id,
            lines: vec![sales::LineInput {
                product_id: p.id,
                name: p.sku.clone(),
                qty: Decimal::ONE,
                price_unit: p.list_price,
                discount: Decimal::ZERO,
                taxed: true,
                taxes: Vec::new(),
            }],
            client_order_ref: None,
        };
        let o = sales::create_quotation(&mut c, &info, &q).await.unwrap();
        sales::confirm(&mut c, &info, o).await.unwrap();
        let inv = account::create_invoice(&mut c, &info, o).await.unwrap();
        account::post(&mut c, inv).await.unwrap();
    }
    let mut booked = false;
    for _ in 0..200 {
        if acct.entries().len() == 4 {
            booked = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let ok = child.wait().unwrap().success();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(booked, "{} entries\n{text}", acct.entries().len());
    assert!(ok, "{text}");
    let paths: Vec<String> = acct
        .core()
        .requests()
        .iter()
        .map(|r| r.path.clone())
        .collect();
    assert!(paths.iter().any(|p| p.contains("/batch")), "{paths:?}");
    assert!(
        !paths.iter().any(|p| p.contains("/journalentry?")),
        "batch mode uses the batch endpoint only: {paths:?}"
    );
}
