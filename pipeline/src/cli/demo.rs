//! `odoo-cdc demo`: the whole product on the embedded default. A throwaway PostgreSQL with an
//! Odoo-shaped database, the Shopify / WMS / accounting / Odoo emulators, the pipeline from the
//! slot's snapshot on, and a scripted retail day: orders, deliveries, receipts, invoices,
//! payments, refunds, storefront sales racing Odoo, a Shopify outage and its recovery, and a
//! product Shopify does not know (its events go to the dead-letter list with the reason).

use std::collections::BTreeMap;
use std::io::Write;
use std::str::FromStr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use fixtures::emulator::accounting::{AccountingConfig as AcctEmuCfg, AccountingEmulator};
use fixtures::emulator::odoo_rpc::{OdooRpcConfig, OdooRpcEmulator};
use fixtures::emulator::shopify::{ShopifyConfig as ShopEmuCfg, ShopifyEmulator};
use fixtures::emulator::wms::{WmsConfig as WmsEmuCfg, WmsEmulator};
use fixtures::emulator::{Faults, Outage};
use fixtures::odoo::{self, SeedConfig};
use fixtures::workload::{self, Profile, WorkloadConfig};
use fixtures::TempCluster;
use rust_decimal::Decimal;
use serde_json::json;

use crate::cli::scale::TWO_WORKERS;
use crate::runtime::{self, RunOptions, Shared};

/// Parses `30s`, `2m`, `1h` or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: use e.g. 30s, 2m"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("invalid duration unit in {s:?}: use s, m or h")),
    };
    Ok(Duration::from_secs(secs))
}

/// Runs the demo; returns whether every invariant held. SIGTERM or Ctrl-C at any point stops it,
/// and its PostgreSQL is stopped and removed on every way out (dropping the demo drops the
/// cluster).
///
/// With `scale_out` (a Fluvio cluster's endpoint) the same day runs scaled out: a reader writes
/// the slot's events to topics of their own on the cluster, one worker delivers Shopify's
/// (inventory and fulfillments) and another the WMS's and the books'; the topics are deleted
/// afterwards.
pub async fn run(
    duration: Duration,
    keep_running: bool,
    scale_out: Option<String>,
) -> Result<bool> {
    let summary = std::sync::Arc::new(std::sync::Mutex::new(None));
    // Scaled out, the cluster must answer before anything starts.
    let cluster_log = match &scale_out {
        Some(endpoint) => Some(ScaleOut::connect(endpoint).await?),
        None => None,
    };
    let r = tokio::select! {
        r = run_inner(duration, keep_running, cluster_log.as_ref(), summary.clone()) => r,
        () = crate::cli::run::stop_signal() => {
            eprintln!("demo: stopped; removing its PostgreSQL and emulators");
            Ok(summary.lock().ok().and_then(|g| *g).unwrap_or(false))
        }
    };
    // Its topics go on every way out, as its PostgreSQL does.
    if let Some(s) = &cluster_log {
        s.remove_topics().await;
    }
    r
}

