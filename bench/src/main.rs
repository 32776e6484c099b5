//! odoo-cdc benchmarks. Each figure is a ratio against a baseline measured in the same run on
//! the same machine: absolute times on a shared 2-core machine mean little.
//!
//! `cargo run --release -p bench -- decode` — odoo-cdc's `tail` (output to /dev/null) against
//! `pg_recvlogical` (pgoutput, output to /dev/null) on identical slots, alternating runs, median
//! of several; rows per second, the ratio, peak RSS of both; and the peak RSS of `tail` on one
//! 1,000,000-row transaction.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use fixtures::TempCluster;

mod peak;
mod rig;
mod saturate;
mod scaleout;
mod snapshot;
mod webhooks;
mod workbench;

#[derive(Parser)]
#[command(about = "odoo-cdc benchmarks")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// Reader throughput and memory against pg_recvlogical.
    Decode {
        /// Rows in the throughput workload.
        #[arg(long, default_value_t = 1_000_000)]
        rows: u64,
        /// Transactions the rows are spread over.
        #[arg(long, default_value_t = 10_000)]
        txns: u64,
        /// Runs of each reader (alternating); the median is reported.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Rows of the single large transaction for the memory figure (0: skip).
        #[arg(long, default_value_t = 1_000_000)]
        big_txn_rows: u64,
    },
    /// The fixtures' peak-season workload as fast as the machine allows: simulated vs wall time
    /// and the rows written per table.
    Workload {
        /// Simulated minutes.
        #[arg(long, default_value_t = 10)]
        minutes: u64,
        /// Normal order rate (orders per simulated second); the peak is 10x.
        #[arg(long, default_value_t = 2.0)]
        base_rate: f64,
        /// Parallel connections.
        #[arg(long, default_value_t = 4)]
        connections: usize,
    },
    /// The peak-season profile in real time through odoo-cdc run into the emulators.
    Peak(PeakArgs),
    /// The peak profile by one process, then by one reader and two workers on a Fluvio
    /// cluster (builds odoo-cdc with `--features fluvio`); each figure side by side.
    ScaleOut {
        #[command(flatten)]
        peak: PeakArgs,
        /// The Fluvio cluster's public endpoint (its SC).
        #[arg(long, env = "ODOO_CDC_FLUVIO_ENDPOINT")]
        fluvio_endpoint: Option<String>,
    },
    /// Raise the order rate until the pipeline falls behind; then odoo-cdc's own capacity
    /// (every limit lifted) against its reader alone.
    Saturate {
        /// Orders per second of the first step; each step doubles it.
        #[arg(long, default_value_t = 2.0)]
        base_rate: f64,
        /// Seconds per step.
        #[arg(long, default_value_t = 20)]
        step_secs: u64,
        /// Most steps (0: only the capacity part).
        #[arg(long, default_value_t = 8)]
        max_steps: usize,
        /// Simulated seconds of the capacity backlog (20 orders/s, written as fast as possible).
        #[arg(long, default_value_t = 120)]
        backlog_secs: u64,
    },
    /// The initial snapshot of a large Odoo-shaped database against COPY of the same tables.
    Snapshot {
        /// Stock quants.
        #[arg(long, default_value_t = 1_000_000)]
        quants: u64,
        /// Sale orders.
        #[arg(long, default_value_t = 200_000)]
        orders: u64,
        /// Runs of each (alternating); the median is reported.
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// Shopify webhooks into the receiver and on into Odoo, against plain durable commits.
    Webhooks {
        /// Webhooks to send.
        #[arg(long, default_value_t = 2000)]
        count: usize,
        /// Requests in flight.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// `odoo.cache_ttl_secs` of the write-back (0: every lookup asks Odoo).
        #[arg(long, default_value_t = pipeline::config::DEFAULT_CACHE_TTL_SECS)]
        cache_ttl_secs: u64,
    },
    /// The workbench's pages with 100,000 dead letters and a million audit lines, against the
    /// same pages before the backlog was loaded.
    Workbench {
        /// Dead letters loaded (a fifth of them replayed).
        #[arg(long, default_value_t = 100_000)]
        dead_letters: i64,
        /// Audit lines loaded (ten per order).
        #[arg(long, default_value_t = 1_000_000)]
        audit_lines: i64,
        /// GETs of each page; the median and p95 are reported.
        #[arg(long, default_value_t = 20)]
        runs: usize,
    },
    /// Internal: run a command, then print its wall time and peak RSS (KiB).
    #[command(hide = true)]
    Measure {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        argv: Vec<String>,
    },
}

