//! `peak`: the fixtures' peak-season profile (ramp to 10x, flash sales on hot SKUs) in real
//! time through `odoo-cdc run` (its own process) into the Shopify, WMS and accounting emulators
//! at realistic latencies and Shopify's rate limit, with storefront sales on the hot SKUs
//! written back into Odoo by webhook. Samples `/metrics` every second (lag, throughput, CPU and
//! RSS of the odoo-cdc process) and reports delivery latency per sink, replication lag over
//! time, Shopify convergence after the last change, Shopify cost against the minimum for the
//! quantities written, oversell incidents, CPU per 1,000 changes and peak RSS; an SVG chart of
//! throughput and lag goes to `target/bench/peak.svg`.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Result;
use fixtures::workload::{Profile, WorkloadConfig};
use pipeline::cli::scale::TWO_WORKERS;
use serde_json::json;

use crate::rig::{
    hist_quantile, min_writes, proc_stat, svg, write_results, ChangeWatch, Rig, RigOptions,
};

/// The scenario's settings.
#[derive(Debug, Clone)]
pub struct Params {
    /// Minutes of the profile (real time).
    pub minutes: f64,
    /// Normal order rate (orders per second); the peak is 10x.
    pub base_rate: f64,
    /// Shopify GraphQL points restored per second.
    pub restore_rate: f64,
    /// Safety stock of each hot SKU.
    pub hot_safety_stock: i64,
    /// The Shopify sink's write interval.
    pub write_interval_ms: u64,
}

/// One run's report: its Markdown, its figures and its chart.
pub struct PeakRun {
    /// The report as printed.
    pub markdown: String,
    /// The figures (`target/bench/<name>.json`).
    pub json: serde_json::Value,
    /// Throughput and lag over time.
    pub svg: String,
}

/// Runs the scenario.
pub fn run(p: &Params) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let _guard = rt.enter();
    let cmd = format!(
        "cargo run --release -p bench -- peak --minutes {} --base-rate {} --shopify-restore-rate {} --shopify-write-interval-ms {} --hot-safety-stock {}",
        p.minutes, p.base_rate, p.restore_rate, p.write_interval_ms, p.hot_safety_stock
    );
    let r = measure(&rt, p, None, None, &cmd)?;
    print!("{}", r.markdown);
    write_results("peak", &r.json, &r.svg)
}

