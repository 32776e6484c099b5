//! Dead letters that can be acted on: a journal entry the accounting API refused is booked by
//! a replay once its mapping is fixed (a new `requestid` generation, since QuickBooks answers a
//! repeated `requestid` with its first answer), and restarts do not multiply dead letters.

use std::process::{Command, Stdio};
use std::time::Duration;

use fixtures::emulator::accounting::{AccountingConfig as AcctCfg, AccountingEmulator};
use fixtures::emulator::shopify::{ShopifyConfig as ShopCfg, ShopifyEmulator};
use fixtures::odoo::actions::account;
use odoo_cdc_tests::{
    accounting_section, odoo_cdc_bin, odoo_cdc_env, scratch_dir, seeded_and_published, sell_one,
    stop_term, wait_until, Db, Running,
};

fn accounting_config(db: &Db, acct: &AccountingEmulator, cfg: &AcctCfg, income: &str) -> String {
    format!(
        "[source]\nurl = \"{}\"\n\n{}",
        db.url(),
        accounting_section(&acct.url(), cfg, income)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_journal_entry_is_booked_by_a_replay_after_its_mapping_is_fixed() {
    let db = Db::start();
    let (mut c, info) = seeded_and_published(&db, 3).await;
    let acct_cfg = AcctCfg::default();
    let acct = AccountingEmulator::start(acct_cfg.clone(), 0)
        .await
        .unwrap();
    let dir = scratch_dir();
    let config = dir.join("odoo-cdc.toml");
    // Income mapped to an account the company does not have: the API answers 400.
    std::fs::write(&config, accounting_config(&db, &acct, &acct_cfg, "999")).unwrap();
    let secret = ("ODOO_CDC_ACCOUNTING_CLIENT_SECRET", "emulator-secret");
    let log = dir.join("run.log");
    let mut child = Running(
        Command::new(odoo_cdc_bin())
            .args(["run", "--config", config.to_str().unwrap()])
            .env(secret.0, secret.1)
            .stdin(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    assert!(odoo_cdc_tests::wait_bootstrapped(&db).await);
    let (order, _, _) = sell_one(&mut c, &info, 0).await;
    let inv = account::create_invoice(&mut c, &info, order).await.unwrap();
    account::post(&mut c, inv).await.unwrap();
    let dead = wait_until(Duration::from_secs(30), || {
        db.sql("SELECT count(*) FROM odoo_cdc.dead_letters WHERE sink = 'accounting'")
            .trim()
            == "1"
    });
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(dead, "{text}");
    assert!(stop_term(&mut child), "{text}");
    let reason = db.sql("SELECT reason FROM odoo_cdc.dead_letters WHERE sink = 'accounting'");
    assert!(reason.contains("999"), "{reason}");
    assert!(acct.entries().is_empty());

    let replay = move |config: std::path::PathBuf| {
        let out = odoo_cdc_env(
            &[
                "dlq",
                "replay",
                "--all",
                "--config",
                config.to_str().unwrap(),
            ],
            &[secret],
        );
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
        )
    };
    // Replayed before the fix: refused again, and counted as a new attempt.
    let (code, out) = tokio::task::spawn_blocking({
        let config = config.clone();
        move || replay(config)
    })
    .await
    .unwrap();
    assert_eq!(code, Some(3), "{out}");
    assert!(out.contains("still failing"), "{out}");
    assert_eq!(
        db.sql("SELECT generation FROM odoo_cdc.dead_letters WHERE sink = 'accounting'")
            .trim(),
        "1"
    );
    // The fix, then the replay: a new requestid, booked once.
    std::fs::write(&config, accounting_config(&db, &acct, &acct_cfg, "79")).unwrap();
    let (code, out) = tokio::task::spawn_blocking(move || replay(config))
        .await
        .unwrap();
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("replayed"), "{out}");
    assert_eq!(acct.entries().len(), 1, "{:?}", acct.entries());
    let ids: Vec<String> = acct
        .core()
        .requests()
        .iter()
        .filter(|r| r.path.contains("/journalentry"))
        .filter_map(|r| {
            r.path
                .split("requestid=")
                .nth(1)
                .map(|s| s.split('&').next().unwrap_or("").to_string())
        })
        .collect();
    assert_eq!(ids.len(), 3, "{ids:?}");
    assert!(!ids[0].contains("-r"), "{ids:?}");
    assert!(
        ids[1].ends_with("-r1") && ids[2].ends_with("-r2"),
        "{ids:?}"
    );
    assert!(!db
        .sql("SELECT replayed_at FROM odoo_cdc.dead_letters WHERE sink = 'accounting'")
        .trim()
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_do_not_multiply_dead_letters() {
    let db = Db::start();
    let (_c, info) = seeded_and_published(&db, 6).await;
    // Shopify knows only the first product: every other SKU's level is dead-lettered.
    let shopify = ShopifyEmulator::start(ShopCfg::default(), 0).await.unwrap();
    shopify.add_item(&info.products[0].sku, &[(1, 0)]);
    let dir = scratch_dir();
    let config = dir.join("odoo-cdc.toml");
    std::fs::write(
        &config,
        format!(
            "[source]\nurl = \"{}\"\n\n[sinks.shopify]\ngraphql_url = \"{}\"\nlocation_map = {{ {} = \"gid://shopify/Location/1\" }}\n",
            db.url(),
            shopify.graphql_url(),
            info.warehouses[0].code
        ),
    )
    .unwrap();
    let mut pending = Vec::new();
    for run in 0..3 {
        let log = dir.join(format!("run{run}.log"));
        let mut child = Running(
            Command::new(odoo_cdc_bin())
                .args(["run", "--config", config.to_str().unwrap()])
                .env("ODOO_CDC_SHOPIFY_ACCESS_TOKEN", "shpat_emulator")
                .stdin(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .unwrap(),
        );
        assert!(odoo_cdc_tests::wait_bootstrapped(&db).await);
        // Each start reads every level again (the restore snapshot): the unknown SKUs are
        // refused again, and counted on their pending entry.
        let seen = wait_until(Duration::from_secs(30), || {
            db.sql(
                "SELECT count(*) FROM odoo_cdc.dead_letters WHERE sink = 'shopify' AND replayed_at IS NULL \
                 AND count >= 1",
            )
            .trim()
            .parse::<i64>()
            .unwrap_or(0)
                > 0
        });
        tokio::time::sleep(Duration::from_secs(3)).await;
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(seen, "{text}");
        assert!(stop_term(&mut child), "{text}");
        pending.push(
            db.sql("SELECT count(*) || ' ' || count(DISTINCT key) || ' ' || sum(count) FROM odoo_cdc.dead_letters WHERE sink = 'shopify' AND replayed_at IS NULL")
                .trim()
                .to_string(),
        );
    }
    let parsed: Vec<Vec<i64>> = pending
        .iter()
        .map(|p| p.split(' ').map(|n| n.parse().unwrap()).collect())
        .collect();
    // One pending entry per key, the same entries after every restart.
    for p in &parsed {
        assert_eq!(p[0], p[1], "{pending:?}");
        assert_eq!(p[0], parsed[0][0], "{pending:?}");
    }
    assert!(parsed[0][0] >= 5, "{pending:?}");
    // And the repeats are counted, not lost.
    assert!(parsed[2][2] >= parsed[0][2], "{pending:?}");
}
