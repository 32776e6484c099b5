//! Chaos, bounded and on loopback: storefront webhooks, Odoo sales and invoices flow while, in
//! one run, PostgreSQL restarts twice (a fast restart and a crash), the state connections are cut, the accounting API is
//! down past `max_hold`, and odoo-cdc is SIGKILLed once. Afterwards Shopify equals Odoo, every
//! accepted storefront order is in Odoo once, every posted move is booked once, and `/readyz`
//! was red while something was broken and is green at the end.

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fixtures::emulator::accounting::{AccountingConfig as AcctCfg, AccountingEmulator};
use fixtures::emulator::odoo_rpc::{OdooRpcConfig, OdooRpcEmulator};
use fixtures::emulator::shopify::{ShopifyConfig as ShopCfg, ShopifyEmulator};
use fixtures::emulator::Faults;
use fixtures::odoo::actions::account;
use odoo_cdc_tests::{odoo_cdc_bin, scratch_dir, seeded_and_published, sell_one, Db, Running};
use serde_json::json;

/// One `/readyz` sample: the phase of the test, and whether it was ready (None: no answer).
type Sample = (String, Option<bool>);

fn spawn(config: &std::path::Path, log: &std::path::Path) -> Running {
    Running(
        Command::new(odoo_cdc_bin())
            .args(["run", "--config", config.to_str().unwrap()])
            .env("ODOO_CDC_ODOO_API_KEY", "odoo-api-key")
            .env("ODOO_CDC_SHOPIFY_WEBHOOK_SECRET", "hush")
            .env("ODOO_CDC_SHOPIFY_ACCESS_TOKEN", "shpat_emulator")
            .env("ODOO_CDC_ACCOUNTING_CLIENT_SECRET", "emulator-secret")
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

async fn ready(http: &reqwest::Client, port: u16) -> Option<bool> {
    let r = http
        .get(format!("http://127.0.0.1:{port}/readyz"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    Some(r.status().is_success())
}

async fn wait_ready(http: &reqwest::Client, port: u16, want: bool, secs: u64) -> bool {
    for _ in 0..secs * 10 {
        if ready(http, port).await == Some(want) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_that_really_happen_are_survived_and_readiness_tells_the_truth() {
    let db = Db::start();
    let (mut c, info) = seeded_and_published(&db, 4).await;
    let odoo_rpc = OdooRpcEmulator::start(OdooRpcConfig::new(&db.cluster.superuser_url("odoo")), 0)
        .await
        .unwrap();
    let hook_port = odoo_cdc_tests::free_port();
    let metrics_port = odoo_cdc_tests::free_port();
    let shopify = ShopifyEmulator::start(
        ShopCfg {
            webhook_url: Some(format!("http://127.0.0.1:{hook_port}/webhooks/shopify")),
            webhook_delay: Duration::from_millis(100),
            webhook_backoff: vec![Duration::from_secs(2); 8],
            duplicate_rate: 0.2,
            ..ShopCfg::default()
        },
        0,
    )
    .await
    .unwrap();
    let items: Vec<u64> = info
        .products
        .iter()
        .map(|p| shopify.add_item(&p.sku, &[(1, 0)]))
        .collect();
    let acct_cfg = AcctCfg::default();
    let acct = AccountingEmulator::start(acct_cfg.clone(), 0)
        .await
        .unwrap();
    let dir = scratch_dir();
    let config = dir.join("odoo-cdc.toml");
    std::fs::write(
        &config,
        format!(
            "[source]\nurl = \"{}\"\n\n[runtime]\nmax_hold_secs = 2\nunready_after_secs = 2\nmetrics_listen = \"127.0.0.1:{metrics_port}\"\n\n\
             [odoo]\nurl = \"{}\"\ndatabase = \"odoo\"\nlogin = \"admin\"\n\n\
             [webhooks]\nlisten = \"127.0.0.1:{hook_port}\"\nshop_domain = \"odoo-cdc-demo.myshopify.com\"\n\n\
             [sinks.shopify]\ngraphql_url = \"{}\"\nlocation_map = {{ {} = \"gid://shopify/Location/1\" }}\n\n\
             {}",
            db.url(),
            odoo_rpc.url(),
            shopify.graphql_url(),
            info.warehouses[0].code,
            odoo_cdc_tests::accounting_section(&acct.url(), &acct_cfg, "79")
        ),
    )
    .unwrap();
    let log = dir.join("run.log");
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    let mut child = spawn(&config, &log);
    let http = reqwest::Client::new();
    assert!(
        wait_ready(&http, metrics_port, true, 60).await,
        "never ready\n{}",
        log_text()
    );

    // Readiness, sampled all along.
    let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
    let phase: Arc<Mutex<String>> = Arc::new(Mutex::new("steady".into()));
    let sampler = {
        let (samples, phase, http) = (samples.clone(), phase.clone(), http.clone());
        tokio::spawn(async move {
            loop {
                let p = phase.lock().unwrap().clone();
                let r = ready(&http, metrics_port).await;
                samples.lock().unwrap().push((p, r));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let set_phase = |p: &str| *phase.lock().unwrap() = p.to_string();

    let mut accepted = Vec::new();
    let sell = |n: usize, tag: &str| {
        let (http, url, tag) = (
            http.clone(),
            format!("{}/_emulator/storefront/orders", shopify.url()),
            tag.to_string(),
        );
        let skus: Vec<String> = info.products.iter().map(|p| p.sku.clone()).collect();
        async move {
            let mut ids = Vec::new();
            for i in 0..n {
                let r = http
                    .post(&url)
                    .json(&json!({"line_items": [{"sku": skus[i % skus.len()], "quantity": 1, "price": "25.00"}],
                                  "customer": {"email": format!("{tag}-{i}@example.com"), "first_name": "Buyer"}}))
                    .send()
                    .await
                    .unwrap();
                if r.status().as_u16() == 201 {
                    let body: serde_json::Value = r.json().await.unwrap_or_default();
                    ids.push(body["id"].to_string());
                }
            }
            ids
        }
    };
    let mut invoices = 0;
    let mut faults: Vec<String> = Vec::new();
    accepted.extend(sell(3, "before").await);

    // 1. PostgreSQL restarts.
    for round in 0..2 {
        set_phase(&format!("pg-restart-{round}"));
        if round == 0 {
            // A fast restart right after changes whose events are dead-lettered (WH2 has no
            // Shopify location): odoo-cdc cannot record them while PostgreSQL shuts down, and
            // must let go of its walsender rather than hold the shutdown up.
            db.sql(&format!(
                "UPDATE stock_quant SET quantity = quantity + 1 WHERE location_id = {}",
                info.warehouses[1].stock_location_id
            ));
            db.cluster.restart().unwrap();
            faults.push("PostgreSQL fast restart".into());
        } else {
            // A crash (`pg_ctl -m immediate`): every connection drops at once.
            db.cluster.stop_server("immediate").unwrap();
            db.cluster.start_server().unwrap();
            faults.push("PostgreSQL crash-restart".into());
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        set_phase("recovering");
        assert!(
            wait_ready(&http, metrics_port, true, 60).await,
            "not ready after a restart\n{}",
            log_text()
        );
        set_phase("steady");
        c = odoo_cdc_tests::reconnect(&db).await;
        accepted.extend(sell(3, &format!("after-restart-{round}")).await);
        let (order, _, _) = sell_one(&mut c, &info, round).await;
        let inv = account::create_invoice(&mut c, &info, order).await.unwrap();
        account::post(&mut c, inv).await.unwrap();
        invoices += 1;
    }

    // 2. The state connections are cut (not the replication one).
    set_phase("state-cut");
    db.sql(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type = 'client backend' \
         AND application_name LIKE 'odoo-cdc%' AND pid <> pg_backend_pid()",
    );
    faults.push("state connections cut".into());
    accepted.extend(sell(3, "after-cut").await);
    set_phase("steady");

    // 3. The accounting API is down past max_hold: parked, red, then drained, green.
    set_phase("accounting-down");
    acct.core().set_faults(Faults {
        error_rate: 1.0,
        ..Faults::default()
    });
    let (order, _, _) = sell_one(&mut c, &info, 2).await;
    let inv = account::create_invoice(&mut c, &info, order).await.unwrap();
    account::post(&mut c, inv).await.unwrap();
    invoices += 1;
    assert!(
        wait_ready(&http, metrics_port, false, 30).await,
        "ready while accounting is down\n{}",
        log_text()
    );
    faults.push("accounting API down past max_hold".into());
    // Long enough for the sampler to see it too.
    tokio::time::sleep(Duration::from_secs(1)).await;
    acct.core().set_faults(Faults::default());
    set_phase("recovering");
    assert!(
        wait_ready(&http, metrics_port, true, 60).await,
        "not ready after accounting came back\n{}",
        log_text()
    );
    set_phase("steady");

    // 4. SIGKILL, and a new process.
    let _ = child.0.kill();
    let _ = child.0.wait();
    faults.push("SIGKILL".into());
    set_phase("killed");
    accepted.extend(sell(2, "while-dead").await);
    child = spawn(&config, &log);
    set_phase("recovering");
    assert!(
        wait_ready(&http, metrics_port, true, 60).await,
        "not ready after SIGKILL\n{}",
        log_text()
    );
    set_phase("steady");

    // End state.
    let sellable = |product: i32| -> i64 {
        db.sql(&format!(
            "SELECT coalesce(sum(quantity - reserved_quantity), 0)::int FROM stock_quant q JOIN stock_location l ON l.id = q.location_id \
             WHERE q.product_id = {product} AND l.usage = 'internal' AND l.parent_path LIKE '%/{}/%'",
            info.warehouses[0].view_location_id
        ))
        .trim()
        .parse()
        .unwrap()
    };
    let mut settled = false;
    let mut why = String::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while std::time::Instant::now() < deadline {
        let in_odoo: i64 = db
            .sql("SELECT count(DISTINCT client_order_ref) FROM sale_order WHERE client_order_ref LIKE 'shopify:%' AND state = 'sale'")
            .trim()
            .parse()
            .unwrap_or(0);
        let open: i64 = db
            .sql("SELECT count(*) FROM odoo_cdc.inbox WHERE status = 'pending'")
            .trim()
            .parse()
            .unwrap_or(1);
        let levels: Vec<(Option<i64>, i64)> = info
            .products
            .iter()
            .zip(&items)
            .map(|(p, item)| (shopify.level(*item, 1).map(|l| l.available), sellable(p.id)))
            .collect();
        let levels_match = levels.iter().all(|(s, o)| *s == Some(*o));
        let entries = acct.entries().len();
        why = format!(
            "orders in Odoo {in_odoo} of {} accepted, inbox pending {open}, levels (shopify, odoo) {levels:?}, entries {entries} of {invoices}",
            accepted.len()
        );
        if in_odoo == accepted.len() as i64 && open == 0 && levels_match && entries == invoices {
            settled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    sampler.abort();
    assert!(
        settled,
        "{why}\nentries: {:?}\nrequests: {:?}\ninbox:\n{}\ndead letters:\n{}\n{}",
        acct.entries()
            .iter()
            .map(|e| (
                e["Id"].clone(),
                e["DocNumber"].clone(),
                e["PrivateNote"].clone()
            ))
            .collect::<Vec<_>>(),
        acct.core()
            .requests()
            .iter()
            .map(|r| format!("{} {}", r.method, r.path))
            .filter(|p| p.contains("journalentry"))
            .collect::<Vec<_>>(),
        db.sql("SELECT status, count(*) FROM odoo_cdc.inbox GROUP BY 1"),
        db.sql("SELECT sink, key, reason FROM odoo_cdc.dead_letters WHERE key NOT LIKE '%@WH2'"),
        log_text()
    );
    // Once each: no Shopify order twice in Odoo, no move booked twice.
    assert_eq!(
        db.sql("SELECT count(*) FROM sale_order WHERE client_order_ref LIKE 'shopify:%'")
            .trim(),
        accepted.len().to_string()
    );
    assert_eq!(
        db.sql("SELECT count(*) FROM odoo_cdc.inbox WHERE status = 'dead'")
            .trim(),
        "0"
    );
    let samples = samples.lock().unwrap().clone();
    let red_in = |p: &str| samples.iter().any(|(ph, r)| ph == p && *r != Some(true));
    assert!(red_in("accounting-down"), "{samples:?}");
    assert!(
        samples
            .iter()
            .any(|(ph, r)| ph.starts_with("pg-restart") && *r != Some(true))
            || red_in("recovering"),
        "{samples:?}"
    );
    assert!(wait_ready(&http, metrics_port, true, 10).await);
    let text = log_text();
    assert!(!text.contains("panicked"), "{text}");
    let reconnects = odoo_cdc_tests::series(
        &odoo_cdc_tests::metrics(metrics_port).await,
        "odoo_cdc_state_reconnects_total",
    );
    println!(
        "chaos: survived {} faults ({}); {} storefront orders, {invoices} invoices; state reconnects in the last process {reconnects}; readiness samples {} ({} red)",
        faults.len(),
        faults.join(", "),
        accepted.len(),
        samples.len(),
        samples.iter().filter(|(_, r)| *r != Some(true)).count()
    );
    drop(child);
}