struct Measurement {
    secs: f64,
    max_rss_kib: i64,
    cpu_secs: f64,
}

/// Runs `argv` with stdout to /dev/null in a wrapper process (this binary's `measure`), so
/// RUSAGE_CHILDREN covers exactly that one command.
fn measure(argv: &[String], env: &[(&str, &str)]) -> Result<Measurement> {
    let me = std::env::current_exe()?;
    let out = Command::new(me)
        .arg("measure")
        .arg("--")
        .args(argv)
        .envs(env.iter().copied())
        .stderr(Stdio::inherit())
        .output()
        .context("run measure wrapper")?;
    if !out.status.success() {
        bail!("{:?} failed", argv);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut it = text.split_whitespace();
    let secs: f64 = it.next().context("secs")?.parse()?;
    let max_rss_kib: i64 = it.next().context("rss")?.parse()?;
    let cpu_secs: f64 = it.next().context("cpu")?.parse()?;
    Ok(Measurement {
        secs,
        max_rss_kib,
        cpu_secs,
    })
}

fn measure_child(argv: &[String]) -> Result<()> {
    let wrapped: Vec<String>;
    let argv = match std::env::var("BENCH_WRAP") {
        Ok(w) if argv.iter().any(|a| a == "tail") => {
            wrapped = w
                .split_whitespace()
                .map(str::to_string)
                .chain(argv.iter().cloned())
                .collect();
            &wrapped[..]
        }
        _ => argv,
    };
    let (prog, args) = argv.split_first().context("no command")?;
    let start = Instant::now();
    let status = Command::new(prog)
        .args(args)
        .stdout(Stdio::null())
        .status()
        .with_context(|| format!("spawn {prog}"))?;
    let secs = start.elapsed().as_secs_f64();
    if !status.success() {
        bail!("{prog} exited with {status}");
    }
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)?;
    let cpu = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    println!(
        "{secs} {} {}",
        usage.max_rss(),
        cpu(usage.user_time()) + cpu(usage.system_time())
    );
    Ok(())
}

/// The peak profile's settings (`peak`, and both runs of `scale-out`).
#[derive(clap::Args)]
struct PeakArgs {
    /// Minutes of the profile (real time).
    #[arg(long, default_value_t = 2.0)]
    minutes: f64,
    /// Normal order rate (orders per second); the peak is 10x.
    #[arg(long, default_value_t = 1.0)]
    base_rate: f64,
    /// Shopify GraphQL points restored per second (the bucket holds 10 s of them); 1,000 is
    /// Shopify Plus, 50 the standard plan.
    #[arg(long, default_value_t = 1000.0)]
    shopify_restore_rate: f64,
    /// The Shopify sink's write interval (`sinks.shopify.write_interval_ms`).
    #[arg(long, default_value_t = 250)]
    shopify_write_interval_ms: u64,
    /// Safety stock of each of the five flash-sale SKUs (`sinks.shopify.safety_stock_by_sku`):
    /// units Shopify does not offer, so that a sale Odoo takes while a storefront sale's
    /// webhook is still on its way cannot leave the storefront order without stock.
    #[arg(long, default_value_t = 3)]
    hot_safety_stock: i64,
}

