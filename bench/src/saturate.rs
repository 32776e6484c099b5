//! `saturate`: where does the pipeline break, and what breaks it.
//!
//! Part 1, the limit: the fixtures' steady order flow in real time through `odoo-cdc run` into
//! the emulators at realistic latencies and rate limits (as in `peak`), the order rate doubled
//! every step, until the inventory or warehouse p99 passes 1 s, replication lag keeps rising
//! through a step, or Odoo's writes themselves cannot reach the offered rate. Each step records
//! the source rate, the per-sink p99, the lag, and the CPU of odoo-cdc, of the walsender that
//! decodes for it, and of the whole machine, so the step that fails names its limit.
//!
//! Part 2, odoo-cdc's own capacity: with every rate limit and latency lifted, a backlog of the
//! same workload is written while odoo-cdc is stopped, then read once by the reader alone
//! (`odoo-cdc tail` on an identical slot, JSON lines to /dev/null) and once by the whole
//! pipeline (`odoo-cdc run`, until every sink has delivered it and the position is confirmed);
//! the ratio of the two rates is what transforms and sinks cost on top of decoding.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use fixtures::workload::{Profile, WorkloadConfig};
use serde_json::json;

use crate::rig::{delta, hist_quantile, proc_stat, svg, write_results, Metrics, Rig, RigOptions};
use crate::{measure, odoo_cdc_bin};

/// Busy and total jiffies of the whole machine (/proc/stat).
fn machine_cpu() -> (f64, f64) {
    let Ok(s) = std::fs::read_to_string("/proc/stat") else {
        return (0.0, 0.0);
    };
    let v: Vec<f64> = s
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: f64 = v.iter().sum();
    let idle = v.get(3).copied().unwrap_or(0.0) + v.get(4).copied().unwrap_or(0.0);
    (total - idle, total)
}

struct Step {
    orders_per_sec: f64,
    achieved_orders_per_sec: f64,
    row_changes_per_sec: f64,
    p99_ms: [Option<f64>; 3],
    lag_end: f64,
    lag_mid: f64,
    lag_max: f64,
    cdc_cores: f64,
    walsender_cores: f64,
    machine_busy: f64,
    throttled: u64,
    parked: f64,
}

impl Step {
    fn p99(&self, i: usize) -> String {
        self.p99_ms[i].map_or_else(|| "-".into(), |v| format!("{v:.0}"))
    }
}

const SINKS: [&str; 3] = ["shopify", "wms", "accounting"];

/// `runtime.max_hold_secs` in part 1: a sink further behind is parked, so the lag stays near
/// this; a lag well past it that keeps rising is one the pipeline cannot hold.
const MAX_HOLD_SECS: u64 = 10;

fn walsender_pid(rt: &tokio::runtime::Runtime, rig: &Rig) -> Option<u32> {
    let row = rt
        .block_on(rig.admin.query_opt(
            "SELECT active_pid FROM pg_replication_slots WHERE slot_name = 'odoo_cdc'",
            &[],
        ))
        .ok()??;
    row.get::<_, Option<i32>>(0).map(|p| p as u32)
}

/// What part 1 found.
struct Limit {
    steps: Vec<Step>,
    verdict: String,
    bootstrap_secs: f64,
    /// Seconds since the first step, with the lag and transactions read per second then.
    t: Vec<f64>,
    lag: Vec<f64>,
    txn_rate: Vec<f64>,
}