async fn run_inner(
    duration: Duration,
    keep_running: bool,
    cluster_log: Option<&ScaleOut>,
    summary: std::sync::Arc<std::sync::Mutex<Option<bool>>>,
) -> Result<bool> {
    let say = |m: &str| eprintln!("demo: {m}");
    say("starting a throwaway PostgreSQL (initdb, wal_level=logical)");
    let cluster = tokio::task::spawn_blocking(TempCluster::start).await??;
    let admin = cluster.superuser_client("odoo").await?;
    say("seeding an Odoo 18 database: 2 warehouses, 200 products, 100 customers");
    let info = odoo::create(
        &admin,
        &SeedConfig {
            products: 200,
            customers: 100,
            ..SeedConfig::default()
        },
    )
    .await?;
    let tables: Vec<&str> = cdc::slot::ODOO_TABLES.to_vec();
    admin
        .batch_execute(&format!(
            "CREATE PUBLICATION odoo_cdc FOR TABLE {}",
            tables.join(", ")
        ))
        .await?;

    say("starting the Odoo, Shopify, WMS and accounting emulators and the webhook receiver");
    let odoo_rpc =
        OdooRpcEmulator::start(OdooRpcConfig::new(&cluster.superuser_url("odoo")), 0).await?;
    // odoo-cdc's own state (inbox, outbox, dead letters, audit) in the odoo_cdc schema.
    let source = cdc::SourceConfig::from_str(&cluster.url())?;
    let state_db = crate::state::StateDb::connect(&source).await?;
    let state = state_db.client().await?;
    crate::state::migrate(&state).await?;
    let shared = Arc::new(Shared {
        state: Some(state_db.clone()),
        ..Shared::default()
    });
    let shop_defaults = ShopEmuCfg::default();
    let (emu_db, emu_login, emu_key, _) = odoo_rpc.credentials();
    let inbox_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (hook_addr, _receiver) = crate::cli::run::start_writeback(
        &crate::config::Webhooks {
            listen: "127.0.0.1:0".into(),
            shop_domain: shop_defaults.shop_domain.clone(),
            secret: crate::config::Secret(shop_defaults.client_secret.clone()),
            previous_secret: crate::config::Secret::default(),
            max_body_bytes: crate::config::DEFAULT_MAX_BODY_BYTES,
            workers: 4,
        },
        &crate::config::Odoo {
            url: odoo_rpc.url(),
            database: emu_db,
            login: emu_login,
            api_key: crate::config::Secret(emu_key),
            protocol: "jsonrpc".into(),
            shipping_sku: crate::config::DEFAULT_SHIPPING_SKU.into(),
            warehouse: None,
            rounding_sku: None,
            default_customer: Some("Shopify walk-in customer".into()),
            variant_map: Default::default(),
            cache_ttl_secs: crate::config::DEFAULT_CACHE_TTL_SECS,
        },
        Some(&crate::config::WmsWebhooks {
            secret: crate::config::Secret(WmsEmuCfg::default().webhook_secret),
            previous_secret: crate::config::Secret::default(),
            backorder: crate::config::Backorder::Create,
            tracking_urls: BTreeMap::new(),
        }),
        &source,
        &shared,
        inbox_stop.clone(),
    )
    .await?;
    let shopify = ShopifyEmulator::start(
        ShopEmuCfg {
            webhook_url: Some(format!("http://{hook_addr}/webhooks/shopify")),
            webhook_delay: Duration::from_millis(500),
            webhook_jitter: Duration::from_millis(500),
            duplicate_rate: 0.1,
            ..shop_defaults
        },
        0,
    )
    .await?;
    for p in &info.products {
        shopify.add_item(&p.sku, &[(1, 0), (2, 0)]);
    }
    // The warehouse ships 20 s after an order, a third of them in two parcels, and tells
    // odoo-cdc by webhook (sometimes twice, sometimes late and out of order).
    let wms = WmsEmulator::start(
        WmsEmuCfg {
            ship_delay: Duration::from_secs(20),
            webhook_url: Some(format!("http://{hook_addr}/webhooks/wms")),
            split_rate: 0.3,
            duplicate_rate: 0.1,
            webhook_jitter: Duration::from_secs(2),
            webhook_backoff: Duration::from_secs(1),
            ..WmsEmuCfg::default()
        },
        0,
    )
    .await?;
    let acct_cfg = AcctEmuCfg::default();
    let accounting = AccountingEmulator::start(acct_cfg.clone(), 0).await?;

    // A product Shopify does not sell: its stock changes go to the dead-letter list.
    admin
        .batch_execute(&format!(
            "WITH t AS (INSERT INTO product_template (categ_id, uom_id, uom_po_id, type, service_tracking, default_code, name, list_price, \
             sale_ok, active, is_storable, tracking, sale_line_warn, purchase_line_warn) VALUES (1, 1, 1, 'consu', 'no', 'LOCAL-ONLY', \
             '{{\"en_US\": \"Store-only gift card\"}}', 25, true, true, true, 'none', 'no-message', 'no-message') RETURNING id) \
             INSERT INTO product_product (product_tmpl_id, default_code, active) SELECT id, 'LOCAL-ONLY', true FROM t; \
             INSERT INTO stock_quant (product_id, company_id, location_id, quantity, reserved_quantity, in_date) \
             SELECT id, 1, {}, 5, 0, now() FROM product_product WHERE default_code = 'LOCAL-ONLY'",
            info.warehouses[0].stock_location_id
        ))
        .await?;

    let location_map: BTreeMap<String, String> = info
        .warehouses
        .iter()
        .enumerate()
        .map(|(i, w)| (w.code.clone(), format!("gid://shopify/Location/{}", i + 1)))
        .collect();
    // The configuration `odoo-cdc run` would have for these systems: the sinks are built from
    // it as `run` builds them (the books' rolling refresh token kept in odoo-cdc's state), and
    // the workbench acts with it.
    let ui_token = crate::ui::auth::random_token();
    let mut demo_cfg = demo_config(
        &cluster.url(),
        &shopify.graphql_url(),
        &location_map,
        &wms.url(),
        &accounting.url(),
        &acct_cfg,
        &ui_token,
    )?;
    if let Some(s) = cluster_log {
        demo_cfg.fluvio = Some(s.section.clone());
    }

    say("creating the slot with an exported snapshot and reading the published tables");
    let snapshot = crate::runtime::capture::snapshot(
        &source,
        "odoo_cdc",
        "odoo_cdc",
        transforms::OdooVersion::V18,
    )
    .await?;
    say(&format!(
        "snapshot: {} rows at {}",
        snapshot.rows, snapshot.lsn
    ));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let opts = RunOptions {
        source: source.clone(),
        slot: "odoo_cdc".into(),
        publication: "odoo_cdc".into(),
        snapshot: Some(snapshot),
        restore: None,
        restore_is_initial: false,
        bootstrap_key: None,
        queue_capacity: 10_000,
        partitions: 8,
        max_hold: Duration::from_secs(60),
        odoo_version: transforms::OdooVersion::V18,
        resync_since: None,
    };
    let sinks = crate::cli::run::build_sinks(&demo_cfg, &state_db).await?;
    let (runner, deployment) = match cluster_log {
        None => {
            let sinks = sinks.into_runtime(&shared);
            let runner = {
                let shared = shared.clone();
                tokio::spawn(async move {
                    runtime::run(opts, sinks, shared, async {
                        let _ = stop_rx.await;
                    })
                    .await
                })
            };
            (runner, Deployment::single(shared.clone()))
        }
        Some(s) => {
            let routes = sinks.into_routes(&shared);
            let publisher =
                crate::cli::scale::publisher(&demo_cfg, s.log.clone(), routes, shared.clone())
                    .await?;
            let runner = {
                let shared = shared.clone();
                tokio::spawn(async move {
                    runtime::run_on(opts, Box::new(publisher), shared, async {
                        let _ = stop_rx.await;
                    })
                    .await
                })
            };
            let deployment =
                Deployment::scaled_out(shared.clone(), &demo_cfg, &source, s, &state_db);
            say(&format!(
                "scaled out on Fluvio at {}: a reader into topics {}-*, a worker for {} and one for {}",
                s.section.endpoint,
                s.section.topic_prefix,
                TWO_WORKERS[0].join(" + "),
                TWO_WORKERS[1].join(" + ")
            ));
            (runner, deployment)
        }
    };
    let health = crate::ops::health::serve(shared.clone(), 0).await?;
    // The workbench over the demo's own systems, for an operator with a token made for this run.
    let workbench = crate::ui::serve(&demo_cfg, shared.clone(), state_db.clone())
        .await?
        .context("the demo's workbench")?;
    say(&format!(
        "workbench on {} (log in with the token {ui_token}; operator)",
        workbench.url()
    ));

    say(&format!(
        "running a scripted retail day for {}s (Shopify goes down for a while in the middle)",
        duration.as_secs()
    ));
    let started = Instant::now();
    let outage_at = shopify.core().clock.now().as_secs_f64() + duration.as_secs_f64() * 0.4;
    shopify.core().set_faults(Faults {
        outages: vec![Outage {
            start_secs: outage_at,
            end_secs: outage_at + duration.as_secs_f64() * 0.15,
        }],
        ..Faults::default()
    });
    let day = WorkloadConfig {
        seed: 7,
        base_rate: 1.5,
        duration: duration.mul_f64(0.8),
        profile: Profile::Steady,
        time_scale: 1.0,
        connections: 2,
        hot_skus: 5,
    };
    let work = {
        let url = cluster.superuser_url("odoo");
        let info = info.clone();
        tokio::spawn(async move { workload::run(&url, &info, &day).await })
    };
    // Storefront sales race Odoo on the hot SKUs; their webhooks become Odoo orders.
    let http = reqwest::Client::new();
    let mut storefront_sales = 0u32;
    let mut refused_sales = 0u32;
    let mut refunded = None;
    while started.elapsed() < duration.mul_f64(0.8) {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let sku = &info.products[(storefront_sales as usize) % 5].sku;
        let r = http
            .post(format!("{}/_emulator/storefront/orders", shopify.url()))
            .json(&json!({
                "line_items": [{"sku": sku, "quantity": 1, "price": "19.99",
                                "tax_lines": [{"title": "Sales tax", "rate": "0.15", "price": "3.00"}]}],
                "location_id": 1,
                "customer": {"email": format!("shopper{}@example.com", storefront_sales % 7), "first_name": "Shopper"},
                "shipping_lines": [{"title": "Standard", "price": "4.90"}],
                // Every fifth sale is a POS sale: no customer at all, as real stores send them.
                "anonymous": storefront_sales % 5 == 4,
            }))
            .send()
            .await;
        match r {
            Ok(r) if r.status().as_u16() == 201 => {
                storefront_sales += 1;
                let order: serde_json::Value = r.json().await.unwrap_or_default();
                // One customer sends a parcel back: refunded in Shopify, a credit note in Odoo.
                if refunded.is_none() && storefront_sales == 2 {
                    let line = order["line_items"][0]["id"].clone();
                    let id = order["id"].to_string();
                    let r = http
                        .post(format!("{}/_emulator/storefront/orders/{id}/refunds", shopify.url()))
                        .json(&json!({"refund_line_items": [{"line_item_id": line, "quantity": 1, "restock_type": "no_restock"}],
                                      "shipping": "4.90"}))
                        .send()
                        .await;
                    if let Some(r) = r.ok().filter(|r| r.status().is_success()) {
                        let body: serde_json::Value = r.json().await.unwrap_or_default();
                        let amount = body["transactions"][0]["amount"]
                            .as_str()
                            .unwrap_or("")
                            .to_string();
                        refunded = Some((id, amount));
                    }
                }
            }
            _ => refused_sales += 1,
        }
    }
    let report = work.await.context("workload task")??;
    say("workload done; waiting for the pipeline to catch up");
    let end_lsn: cdc::Lsn = admin
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await?
        .get::<_, String>(0)
        .parse()?;
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut wms_quiet_at: Option<cdc::Lsn> = None;
    while Instant::now() < deadline {
        // A transaction on a published table moves the read position past the end mark.
        admin
            .batch_execute("UPDATE res_currency SET write_date = now() WHERE id = 1")
            .await?;
        // Every storefront order's webhook has arrived and nothing waits in the inbox.
        let inbox = state
            .query_one(
                "SELECT count(*) FILTER (WHERE status = 'pending'), \
                 count(DISTINCT order_key) FILTER (WHERE topic = 'orders/create') FROM odoo_cdc.inbox",
                &[],
            )
            .await?;
        let (inbox_open, arrived): (i64, i64) = (inbox.get(0), inbox.get(1));
        // The warehouse has shipped (or dropped) every order it holds and odoo-cdc has
        // acknowledged every one of its webhooks: then what they did in Odoo must be through
        // the stream too (a position read once it was so, `wms_quiet_at`).
        let acknowledged: std::collections::BTreeSet<String> = wms
            .deliveries()
            .iter()
            .filter(|d| (200..300).contains(&d["status"].as_u64().unwrap_or(0)))
            .filter_map(|d| d["event_id"].as_str().map(str::to_string))
            .collect();
        let wms_quiet = wms
            .orders()
            .values()
            .all(|o| o.status == "shipped" || o.status == "cancelled")
            && wms
                .events()
                .iter()
                .all(|e| acknowledged.contains(&e.event_id));
        let now_lsn: cdc::Lsn = admin
            .query_one("SELECT pg_current_wal_lsn()::text", &[])
            .await?
            .get::<_, String>(0)
            .parse()?;
        let through = deployment.delivered_through();
        let passed = wms_quiet_at.is_some_and(|l: cdc::Lsn| through >= l.0);
        if through >= end_lsn.0
            && deployment.settled()
            && inbox_open == 0
            && arrived >= i64::from(storefront_sales)
            && wms_quiet
            && passed
        {
            break;
        }
        wms_quiet_at = if wms_quiet && inbox_open == 0 {
            wms_quiet_at.or(Some(now_lsn))
        } else {
            None
        };
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let caught_up = deployment.settled();
    let mut ok = caught_up;

    // Summary.
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "\n== odoo-cdc demo: {}s of a retail day ==",
        started.elapsed().as_secs()
    )?;
    writeln!(
        out,
        "odoo actions: {}",
        report
            .actions
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    )?;
    writeln!(
        out,
        "storefront sales: {storefront_sales} taken, {refused_sales} refused (no stock in Shopify)"
    )?;
    let row = admin
        .query_one(
            "SELECT count(*) FILTER (WHERE o.state = 'sale'), \
             count(DISTINCT o.id) FILTER (WHERE p.state NOT IN ('assigned', 'done', 'cancel')) \
             FROM sale_order o LEFT JOIN stock_picking p ON p.sale_id = o.id WHERE o.client_order_ref LIKE 'shopify:%'",
            &[],
        )
        .await?;
    let (in_odoo, short): (i64, i64) = (row.get(0), row.get(1));
    let (applied, dead_webhooks): (i64, i64) = {
        let r = state
            .query_one(
                "SELECT count(*) FILTER (WHERE status = 'done'), count(*) FILTER (WHERE status = 'dead') FROM odoo_cdc.inbox",
                &[],
            )
            .await?;
        (r.get(0), r.get(1))
    };
    writeln!(
        out,
        "shopify webhooks: {applied} applied to Odoo, {dead_webhooks} dead-lettered; {in_odoo} Shopify orders confirmed in Odoo, \
         {short} not fully reservable (oversell incidents: Odoo's own sales took the stock first)"
    )?;
    ok &= in_odoo == i64::from(storefront_sales);
    if let Some((id, amount)) = &refunded {
        let credit: Option<(String, String)> = admin
            .query_opt(
                "SELECT name || ' (' || state || ')', round(amount_total, 2)::text FROM account_move WHERE ref LIKE 'shopify-refund:%' \
                 AND invoice_origin IN (SELECT name FROM sale_order WHERE client_order_ref = $1)",
                &[&format!("shopify:{id}")],
            )
            .await?
            .map(|r| (r.get(0), r.get(1)));
        writeln!(
            out,
            "shopify refund of order {id} (a line, its tax and the shipping: {amount} returned): credit note {}",
            credit
                .as_ref()
                .map_or_else(|| "MISSING".to_string(), |(c, total)| format!("{c} for {total}"))
        )?;
        ok &= credit.is_some_and(|(c, total)| c.ends_with("(posted)") && &total == amount);
    }
    writeln!(
        out,
        "transactions read from the slot: {}",
        shared.transactions.load(Ordering::Relaxed)
    )?;
    writeln!(out, "\n| sink | delivered | retries | dead-lettered | latency p50 ≤ ms | p99 ≤ ms |\n|---|---:|---:|---:|---:|---:|")?;
    let stats = deployment.stats();
    for (name, s) in &stats {
        writeln!(
            out,
            "| {name} | {} | {} | {} | {:.1} | {:.1} |",
            s.delivered.load(Ordering::Relaxed),
            s.retries.load(Ordering::Relaxed),
            s.dead.load(Ordering::Relaxed),
            s.latency.quantile(0.5) * 1000.0,
            s.latency.quantile(0.99) * 1000.0
        )?;
    }
    writeln!(out, "\nShopify vs Odoo for the hot SKUs (WH / location 1):\n| sku | odoo sellable | shopify available | sold in Shopify (now Odoo orders) |\n|---|---:|---:|---:|")?;
    let state: serde_json::Value = http
        .get(format!("{}/_emulator/state", shopify.url()))
        .send()
        .await?
        .json()
        .await?;
    for p in info.products.iter().take(5) {
        let sellable: Decimal = admin
            .query_one(
                "SELECT coalesce(sum(q.quantity - q.reserved_quantity), 0) FROM stock_quant q JOIN stock_location l ON l.id = q.location_id \
                 WHERE q.product_id = $1 AND l.usage = 'internal' AND l.warehouse_id = $2",
                &[&p.id, &info.warehouses[0].id],
            )
            .await?
            .get(0);
        let available = state["levels"]
            .as_array()
            .and_then(|ls| {
                ls.iter()
                    .find(|l| l["sku"] == p.sku.as_str() && l["location_id"] == 1)
            })
            .and_then(|l| l["quantities"]["available"].as_i64())
            .unwrap_or(-1);
        let sold: i64 = state["orders"]
            .as_array()
            .map(|os| {
                os.iter()
                    .flat_map(|o| o["line_items"].as_array().cloned().unwrap_or_default())
                    .filter(|li| li["sku"] == p.sku.as_str())
                    .map(|li| li["quantity"].as_i64().unwrap_or(0))
                    .sum()
            })
            .unwrap_or(0);
        // Shopify's sales are Odoo orders now (their reservations are in the sellable
        // quantity); whatever Odoo reserved beyond its stock is what other channels took.
        let _ = sold;
        let expected = sellable
            .floor()
            .to_string()
            .parse::<i64>()
            .unwrap_or(0)
            .max(0);
        ok &= available == expected;
        writeln!(
            out,
            "| {} | {} | {available} | {sold} |",
            p.sku,
            sellable.normalize()
        )?;
    }
    let wms_refs = wms.orders();
    let wms_orders = wms_refs.len();
    // Every ready or shipped delivery is at the warehouse: under its own reference, or (a
    // backorder left by a partial shipment) under its parent's order, which holds the rest.
    let pickings = admin
        .query(
            "SELECT p.id, p.name, p.backorder_id, (p.state IN ('assigned', 'done') OR p.id IN (SELECT picking_id FROM stock_move WHERE state = 'done'))              FROM stock_picking p JOIN stock_picking_type t ON t.id = p.picking_type_id WHERE t.code = 'outgoing'",
            &[],
        )
        .await?;
    let by_id: std::collections::HashMap<i32, (String, Option<i32>)> = pickings
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect();
    let (mut ready, mut at_wms, mut under_parent) = (0u64, 0u64, 0u64);
    for r in pickings.iter().filter(|r| r.get::<_, bool>(3)) {
        ready += 1;
        let name: String = r.get(1);
        if wms_refs.contains_key(&name) {
            at_wms += 1;
            continue;
        }
        let mut parent: Option<i32> = r.get(2);
        for _ in 0..16 {
            let Some((pname, up)) = parent.and_then(|p| by_id.get(&p)) else {
                break;
            };
            if wms_refs.contains_key(pname) {
                at_wms += 1;
                under_parent += 1;
                break;
            }
            parent = *up;
        }
    }
    let posted: i64 = admin
        .query_one(
            "SELECT count(*) FROM account_move WHERE state = 'posted'",
            &[],
        )
        .await?
        .get(0);
    writeln!(
        out,
        "\nwarehouse: {at_wms} of {ready} ready or shipped Odoo deliveries at the WMS ({wms_orders} fulfillment orders; {under_parent} backorders held under their parent's order)"
    )?;
    ok &= at_wms == ready;
    // Shipments: what the warehouse shipped reached Odoo once, and Shopify fulfilled exactly
    // what Odoo delivered of its orders.
    let t = state_db
        .client()
        .await?
        .query_one(
            "SELECT count(*) FILTER (WHERE status = 'done'), count(DISTINCT reference) FILTER (WHERE sequence > 1), \
             (SELECT count(*) FROM odoo_cdc.inbox WHERE shop_domain = 'wms' AND status = 'dead') \
             FROM odoo_cdc.transfers WHERE kind = 'shipment'",
            &[],
        )
        .await?;
    let (parcels, split, dead_parcels): (i64, i64, i64) = (t.get(0), t.get(1), t.get(2));
    let delivered: Decimal = admin
        .query_one(
            "SELECT coalesce(sum(l.qty_delivered), 0) FROM sale_order_line l JOIN sale_order o ON o.id = l.order_id \
             WHERE o.client_order_ref LIKE 'shopify:%'",
            &[],
        )
        .await?
        .get(0);
    let fulfilled: i64 = shopify
        .fulfillments()
        .iter()
        .filter(|f| f.status == "SUCCESS")
        .flat_map(|f| f.lines.iter().map(|l| l.3))
        .sum();
    let latency = deployment
        .fulfillments()
        .map(|f| (f.latency.quantile(0.5), f.latency.quantile(0.99)))
        .unwrap_or_default();
    writeln!(
        out,
        "shipments: {parcels} parcels applied to Odoo ({split} orders shipped in two), {dead_parcels} dead-lettered; \
         Shopify fulfilled {fulfilled} units of the {} Odoo delivered for Shopify orders ({} fulfillments, {} customer notifications); \
         shipment to fulfillment p50 ≤ {:.2} s, p99 ≤ {:.2} s",
        delivered.normalize(),
        shopify.fulfillments().len(),
        shopify.notifications().len(),
        latency.0,
        latency.1
    )?;
    ok &= Decimal::from(fulfilled) == delivered && dead_parcels == 0;
    writeln!(
        out,
        "accounting: {} journal entries for {posted} posted Odoo moves",
        accounting.entries().len()
    )?;
    let dead = deployment.dead_letters();
    writeln!(out, "dead-letter list: {} entries", dead.len())?;
    for d in dead.iter().take(5) {
        writeln!(
            out,
            "  {} {} (from {}): {}",
            d.sink, d.key, d.source_lsn, d.reason
        )?;
    }
    ok &= accounting.entries().len() as i64 == posted;
    writeln!(
        out,
        "\nresult: {}",
        if ok {
            "Shopify matches Odoo, every posted move booked once, nothing lost"
        } else {
            "MISMATCH (see above)"
        }
    )?;
    out.flush()?;
    drop(out);

    if keep_running {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "service postgres {}", cluster.superuser_url("odoo"));
        let _ = writeln!(out, "service odoo {}", odoo_rpc.url());
        let _ = writeln!(out, "service shopify {}", shopify.url());
        let _ = writeln!(out, "service wms {}", wms.url());
        let _ = writeln!(out, "service accounting {}", accounting.url());
        let _ = writeln!(out, "service odoo-cdc {}", health.url());
        let _ = writeln!(
            out,
            "service workbench {} token {ui_token}",
            workbench.url()
        );
        // A reader that stops reading must not stop the services.
        let _ = out.flush();
        drop(out);
        say("everything stays up; Ctrl-C or SIGTERM to stop");
        if let Ok(mut g) = summary.lock() {
            *g = Some(ok);
        }
        // The caller stops on the signal, and the cluster goes with this future.
        std::future::pending::<()>().await;
    }
    inbox_stop.store(true, Ordering::SeqCst);
    let _ = stop_tx.send(());
    let _ = runner.await;
    deployment.stop().await;
    Ok(ok)
}