impl PeakArgs {
    fn params(&self) -> peak::Params {
        peak::Params {
            minutes: self.minutes,
            base_rate: self.base_rate,
            restore_rate: self.shopify_restore_rate,
            hot_safety_stock: self.hot_safety_stock,
            write_interval_ms: self.shopify_write_interval_ms,
        }
    }
}

/// The release odoo-cdc, built with `features` (none: the default build).
fn odoo_cdc_bin(features: &[&str]) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // target/release/bench -> target/bench-odoo-cdc: a target directory of its own, so
    // building odoo-cdc alone (its dependencies' features resolve differently than with the
    // bench) does not undo the bench's build, and the next `cargo run -p bench` has nothing
    // to recompile; one per feature set, for the same reason.
    let mut dir = "bench-odoo-cdc".to_string();
    for f in features {
        dir.push('-');
        dir.push_str(f);
    }
    let target = exe
        .parent()
        .and_then(|d| d.parent())
        .context("target dir")?
        .join(dir);
    let bin = target.join("release").join("odoo-cdc");
    // Built every time (a no-op when fresh): a stale binary would measure old code.
    let mut build = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    build.args(["build", "--release", "-p", "pipeline", "--bin", "odoo-cdc"]);
    if !features.is_empty() {
        build.args(["--features", &features.join(",")]);
    }
    let status = build.arg("--target-dir").arg(&target).status();
    if !status.is_ok_and(|s| s.success()) && !bin.exists() {
        bail!(
            "build odoo-cdc first: cargo build --release -p pipeline{}",
            if features.is_empty() {
                String::new()
            } else {
                format!(" --features {}", features.join(","))
            }
        );
    }
    Ok(bin)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn psql(cluster: &TempCluster, sql: &str) -> Result<String> {
    Ok(cluster.psql(fixtures::pg::DEFAULT_DATABASE, sql)?)
}

fn recvlogical_argv(cluster: &TempCluster, slot: &str, endpos: &str) -> Vec<String> {
    let bin = cluster.bin_dir().join("pg_recvlogical");
    vec![
        bin.display().to_string(),
        "-d".into(),
        format!(
            "host=127.0.0.1 port={} dbname={} user={}",
            cluster.port(),
            fixtures::pg::DEFAULT_DATABASE,
            fixtures::pg::REPLICATION_ROLE
        ),
        "--slot".into(),
        slot.into(),
        "--start".into(),
        "--no-loop".into(),
        "-E".into(),
        endpos.into(),
        "-o".into(),
        "proto_version=1".into(),
        "-o".into(),
        "publication_names=odoo_cdc".into(),
        "-f".into(),
        "-".into(),
    ]
}

fn tail_argv(bin: &Path, cluster: &TempCluster, slot: &str, endpos: &str) -> Vec<String> {
    vec![
        bin.display().to_string(),
        "tail".into(),
        "--source".into(),
        cluster.url(),
        "--slot".into(),
        slot.into(),
        "--endpos".into(),
        endpos.into(),
        "--heartbeat-secs".into(),
        "0".into(),
    ]
}

