//! `peak`: the fixtures' peak-season profile (ramp to 10x, flash sales on hot SKUs) in real
//! time through `odoo-cdc run` (its own process) into the Shopify, WMS and accounting emulators
//! at realistic latencies and Shopify's rate limit, with storefront sales on the hot SKUs
//! written back into Odoo by webhook. Samples `/metrics` every second (lag, throughput, CPU and
//! RSS of the odoo-cdc process) and reports delivery latency per sink, replication lag over
//! time, Shopify convergence after the last change, Shopify cost against the minimum for the
//! quantities written, oversell incidents, CPU per 1,000 changes and peak RSS; an SVG chart of
//! throughput and lag goes to `target/bench/peak.svg`.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use fixtures::emulator::accounting::{AccountingConfig as AcctCfg, AccountingEmulator};
use fixtures::emulator::odoo_rpc::{OdooRpcConfig, OdooRpcEmulator};
use fixtures::emulator::shopify::{ShopifyConfig as ShopCfg, ShopifyEmulator};
use fixtures::emulator::wms::{WmsConfig as WmsCfg, WmsEmulator};
use fixtures::emulator::Faults;
use fixtures::workload::{Profile, WorkloadConfig};
use fixtures::TempCluster;
use serde_json::json;

use crate::odoo_cdc_bin;

/// Parses Prometheus text into (name with labels) -> value.
fn metrics(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// A quantile (upper bucket bound) from a Prometheus histogram, counting only what was
/// observed between the scrapes `m0` and `m`.
fn hist_quantile(
    m: &BTreeMap<String, f64>,
    m0: &BTreeMap<String, f64>,
    name: &str,
    label: &str,
    q: f64,
) -> Option<f64> {
    let prefix = format!("{name}_bucket{{{label},le=\"");
    let mut buckets: Vec<(f64, f64)> = m
        .iter()
        .map(|(k, v)| (k, v - m0.get(k).copied().unwrap_or(0.0)))
        .filter_map(|(k, v)| {
            let le = k.strip_prefix(&prefix)?.strip_suffix("\"}")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, v))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last()?.1;
    if total == 0.0 {
        return None;
    }
    buckets
        .iter()
        .find(|(_, c)| *c >= q * total)
        .map(|(le, _)| *le)
}

fn proc_stat(pid: u32) -> (f64, u64) {
    let ticks = 100.0;
    let cpu = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1.to_string();
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some((f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / ticks)
        })
        .unwrap_or(0.0);
    let hwm = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0);
    (cpu, hwm)
}

/// Two series over time as an SVG line chart.
fn svg(title: &str, t: &[f64], series: &[(&str, &str, Vec<f64>)]) -> String {
    let (w, h, pad) = (800.0, 320.0, 50.0);
    let tmax = t.last().copied().unwrap_or(1.0).max(1.0);
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/><text x=\"{pad}\" y=\"20\" font-size=\"14\">{title}</text>\
         <line x1=\"{pad}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/><line x1=\"{pad}\" y1=\"{pad}\" x2=\"{pad}\" y2=\"{}\" stroke=\"black\"/>\
         <text x=\"{}\" y=\"{}\">{tmax:.0} s</text><text x=\"{pad}\" y=\"{}\">0</text>",
        h - pad, w - pad, h - pad, h - pad, w - pad - 30.0, h - pad + 15.0, h - pad + 15.0
    );
    for (i, (name, color, ys)) in series.iter().enumerate() {
        let ymax = ys.iter().copied().fold(0.0, f64::max).max(1e-9);
        let points: Vec<String> = t
            .iter()
            .zip(ys)
            .map(|(x, y)| {
                format!(
                    "{:.1},{:.1}",
                    pad + x / tmax * (w - 2.0 * pad),
                    h - pad - y / ymax * (h - 2.0 * pad)
                )
            })
            .collect();
        out.push_str(&format!(
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\" points=\"{}\"/>\
             <text x=\"{}\" y=\"{}\" fill=\"{color}\">{name} (max {ymax:.2})</text>",
            points.join(" "),
            w - 300.0,
            40.0 + 15.0 * i as f64
        ));
    }
    out.push_str("</svg>\n");
    out
}