/// Runs part 1: the stepped load; the steps and the limiting factor.
fn limit(
    rt: &tokio::runtime::Runtime,
    base_rate: f64,
    step_secs: u64,
    max_steps: usize,
) -> Result<Limit> {
    let mut rig = Rig::start(
        rt,
        "saturate",
        &RigOptions {
            shopify_restore_rate: 1000.0,
            webhooks: false,
            write_interval_ms: sinks::shopify::DEFAULT_WRITE_INTERVAL.as_millis() as u64,
            wms_latency_ms: 40,
            accounting_latency_ms: 60,
            accounting_limits: true,
            max_hold_secs: Some(MAX_HOLD_SECS),
            hot_safety_stock: 0,
            shipments: None,
        },
    )?;
    let pid = rig.start_cdc()?;
    let boot = rig.wait_bootstrap(rt)?;
    eprintln!("bootstrapped in {boot:.1} s");
    let url = rig.cluster.superuser_url(fixtures::pg::DEFAULT_DATABASE);
    let started = Instant::now();
    let (mut xs, mut lags, mut rates) = (Vec::new(), Vec::new(), Vec::new());
    let mut steps = Vec::new();
    let mut verdict = String::new();
    let mut rate = base_rate;
    let mut parked_from = None;
    for step in 0..max_steps {
        let m0: Metrics = rt.block_on(rig.scrape()).unwrap_or_default();
        let counters0 = rig.shopify.counters();
        let (cdc0, _) = proc_stat(pid);
        let wal_pid = walsender_pid(rt, &rig);
        let (wal0, _) = wal_pid.map_or((0.0, 0), proc_stat);
        let (busy0, total0) = machine_cpu();
        let t0 = Instant::now();
        let cfg = WorkloadConfig {
            seed: 100 + step as u64,
            base_rate: rate,
            duration: Duration::from_secs(step_secs),
            profile: Profile::Steady,
            time_scale: 1.0,
            connections: 4,
            hot_skus: 5,
        };
        let work = {
            let (url, info) = (url.clone(), rig.info.clone());
            rt.spawn(async move { fixtures::workload::run(&url, &info, &cfg).await })
        };
        let mut step_lags = Vec::new();
        let mut last_txns = m0
            .get("odoo_cdc_transactions_total")
            .copied()
            .unwrap_or(0.0);
        let mut last_t = t0;
        while !work.is_finished() {
            std::thread::sleep(Duration::from_secs(1));
            if let Some(m) = rt.block_on(rig.scrape()) {
                let lag = m
                    .get("odoo_cdc_replication_lag_seconds")
                    .copied()
                    .unwrap_or(0.0);
                let txns = m.get("odoo_cdc_transactions_total").copied().unwrap_or(0.0);
                step_lags.push(lag);
                xs.push(started.elapsed().as_secs_f64());
                lags.push(lag);
                rates.push((txns - last_txns) / last_t.elapsed().as_secs_f64().max(1e-3));
                last_txns = txns;
                last_t = Instant::now();
            }
        }
        let report = rt.block_on(work)??;
        let secs = t0.elapsed().as_secs_f64();
        let m: Metrics = rt.block_on(rig.scrape()).unwrap_or_default();
        let (cdc1, _) = proc_stat(pid);
        let (wal1, _) = wal_pid.map_or((0.0, 0), proc_stat);
        let (busy1, total1) = machine_cpu();
        let counters = rig.shopify.counters();
        let orders = report.actions.get("create_quotation").copied().unwrap_or(0) as f64;
        let s = Step {
            orders_per_sec: rate,
            achieved_orders_per_sec: orders / step_secs as f64,
            row_changes_per_sec: report.rows_per_table.values().sum::<i64>() as f64 / secs,
            p99_ms: SINKS.map(|sink| {
                hist_quantile(
                    &m,
                    &m0,
                    "odoo_cdc_sink_latency_seconds",
                    &format!("sink=\"{sink}\""),
                    0.99,
                )
                .map(|v| v * 1000.0)
            }),
            lag_end: step_lags.last().copied().unwrap_or(0.0),
            lag_mid: step_lags.get(step_lags.len() / 2).copied().unwrap_or(0.0),
            lag_max: step_lags.iter().copied().fold(0.0, f64::max),
            cdc_cores: (cdc1 - cdc0) / secs,
            walsender_cores: (wal1 - wal0) / secs,
            machine_busy: (busy1 - busy0) / (total1 - total0).max(1.0),
            throttled: counters.get("throttled").copied().unwrap_or(0)
                - counters0.get("throttled").copied().unwrap_or(0),
            parked: SINKS
                .iter()
                .map(|k| {
                    delta(
                        &m,
                        &m0,
                        &format!("odoo_cdc_sink_parked_total{{sink=\"{k}\"}}"),
                    )
                })
                .sum(),
        };
        eprintln!(
            "step {step}: {:.0} orders/s offered, {:.1} done, {:.0} row changes/s, p99 ms {:?}, lag end {:.1} s, cdc {:.2} cores, walsender {:.2}, machine {:.0}% busy",
            s.orders_per_sec,
            s.achieved_orders_per_sec,
            s.row_changes_per_sec,
            s.p99_ms,
            s.lag_end,
            s.cdc_cores,
            s.walsender_cores,
            s.machine_busy * 100.0
        );
        let slow: Vec<&str> = SINKS[..2]
            .iter()
            .zip(&s.p99_ms)
            .filter(|(_, p)| p.is_some_and(|p| p > 1000.0))
            .map(|(n, _)| *n)
            .collect();
        let lag_rising = s.lag_end > 2.0 * MAX_HOLD_SECS as f64 && s.lag_end > s.lag_mid + 1.0;
        if s.parked > 0.0 && parked_from.is_none() {
            parked_from = Some(step);
        }
        let source_short = s.achieved_orders_per_sec < 0.8 * s.orders_per_sec;
        let failed = !slow.is_empty() || lag_rising || source_short;
        if failed {
            let why = if !slow.is_empty() {
                format!("{} p99 over 1 s", slow.join(" and "))
            } else if lag_rising {
                format!(
                    "replication lag rising ({:.1} s mid-step, {:.1} s at the end)",
                    s.lag_mid, s.lag_end
                )
            } else {
                format!(
                    "Odoo's writes reached {:.1} of the {:.0} orders/s offered",
                    s.achieved_orders_per_sec, s.orders_per_sec
                )
            };
            let cause = if source_short && slow.is_empty() && !lag_rising {
                format!(
                    "the source: PostgreSQL and the load generator could not write more on this machine ({:.0}% of both cores busy); odoo-cdc kept up with everything written",
                    s.machine_busy * 100.0
                )
            } else if s.walsender_cores >= 0.85 {
                format!(
                    "the server's walsender ({:.2} of a core decoding for odoo-cdc)",
                    s.walsender_cores
                )
            } else if s.cdc_cores >= 0.85 {
                format!("odoo-cdc's CPU ({:.2} cores)", s.cdc_cores)
            } else if s.throttled > 0 {
                format!("Shopify's rate limit ({} THROTTLED answers)", s.throttled)
            } else if slow == ["wms"] {
                format!(
                    "the WMS's answer time: 40 ms a request with `runtime.partitions = 8` in flight caps it near 200 requests/s (more partitions go further); odoo-cdc at {:.2} cores, walsender {:.2}",
                    s.cdc_cores, s.walsender_cores
                )
            } else if !slow.is_empty() {
                format!(
                    "the sink answering slowly ({}); odoo-cdc at {:.2} cores, walsender {:.2}",
                    slow.join(", "),
                    s.cdc_cores,
                    s.walsender_cores
                )
            } else {
                format!(
                    "the machine: {:.0}% of both cores busy (PostgreSQL, the load generator, the emulators and odoo-cdc share them); odoo-cdc {:.2} cores, walsender {:.2}",
                    s.machine_busy * 100.0,
                    s.cdc_cores,
                    s.walsender_cores
                )
            };
            verdict = format!("step {} failed: {why}; limit: {cause}", step + 1);
            steps.push(s);
            break;
        }
        steps.push(s);
        rate *= 2.0;
    }
    if verdict.is_empty() {
        verdict = format!("no step failed up to {:.0} orders/s", rate / 2.0);
    }
    if let Some(step) = parked_from {
        let s = &steps[step];
        verdict.push_str(&format!(
            ". From step {} ({:.0} orders/s) a sink fell more than max_hold behind and its backlog was parked in the outbox (accounting p99 {} ms: QuickBooks takes 40 batches of 30 a minute, 20 entries/s), while the slot and the other sinks moved on",
            step + 1,
            s.orders_per_sec,
            s.p99(2)
        ));
    }
    rig.stop_cdc();
    Ok(Limit {
        steps,
        verdict,
        bootstrap_secs: boot,
        t: xs,
        lag: lags,
        txn_rate: rates,
    })
}

