//! The full-pipeline test rig shared by `peak` and `saturate`: a throwaway cluster with the
//! Odoo-shaped seed published, the Shopify, WMS, accounting and Odoo RPC emulators, and
//! `odoo-cdc run` as its own process with its `/metrics` scraped; plus the helpers the reports
//! need (Prometheus parsing, histogram quantiles, /proc CPU and RSS, SVG line charts).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use fixtures::emulator::accounting::{AccountingConfig as AcctCfg, AccountingEmulator};
use fixtures::emulator::odoo_rpc::{OdooRpcConfig, OdooRpcEmulator};
use fixtures::emulator::shopify::{ShopifyConfig as ShopCfg, ShopifyEmulator};
use fixtures::emulator::wms::{WmsConfig as WmsCfg, WmsEmulator};
use fixtures::emulator::Faults;
use fixtures::odoo::SeedInfo;
use fixtures::TempCluster;
use tokio::runtime::Runtime;

use crate::odoo_cdc_bin;

/// Parsed Prometheus text: (name with labels) -> value.
pub type Metrics = BTreeMap<String, f64>;

/// Parses Prometheus text.
pub fn metrics(text: &str) -> Metrics {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// The growth of a counter between two scrapes.
pub fn delta(m: &Metrics, m0: &Metrics, key: &str) -> f64 {
    m.get(key).copied().unwrap_or(0.0) - m0.get(key).copied().unwrap_or(0.0)
}

/// A quantile (upper bucket bound) from a Prometheus histogram, counting only what was
/// observed between the scrapes `m0` and `m`.
pub fn hist_quantile(m: &Metrics, m0: &Metrics, name: &str, label: &str, q: f64) -> Option<f64> {
    let prefix = if label.is_empty() {
        format!("{name}_bucket{{le=\"")
    } else {
        format!("{name}_bucket{{{label},le=\"")
    };
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

/// CPU seconds (user + system) and peak RSS (KiB) of a process, from /proc.
pub fn proc_stat(pid: u32) -> (f64, u64) {
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

/// Series over a shared x axis as an SVG line chart, each series scaled to its own maximum
/// (printed in its legend).
pub fn svg(title: &str, x_unit: &str, x: &[f64], series: &[(&str, &str, Vec<f64>)]) -> String {
    chart(title, x_unit, x, series, false)
}

/// Like [`svg`], all series on one scale (for series of the same unit set side by side).
pub fn svg_shared(
    title: &str,
    x_unit: &str,
    x: &[f64],
    series: &[(&str, &str, Vec<f64>)],
) -> String {
    chart(title, x_unit, x, series, true)
}

fn chart(
    title: &str,
    x_unit: &str,
    x: &[f64],
    series: &[(&str, &str, Vec<f64>)],
    shared: bool,
) -> String {
    let all_max = series
        .iter()
        .flat_map(|(_, _, ys)| ys.iter().copied())
        .fold(0.0, f64::max);
    let (w, h, pad) = (800.0, 320.0, 50.0);
    let xmin = x.first().copied().unwrap_or(0.0).min(0.0);
    let xmax = x.last().copied().unwrap_or(1.0).max(xmin + 1e-9);
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/><text x=\"{pad}\" y=\"20\" font-size=\"14\">{title}</text>\
         <line x1=\"{pad}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/><line x1=\"{pad}\" y1=\"{pad}\" x2=\"{pad}\" y2=\"{}\" stroke=\"black\"/>\
         <text x=\"{}\" y=\"{}\">{xmax:.0} {x_unit}</text><text x=\"{pad}\" y=\"{}\">{xmin:.0}</text>",
        h - pad, w - pad, h - pad, h - pad, w - pad - 60.0, h - pad + 15.0, h - pad + 15.0
    );
    for (i, (name, color, ys)) in series.iter().enumerate() {
        let own_max = ys.iter().copied().fold(0.0, f64::max).max(1e-9);
        let ymax = if shared { all_max.max(1e-9) } else { own_max };
        let points: Vec<String> = x
            .iter()
            .zip(ys)
            .map(|(x, y)| {
                format!(
                    "{:.1},{:.1}",
                    pad + (x - xmin) / (xmax - xmin) * (w - 2.0 * pad),
                    h - pad - y / ymax * (h - 2.0 * pad)
                )
            })
            .collect();
        out.push_str(&format!(
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\" points=\"{}\"/>\
             <text x=\"{}\" y=\"{}\" fill=\"{color}\">{name} (max {own_max:.2})</text>",
            points.join(" "),
            w - 320.0,
            40.0 + 15.0 * i as f64
        ));
    }
    out.push_str("</svg>\n");
    out
}

/// Writes a scenario's JSON and SVG under `target/bench/`.
pub fn write_results(name: &str, json: &serde_json::Value, chart: &str) -> Result<()> {
    std::fs::create_dir_all("target/bench")?;
    std::fs::write(
        format!("target/bench/{name}.json"),
        serde_json::to_vec_pretty(json)?,
    )?;
    std::fs::write(format!("target/bench/{name}.svg"), chart)?;
    Ok(())
}

/// How the emulators behave.
#[derive(Debug, Clone)]
pub struct RigOptions {
    /// Shopify GraphQL points restored per second (the bucket holds 10 s of them).
    pub shopify_restore_rate: f64,
    /// Shopify storefront orders send webhooks to odoo-cdc, which writes them into Odoo.
    pub webhooks: bool,
    /// The Shopify sink's write interval.
    pub write_interval_ms: u64,
    /// WMS answer time.
    pub wms_latency_ms: u64,
    /// Accounting answer time.
    pub accounting_latency_ms: u64,
    /// QuickBooks' throttles (off: limits so high they never bite).
    pub accounting_limits: bool,
    /// `runtime.max_hold_secs` (None: odoo-cdc's default).
    pub max_hold_secs: Option<u64>,
    /// Safety stock of the first five products (the workload's hot SKUs).
    pub hot_safety_stock: i64,
    /// The WMS ships what it is asked for (after `ship_delay`, a fifth in two parcels) and
    /// tells odoo-cdc by webhook; Shopify orders' deliveries become Shopify fulfillments.
    pub shipments: Option<Duration>,
}

/// The running rig. Needs the Tokio runtime it was started with to be entered.
pub struct Rig {
    /// The cluster.
    pub cluster: TempCluster,
    /// A superuser connection to the Odoo database.
    pub admin: tokio_postgres::Client,
    /// The seed.
    pub info: SeedInfo,
    /// Shopify.
    pub shopify: ShopifyEmulator,
    _wms: WmsEmulator,
    _accounting: AccountingEmulator,
    _odoo_rpc: OdooRpcEmulator,
    env: Vec<(String, String)>,
    config: PathBuf,
    /// odoo-cdc's log.
    pub log: PathBuf,
    /// The `/metrics` port of each odoo-cdc process (the first one's is in `config`).
    metrics_ports: Vec<u16>,
    children: Vec<Child>,
    /// The odoo-cdc binary (None: the default build).
    pub bin: Option<PathBuf>,
    http: reqwest::Client,
    item_of: BTreeMap<String, u64>,
    safety_of: BTreeMap<String, i64>,
}

/// Odoo's sellable quantity per (SKU, warehouse id): what Shopify must show.
pub const SELLABLE_SQL: &str =
    "SELECT p.default_code, w.id, coalesce(sum(q.quantity - q.reserved_quantity), 0)::int8 \
    FROM product_product p CROSS JOIN stock_warehouse w \
    LEFT JOIN stock_location l ON l.warehouse_id = w.id AND l.usage = 'internal' \
    LEFT JOIN stock_quant q ON q.product_id = p.id AND q.location_id = l.id \
    JOIN product_template t ON t.id = p.product_tmpl_id WHERE t.type <> 'service' GROUP BY 1, 2";

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Rig {
    /// Starts the cluster (seeded, published) and the emulators, and writes odoo-cdc's config;
    /// odoo-cdc itself starts with [`Rig::start_cdc`].
    pub fn start(rt: &Runtime, name: &str, opts: &RigOptions) -> Result<Self> {
        let cluster = TempCluster::start()?;
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
        let odoo_rpc = rt.block_on(OdooRpcEmulator::start(
            OdooRpcConfig::new(&cluster.superuser_url(db)),
            0,
        ))?;
        let hook_port = free_port()?;
        let metrics_port = free_port()?;
        let restore = opts.shopify_restore_rate;
        let shopify = rt.block_on(ShopifyEmulator::start(
            ShopCfg {
                bucket_size: restore * 10.0,
                restore_rate: restore,
                webhook_url: opts
                    .webhooks
                    .then(|| format!("http://127.0.0.1:{hook_port}/webhooks/shopify")),
                webhook_delay: Duration::from_millis(300),
                webhook_jitter: Duration::from_millis(700),
                duplicate_rate: 0.05,
                ..ShopCfg::default()
            },
            0,
        ))?;
        let mut item_of = BTreeMap::new();
        for p in &info.products {
            item_of.insert(p.sku.clone(), shopify.add_item(&p.sku, &[(1, 0), (2, 0)]));
        }
        let wms = rt.block_on(WmsEmulator::start(
            match opts.shipments {
                Some(delay) => WmsCfg {
                    ship_delay: delay,
                    webhook_url: Some(format!("http://127.0.0.1:{hook_port}/webhooks/wms")),
                    split_rate: 0.2,
                    duplicate_rate: 0.05,
                    webhook_jitter: Duration::from_millis(500),
                    webhook_backoff: Duration::from_secs(1),
                    ..WmsCfg::default()
                },
                None => WmsCfg {
                    ship_delay: Duration::from_secs(3600),
                    ..WmsCfg::default()
                },
            },
            0,
        ))?;
        wms.core().set_faults(Faults {
            latency_ms: opts.wms_latency_ms,
            ..Faults::default()
        });
        let mut acct_cfg = AcctCfg::default();
        if !opts.accounting_limits {
            acct_cfg.per_second = 1_000_000;
            acct_cfg.per_minute = 1_000_000;
            acct_cfg.batch_per_minute = 1_000_000;
        }
        let accounting = rt.block_on(AccountingEmulator::start(acct_cfg.clone(), 0))?;
        accounting.core().set_faults(Faults {
            latency_ms: opts.accounting_latency_ms,
            ..Faults::default()
        });
        let dir =
            std::env::temp_dir().join(format!("odoo-cdc-bench-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let config = dir.join("odoo-cdc.toml");
        let locations: Vec<String> = info
            .warehouses
            .iter()
            .enumerate()
            .map(|(i, w)| format!("{} = \"gid://shopify/Location/{}\"", w.code, i + 1))
            .collect();
        let safety_of: BTreeMap<String, i64> = info
            .products
            .iter()
            .take(5)
            .filter(|_| opts.hot_safety_stock > 0)
            .map(|p| (p.sku.clone(), opts.hot_safety_stock))
            .collect();
        let safety = if safety_of.is_empty() {
            String::new()
        } else {
            format!(
                "safety_stock_by_sku = {{ {} }}\n",
                safety_of
                    .iter()
                    .map(|(s, n)| format!("{s:?} = {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        let (odb, login, key, _) = odoo_rpc.credentials();
        let webhooks = if opts.webhooks {
            format!(
                "[odoo]\nurl = \"{}\"\ndatabase = \"{odb}\"\nlogin = \"{login}\"\n\n\
                 [webhooks]\nlisten = \"127.0.0.1:{hook_port}\"\nshop_domain = \"odoo-cdc-demo.myshopify.com\"\n\n{}",
                odoo_rpc.url(),
                if opts.shipments.is_some() {
                    "[wms]\nbackorder = \"create\"\n\n"
                } else {
                    ""
                }
            )
        } else {
            String::new()
        };
        // QuickBooks' batch endpoint, spaced to its 40 batches a minute when its limits apply,
        // unspaced when they are lifted (odoo-cdc's own cost is measured).
        let mode = if opts.accounting_limits {
            "mode = \"batch\"\nflush_interval_ms = 1000\n"
        } else {
            "mode = \"batch\"\nflush_interval_ms = 100\nbatches_per_minute = 1000000\n"
        };
        std::fs::write(
            &config,
            format!(
                "[source]\nurl = \"{}\"\n\n[runtime]\nmetrics_listen = \"127.0.0.1:{metrics_port}\"\n{}\n{webhooks}\
                 [sinks.shopify]\ngraphql_url = \"{}\"\nlocation_map = {{ {} }}\nwrite_interval_ms = {}\n{safety}{}\n\
                 [sinks.wms]\nbase_url = \"{}\"\n\n\
                 [sinks.accounting]\nbase_url = \"{}\"\nrealm_id = \"{}\"\nclient_id = \"{}\"\n{mode}\
                 account_map = {{ \"121000\" = \"84\", \"400000\" = \"79\", \"251000\" = \"89\", \"101401\" = \"35\" }}\n",
                cluster.url(),
                opts.max_hold_secs
                    .map_or_else(String::new, |s| format!("max_hold_secs = {s}\n")),
                shopify.graphql_url(),
                locations.join(", "),
                opts.write_interval_ms,
                if opts.shipments.is_some() && opts.webhooks {
                    "fulfillments = true\n"
                } else {
                    ""
                },
                wms.url(),
                accounting.url(),
                acct_cfg.realm_id,
                acct_cfg.client_id,
            ),
        )?;
        let env = vec![
            ("PGPASSWORD", cluster.role_password().to_string()),
            (
                "ODOO_CDC_SOURCE_PASSWORD",
                cluster.role_password().to_string(),
            ),
            ("ODOO_CDC_ODOO_API_KEY", key.to_string()),
            ("ODOO_CDC_SHOPIFY_WEBHOOK_SECRET", "hush".to_string()),
            (
                "ODOO_CDC_SHOPIFY_ACCESS_TOKEN",
                "shpat_emulator".to_string(),
            ),
            ("ODOO_CDC_WMS_API_KEY", "wms-key".to_string()),
            (
                "ODOO_CDC_WMS_WEBHOOK_SECRET",
                WmsCfg::default().webhook_secret,
            ),
            (
                "ODOO_CDC_ACCOUNTING_CLIENT_SECRET",
                acct_cfg.client_secret.clone(),
            ),
            (
                "ODOO_CDC_ACCOUNTING_REFRESH_TOKEN",
                acct_cfg.refresh_token.clone(),
            ),
            ("RUST_LOG", "warn".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        Ok(Self {
            log: dir.join("run.log"),
            cluster,
            admin,
            info,
            shopify,
            _wms: wms,
            _accounting: accounting,
            _odoo_rpc: odoo_rpc,
            env,
            config,
            metrics_ports: vec![metrics_port],
            children: Vec::new(),
            bin: None,
            http: reqwest::Client::new(),
            item_of,
            safety_of,
        })
    }

    /// Starts `odoo-cdc run`; its pid.
    pub fn start_cdc(&mut self) -> Result<u32> {
        let config = self.config.clone();
        self.spawn(&config, &[])
    }

    fn spawn(&mut self, config: &std::path::Path, args: &[&str]) -> Result<u32> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let bin = match &self.bin {
            Some(b) => b.clone(),
            None => odoo_cdc_bin(&[])?,
        };
        let child = Command::new(bin)
            .args(["run", "--config", config.to_str().context("path")?])
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        let pid = child.id();
        self.children.push(child);
        Ok(pid)
    }

    /// Starts the pipeline scaled out on the Fluvio cluster at `endpoint`: `odoo-cdc run
    /// --role reader` (with the webhooks) and one `--role worker --sinks ...` per entry of
    /// `workers`, each serving its own `/metrics` (summed by [`Rig::scrape`]); their pids.
    pub fn start_scaled_out(&mut self, endpoint: &str, workers: &[&[&str]]) -> Result<Vec<u32>> {
        let prefix = format!("bench-{}-{}", std::process::id(), self.metrics_ports[0]);
        let base = std::fs::read_to_string(&self.config)?;
        let fluvio = format!(
            "\n[fluvio]\nendpoint = {endpoint:?}\ntopic_prefix = {prefix:?}\nconsumer_prefix = {prefix:?}\npartitions = 8\n"
        );
        std::fs::write(&self.config, format!("{base}{fluvio}"))?;
        let config = self.config.clone();
        let mut pids = vec![self.spawn(&config, &["--role", "reader"])?];
        let main = format!("metrics_listen = \"127.0.0.1:{}\"", self.metrics_ports[0]);
        for (i, sinks) in workers.iter().enumerate() {
            let port = free_port()?;
            let path = config.with_file_name(format!("worker-{i}.toml"));
            std::fs::write(
                &path,
                format!("{base}{fluvio}")
                    .replace(&main, &format!("metrics_listen = \"127.0.0.1:{port}\"")),
            )?;
            self.metrics_ports.push(port);
            pids.push(self.spawn(&path, &["--role", "worker", "--sinks", &sinks.join(",")])?);
        }
        Ok(pids)
    }

    /// Stops odoo-cdc with SIGTERM (it confirms what it delivered and exits).
    pub fn stop_cdc(&mut self) {
        for child in &self.children {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        for mut child in std::mem::take(&mut self.children) {
            loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if Instant::now() >= deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// odoo-cdc's metrics now, summed over its processes (None while one is not answering).
    pub async fn scrape(&self) -> Option<Metrics> {
        let mut all = Metrics::new();
        for port in &self.metrics_ports {
            let text = self
                .http
                .get(format!("http://127.0.0.1:{port}/metrics"))
                .send()
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            for (k, v) in metrics(&text) {
                *all.entry(k).or_default() += v;
            }
        }
        Some(all)
    }

    /// Levels where Shopify's `available` differs from Odoo's sellable quantity (less the
    /// SKU's safety stock).
    pub async fn differing(&self) -> Result<usize> {
        let rows = self.admin.query(SELLABLE_SQL, &[]).await?;
        Ok(rows
            .iter()
            .filter(|r| {
                let sku: String = r.get(0);
                let wh: i32 = r.get(1);
                let safety = self.safety_of.get(&sku).copied().unwrap_or(0);
                let want: i64 = (r.get::<_, i64>(2) - safety).max(0);
                let loc = if wh == self.info.warehouses[0].id {
                    1
                } else {
                    2
                };
                let item = self.item_of.get(&sku).copied().unwrap_or(0);
                self.shopify.level(item, loc).map(|q| q.available) != Some(want)
            })
            .count())
    }

    /// The timeline of one oversell incident (a storefront order Odoo could not reserve): for
    /// each SKU short, Shopify's `available` changes (storefront orders, odoo-cdc's writes)
    /// and Odoo's stock moves of the product from 3 s before the order to 1 s after, in seconds
    /// since `t0` (`shop_t0`: the Shopify emulator's clock at `t0`; `wall_t0`: Unix seconds at
    /// `t0`).
    pub async fn incident_timeline(
        &self,
        order: &str,
        skus: &str,
        shop_t0: f64,
        wall_t0: f64,
    ) -> Result<Vec<String>> {
        let id = order.trim_start_matches("shopify:");
        let history = self.shopify.history();
        let Some(at) = history
            .iter()
            .find(|h| h.cause == format!("order {id}"))
            .map(|h| h.at - shop_t0)
        else {
            return Ok(vec![format!("order {id} is not in Shopify's history")]);
        };
        let mut lines: Vec<(f64, String)> = Vec::new();
        for sku in skus.split(',').filter(|s| !s.is_empty()) {
            let item = self.item_of.get(sku).copied().unwrap_or(0);
            for h in history.iter().filter(|h| h.item == item && h.location == 1) {
                let t = h.at - shop_t0;
                if (at - 3.0..=at + 1.0).contains(&t) {
                    lines.push((
                        t,
                        format!("{sku} shopify available {} ({})", h.available, h.cause),
                    ));
                }
            }
            let moves = self
                .admin
                .query(
                    "SELECT m.id::int8, m.state, m.product_uom_qty::text, coalesce(m.origin, ''),                      extract(epoch FROM m.create_date)::float8, extract(epoch FROM m.write_date)::float8,                      sl.usage || '->' || dl.usage                      FROM stock_move m JOIN product_product p ON p.id = m.product_id                      JOIN stock_location sl ON sl.id = m.location_id JOIN stock_location dl ON dl.id = m.location_dest_id                      WHERE p.default_code = $1 AND (sl.warehouse_id = $2 OR dl.warehouse_id = $2)                      AND m.write_date >= to_timestamp($3) AT TIME ZONE 'UTC' ORDER BY m.id",
                    &[&sku, &self.info.warehouses[0].id, &(wall_t0 + at - 3.0)],
                )
                .await?;
            for m in moves {
                let (created, written) =
                    (m.get::<_, f64>(4) - wall_t0, m.get::<_, f64>(5) - wall_t0);
                if created > at + 1.0 {
                    continue;
                }
                lines.push((
                    created.max(at - 3.0),
                    format!(
                        "{sku} odoo move {} {} x{} {} {} (created {created:.3}, last written {written:.3})",
                        m.get::<_, i64>(0),
                        m.get::<_, String>(6),
                        m.get::<_, String>(2),
                        m.get::<_, String>(3),
                        m.get::<_, String>(1),
                    ),
                ));
            }
        }
        lines.sort_by(|a, b| a.0.total_cmp(&b.0));
        Ok(std::iter::once(format!("order {id} taken at {at:.3} s"))
            .chain(lines.into_iter().map(|(t, l)| format!("{t:9.3}  {l}")))
            .collect())
    }

    /// Waits until every Shopify level equals Odoo (the bootstrap); its seconds.
    pub fn wait_bootstrap(&mut self, rt: &Runtime) -> Result<f64> {
        let boot = Instant::now();
        while rt.block_on(self.differing())? > 0 {
            if boot.elapsed() > Duration::from_secs(600) {
                self.stop_cdc();
                bail!("odoo-cdc did not bootstrap; see {}", self.log.display());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(boot.elapsed().as_secs_f64())
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        for mut child in std::mem::take(&mut self.children) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Watches Odoo's sellable quantities every 100 ms from its own connection and records when
/// each (SKU, warehouse) changed: the input for the least number of Shopify writes that would
/// carry every change within a given delay.
pub struct ChangeWatch {
    stop: Arc<AtomicBool>,
    changes: Arc<Mutex<Vec<(f64, String)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl ChangeWatch {
    /// Starts watching; times are seconds since `t0`.
    pub async fn start(url: String, t0: Instant) -> Result<Self> {
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
        tokio::spawn(conn);
        let stop = Arc::new(AtomicBool::new(false));
        let changes = Arc::new(Mutex::new(Vec::new()));
        let (s, c) = (stop.clone(), changes.clone());
        let task = tokio::spawn(async move {
            let mut last: BTreeMap<String, i64> = BTreeMap::new();
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            while !s.load(Ordering::SeqCst) {
                tick.tick().await;
                let Ok(rows) = client.query(SELLABLE_SQL, &[]).await else {
                    continue;
                };
                let t = t0.elapsed().as_secs_f64();
                let first = last.is_empty();
                let mut found = Vec::new();
                for r in rows {
                    let key = format!("{}@{}", r.get::<_, String>(0), r.get::<_, i32>(1));
                    let q: i64 = r.get::<_, i64>(2).max(0);
                    if last.insert(key.clone(), q) != Some(q) && !first {
                        found.push((t, key));
                    }
                }
                if let Ok(mut c) = c.lock() {
                    c.extend(found);
                }
            }
        });
        Ok(Self {
            stop,
            changes,
            task,
        })
    }

    /// Stops watching: the changes seen, in time order.
    pub async fn finish(self) -> Vec<(f64, String)> {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.task.await;
        self.changes.lock().map(|c| c.clone()).unwrap_or_default()
    }
}

/// The least number of writes that carry every change within `within` seconds of it, at most
/// `per_call` distinct levels a write: a write goes out `within` after the first change not yet
/// written, carrying everything changed by then (the greedy cover is optimal for this).
pub fn min_writes(changes: &[(f64, String)], within: f64, per_call: usize) -> u64 {
    let mut calls = 0u64;
    let mut i = 0;
    while i < changes.len() {
        let deadline = changes[i].0 + within;
        let mut keys = std::collections::BTreeSet::new();
        while i < changes.len() && changes[i].0 <= deadline {
            keys.insert(changes[i].1.as_str());
            i += 1;
        }
        calls += keys.len().div_ceil(per_call).max(1) as u64;
    }
    calls
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_writes_covers_each_change_within_the_delay() {
        let c = |t: f64, k: &str| (t, k.to_string());
        // Three changes within 0.5 s of the first: one write; a change 0.6 s later: another.
        let changes = vec![c(0.0, "a"), c(0.2, "b"), c(0.5, "a"), c(1.1, "c")];
        assert_eq!(min_writes(&changes, 0.5, 250), 2);
        // Two levels a call at most: the first window needs two.
        assert_eq!(min_writes(&changes, 0.5, 1), 3);
        assert_eq!(min_writes(&[], 0.5, 250), 0);
    }
}