/// The demo's Fluvio cluster: its log and the `[fluvio]` section of this run (topics and
/// consumers named for it, so that nothing of an earlier run is read).
struct ScaleOut {
    log: Arc<dyn crate::runtime::log::Log>,
    #[cfg(feature = "fluvio")]
    fluvio: Arc<crate::runtime::fluvio_log::FluvioLog>,
    section: crate::config::FluvioCfg,
}

impl ScaleOut {
    #[cfg(feature = "fluvio")]
    async fn connect(endpoint: &str) -> Result<Self> {
        let fluvio = crate::runtime::fluvio_log::FluvioLog::connect(endpoint)
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "demo --scale-out: {e} (start a Fluvio cluster there, see pipeline/docs/scale-out.md, or pass --fluvio-endpoint)"
                )
            })?;
        let fluvio = Arc::new(fluvio);
        let run = format!(
            "odoo-cdc-demo-{}-{}",
            std::process::id(),
            &crate::ui::auth::random_token()[..6]
        )
        .to_lowercase();
        Ok(Self {
            log: fluvio.clone(),
            fluvio,
            section: crate::config::FluvioCfg {
                endpoint: endpoint.to_string(),
                topic_prefix: run.clone(),
                partitions: 4,
                consumer_prefix: run,
                tls: None,
            },
        })
    }

    #[cfg(not(feature = "fluvio"))]
    async fn connect(endpoint: &str) -> Result<Self> {
        anyhow::bail!(
            "demo --scale-out ({endpoint}): this odoo-cdc was built without Fluvio; build it with `cargo build --release -p pipeline --features fluvio`"
        )
    }

    /// Deletes this run's topics.
    async fn remove_topics(&self) {
        #[cfg(feature = "fluvio")]
        for name in TWO_WORKERS.iter().flat_map(|w| w.iter()) {
            let topic = crate::runtime::log::topic_of(&self.section.topic_prefix, name);
            if let Err(e) = self.fluvio.delete_topic(&topic).await {
                eprintln!("demo: could not delete topic {topic}: {e}");
            }
        }
    }
}

