//! A sink outage longer than `max_hold` does not hold the slot: pending events are parked in
//! the outbox, the slot advances, and once the sink recovers the outbox drains, in order,
//! losing nothing.

use std::process::{Command, Stdio};
use std::time::Duration;

use fixtures::emulator::shopify::{ShopifyConfig as ShopCfg, ShopifyEmulator};
use fixtures::emulator::wms::{WmsConfig as WmsCfg, WmsEmulator};
use fixtures::emulator::{Faults, Outage};
use odoo_cdc_tests::{
    odoo_cdc_bin, scratch_dir, seeded_and_published, sell_one, wait_bootstrapped, Db,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_longer_than_max_hold_parks_events_and_the_slot_moves_on() {
    let db = Db::start();
    let (mut c, info) = seeded_and_published(&db, 10).await;
    let shopify = ShopifyEmulator::start(ShopCfg::default(), 0).await.unwrap();
    for p in &info.products {
        shopify.add_item(&p.sku, &[(1, 0), (2, 0)]);
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
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(
        &config,
        format!(
            "[source]\nurl = \"{}\"\n\n[runtime]\nmax_hold_secs = 2\nmetrics_listen = \"127.0.0.1:{metrics_port}\"\n\n[sinks.shopify]\ngraphql_url = \"{}\"\n\
             location_map = {{ WH = \"gid://shopify/Location/1\", WH2 = \"gid://shopify/Location/2\" }}\n\n[sinks.wms]\nbase_url = \"{}\"\n",
            db.url(),
            shopify.graphql_url(),
            wms.url()
        ),
    )
    .unwrap();
    let log = dir.join("run.log");
    let mut child = Command::new(odoo_cdc_bin())
        .args(["run", "--config", config.to_str().unwrap()])
        .env("ODOO_CDC_SHOPIFY_ACCESS_TOKEN", "shpat_emulator")
        .env("ODOO_CDC_WMS_API_KEY", "wms-key")
        .stdin(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    assert!(
        wait_bootstrapped(&db).await,
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );

    // The WMS goes down; three orders become ready deliveries.
    wms.core().set_faults(Faults {
        outages: vec![Outage {
            start_secs: 0.0,
            end_secs: 1e12,
        }],
        ..Faults::default()
    });
    let mut ready = Vec::new();
    for i in 0..3 {
        let (_, name, is_ready) = sell_one(&mut c, &info, i).await;
        if is_ready {
            ready.push(name);
        }
    }
    assert!(!ready.is_empty());
    c.batch_execute("UPDATE res_currency SET write_date = now()")
        .await
        .unwrap();
    let target: cdc::Lsn = db.current_lsn().parse().unwrap();

    // The slot moves past them while the WMS is still down; the events wait in the outbox.
    let mut advanced = false;
    for _ in 0..150 {
        if db.confirmed_flush("odoo_cdc") >= target {
            advanced = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        advanced,
        "the slot was held by the WMS outage:\n{}",
        log_text()
    );
    let parked: i64 = db
        .sql("SELECT count(*) FROM odoo_cdc.outbox WHERE sink = 'wms'")
        .trim()
        .parse()
        .unwrap();
    assert!(parked >= ready.len() as i64, "parked {parked}");
    let metrics = odoo_cdc_tests::metrics(metrics_port).await;
    assert!(
        metrics.contains(&format!(
            "odoo_cdc_sink_parked_total{{sink=\"wms\"}} {parked}"
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains("odoo_cdc_sink_latency_seconds_bucket{sink=\"shopify\",le=\"+Inf\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("odoo_cdc_replication_lag_bytes"),
        "{metrics}"
    );
    assert!(wms.orders().is_empty());

    // Recovery: the outbox drains, every ready delivery reaches the WMS once.
    wms.core().set_faults(Faults::default());
    let mut drained = false;
    for _ in 0..150 {
        if db.sql("SELECT count(*) FROM odoo_cdc.outbox").trim() == "0"
            && ready.iter().all(|n| wms.orders().contains_key(n))
        {
            drained = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(drained, "outbox not drained:\n{}", log_text());
    // Their latency runs from Odoo's commit: the events that waited out the outage in the
    // outbox took longer than a second.
    let metrics = odoo_cdc_tests::metrics(metrics_port).await;
    let within = |le: &str| {
        odoo_cdc_tests::series(
            &metrics,
            &format!("odoo_cdc_sink_latency_seconds_bucket{{sink=\"wms\",le=\"{le}\"}}"),
        )
    };
    assert!(
        within("1") < within("+Inf"),
        "every WMS delivery counted under 1 s, outbox ones included:\n{metrics}"
    );
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(child.wait().unwrap().success(), "{}", log_text());
}