fn decode(rows: u64, txns: u64, runs: usize, big_txn_rows: u64) -> Result<()> {
    let bin = odoo_cdc_bin(&[])?;
    let cluster = TempCluster::start()?;
    let pw = cluster.role_password().to_string();
    let env = [("PGPASSWORD", pw.as_str()), ("RUST_LOG", "warn")];
    psql(
        &cluster,
        "CREATE TABLE stock_move (id bigserial PRIMARY KEY, name varchar, reference varchar, \
         product_id int, product_uom_qty numeric, quantity numeric, location_id int, \
         location_dest_id int, picking_id int, state varchar, date timestamp, price_unit float8, \
         picked bool); \
         GRANT SELECT ON stock_move TO odoo_cdc; \
         CREATE PUBLICATION odoo_cdc FOR TABLE stock_move;",
    )?;
    let slots: Vec<(String, String)> = (0..runs)
        .flat_map(|i| {
            [
                ("tail".to_string(), format!("b_tail_{i}")),
                ("pg_recvlogical".to_string(), format!("b_recv_{i}")),
            ]
        })
        .collect();
    for (_, s) in &slots {
        psql(
            &cluster,
            &format!("SELECT pg_create_logical_replication_slot('{s}', 'pgoutput')"),
        )?;
    }
    eprintln!("loading {rows} rows in {txns} transactions");
    let per = rows / txns.max(1);
    let rt = tokio::runtime::Runtime::new()?;
    let client = rt.block_on(cluster.superuser_client(fixtures::pg::DEFAULT_DATABASE))?;
    let mut sql = String::new();
    for t in 0..txns {
        sql.push_str(&format!(
            "BEGIN; INSERT INTO stock_move (name, reference, product_id, product_uom_qty, quantity, location_id, \
             location_dest_id, picking_id, state, date, price_unit, picked) \
             SELECT 'Product ' || g, 'WH/OUT/' || lpad(({t})::text, 5, '0'), g % 5000, 1 + g % 7, \
             (1 + g % 7)::numeric / 2, 8, 5, {t}, 'assigned', '2026-11-27 10:00:00', 19.99, g % 2 = 0 \
             FROM generate_series(1, {per}) g; COMMIT;\n"
        ));
        if t % 100 == 99 || t == txns - 1 {
            rt.block_on(client.batch_execute(&sql))?;
            sql.clear();
        }
    }
    let endpos = psql(&cluster, "SELECT pg_current_wal_lsn()")?
        .trim()
        .to_string();
    let total_rows = per * txns;

    let mut tail_secs = Vec::new();
    let mut recv_secs = Vec::new();
    let mut tail_server = Vec::new();
    let mut recv_server = Vec::new();
    let mut tail_cpu = Vec::new();
    let mut recv_cpu = Vec::new();
    let mut tail_rss = 0;
    let mut recv_rss = 0;
    for (who, slot) in &slots {
        let argv = if who == "tail" {
            tail_argv(&bin, &cluster, slot, &endpos)
        } else {
            recvlogical_argv(&cluster, slot, &endpos)
        };
        let server_before = cluster.exited_children_cpu_secs().unwrap_or(0.0);
        let m = measure(&argv, &env)?;
        // The walsender has exited with its connection; give the postmaster a moment to reap it.
        std::thread::sleep(std::time::Duration::from_millis(200));
        let server_cpu = cluster.exited_children_cpu_secs().unwrap_or(0.0) - server_before;
        eprintln!(
            "{who:>15} on {slot}: {:.3} s wall, {:.3} s cpu, walsender {server_cpu:.3} s cpu, {} KiB peak RSS",
            m.secs, m.cpu_secs, m.max_rss_kib
        );
        if who == "tail" {
            tail_server.push(server_cpu);
            tail_cpu.push(m.cpu_secs);
            tail_secs.push(m.secs);
            tail_rss = tail_rss.max(m.max_rss_kib);
        } else {
            recv_server.push(server_cpu);
            recv_cpu.push(m.cpu_secs);
            recv_secs.push(m.secs);
            recv_rss = recv_rss.max(m.max_rss_kib);
        }
    }
    let tail_rate = total_rows as f64 / median(tail_secs.clone());
    let recv_rate = total_rows as f64 / median(recv_secs.clone());

    let mut big_rss = None;
    if big_txn_rows > 0 {
        psql(
            &cluster,
            "SELECT pg_create_logical_replication_slot('b_big', 'pgoutput')",
        )?;
        eprintln!("one transaction of {big_txn_rows} rows");
        psql(
            &cluster,
            &format!(
                "INSERT INTO stock_move (name, product_id, quantity, state) \
                 SELECT 'Big ' || g, g % 5000, g, 'done' FROM generate_series(1, {big_txn_rows}) g"
            ),
        )?;
        let end = psql(&cluster, "SELECT pg_current_wal_lsn()")?
            .trim()
            .to_string();
        let m = measure(&tail_argv(&bin, &cluster, "b_big", &end), &env)?;
        eprintln!(
            "tail on the large transaction: {:.3} s, {} KiB peak RSS",
            m.secs, m.max_rss_kib
        );
        big_rss = Some((m.max_rss_kib, m.secs));
    }

    let ratio = tail_rate / recv_rate;
    let cmd = format!(
        "cargo run --release -p bench -- decode --rows {rows} --txns {txns} --runs {runs} --big-txn-rows {big_txn_rows}"
    );
    println!("## decode: odoo-cdc tail vs pg_recvlogical ({total_rows} rows, {txns} transactions, median of {runs})\n");
    let tail_cpu_m = median(tail_cpu.clone());
    let recv_cpu_m = median(recv_cpu.clone());
    let tail_server_m = median(tail_server.clone());
    let recv_server_m = median(recv_server.clone());
    let tail_wall = median(tail_secs.clone());
    let recv_wall = median(recv_secs.clone());
    println!("| reader | rows/s | ratio | wall s | client CPU s | walsender CPU s | peak RSS |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    println!(
        "| pg_recvlogical (pgoutput, -f - > /dev/null) | {recv_rate:.0} | 1.00 | {recv_wall:.2} | {recv_cpu_m:.2} | {recv_server_m:.2} | {:.1} MiB |",
        recv_rss as f64 / 1024.0
    );
    println!(
        "| odoo-cdc tail (JSON lines > /dev/null) | {tail_rate:.0} | {ratio:.2} | {tail_wall:.2} | {tail_cpu_m:.2} | {tail_server_m:.2} | {:.1} MiB |",
        tail_rss as f64 / 1024.0
    );
    if let Some((rss, secs)) = big_rss {
        println!(
            "\nOne {big_txn_rows}-row transaction through tail: peak RSS {:.1} MiB ({:.2} s).",
            rss as f64 / 1024.0,
            secs
        );
    }
    println!("\nReproduce: `{cmd}`");

    let json = serde_json::json!({
        "scenario": "decode",
        "rows": total_rows,
        "transactions": txns,
        "runs": runs,
        "tail_secs": tail_secs,
        "pg_recvlogical_secs": recv_secs,
        "tail_rows_per_sec": tail_rate,
        "pg_recvlogical_rows_per_sec": recv_rate,
        "ratio": ratio,
        "tail_cpu_secs": tail_cpu,
        "pg_recvlogical_cpu_secs": recv_cpu,
        "tail_walsender_cpu_secs": tail_server,
        "pg_recvlogical_walsender_cpu_secs": recv_server,
        "tail_peak_rss_kib": tail_rss,
        "pg_recvlogical_peak_rss_kib": recv_rss,
        "big_txn_rows": big_txn_rows,
        "big_txn_tail_peak_rss_kib": big_rss.map(|b| b.0),
        "command": cmd,
    });
    let run_no: Vec<f64> = (1..=tail_secs.len()).map(|r| r as f64).collect();
    let rate = |secs: &[f64]| {
        secs.iter()
            .map(|s| total_rows as f64 / s)
            .collect::<Vec<f64>>()
    };
    let chart = rig::svg_shared(
        "decode: rows/s per run, pg_recvlogical and odoo-cdc tail",
        "runs",
        &run_no,
        &[
            ("pg_recvlogical rows/s", "gray", rate(&recv_secs)),
            ("tail rows/s", "steelblue", rate(&tail_secs)),
        ],
    );
    rig::write_results("decode", &json, &chart)
}

