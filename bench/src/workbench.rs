//! `workbench`: the workbench's pages with a large backlog — 100,000 dead letters and a million
//! audit lines by default — against the same pages on the same database before the backlog was
//! loaded (the baseline, same run). Reports each page's median and p95 answer time and the ratio
//! loaded / empty.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use fixtures::TempCluster;
use pipeline::runtime::Shared;
use serde_json::json;

use crate::rig::{svg, write_results};

const TOKEN: &str = "bench-operator-token-0123456789";

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Milliseconds of each of `runs` GETs of `path` (after one warm-up), sorted; fails on any
/// answer but 200.
async fn time_page(
    http: &reqwest::Client,
    base: &str,
    cookie: &str,
    path: &str,
    runs: usize,
) -> Result<Vec<f64>> {
    let mut ms = Vec::with_capacity(runs);
    for i in 0..=runs {
        let t = Instant::now();
        let r = http
            .get(format!("{base}{path}"))
            .header("cookie", cookie)
            .send()
            .await?;
        let status = r.status();
        let body = r.text().await?;
        anyhow::ensure!(status == 200, "{path}: {status}: {body}");
        if i > 0 {
            ms.push(t.elapsed().as_secs_f64() * 1000.0);
        }
    }
    ms.sort_by(f64::total_cmp);
    Ok(ms)
}

