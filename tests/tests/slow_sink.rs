//! A sink that keeps up too slowly is treated like one that is down: once its oldest waiting
//! event is `max_hold` old, its backlog is parked in the outbox, the slot moves on, and the
//! outbox drains in order — every event delivered once.

use std::process::{Command, Stdio};
use std::time::Duration;

use fixtures::emulator::wms::{WmsConfig as WmsCfg, WmsEmulator};
use fixtures::emulator::Faults;
use odoo_cdc_tests::{
    odoo_cdc_bin, scratch_dir, seeded_and_published, sell_one, wait_bootstrapped, Db, Running,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_sink_parks_its_backlog_and_the_slot_moves_on() {
    let db = Db::start();
    let (mut c, info) = seeded_and_published(&db, 16).await;
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
            "[source]\nurl = \"{}\"\n\n[runtime]\nmax_hold_secs = 1\npartitions = 1\n\n[sinks.wms]\nbase_url = \"{}\"\n",
            db.url(),
            wms.url()
        ),
    )
    .unwrap();
    let log = dir.join("run.log");
    let child = Running(
        Command::new(odoo_cdc_bin())
            .args(["run", "--config", config.to_str().unwrap()])
            .env("ODOO_CDC_WMS_API_KEY", "wms-key")
            .stdin(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    assert!(
        wait_bootstrapped(&db).await,
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    // The WMS now answers in 1.5 s: one picking at a time, 16 take 24 s.
    wms.core().set_faults(Faults {
        latency_ms: 1500,
        ..Faults::default()
    });
    let mut ready = Vec::new();
    for i in 0..info.products.len() {
        let (_, name, is_ready) = sell_one(&mut c, &info, i).await;
        if is_ready {
            ready.push(name);
        }
    }
    assert!(ready.len() >= 8, "only {} ready", ready.len());
    c.batch_execute("UPDATE res_currency SET write_date = now()")
        .await
        .unwrap();
    let target: cdc::Lsn = db.current_lsn().parse().unwrap();

    // The slot passes every order while the WMS still has most of them to receive.
    let mut moved_on = false;
    for _ in 0..100 {
        if db.confirmed_flush("odoo_cdc") >= target {
            moved_on = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let delivered_then = wms.orders().len();
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        moved_on,
        "the slot stayed behind the slow sink\n{}",
        log_text()
    );
    assert!(
        delivered_then < ready.len(),
        "the WMS had everything before the slot moved: nothing was parked"
    );
    assert!(
        log_text().contains("more than max_hold behind"),
        "{}",
        log_text()
    );

    // The outbox drains: every ready picking reaches the WMS, once.
    let mut all = false;
    for _ in 0..600 {
        if ready.iter().all(|r| wms.orders().contains_key(r)) {
            all = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        all,
        "{:?}\n{}",
        wms.orders().keys().collect::<Vec<_>>(),
        log_text()
    );
    for _ in 0..100 {
        if db.sql("SELECT count(*) FROM odoo_cdc.outbox").trim() == "0" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(db.sql("SELECT count(*) FROM odoo_cdc.outbox").trim(), "0");
    let creates = wms
        .core()
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path == "/v1/fulfillment_orders")
        .count();
    assert_eq!(creates, ready.len(), "a picking was sent twice");
    drop(child);
}