/// Part 2: decode-only vs the whole pipeline on one backlog, limits lifted. Returns (row
/// changes, decode-only secs and rss KiB, pipeline secs, parked).
fn capacity(rt: &tokio::runtime::Runtime, backlog_secs: u64) -> Result<serde_json::Value> {
    let mut rig = Rig::start(
        rt,
        "saturate-capacity",
        &RigOptions {
            shopify_restore_rate: 1_000_000.0,
            webhooks: false,
            write_interval_ms: sinks::shopify::DEFAULT_WRITE_INTERVAL.as_millis() as u64,
            wms_latency_ms: 0,
            accounting_latency_ms: 0,
            accounting_limits: false,
            max_hold_secs: None,
            hot_safety_stock: 0,
            shipments: None,
        },
    )?;
    rig.start_cdc()?;
    rig.wait_bootstrap(rt)?;
    rig.stop_cdc();
    rt.block_on(
        rig.admin
            .batch_execute("SELECT pg_create_logical_replication_slot('decode_only', 'pgoutput')"),
    )?;
    let url = rig.cluster.superuser_url(fixtures::pg::DEFAULT_DATABASE);
    let cfg = WorkloadConfig {
        seed: 7,
        base_rate: 20.0,
        duration: Duration::from_secs(backlog_secs),
        profile: Profile::Steady,
        time_scale: 0.0,
        connections: 4,
        hot_skus: 5,
    };
    eprintln!(
        "writing the backlog ({backlog_secs} simulated seconds at 20 orders/s, odoo-cdc stopped)"
    );
    let report = rt.block_on(fixtures::workload::run(&url, &rig.info, &cfg))?;
    let rows: i64 = report.rows_per_table.values().sum();
    let lsn = |sql: &str| -> Result<u64> {
        let s: String = rt.block_on(rig.admin.query_one(sql, &[]))?.get(0);
        s.parse::<cdc::Lsn>()
            .map(|l| l.0)
            .map_err(|e| anyhow::anyhow!("{e}"))
    };
    let before_marker = lsn("SELECT pg_current_wal_insert_lsn()::text")?;
    // A last change to a published table: both readers stop past it.
    rt.block_on(rig.admin.batch_execute(
        "UPDATE res_partner SET write_date = now() WHERE id = (SELECT min(id) FROM res_partner)",
    ))?;
    let end = lsn("SELECT pg_current_wal_insert_lsn()::text")?;
    let endpos = cdc::Lsn(end).to_string();

    eprintln!("decode-only: odoo-cdc tail over {rows} row changes");
    let bin = odoo_cdc_bin(&[])?;
    let pw = rig.cluster.role_password().to_string();
    let argv = vec![
        bin.display().to_string(),
        "tail".into(),
        "--source".into(),
        rig.cluster.url(),
        "--slot".into(),
        "decode_only".into(),
        "--endpos".into(),
        endpos.clone(),
        "--heartbeat-secs".into(),
        "0".into(),
    ];
    let decode = measure(&argv, &[("PGPASSWORD", pw.as_str()), ("RUST_LOG", "warn")])?;

    eprintln!("pipeline: odoo-cdc run over the same backlog");
    let t0 = Instant::now();
    let pid = rig.start_cdc()?;
    // Milestones: metrics first answer (started), everything read, everything confirmed.
    let (mut answered, mut read_all) = (None, None);
    let m: Metrics = loop {
        if let Some(now) = rt.block_on(rig.scrape()) {
            answered.get_or_insert_with(|| t0.elapsed().as_secs_f64());
            let at = |k: &str| now.get(k).copied().unwrap_or(0.0) as u64;
            if read_all.is_none() && at("odoo_cdc_read_lsn") >= before_marker {
                read_all = Some(t0.elapsed().as_secs_f64());
            }
            if at("odoo_cdc_confirmed_lsn") >= before_marker {
                break now;
            }
            if std::env::var_os("BENCH_TRACE").is_some() {
                let per: Vec<String> = SINKS
                    .iter()
                    .map(|k| {
                        format!(
                            "{k} {}+{}q",
                            at(&format!("odoo_cdc_sink_delivered_total{{sink=\"{k}\"}}")),
                            at(&format!("odoo_cdc_sink_queue_depth{{sink=\"{k}\"}}"))
                        )
                    })
                    .collect();
                eprintln!(
                    "{:.2} s: read {} txns, {}",
                    t0.elapsed().as_secs_f64(),
                    at("odoo_cdc_transactions_total"),
                    per.join(", ")
                );
            }
        }
        if t0.elapsed() > Duration::from_secs(900) {
            anyhow::bail!(
                "odoo-cdc run did not confirm the backlog in 15 minutes; see {}",
                rig.log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let pipeline_secs = t0.elapsed().as_secs_f64();
    let (cdc_cpu, cdc_rss) = proc_stat(pid);
    let parked: f64 = SINKS
        .iter()
        .map(|k| {
            m.get(&format!("odoo_cdc_sink_parked_total{{sink=\"{k}\"}}"))
                .copied()
                .unwrap_or(0.0)
        })
        .sum();
    let delivered: serde_json::Value = SINKS
        .iter()
        .map(|k| {
            (
                k.to_string(),
                json!(m
                    .get(&format!("odoo_cdc_sink_delivered_total{{sink=\"{k}\"}}"))
                    .copied()
                    .unwrap_or(0.0)),
            )
        })
        .collect::<serde_json::Map<_, _>>()
        .into();
    rig.stop_cdc();
    Ok(json!({
        "row_changes": rows,
        "backlog_wall_secs": report.elapsed.as_secs_f64(),
        "decode_only": {"secs": decode.secs, "cpu_secs": decode.cpu_secs, "peak_rss_kib": decode.max_rss_kib, "rows_per_sec": rows as f64 / decode.secs},
        "pipeline": {"secs": pipeline_secs, "metrics_answered_secs": answered, "all_read_secs": read_all, "cpu_secs": cdc_cpu, "peak_rss_kib": cdc_rss, "rows_per_sec": rows as f64 / pipeline_secs, "parked": parked, "delivered": delivered},
        "ratio": decode.secs / pipeline_secs,
    }))
}

/// Runs the scenario.
pub fn run(base_rate: f64, step_secs: u64, max_steps: usize, backlog_secs: u64) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let _guard = rt.enter();
    let Limit {
        steps,
        verdict,
        bootstrap_secs: boot,
        t: xs,
        lag: lags,
        txn_rate: rates,
    } = if max_steps > 0 {
        limit(&rt, base_rate, step_secs, max_steps)?
    } else {
        Limit {
            steps: Vec::new(),
            verdict: "part 1 skipped (--max-steps 0)".into(),
            bootstrap_secs: 0.0,
            t: Vec::new(),
            lag: Vec::new(),
            txn_rate: Vec::new(),
        }
    };
    let cap = capacity(&rt, backlog_secs)?;
    let cmd = format!(
        "cargo run --release -p bench -- saturate --base-rate {base_rate} --step-secs {step_secs} --max-steps {max_steps} --backlog-secs {backlog_secs}"
    );
    println!("## saturate: the order rate doubled every {step_secs} s until something gives\n");
    println!("Realistic emulators (Shopify Plus budget, WMS 40 ms, QuickBooks 60 ms and its throttles), `max_hold_secs = {MAX_HOLD_SECS}`; bootstrap {boot:.1} s. A step fails when the Shopify or WMS p99 passes 1 s, the replication lag passes twice max_hold and still rises, or Odoo's writes fall short of the offered rate by 20 %. Accounting is held to QuickBooks' 40 batches a minute, so its p99 is shown, not judged.\n");
    println!("| step | orders/s offered | orders/s written | row changes/s | Shopify p99 ≤ ms | WMS p99 ≤ ms | accounting p99 ≤ ms | lag max s | odoo-cdc cores | walsender cores | machine busy |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (i, s) in steps.iter().enumerate() {
        println!(
            "| {} | {:.0} | {:.1} | {:.0} | {} | {} | {} | {:.1} | {:.2} | {:.2} | {:.0}% |",
            i + 1,
            s.orders_per_sec,
            s.achieved_orders_per_sec,
            s.row_changes_per_sec,
            s.p99(0),
            s.p99(1),
            if s.parked > 0.0 {
                format!("parked ({:.0})", s.parked)
            } else {
                s.p99(2)
            },
            s.lag_max,
            s.cdc_cores,
            s.walsender_cores,
            s.machine_busy * 100.0
        );
    }
    let sustained = steps
        .iter()
        .rev()
        .skip(usize::from(!verdict.starts_with("no step")))
        .map(|s| s.row_changes_per_sec)
        .next()
        .unwrap_or(0.0);
    println!("\nHighest sustained: {sustained:.0} row changes/s. {verdict}.\n");
    let d = &cap["decode_only"];
    let p = &cap["pipeline"];
    println!(
        "Capacity with every limit lifted (a backlog of {} row changes written while odoo-cdc was stopped):\n",
        cap["row_changes"]
    );
    println!(
        "| reader | rows/s | ratio | wall s | CPU s | peak RSS |\n|---|---:|---:|---:|---:|---:|"
    );
    let row = |name: &str, v: &serde_json::Value, ratio: f64| {
        let f = |k: &str| v[k].as_f64().unwrap_or(0.0);
        println!(
            "| {name} | {:.0} | {ratio:.2} | {:.2} | {:.2} | {:.1} MiB |",
            f("rows_per_sec"),
            f("secs"),
            f("cpu_secs"),
            f("peak_rss_kib") / 1024.0
        );
    };
    row(
        "odoo-cdc tail (decode only, JSON lines > /dev/null)",
        d,
        1.0,
    );
    row(
        "odoo-cdc run (transforms, 3 sinks, confirmed)",
        p,
        cap["ratio"].as_f64().unwrap_or(0.0),
    );
    println!(
        "\nThe pipeline's run: /metrics answering after {:.2} s, the whole backlog read after {:.2} s, delivered and confirmed after {:.2} s; delivered {} (parked: {}).",
        p["metrics_answered_secs"].as_f64().unwrap_or(0.0),
        p["all_read_secs"].as_f64().unwrap_or(0.0),
        p["secs"].as_f64().unwrap_or(0.0),
        p["delivered"],
        p["parked"]
    );
    println!("\nReproduce: `{cmd}`");
    let out = json!({
        "scenario": "saturate",
        "steps": steps.iter().map(|s| json!({
            "orders_per_sec": s.orders_per_sec,
            "achieved_orders_per_sec": s.achieved_orders_per_sec,
            "row_changes_per_sec": s.row_changes_per_sec,
            "p99_ms": {"shopify": s.p99_ms[0], "wms": s.p99_ms[1], "accounting": s.p99_ms[2]},
            "lag_max_secs": s.lag_max,
            "odoo_cdc_cores": s.cdc_cores,
            "walsender_cores": s.walsender_cores,
            "machine_busy": s.machine_busy,
            "throttled": s.throttled,
            "parked": s.parked,
        })).collect::<Vec<_>>(),
        "sustained_row_changes_per_sec": sustained,
        "verdict": verdict,
        "capacity": cap,
        "series": {"t": xs, "lag_secs": lags, "txn_per_sec": rates},
        "command": cmd,
    });
    write_results(
        "saturate",
        &out,
        &svg(
            "saturate: transactions/s read and replication lag (s), rate doubling each step",
            "s",
            &xs,
            &[
                ("transactions/s", "steelblue", rates),
                ("lag s", "crimson", lags),
            ],
        ),
    )
    .context("write results")
}