/// The demo's pipeline: one process's runtime, or a reader and its workers (each with its own
/// counters, as separate processes would have).
struct Deployment {
    reader: Arc<Shared>,
    workers: Vec<Worker>,
}

struct Worker {
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<()>>,
}

impl Deployment {
    fn single(shared: Arc<Shared>) -> Self {
        Self {
            reader: shared,
            workers: Vec::new(),
        }
    }

    fn scaled_out(
        reader: Arc<Shared>,
        cfg: &crate::config::Config,
        source: &cdc::SourceConfig,
        scale: &ScaleOut,
        state: &Arc<crate::state::StateDb>,
    ) -> Self {
        let workers = TWO_WORKERS
            .iter()
            .map(|sinks| {
                let shared = Arc::new(Shared {
                    state: Some(state.clone()),
                    ..Shared::default()
                });
                let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
                let assignment = crate::cli::scale::Assignment {
                    sinks: sinks.iter().map(|s| s.to_string()).collect(),
                    partitions: None,
                };
                let (cfg, source, log, s) = (
                    cfg.clone(),
                    source.clone(),
                    scale.log.clone(),
                    shared.clone(),
                );
                let task = tokio::spawn(async move {
                    let r = crate::cli::scale::deliver(&cfg, &source, s, log, assignment, async {
                        let _ = stopped.await;
                    })
                    .await;
                    if let Err(e) = &r {
                        eprintln!("demo: a worker stopped: {e:#}");
                    }
                    r
                });
                Worker {
                    shared,
                    stop: Some(stop),
                    task,
                }
            })
            .collect();
        Self { reader, workers }
    }