/// Runs the scenario.
pub fn run(dead_letters: i64, audit_lines: i64, runs: usize) -> Result<()> {
    let cluster = TempCluster::start()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let cluster = &cluster;
    rt.block_on(async move {
        let admin = cluster.superuser_client("odoo").await?;
        fixtures::odoo::create(
            &admin,
            &fixtures::odoo::SeedConfig {
                products: 50,
                customers: 10,
                ..fixtures::odoo::SeedConfig::default()
            },
        )
        .await?;
        let source: cdc::SourceConfig = cluster.url().parse()?;
        let state = pipeline::state::StateDb::connect(&source).await?;
        pipeline::state::migrate(&*state.client().await?).await?;
        let shared = Arc::new(Shared {
            state: Some(state.clone()),
            ..Shared::default()
        });
        let mut cfg: pipeline::config::Config = format!(
            "[source]\nurl = \"{}\"\n\n[ui]\nlisten = \"127.0.0.1:0\"\n",
            cluster.url()
        )
        .parse()?;
        cfg.apply_env(&|k| (k == "ODOO_CDC_UI_TOKEN").then(|| TOKEN.to_string()));
        cfg.validate()?;
        let ui = pipeline::ui::Workbench {
            cfg: cfg.clone(),
            shared: shared.clone(),
            state: state.clone(),
            auth: pipeline::ui::auth::Auth::new(cfg.ui.as_ref().context("[ui]")?),
            series: Arc::default(),
            books: Default::default(),
        };
        let served = pipeline::ops::http::Served::start(
            "127.0.0.1:0",
            pipeline::ui::router(Arc::new(ui)),
            "workbench",
        )
        .await?;
        let base = served.url();
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let login = http
            .post(format!("{base}/login"))
            .form(&[("token", TOKEN)])
            .send()
            .await?;
        let cookie = login
            .headers()
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .context("no session cookie")?
            .to_string();
        // The pages, and what each one reads most of.
        let pages = |mid: i64, key: &str| {
            vec![
                ("now", "/".to_string()),
                ("exceptions", "/exceptions".to_string()),
                (
                    "exceptions, filtered by sink and reason",
                    "/exceptions?sink=accounting&reason=account+999".to_string(),
                ),
                (
                    "exceptions, a page in the middle",
                    format!("/exceptions?before={mid}"),
                ),
                ("exceptions, older than 1 h", "/exceptions?older_than_hours=1".to_string()),
                ("one dead letter", format!("/exceptions/{mid}")),
                ("blocked orders", "/blocked".to_string()),
                ("drift", "/drift".to_string()),
                ("order trail", format!("/trail?q={key}")),
            ]
        };
        let c = state.client().await?;
        // The baseline: one dead letter, one audit line.
        c.batch_execute(
            "INSERT INTO odoo_cdc.dead_letters (sink, key, reason, source_lsn, event) VALUES \
             ('shopify', 'SKU-1@WH', 'SKU SKU-1 is not in Shopify', '0/0', '{}'); \
             INSERT INTO odoo_cdc.audit (shopify_id, kind, detail) VALUES ('1000', 'webhook', 'orders/create')",
        )
        .await?;
        let mut empty = Vec::new();
        for (name, path) in pages(1, "1000") {
            empty.push((name, time_page(&http, &base, &cookie, &path, runs).await?));
        }
        // The backlog: dead letters of 40 causes over 4 sinks across 30 days, and audit lines
        // of 100,000 orders (10 each); a few thousand webhooks pending.
        let t = Instant::now();
        c.execute(
            "INSERT INTO odoo_cdc.dead_letters (sink, key, reason, source_lsn, event, created_at, last_seen, replayed_at) \
             SELECT (ARRAY['shopify','wms','accounting','odoo'])[1 + g % 4], 'key-' || g, \
             CASE g % 4 WHEN 2 THEN 'account ' || (g % 10 + 990) || ' is not mapped' ELSE 'cause ' || (g % 40) || ' of the sink' END, \
             '0/' || to_hex(g), jsonb_build_object('n', g, 'inbox_id', NULL), now() - make_interval(secs => g % 2592000), now(), \
             CASE WHEN g % 5 = 0 THEN now() END FROM generate_series(2, $1::bigint + 1) g",
            &[&dead_letters],
        )
        .await?;
        c.execute(
            "INSERT INTO odoo_cdc.audit (shopify_id, kind, detail, odoo_id, at) \
             SELECT (1000 + g / 10)::text, CASE WHEN g % 1000 = 0 THEN 'total-mismatch' ELSE (ARRAY['webhook','rpc','rpc-result','applied'])[1 + g % 4] END, \
             'line ' || g, g / 10, now() - make_interval(secs => ($1::bigint - g) / 10) FROM generate_series(1, $1::bigint) g",
            &[&audit_lines],
        )
        .await?;
        c.batch_execute(
            "INSERT INTO odoo_cdc.inbox (event_id, topic, shop_domain, order_key, payload, attempts, last_error) \
             SELECT 'e-' || g, 'orders/create', 'bench.myshopify.com', (900000 + g)::text, '{}', g % 3, \
             CASE WHEN g % 3 > 0 THEN 'Odoo unreachable' END FROM generate_series(1, 5000) g; ANALYZE",
        )
        .await?;
        let load_secs = t.elapsed().as_secs_f64();
        let mid = dead_letters / 2;
        let key = (1000 + audit_lines / 20).to_string();
        let mut loaded = Vec::new();
        for (name, path) in pages(mid, &key) {
            loaded.push((name, time_page(&http, &base, &cookie, &path, runs).await?));
        }
        println!(
            "workbench: {dead_letters} dead letters, {audit_lines} audit lines, 5000 pending webhooks (loaded in {load_secs:.1} s); {runs} GETs a page"
        );
        println!("page\tempty p50 ms\tloaded p50 ms\tloaded p95 ms\tratio p50");
        let mut rows = Vec::new();
        for ((name, e), (_, l)) in empty.iter().zip(&loaded) {
            let (e50, l50, l95) = (quantile(e, 0.5), quantile(l, 0.5), quantile(l, 0.95));
            let ratio = l50 / e50.max(0.001);
            println!("{name}\t{e50:.1}\t{l50:.1}\t{l95:.1}\t{ratio:.2}");
            rows.push(json!({"page": name, "empty_p50_ms": e50, "loaded_p50_ms": l50, "loaded_p95_ms": l95, "ratio_p50": ratio}));
        }
        let x: Vec<f64> = (0..empty.len()).map(|i| i as f64 + 1.0).collect();
        let chart = svg(
            "Workbench pages: median answer (ms), empty vs loaded",
            "page (in the order of the table)",
            &x,
            &[
                ("empty", "gray", empty.iter().map(|(_, v)| quantile(v, 0.5)).collect()),
                ("loaded", "steelblue", loaded.iter().map(|(_, v)| quantile(v, 0.5)).collect()),
            ],
        );
        write_results(
            "workbench",
            &json!({"dead_letters": dead_letters, "audit_lines": audit_lines, "pending_webhooks": 5000, "runs": runs, "pages": rows}),
            &chart,
        )?;
        drop(served);
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(())
}
