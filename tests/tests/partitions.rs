//! Sink queues are partitioned by key: a slow WMS receives requests for different pickings
//! concurrently, while the events of one picking (create, then cancel) keep their order.

use std::process::{Command, Stdio};
use std::time::Duration;

use fixtures::emulator::wms::{WmsConfig as WmsCfg, WmsEmulator};
use fixtures::emulator::Faults;
use fixtures::odoo::actions::sales;
use odoo_cdc_tests::{
    odoo_cdc_bin, scratch_dir, seeded_and_published, sell_one, wait_bootstrapped, Db,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_wms_gets_pickings_in_parallel_and_each_pickings_events_in_order() {
    let db = Db::start();
    let (mut c, info) = seeded_and_published(&db, 12).await;
    let wms = WmsEmulator::start(
        WmsCfg {
            ship_delay: Duration::from_secs(3600),
            ..WmsCfg::default()
        },
        0,
    )
    .await
    .unwrap();
    // Every WMS answer takes 200 ms: one at a time, 12 pickings would take 2.4 s.
    wms.core().set_faults(Faults {
        latency_ms: 200,
        ..Faults::default()
    });
    let dir = scratch_dir();
    let config = dir.join("odoo-cdc.toml");
    std::fs::write(
        &config,
        format!(
            "[source]\nurl = \"{}\"\n\n[runtime]\npartitions = 6\n\n[sinks.wms]\nbase_url = \"{}\"\n",
            db.url(),
            wms.url()
        ),
    )
    .unwrap();
    let log = dir.join("run.log");
    let mut child = Command::new(odoo_cdc_bin())
        .args(["run", "--config", config.to_str().unwrap()])
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

    // Twelve orders become ready deliveries; every third is cancelled right after.
    let mut ready = Vec::new();
    let mut cancelled = Vec::new();
    for i in 0..12 {
        let (o, name, is_ready) = sell_one(&mut c, &info, i).await;
        if !is_ready {
            continue;
        }
        if i % 3 == 0 {
            sales::cancel(&mut c, o).await.unwrap();
            cancelled.push(name.clone());
        }
        ready.push(name);
    }
    assert!(ready.len() >= 6, "only {} pickings were ready", ready.len());
    assert!(!cancelled.is_empty());

    let mut done = false;
    for _ in 0..300 {
        let orders = wms.orders();
        done = ready.iter().all(|r| orders.contains_key(r))
            && cancelled
                .iter()
                .all(|r| orders.get(r).is_some_and(|o| o.status == "cancelled"));
        if done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    let orders = wms.orders();
    assert!(done, "WMS orders: {orders:?}\n{log_text}");

    // Parallel across keys: the slow WMS had several requests in flight at once.
    let concurrency: serde_json::Value =
        reqwest::get(format!("{}/_emulator/concurrency", wms.url()))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    let max = concurrency["max_in_flight"].as_u64().unwrap();
    assert!(max >= 2, "requests never overlapped: {concurrency}");
    assert!(
        max <= 6,
        "more keys in flight than partitions: {concurrency}"
    );

    // Ordered per key: each picking created exactly once, and a cancel only after its create.
    let requests = wms.core().requests();
    for r in &ready {
        let creates: Vec<usize> = requests
            .iter()
            .enumerate()
            .filter(|(_, q)| {
                q.method == "POST"
                    && q.path == "/v1/fulfillment_orders"
                    && serde_json::from_str::<serde_json::Value>(&q.body)
                        .is_ok_and(|b| b["reference"] == r.as_str())
            })
            .map(|(i, _)| i)
            .collect();
        assert_eq!(creates.len(), 1, "{r} created {} times", creates.len());
        if cancelled.contains(r) {
            let cancel = requests
                .iter()
                .position(|q| {
                    q.path == format!("/v1/fulfillment_orders/{}/cancel", r.replace('/', "%2F"))
                })
                .unwrap_or_else(|| panic!("{r} never cancelled"));
            assert!(cancel > creates[0], "{r} cancelled before it was created");
        }
    }
    assert_eq!(orders.len(), ready.len(), "{orders:?}");
}