    /// The source position through which every sink has delivered everything.
    fn delivered_through(&self) -> u64 {
        let confirmed = self.reader.confirmed.load(Ordering::SeqCst);
        if self.workers.is_empty() {
            return confirmed;
        }
        // A worker that stopped delivers nothing more.
        if self.workers.iter().any(|w| w.task.is_finished()) {
            return 0;
        }
        let delivered = self
            .workers
            .iter()
            .flat_map(|w| w.shared.stats.lock().map(|v| v.clone()).unwrap_or_default())
            .map(|(_, s)| s.delivered_marker.load(Ordering::SeqCst))
            .min()
            .unwrap_or(0);
        confirmed.min(delivered)
    }

    fn settled(&self) -> bool {
        if self.workers.is_empty() {
            return self.reader.settled();
        }
        self.reader.quiet() && self.workers.iter().all(|w| w.shared.settled())
    }

    fn stats(&self) -> Vec<(&'static str, Arc<crate::runtime::SinkStats>)> {
        let all = |s: &Shared| s.stats.lock().map(|v| v.clone()).unwrap_or_default();
        if self.workers.is_empty() {
            return all(&self.reader);
        }
        self.workers.iter().flat_map(|w| all(&w.shared)).collect()
    }

    fn fulfillments(&self) -> Option<Arc<crate::runtime::stats::FulfillmentStats>> {
        std::iter::once(&self.reader)
            .chain(self.workers.iter().map(|w| &w.shared))
            .find_map(|s| s.fulfillments.lock().ok().and_then(|g| g.clone()))
    }