/// Runs the scenario.
pub fn run(minutes: f64, base_rate: f64, restore_rate: f64) -> Result<()> {
    let bin = odoo_cdc_bin()?;
    let cluster = TempCluster::start()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let db = fixtures::pg::DEFAULT_DATABASE;
    let admin = rt.block_on(cluster.superuser_client(db))?;
    let info = rt.block_on(fixtures::odoo::create(
        &admin,
        &fixtures::odoo::SeedConfig::default(),
    ))?;
    rt.block_on(admin.batch_execute(&format!(
        "CREATE PUBLICATION odoo_cdc FOR TABLE {}",
        cdc::slot::ODOO_TABLES.join(", ")
    )))?;
    let _guard = rt.enter();
    let odoo_rpc = rt.block_on(OdooRpcEmulator::start(
        OdooRpcConfig::new(&cluster.superuser_url(db)),
        0,
    ))?;
    let hook_port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    // Shopify Plus's GraphQL budget (the plan of shops that run Black Friday at this scale):
    // a 10,000-point bucket refilled at 1,000 points/s (`--shopify-restore-rate` to change).
    let shopify = rt.block_on(ShopifyEmulator::start(
        ShopCfg {
            bucket_size: restore_rate * 10.0,
            restore_rate,
            webhook_url: Some(format!("http://127.0.0.1:{hook_port}/webhooks/shopify")),
            webhook_delay: Duration::from_millis(300),
            webhook_jitter: Duration::from_millis(700),
            duplicate_rate: 0.05,
            ..ShopCfg::default()
        },
        0,
    ))?;
    for p in &info.products {
        shopify.add_item(&p.sku, &[(1, 0), (2, 0)]);
    }
    let wms = rt.block_on(WmsEmulator::start(
        WmsCfg {
            ship_delay: Duration::from_secs(3600),
            ..WmsCfg::default()
        },
        0,
    ))?;
    wms.core().set_faults(Faults {
        latency_ms: 40,
        ..Faults::default()
    });
    let acct_cfg = AcctCfg::default();
    let accounting = rt.block_on(AccountingEmulator::start(acct_cfg.clone(), 0))?;
    accounting.core().set_faults(Faults {
        latency_ms: 60,
        ..Faults::default()
    });
    let dir = tempfile_dir()?;
    let config = dir.join("odoo-cdc.toml");
    let locations: Vec<String> = info
        .warehouses
        .iter()
        .enumerate()
        .map(|(i, w)| format!("{} = \"gid://shopify/Location/{}\"", w.code, i + 1))
        .collect();
    let (odb, login, key, _) = odoo_rpc.credentials();
    std::fs::write(
        &config,
        format!(
            "[source]\nurl = \"{}\"\n\n[runtime]\nmetrics_listen = \"127.0.0.1:{metrics_port}\"\n\n\
             [odoo]\nurl = \"{}\"\ndatabase = \"{odb}\"\nlogin = \"{login}\"\n\n\
             [webhooks]\nlisten = \"127.0.0.1:{hook_port}\"\nshop_domain = \"odoo-cdc-demo.myshopify.com\"\n\n\
             [sinks.shopify]\ngraphql_url = \"{}\"\nlocation_map = {{ {} }}\n\n[sinks.wms]\nbase_url = \"{}\"\n\n\
             [sinks.accounting]\nbase_url = \"{}\"\nrealm_id = \"{}\"\nclient_id = \"{}\"\nmode = \"batch\"\nflush_interval_ms = 1000\n\
             account_map = {{ \"121000\" = \"84\", \"400000\" = \"79\", \"251000\" = \"89\", \"101401\" = \"35\" }}\n",
            cluster.url(),
            odoo_rpc.url(),
            shopify.graphql_url(),
            locations.join(", "),
            wms.url(),
            accounting.url(),
            acct_cfg.realm_id,
            acct_cfg.client_id,
        ),
    )?;
    let log = dir.join("run.log");
    let mut child = Command::new(&bin)
        .args(["run", "--config", config.to_str().context("path")?])
        .env("PGPASSWORD", cluster.role_password())
        .env("ODOO_CDC_SOURCE_PASSWORD", cluster.role_password())
        .env("ODOO_CDC_ODOO_API_KEY", key)
        .env("ODOO_CDC_SHOPIFY_WEBHOOK_SECRET", "hush")
        .env("ODOO_CDC_SHOPIFY_ACCESS_TOKEN", "shpat_emulator")
        .env("ODOO_CDC_WMS_API_KEY", "wms-key")
        .env("ODOO_CDC_ACCOUNTING_CLIENT_SECRET", &acct_cfg.client_secret)
        .env("ODOO_CDC_ACCOUNTING_REFRESH_TOKEN", &acct_cfg.refresh_token)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()?;
    let pid = child.id();
    let http = reqwest::Client::new();
    let scrape = || {
        let http = http.clone();
        async move {
            let text = http
                .get(format!("http://127.0.0.1:{metrics_port}/metrics"))
                .send()
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            Some(metrics(&text))
        }
    };
    // Bootstrap: every level in Shopify equals Odoo's sellable quantity.
    let sellable_sql = "SELECT p.default_code, w.id, coalesce(sum(q.quantity - q.reserved_quantity), 0)::int8 \
        FROM product_product p CROSS JOIN stock_warehouse w \
        LEFT JOIN stock_location l ON l.warehouse_id = w.id AND l.usage = 'internal' \
        LEFT JOIN stock_quant q ON q.product_id = p.id AND q.location_id = l.id \
        JOIN product_template t ON t.id = p.product_tmpl_id WHERE t.type <> 'service' GROUP BY 1, 2";
    let item_of: BTreeMap<String, u64> = info
        .products
        .iter()
        .enumerate()
        .map(|(i, p)| (p.sku.clone(), 30_000_001 + i as u64))
        .collect();
    let differing = || -> Result<usize> {
        let rows = rt.block_on(admin.query(sellable_sql, &[]))?;
        Ok(rows
            .iter()
            .filter(|r| {
                let sku: String = r.get(0);
                let wh: i32 = r.get(1);
                let want: i64 = r.get::<_, i64>(2).max(0);
                let loc = if wh == info.warehouses[0].id { 1 } else { 2 };
                let item = item_of.get(&sku).copied().unwrap_or(0);
                shopify.level(item, loc).map(|q| q.available) != Some(want)
            })
            .count())
    };
    let boot = Instant::now();
    while differing()? > 0 {
        if boot.elapsed() > Duration::from_secs(600) {
            let _ = child.kill();
            bail!("odoo-cdc did not bootstrap; see {}", log.display());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let bootstrap_secs = boot.elapsed().as_secs_f64();
    let (cpu_before, _) = proc_stat(pid);
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
        mismatched = differing()?;
        if mismatched == 0 && pending == 0 {
            converged = Some(last_change.elapsed().as_secs_f64());
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let m = rt.block_on(scrape()).unwrap_or_default();
    let (cpu_after, rss_kib) = proc_stat(pid);
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = child.wait();

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
    let min_points = 13 * quantities.div_ceil(250).max(1) as u64;
    let stock_events = m
        .get("odoo_cdc_sink_delivered_total{sink=\"shopify\"}")
        .copied()
        .unwrap_or(0.0)
        - m0.get("odoo_cdc_sink_delivered_total{sink=\"shopify\"}")
            .copied()
            .unwrap_or(0.0);
    let changes: i64 = report.rows_per_table.values().sum();
    let cpu = cpu_after - cpu_before;
    let oversell: i64 = rt
        .block_on(admin.query_one(
            "SELECT count(DISTINCT o.id) FROM sale_order o JOIN stock_picking p ON p.sale_id = o.id \
             WHERE o.client_order_ref LIKE 'shopify:%' AND p.state NOT IN ('assigned', 'done', 'cancel')",
            &[],
        ))?
        .get(0);
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
    let cmd = format!("cargo run --release -p bench -- peak --minutes {minutes} --base-rate {base_rate} --shopify-restore-rate {restore_rate}");
    println!("## peak: {minutes} minutes of the peak-season profile in real time (ramp to 10x, flash sales), with storefront sales written back\n");
    println!(
        "Source: {changes} row changes in {load_secs:.0} s ({:.0} row changes/s, {} Odoo actions); storefront sales {taken} taken, {refused} refused.\n",
        changes as f64 / load_secs,
        report.actions.values().sum::<u64>()
    );
    println!("| sink | delivered | latency p50 ≤ ms | p99 ≤ ms | p99.9 ≤ ms |\n|---|---:|---:|---:|---:|");
    for sink in ["shopify", "wms", "accounting"] {
        let key = format!("odoo_cdc_sink_delivered_total{{sink=\"{sink}\"}}");
        println!(
            "| {sink} | {:.0} | {} | {} | {} |",
            m.get(&key).copied().unwrap_or(0.0) - m0.get(&key).copied().unwrap_or(0.0),
            pct(sink, 0.5),
            pct(sink, 0.99),
            pct(sink, 0.999)
        );
    }
    let max_lag_s = lag_secs.iter().copied().fold(0.0, f64::max);
    let max_lag_b = lag_bytes.iter().copied().fold(0.0, f64::max);
    println!("\n| figure | value |\n|---|---:|");
    println!(
        "| replication lag, max | {max_lag_s:.2} s / {:.0} KiB |",
        max_lag_b / 1024.0
    );
    println!(
        "| Shopify convergence after the last change | {} |",
        converged.map_or_else(
            || format!("not within 120 s ({mismatched} levels differ)"),
            |s| format!("{s:.2} s")
        )
    );
    println!("| Shopify calls / cost points | {calls} / {points} |");
    println!(
        "| stock changes in / quantities written (coalescing) | {stock_events:.0} / {quantities} ({:.1}x) |",
        stock_events / quantities.max(1) as f64
    );
    println!(
        "| Shopify cost points per 1,000 stock changes | {:.0} (minimum for the quantities written: {:.0}; ratio {:.2}) |",
        points as f64 * 1000.0 / stock_events.max(1.0),
        min_points as f64 * 1000.0 / stock_events.max(1.0),
        points as f64 / min_points as f64
    );
    println!("| THROTTLED answers | {} |", delta("throttled"));
    println!("| oversell incidents (Shopify orders Odoo could not reserve) | {oversell} |");
    println!(
        "| odoo-cdc CPU per 1,000 row changes | {:.3} s ({cpu:.1} s in all) |",
        cpu * 1000.0 / changes.max(1) as f64
    );
    println!("| odoo-cdc peak RSS | {:.1} MiB |", rss_kib as f64 / 1024.0);
    println!(
        "| bootstrap (initial sync of {} SKUs) | {bootstrap_secs:.1} s |",
        info.products.len()
    );
    println!("\nReproduce: `{cmd}`");
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
        "shopify": {"calls": calls, "cost_points": points, "quantities_written": quantities, "stock_events": stock_events, "min_points": min_points, "throttled": delta("throttled")},
        "oversell_incidents": oversell,
        "cpu_secs": cpu,
        "peak_rss_kib": rss_kib,
        "command": cmd,
    });
    std::fs::create_dir_all("target/bench")?;
    std::fs::write("target/bench/peak.json", serde_json::to_vec_pretty(&out)?)?;
    std::fs::write(
        "target/bench/peak.svg",
        svg(
            "peak: transactions/s read and replication lag (s)",
            &times,
            &[
                ("transactions/s", "steelblue", txn_rate),
                ("lag s", "crimson", lag_secs),
            ],
        ),
    )?;
    Ok(())
}

fn tempfile_dir() -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("odoo-cdc-bench-peak-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
