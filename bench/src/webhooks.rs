//! `webhooks`: Shopify `orders/create` webhooks into odoo-cdc's receiver (HMAC check, durable
//! inbox commit before the 200) and on into Odoo through the Odoo RPC emulator. Reports
//! webhooks accepted per second with p50 / p99 / p99.9 answer times, orders applied to Odoo per
//! second, and — the baseline, same cluster, same concurrency — plain single-row durable
//! INSERT commits per second, the physical limit of "committed before the 200".

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use fixtures::emulator::odoo_rpc::{OdooRpcConfig, OdooRpcEmulator};
use fixtures::emulator::signing::sign;
use fixtures::TempCluster;
use pipeline::config::{Odoo, Secret, Webhooks, DEFAULT_MAX_BODY_BYTES, DEFAULT_SHIPPING_SKU};
use pipeline::runtime::Shared;
use serde_json::json;

use crate::rig::{svg, write_results};

const SHOP: &str = "bench.myshopify.com";
const SECRET: &str = "bench-secret";

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Runs the scenario.
pub fn run(count: usize, concurrency: usize, cache_ttl_secs: u64) -> Result<()> {
    let cluster = TempCluster::start()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let admin = cluster.superuser_client("odoo").await?;
        let info = fixtures::odoo::create(
            &admin,
            &fixtures::odoo::SeedConfig {
                products: 200,
                customers: 10,
                max_opening_qty: 10_000,
                ..fixtures::odoo::SeedConfig::default()
            },
        )
        .await?;
        let odoo_rpc =
            OdooRpcEmulator::start(OdooRpcConfig::new(&cluster.superuser_url("odoo")), 0).await?;
        let source: cdc::SourceConfig = cluster.url().parse()?;
        let state_db = pipeline::state::StateDb::connect(&source).await?;
        let state = state_db.client().await?;
        pipeline::state::migrate(&state).await?;
        let shared = Arc::new(Shared {
            state: Some(state_db.clone()),
            ..Shared::default()
        });
        let (db, login, key, _) = odoo_rpc.credentials();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (addr, _server) = pipeline::cli::run::start_writeback(
            &Webhooks {
                listen: "127.0.0.1:0".into(),
                shop_domain: SHOP.into(),
                secret: Secret(SECRET.into()),
                previous_secret: Secret::default(),
                max_body_bytes: DEFAULT_MAX_BODY_BYTES,
                workers: 4,
            },
            &Odoo {
                url: odoo_rpc.url(),
                database: db,
                login,
                api_key: Secret(key),
                protocol: "jsonrpc".into(),
                shipping_sku: DEFAULT_SHIPPING_SKU.into(),
                warehouse: None,
                rounding_sku: None,
                default_customer: None,
                variant_map: Default::default(),
                cache_ttl_secs,
            },
            None,
            &source,
            &shared,
            stop.clone(),
        )
        .await?;
        let url = format!("http://{addr}/webhooks/shopify");

        // Baseline: durable single-row commits at the same concurrency, on the same server.
        state
            .batch_execute("CREATE TABLE odoo_cdc.bench_commits (id bigserial PRIMARY KEY, event_id text UNIQUE, body text)")
            .await?;
        let body_len = 900;
        let started = Instant::now();
        let mut tasks = Vec::new();
        for t in 0..concurrency {
            let client = source.sql_client().await?;
            let per = count / concurrency + usize::from(t < count % concurrency);
            tasks.push(tokio::spawn(async move {
                let pad = "x".repeat(body_len);
                for i in 0..per {
                    client
                        .execute(
                            "INSERT INTO odoo_cdc.bench_commits (event_id, body) VALUES ($1, $2)",
                            &[&format!("{t}-{i}"), &pad],
                        )
                        .await?;
                }
                Ok::<_, tokio_postgres::Error>(())
            }));
        }
        for t in tasks {
            t.await??;
        }
        let baseline_secs = started.elapsed().as_secs_f64();
        let baseline_rate = count as f64 / baseline_secs;

        // Webhooks: signed orders/create bodies, `concurrency` in flight.
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(concurrency)
            .build()?;
        let started = Instant::now();
        let mut tasks = Vec::new();
        for t in 0..concurrency {
            let per = count / concurrency + usize::from(t < count % concurrency);
            let http = http.clone();
            let url = url.clone();
            let skus: Vec<String> = info.products.iter().map(|p| p.sku.clone()).collect();
            tasks.push(tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(per);
                for i in 0..per {
                    let id = 5_000_000_000_000u64 + (t * 1_000_000 + i) as u64;
                    let body = json!({
                        "id": id, "name": format!("#{id}"), "email": format!("c{}@example.com", i % 50),
                        "customer": {"first_name": "Bench", "last_name": format!("{}", i % 50)},
                        "line_items": [{"id": id * 10, "sku": skus[(t + i) % skus.len()], "title": "Item",
                                        "quantity": 1, "price": "19.99", "tax_lines": [], "discount_allocations": []}],
                        "shipping_lines": [],
                    })
                    .to_string();
                    let sig = sign(SECRET.as_bytes(), body.as_bytes());
                    let t0 = Instant::now();
                    let resp = http
                        .post(&url)
                        .header("content-type", "application/json")
                        .header("x-shopify-topic", "orders/create")
                        .header("x-shopify-shop-domain", SHOP)
                        .header("x-shopify-hmac-sha256", sig)
                        .header("x-shopify-event-id", format!("ev-{id}"))
                        .header("x-shopify-webhook-id", format!("wh-{id}"))
                        .body(body)
                        .send()
                        .await?;
                    let status = resp.status();
                    let _ = resp.bytes().await;
                    latencies.push((t0.elapsed().as_secs_f64(), started.elapsed().as_secs_f64()));
                    if !status.is_success() {
                        anyhow::bail!("webhook answered {status}");
                    }
                }
                Ok(latencies)
            }));
        }
        let mut answers = Vec::with_capacity(count);
        for t in tasks {
            answers.extend(t.await??);
        }
        let accept_secs = started.elapsed().as_secs_f64();
        let mut latencies: Vec<f64> = answers.iter().map(|(l, _)| *l).collect();
        latencies.sort_by(f64::total_cmp);
        // Over time, a sample every 100 ms: webhooks accepted and orders applied so far.
        let mut series: Vec<(f64, f64, f64)> = Vec::new();
        let accepted_by = |t: f64| answers.iter().filter(|(_, at)| *at <= t).count() as f64;
        // Applied to Odoo: until every row is done.
        let deadline = Instant::now() + Duration::from_secs(900);
        loop {
            let done: i64 = state
                .query_one("SELECT count(*) FROM odoo_cdc.inbox WHERE status <> 'pending'", &[])
                .await?
                .get(0);
            let t = started.elapsed().as_secs_f64();
            series.push((t, accepted_by(t), done as f64));
            if done as usize >= count || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let apply_secs = started.elapsed().as_secs_f64();
        let row = state
            .query_one(
                "SELECT count(*) FILTER (WHERE status = 'done'), count(*) FILTER (WHERE status = 'dead') FROM odoo_cdc.inbox",
                &[],
            )
            .await?;
        let (applied, dead): (i64, i64) = (row.get(0), row.get(1));
        let orders: i64 = admin
            .query_one("SELECT count(*) FROM sale_order WHERE client_order_ref LIKE 'shopify:%' AND state = 'sale'", &[])
            .await?
            .get(0);
        // Every Odoo RPC call the write-back makes is in the audit trail.
        let rpc_calls: i64 = state
            .query_one("SELECT count(*) FROM odoo_cdc.audit WHERE kind = 'rpc'", &[])
            .await?
            .get(0);
        let rpc_per_order = rpc_calls as f64 / (applied.max(1) as f64);
        stop.store(true, std::sync::atomic::Ordering::SeqCst);

        let accept_rate = count as f64 / accept_secs;
        let apply_rate = applied as f64 / apply_secs;
        let (p50, p99, p999) = (
            quantile(&latencies, 0.5) * 1000.0,
            quantile(&latencies, 0.99) * 1000.0,
            quantile(&latencies, 0.999) * 1000.0,
        );
        let cmd = format!("cargo run --release -p bench -- webhooks --count {count} --concurrency {concurrency} --cache-ttl-secs {cache_ttl_secs}");
        println!("## webhooks: {count} signed orders/create webhooks, {concurrency} in flight, lookups cached {cache_ttl_secs} s\n");
        println!("| path | per second | ratio | p50 ms | p99 ms | p99.9 ms |\n|---|---:|---:|---:|---:|---:|");
        println!("| baseline: single-row durable INSERT commits | {baseline_rate:.0} | 1.00 | | | |");
        println!(
            "| webhooks accepted (HMAC, inbox commit, 200) | {accept_rate:.0} | {:.2} | {p50:.1} | {p99:.1} | {p999:.1} |",
            accept_rate / baseline_rate
        );
        println!(
            "| orders applied to Odoo (RPC: search, partner, create, confirm) | {apply_rate:.0} | {:.2} | | | |",
            apply_rate / baseline_rate
        );
        println!("\n{applied} applied, {dead} dead-lettered; {orders} confirmed Shopify orders in Odoo; {rpc_per_order:.1} Odoo RPC calls per order ({rpc_calls} in all).");
        println!("\nReproduce: `{cmd}`");
        let out = json!({
            "scenario": "webhooks",
            "count": count,
            "concurrency": concurrency,
            "baseline_commits_per_sec": baseline_rate,
            "accepted_per_sec": accept_rate,
            "applied_per_sec": apply_rate,
            "answer_ms": {"p50": p50, "p99": p99, "p99_9": p999},
            "applied": applied,
            "dead": dead,
            "orders_in_odoo": orders,
            "rpc_calls": rpc_calls,
            "rpc_calls_per_order": rpc_per_order,
            "cache_ttl_secs": cache_ttl_secs,
            "command": cmd,
        });
        let t: Vec<f64> = series.iter().map(|s| s.0).collect();
        let per_sec = |pick: fn(&(f64, f64, f64)) -> f64| -> Vec<f64> {
            series
                .iter()
                .enumerate()
                .map(|(i, s)| match i.checked_sub(1).and_then(|j| series.get(j)) {
                    Some(prev) => (pick(s) - pick(prev)) / (s.0 - prev.0).max(1e-3),
                    None => pick(s) / s.0.max(1e-3),
                })
                .collect()
        };
        let chart = svg(
            "webhooks: accepted/s, applied to Odoo/s, inbox backlog",
            "s",
            &t,
            &[
                ("accepted/s", "steelblue", per_sec(|s| s.1)),
                ("applied/s", "seagreen", per_sec(|s| s.2)),
                ("inbox backlog", "crimson", series.iter().map(|s| s.1 - s.2).collect()),
            ],
        );
        write_results("webhooks", &out, &chart)?;
        Ok::<(), anyhow::Error>(())
    })
    .context("webhooks scenario")
}