    fn dead_letters(&self) -> Vec<crate::state::DeadLetter> {
        std::iter::once(&self.reader)
            .chain(self.workers.iter().map(|w| &w.shared))
            .flat_map(|s| s.dead_letters.lock().map(|d| d.clone()).unwrap_or_default())
            .collect()
    }

    /// Stops the workers (each delivers what it took first).
    async fn stop(mut self) {
        for w in &mut self.workers {
            if let Some(stop) = w.stop.take() {
                let _ = stop.send(());
            }
        }
        for w in self.workers {
            let _ = tokio::time::timeout(Duration::from_secs(40), w.task).await;
        }
    }
}

/// The configuration `odoo-cdc run` would have for the demo's systems: what its sinks and the
/// workbench's actions (replay, reconcile) are built from.
fn demo_config(
    source: &str,
    shopify: &str,
    locations: &BTreeMap<String, String>,
    wms: &str,
    accounting: &str,
    acct: &AcctEmuCfg,
    ui_token: &str,
) -> Result<crate::config::Config> {
    let toml = format!(
        "[source]\nurl = {source:?}\n\n\
         [sinks.shopify]\ngraphql_url = {shopify:?}\naccess_token = \"shpat_emulator\"\n\
         fulfillments = true\nnotify_customer = true\n\
         location_map = {{ {} }}\n\n\
         [sinks.wms]\nbase_url = {wms:?}\napi_key = \"wms-key\"\n\n\
         [sinks.accounting]\nbase_url = {accounting:?}\nrealm_id = {:?}\nclient_id = {:?}\n\
         client_secret = {:?}\nrefresh_token = {:?}\nmode = \"realtime\"\n\
         account_map = {{ \"121000\" = \"84\", \"400000\" = \"79\", \"251000\" = \"89\", \"101401\" = \"35\" }}\n\n\
         [reconcile]\nsettle_secs = 5\n\n\
         [ui]\nlisten = \"127.0.0.1:0\"\ntoken = {ui_token:?}\n",
        locations
            .iter()
            .map(|(wh, loc)| format!("{wh:?} = {loc:?}"))
            .collect::<Vec<_>>()
            .join(", "),
        acct.realm_id,
        acct.client_id,
        acct.client_secret,
        acct.refresh_token
    );
    let cfg: crate::config::Config = toml.parse()?;
    cfg.validate()?;
    Ok(cfg)
}