/// One run of the profile: by one `odoo-cdc run` (`bin`, or the default build), or scaled out
/// on the Fluvio cluster at `fluvio` (a reader and the [`TWO_WORKERS`]).
pub fn measure(
    rt: &tokio::runtime::Runtime,
    p: &Params,
    bin: Option<std::path::PathBuf>,
    fluvio: Option<&str>,
    cmd: &str,
) -> Result<PeakRun> {
    let Params {
        minutes,
        base_rate,
        restore_rate,
        hot_safety_stock,
        write_interval_ms,
    } = p.clone();
    let mut md = String::new();
    macro_rules! out {
        ($($t:tt)*) => {{
            md.push_str(&format!($($t)*));
            md.push('\n');
        }};
    }
    // Shopify Plus's GraphQL budget (the plan of shops that run Black Friday at this scale):
    // a 10,000-point bucket refilled at 1,000 points/s (`--shopify-restore-rate` to change).
    let mut rig = Rig::start(
        rt,
        if fluvio.is_some() {
            "scale-out"
        } else {
            "peak"
        },
        &RigOptions {
            shopify_restore_rate: restore_rate,
            webhooks: true,
            write_interval_ms,
            wms_latency_ms: 40,
            accounting_latency_ms: 60,
            accounting_limits: true,
            max_hold_secs: None,
            hot_safety_stock,
            shipments: Some(Duration::from_secs(5)),
        },
    )?;
    rig.bin = bin;
    let pids = match fluvio {
        None => vec![rig.start_cdc()?],
        Some(endpoint) => rig.start_scaled_out(endpoint, &TWO_WORKERS)?,
    };
    let bootstrap_secs = rig.wait_bootstrap(rt)?;
    let (cluster, admin, info, shopify) = (&rig.cluster, &rig.admin, &rig.info, &rig.shopify);
    let db = fixtures::pg::DEFAULT_DATABASE;
    let http = reqwest::Client::new();
    let scrape = || rig.scrape();
    let cpu_of = |pids: &[u32]| {
        pids.iter()
            .map(|p| proc_stat(*p))
            .fold((0.0, 0), |(c, r), (c1, r1)| (c + c1, r + r1))
    };
    let (cpu_before, _) = cpu_of(&pids);
    let counters_before = shopify.counters();
    let requests_before = shopify.core().requests().len();
    let m0 = rt.block_on(scrape()).unwrap_or_default();
    eprintln!(
        "bootstrapped in {bootstrap_secs:.1} s; running {minutes} minutes of the peak profile"
    );

    let day = WorkloadConfig {
        seed: 11,
        base_rate,
        duration: Duration::from_secs_f64(minutes * 60.0),
        profile: Profile::Peak,
        time_scale: 1.0,
        connections: 4,
        hot_skus: 5,
    };
    let started = Instant::now();
    let shop_t0 = shopify.core().clock.now().as_secs_f64();
    let wall_t0 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs_f64();
    let watch = rt.block_on(ChangeWatch::start(cluster.superuser_url(db), started))?;
    let work = {
        let url = cluster.superuser_url(db);
        let info = info.clone();
        rt.spawn(async move { fixtures::workload::run(&url, &info, &day).await })
    };
    // Storefront sales on the hot SKUs, written back into Odoo by webhook.
    let sales = {
        let url = format!("{}/_emulator/storefront/orders", shopify.url());
        let skus: Vec<String> = info
            .products
            .iter()
            .take(5)
            .map(|p| p.sku.clone())
            .collect();
        let http = http.clone();
        let until = Duration::from_secs_f64(minutes * 60.0);
        rt.spawn(async move {
            let (mut taken, mut refused) = (0u64, 0u64);
            let t0 = Instant::now();
            while t0.elapsed() < until {
                let sku = &skus[(taken + refused) as usize % skus.len()];
                let r = http
                    .post(&url)
                    .json(&json!({"line_items": [{"sku": sku, "quantity": 1, "price": "25.00"}],
                                  "customer": {"email": format!("s{}@example.com", taken % 40), "first_name": "S"}}))
                    .send()
                    .await;
                match r.map(|r| r.status().as_u16()) {
                    Ok(201) => taken += 1,
                    _ => refused += 1,
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            (taken, refused)
        })
    };
    let mut times = Vec::new();
    let mut lag_secs = Vec::new();
    let mut lag_bytes = Vec::new();
    let mut txn_rate = Vec::new();
    let mut last_txns = m0
        .get("odoo_cdc_transactions_total")
        .copied()
        .unwrap_or(0.0);
    let mut last_t = 0.0;
    while !work.is_finished() {
        std::thread::sleep(Duration::from_secs(1));
        if let Some(m) = rt.block_on(scrape()) {
            let t = started.elapsed().as_secs_f64();
            let txns = m.get("odoo_cdc_transactions_total").copied().unwrap_or(0.0);
            times.push(t);
            lag_secs.push(
                m.get("odoo_cdc_replication_lag_seconds")
                    .copied()
                    .unwrap_or(0.0),
            );
            lag_bytes.push(
                m.get("odoo_cdc_replication_lag_bytes")
                    .copied()
                    .unwrap_or(0.0),
            );
            txn_rate.push((txns - last_txns) / (t - last_t).max(1e-3));
            last_txns = txns;
            last_t = t;
        }
    }
    let report = rt.block_on(work)??;
    let (taken, refused) = rt.block_on(sales)?;
    let load_secs = started.elapsed().as_secs_f64();
    eprintln!("workload done in {load_secs:.1} s; waiting for convergence");

    // Convergence: Shopify equals Odoo for every SKU and location, and the inbox is empty.
    let last_change = Instant::now();
    let mut converged = None;
    let mut mismatched = 0;
    while last_change.elapsed() < Duration::from_secs(120) {
        let pending: i64 = rt
            .block_on(admin.query_one(
                "SELECT count(*) FROM odoo_cdc.inbox WHERE status = 'pending'",
                &[],
            ))?
            .get(0);
        mismatched = rt.block_on(rig.differing())?;
        if mismatched == 0 && pending == 0 {
            converged = Some(last_change.elapsed().as_secs_f64());
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let m = rt.block_on(scrape()).unwrap_or_default();
    let (cpu_after, rss_kib) = cpu_of(&pids);
    let level_changes = rt.block_on(watch.finish());
    for pid in &pids {
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
    }

    // Shopify cost: what was spent against the minimum for the quantities written.
    let counters = shopify.counters();
    let delta = |k: &str| {
        counters.get(k).copied().unwrap_or(0) - counters_before.get(k).copied().unwrap_or(0)
    };
    let set_requests: Vec<String> = shopify.core().requests()[requests_before..]
        .iter()
        .filter(|r| r.body.contains("inventorySetQuantities"))
        .map(|r| r.body.clone())
        .collect();
    // Reads of levels after the bootstrap: each follows a write refused as
    // CHANGE_FROM_QUANTITY_STALE (a storefront sale landed between two writes), which is then
    // written again.
    let stale_reads = shopify.core().requests()[requests_before..]
        .iter()
        .filter(|r| r.body.contains("inventoryLevel("))
        .count();
    let quantities: usize = set_requests
        .iter()
        .filter_map(|b| serde_json::from_str::<serde_json::Value>(b).ok())
        .map(|v| {
            v["variables"]["input"]["quantities"]
                .as_array()
                .map_or(0, Vec::len)
        })
        .sum();
    let (points, calls) = (delta("cost_points"), delta("calls"));
    // The inventory sink's own spending (levels written and re-read), apart from the
    // fulfillment sink's reads of orders and its fulfillmentCreate calls.
    let inventory_points: u64 = counters
        .keys()
        .filter(|k| k.starts_with("cost_points:inventory"))
        .map(|k| delta(k))
        .sum();
    let fulfillment_points = points - inventory_points;
    let min_points = 13 * quantities.div_ceil(250).max(1) as u64;
    // The least writes that carry every change of Odoo's sellable quantities to Shopify within
    // the 500 ms latency goal (changes seen by polling Odoo every 100 ms).
    let min_calls_500ms = min_writes(&level_changes, 0.5, 250);
    let stock_events = m
        .get("odoo_cdc_sink_delivered_total{sink=\"shopify\"}")
        .copied()
        .unwrap_or(0.0)
        - m0.get("odoo_cdc_sink_delivered_total{sink=\"shopify\"}")
            .copied()
            .unwrap_or(0.0);
    let changes: i64 = report.rows_per_table.values().sum();
    // What each Shopify delivery was for (odoo_cdc_sink_deliveries_total).
    let causes: Vec<(&str, u64)> = ["urgent", "interval", "queued", "released"]
        .into_iter()
        .map(|c| {
            let k = format!("odoo_cdc_sink_deliveries_total{{sink=\"shopify\",cause=\"{c}\"}}");
            let n = m.get(&k).copied().unwrap_or(0.0) - m0.get(&k).copied().unwrap_or(0.0);
            (c, n.max(0.0) as u64)
        })
        .collect();
    let cpu = cpu_after - cpu_before;
    let procs = if pids.len() > 1 {
        format!(" (sum of its {} processes)", pids.len())
    } else {
        String::new()
    };
    // Oversell incidents: Shopify orders whose delivery Odoo could not fully reserve, each with
    // its order and the products short, so an incident can be traced (`odoo-cdc audit`).
    let oversold: Vec<(String, String)> = rt
        .block_on(admin.query(
            "SELECT o.client_order_ref, string_agg(DISTINCT pp.default_code, ',') \
             FROM sale_order o JOIN stock_picking p ON p.sale_id = o.id \
             JOIN stock_move m ON m.picking_id = p.id JOIN product_product pp ON pp.id = m.product_id \
             WHERE o.client_order_ref LIKE 'shopify:%' AND p.state NOT IN ('assigned', 'done', 'cancel') \
             AND m.state NOT IN ('assigned', 'done', 'cancel') GROUP BY o.id, o.client_order_ref",
            &[],
        ))?
        .iter()
        .map(|r| (r.get(0), r.get::<_, Option<String>>(1).unwrap_or_default()))
        .collect();
    let oversell = oversold.len();
    for (order, skus) in &oversold {
        eprintln!("oversell incident: {order} short of {skus}");
        for line in rt.block_on(rig.incident_timeline(order, skus, shop_t0, wall_t0))? {
            eprintln!("  {line}");
        }
    }
    let pct = |sink: &str, q: f64| {
        hist_quantile(
            &m,
            &m0,
            "odoo_cdc_sink_latency_seconds",
            &format!("sink=\"{sink}\""),
            q,
        )
        .map_or_else(|| "-".to_string(), |v| format!("{:.0}", v * 1000.0))
    };
    // Shipments: the WMS ships 5 s after an order (a fifth in two parcels) and says so by
    // webhook; each validated delivery of a Shopify order becomes a Shopify fulfillment.
    let series = |name: &str, labels: &[&str]| -> f64 {
        m.iter()
            .filter(|(k, _)| k.starts_with(name) && labels.iter().all(|l| k.contains(l)))
            .map(|(k, v)| v - m0.get(k).copied().unwrap_or(0.0))
            .sum::<f64>()
            .max(0.0)
            + 0.0
    };
    let parcels = series(
        "odoo_cdc_inbox_topic_total{",
        &["topic=\"shipment/created\"", "result=\"applied\""],
    );
    let dead_parcels = series(
        "odoo_cdc_inbox_topic_total{",
        &["topic=\"shipment/created\"", "result=\"dead\""],
    );
    let fulfilled = series("odoo_cdc_fulfillments_total{", &["result=\"created\""]);
    let ship_pct = |q: f64| {
        hist_quantile(&m, &m0, "odoo_cdc_shipment_to_fulfillment_seconds", "", q)
            .map_or_else(|| "-".to_string(), |v| format!("{v:.2} s"))
    };
    out!(
        "## peak: {minutes} minutes of the peak-season profile in real time (ramp to 10x, flash sales), with storefront sales written back{}\n",
        fluvio.map_or_else(String::new, |e| format!(
            "; scaled out on Fluvio ({e}): one reader, a worker for {} and one for {}",
            TWO_WORKERS[0].join(" + "),
            TWO_WORKERS[1].join(" + ")
        ))
    );
    out!(
        "Source: {changes} row changes in {load_secs:.0} s ({:.0} row changes/s, {} Odoo actions); storefront sales {taken} taken, {refused} refused.\n",
        changes as f64 / load_secs,
        report.actions.values().sum::<u64>()
    );
    out!("| sink | delivered | latency p50 ≤ ms | p99 ≤ ms | p99.9 ≤ ms |\n|---|---:|---:|---:|---:|");
    for sink in ["shopify", "wms", "accounting"] {
        let key = format!("odoo_cdc_sink_delivered_total{{sink=\"{sink}\"}}");
        out!(
            "| {sink} | {:.0} | {} | {} | {} |",
            m.get(&key).copied().unwrap_or(0.0) - m0.get(&key).copied().unwrap_or(0.0),
            pct(sink, 0.5),
            pct(sink, 0.99),
            pct(sink, 0.999)
        );
    }
    let max_lag_s = lag_secs.iter().copied().fold(0.0, f64::max);
    let max_lag_b = lag_bytes.iter().copied().fold(0.0, f64::max);
    out!("\n| figure | value |\n|---|---:|");
    out!(
        "| replication lag, max | {max_lag_s:.2} s / {:.0} KiB |",
        max_lag_b / 1024.0
    );
    out!(
        "| Shopify convergence after the last change | {} |",
        converged.map_or_else(
            || format!("not within 120 s ({mismatched} levels differ)"),
            |s| format!("{s:.2} s")
        )
    );
    out!("| Shopify calls / cost points | {calls} / {points} |");
    out!(
        "| stock changes in / quantities written (coalescing) | {stock_events:.0} / {quantities} ({:.1}x) |",
        stock_events / quantities.max(1) as f64
    );
    out!(
        "| Shopify cost points: inventory / fulfillments | {inventory_points} / {fulfillment_points} |"
    );
    out!(
        "| Shopify inventory cost points per 1,000 stock changes | {:.0} (minimum for the quantities written: {:.0}; ratio {:.2}) |",
        inventory_points as f64 * 1000.0 / stock_events.max(1.0),
        min_points as f64 * 1000.0 / stock_events.max(1.0),
        inventory_points as f64 / min_points as f64
    );
    out!(
        "| Shopify writes / least writes carrying every change within 500 ms | {} / {min_calls_500ms} (ratio {:.2}; {} level changes seen in Odoo) |",
        set_requests.len(),
        set_requests.len() as f64 / min_calls_500ms.max(1) as f64,
        level_changes.len()
    );
    out!(
        "| Shopify deliveries by cause (urgent / interval ran out / queued / released holds) | {} |",
        causes
            .iter()
            .map(|(_, n)| n.to_string())
            .collect::<Vec<_>>()
            .join(" / ")
    );
    out!(
        "| writes refused as stale (a storefront sale landed first), re-read and written again | {stale_reads} |"
    );
    out!("| THROTTLED answers | {} |", delta("throttled"));
    out!("| oversell incidents (Shopify orders Odoo could not reserve) | {oversell} |");
    out!(
        "| warehouse parcels applied to Odoo / dead-lettered / Shopify fulfillments created | {parcels:.0} / {dead_parcels:.0} / {fulfilled:.0} |"
    );
    out!(
        "| shipment webhook to Shopify fulfillment p50 / p99 | {} / {} |",
        ship_pct(0.5),
        ship_pct(0.99)
    );
    out!(
        "| odoo-cdc CPU per 1,000 row changes{procs} | {:.3} s ({cpu:.1} s in all) |",
        cpu * 1000.0 / changes.max(1) as f64
    );
    out!(
        "| odoo-cdc peak RSS{procs} | {:.1} MiB |",
        rss_kib as f64 / 1024.0
    );
    out!(
        "| bootstrap (initial sync of {} SKUs) | {bootstrap_secs:.1} s |",
        info.products.len()
    );
    out!("\nReproduce: `{cmd}`");
    let latency: BTreeMap<String, serde_json::Value> = ["shopify", "wms", "accounting"]
        .iter()
        .map(|s| {
            (
                s.to_string(),
                json!({"p50": pct(s, 0.5), "p99": pct(s, 0.99), "p99_9": pct(s, 0.999)}),
            )
        })
        .collect();
    let out = json!({
        "scenario": "peak",
        "minutes": minutes,
        "row_changes": changes,
        "load_secs": load_secs,
        "actions": report.actions,
        "storefront": {"taken": taken, "refused": refused},
        "latency_ms": latency,
        "series": {"t": times, "lag_secs": lag_secs, "lag_bytes": lag_bytes, "txn_per_sec": txn_rate},
        "convergence_secs": converged,
        "shopify": {"calls": calls, "cost_points": points, "inventory_cost_points": inventory_points, "fulfillment_cost_points": fulfillment_points, "quantities_written": quantities, "stock_events": stock_events, "min_points": min_points, "writes": set_requests.len(), "min_writes_within_500ms": min_calls_500ms, "odoo_level_changes": level_changes.len(), "write_interval_ms": write_interval_ms, "hot_safety_stock": hot_safety_stock, "stale_rereads": stale_reads, "deliveries_by_cause": causes.iter().map(|(c, n)| (c.to_string(), json!(n))).collect::<serde_json::Map<_, _>>(), "throttled": delta("throttled")},
        "oversell_incidents": oversell,
        "shipments": {"parcels_applied": parcels, "dead_lettered": dead_parcels, "fulfillments": fulfilled,
                      "to_fulfillment_p50": ship_pct(0.5), "to_fulfillment_p99": ship_pct(0.99)},
        "oversold_orders": oversold.iter().map(|(o, s)| json!({"order": o, "skus": s})).collect::<Vec<_>>(),
        "cpu_secs": cpu,
        "peak_rss_kib": rss_kib,
        "command": cmd,
    });
    Ok(PeakRun {
        markdown: md,
        json: out,
        svg: svg(
            "peak: transactions/s read and replication lag (s)",
            "s",
            &times,
            &[
                ("transactions/s", "steelblue", txn_rate),
                ("lag s", "crimson", lag_secs),
            ],
        ),
    })
}