fn workload(minutes: u64, base_rate: f64, connections: usize) -> Result<()> {
    use fixtures::workload::{Profile, WorkloadConfig};
    let cluster = TempCluster::start()?;
    let rt = tokio::runtime::Runtime::new()?;
    let client = rt.block_on(cluster.superuser_client(fixtures::pg::DEFAULT_DATABASE))?;
    let info = rt.block_on(fixtures::odoo::create(
        &client,
        &fixtures::odoo::SeedConfig::default(),
    ))?;
    let cfg = WorkloadConfig {
        base_rate,
        duration: std::time::Duration::from_secs(minutes * 60),
        profile: Profile::Peak,
        time_scale: 0.0,
        connections,
        ..WorkloadConfig::default()
    };
    let report = rt.block_on(fixtures::workload::run(
        &cluster.superuser_url(fixtures::pg::DEFAULT_DATABASE),
        &info,
        &cfg,
    ))?;
    let cmd = format!(
        "cargo run --release -p bench -- workload --minutes {minutes} --base-rate {base_rate} --connections {connections}"
    );
    println!("## workload: {minutes} simulated minutes of the peak-season profile\n");
    println!(
        "Wall time {:.1} s for {} s simulated ({:.1}x faster than real time); {} actions refused by Odoo's rules.\n",
        report.elapsed.as_secs_f64(),
        report.simulated.as_secs(),
        report.simulated.as_secs_f64() / report.elapsed.as_secs_f64(),
        report.refused
    );
    println!("| action | count |\n|---|---:|");
    for (k, v) in &report.actions {
        println!("| {k} | {v} |");
    }
    println!("\n| table | row changes |\n|---|---:|");
    for (k, v) in &report.rows_per_table {
        println!("| {k} | {v} |");
    }
    println!("\nReproduce: `{cmd}`");
    let json = serde_json::json!({
        "scenario": "workload",
        "simulated_secs": report.simulated.as_secs(),
        "wall_secs": report.elapsed.as_secs_f64(),
        "actions": report.actions,
        "refused": report.refused,
        "rows_per_table": report.rows_per_table,
        "command": cmd,
    });
    let names: Vec<String> = report.rows_per_table.keys().cloned().collect();
    let chart = rig::svg(
        &format!("workload: row changes per table ({})", names.join(", ")),
        "tables",
        &(1..=names.len()).map(|i| i as f64).collect::<Vec<f64>>(),
        &[(
            "row changes",
            "steelblue",
            report.rows_per_table.values().map(|v| *v as f64).collect(),
        )],
    );
    rig::write_results("workload", &json, &chart)
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.scenario {
        Scenario::Decode {
            rows,
            txns,
            runs,
            big_txn_rows,
        } => decode(rows, txns, runs.max(1), big_txn_rows),
        Scenario::Workload {
            minutes,
            base_rate,
            connections,
        } => workload(minutes, base_rate, connections),
        Scenario::Peak(peak) => peak::run(&peak.params()),
        Scenario::ScaleOut {
            peak,
            fluvio_endpoint,
        } => {
            let Some(endpoint) = fluvio_endpoint else {
                bail!("scale-out needs a Fluvio cluster: --fluvio-endpoint host:port or ODOO_CDC_FLUVIO_ENDPOINT (pipeline/docs/scale-out.md says how to start one)");
            };
            scaleout::run(&peak.params(), &endpoint)
        }
        Scenario::Saturate {
            base_rate,
            step_secs,
            max_steps,
            backlog_secs,
        } => saturate::run(base_rate, step_secs.max(5), max_steps, backlog_secs.max(10)),
        Scenario::Snapshot {
            quants,
            orders,
            runs,
        } => snapshot::run(quants, orders, runs.max(1)),
        Scenario::Webhooks {
            count,
            concurrency,
            cache_ttl_secs,
        } => webhooks::run(count, concurrency.max(1), cache_ttl_secs),
        Scenario::Workbench {
            dead_letters,
            audit_lines,
            runs,
        } => workbench::run(dead_letters, audit_lines, runs.max(1)),
        Scenario::Measure { argv } => measure_child(&argv),
    }
}
