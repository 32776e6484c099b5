//! `snapshot`: the initial snapshot of a large Odoo-shaped database (`odoo-cdc tail --snapshot`:
//! a slot with an exported snapshot, every published row decoded and written as a JSON line to
//! /dev/null) against `COPY ... TO STDOUT` of the same tables into /dev/null by `psql`, the
//! floor of reading the rows at all. Alternating runs, median of several.

use anyhow::{Context, Result};
use fixtures::TempCluster;

use crate::rig::{svg_shared, write_results};
use crate::{measure, median, odoo_cdc_bin, psql};

/// Runs the scenario.
pub fn run(quants: u64, orders: u64, runs: usize) -> Result<()> {
    let bin = odoo_cdc_bin(&[])?;
    let cluster = TempCluster::start()?;
    let pw = cluster.role_password().to_string();
    let env = [("PGPASSWORD", pw.as_str()), ("RUST_LOG", "warn")];
    let rt = tokio::runtime::Runtime::new()?;
    let db = fixtures::pg::DEFAULT_DATABASE;
    let client = rt.block_on(cluster.superuser_client(db))?;
    let info = rt.block_on(fixtures::odoo::create(
        &client,
        &fixtures::odoo::SeedConfig {
            products: 2_000,
            customers: 500,
            ..fixtures::odoo::SeedConfig::default()
        },
    ))?;
    eprintln!("loading {quants} stock quants and {orders} sale orders");
    // An order to copy: a real quotation written the way Odoo writes it.
    let template = rt.block_on(async {
        let mut c = fixtures::odoo::OdooClient::new(cluster.superuser_client(db).await?);
        let p = &info.products[0];
        let q = fixtures::odoo::actions::sales::Quotation {
            partner_id: info.customers[0],
            warehouse_id: info.warehouses[0].id,
            lines: vec![fixtures::odoo::actions::sales::LineInput {
                product_id: p.id,
                name: p.sku.clone(),
                qty: rust_decimal::Decimal::ONE,
                price_unit: p.list_price,
                discount: rust_decimal::Decimal::ZERO,
                taxed: true,
                taxes: Vec::new(),
            }],
            client_order_ref: None,
        };
        fixtures::odoo::actions::sales::create_quotation(&mut c, &info, &q)
            .await
            .map_err(anyhow::Error::from)
    })?;
    let locations: Vec<String> = info
        .warehouses
        .iter()
        .map(|w| w.stock_location_id.to_string())
        .collect();
    rt.block_on(client.batch_execute(&format!(
        "WITH p AS (SELECT array_agg(id ORDER BY id) a FROM product_product), l AS (SELECT ARRAY[{locs}] a) \
         INSERT INTO stock_quant (product_id, company_id, location_id, quantity, reserved_quantity, in_date, create_date, write_date) \
         SELECT p.a[1 + g % array_length(p.a, 1)], {company}, l.a[1 + (g / array_length(p.a, 1)) % array_length(l.a, 1)], \
         g % 97, g % 5, now(), now(), now() FROM p, l, generate_series(1, {quants}) g; \
         DO $$ DECLARE cols text; BEGIN \
           SELECT string_agg(quote_ident(column_name), ', ') INTO cols FROM information_schema.columns \
            WHERE table_schema = 'public' AND table_name = 'sale_order' AND column_name <> 'id'; \
           EXECUTE format('INSERT INTO sale_order (%s) SELECT %s FROM sale_order, generate_series(2, {orders}) WHERE id = {template}', cols, cols); \
         END $$; \
         CREATE PUBLICATION odoo_cdc FOR TABLE {tables}; ANALYZE;",
        locs = locations.join(", "),
        company = info.company_id,
        tables = cdc::slot::ODOO_TABLES.join(", "),
    )))?;
    let mut counts = Vec::new();
    for t in cdc::slot::ODOO_TABLES {
        let n: i64 = rt
            .block_on(client.query_one(&format!("SELECT count(*) FROM {t}"), &[]))?
            .get(0);
        counts.push((t.to_string(), n));
    }
    let total: i64 = counts.iter().map(|(_, n)| n).sum();
    let copy_argv = {
        let mut v = vec![
            cluster.bin_dir().join("psql").display().to_string(),
            "-X".into(),
            "-q".into(),
            "-d".into(),
            format!(
                "host=127.0.0.1 port={} dbname={db} user={}",
                cluster.port(),
                fixtures::pg::REPLICATION_ROLE
            ),
            "-c".into(),
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY".into(),
        ];
        for t in cdc::slot::ODOO_TABLES {
            v.push("-c".into());
            v.push(format!("COPY public.{t} TO STDOUT"));
        }
        v
    };
    let mut copy_secs = Vec::new();
    let mut tail_secs = Vec::new();
    let mut copy_rss = 0;
    let mut tail_rss = 0;
    let mut tail_cpu = Vec::new();
    for i in 0..runs {
        let m = measure(&copy_argv, &env)?;
        eprintln!("COPY: {:.3} s", m.secs);
        copy_secs.push(m.secs);
        copy_rss = copy_rss.max(m.max_rss_kib);
        let endpos = psql(&cluster, "SELECT pg_current_wal_lsn()")?
            .trim()
            .to_string();
        let slot = format!("snap_{i}");
        let argv = vec![
            bin.display().to_string(),
            "tail".into(),
            "--source".into(),
            cluster.url(),
            "--slot".into(),
            slot.clone(),
            "--snapshot".into(),
            "--endpos".into(),
            endpos,
            "--heartbeat-secs".into(),
            "0".into(),
        ];
        let m = measure(&argv, &env)?;
        eprintln!("tail --snapshot: {:.3} s, {} KiB", m.secs, m.max_rss_kib);
        tail_secs.push(m.secs);
        tail_cpu.push(m.cpu_secs);
        tail_rss = tail_rss.max(m.max_rss_kib);
        psql(
            &cluster,
            &format!("SELECT pg_drop_replication_slot('{slot}')"),
        )
        .context("drop the bench slot")?;
    }
    let copy_rate = total as f64 / median(copy_secs.clone());
    let tail_rate = total as f64 / median(tail_secs.clone());
    let ratio = tail_rate / copy_rate;
    let cmd = format!(
        "cargo run --release -p bench -- snapshot --quants {quants} --orders {orders} --runs {runs}"
    );
    println!("## snapshot: {total} published rows ({quants} stock quants, {orders} sale orders), median of {runs}\n");
    println!("| reader | rows/s | ratio | wall s | peak RSS |\n|---|---:|---:|---:|---:|");
    println!(
        "| psql COPY ... TO STDOUT > /dev/null | {copy_rate:.0} | 1.00 | {:.2} | {:.1} MiB |",
        median(copy_secs.clone()),
        copy_rss as f64 / 1024.0
    );
    println!(
        "| odoo-cdc tail --snapshot (JSON lines > /dev/null) | {tail_rate:.0} | {ratio:.2} | {:.2} | {:.1} MiB |",
        median(tail_secs.clone()),
        tail_rss as f64 / 1024.0
    );
    println!("\n| table | rows |\n|---|---:|");
    for (t, n) in &counts {
        if *n > 0 {
            println!("| {t} | {n} |");
        }
    }
    println!("\nReproduce: `{cmd}`");
    let json = serde_json::json!({
        "scenario": "snapshot",
        "rows": total,
        "tables": counts,
        "copy_secs": copy_secs,
        "tail_secs": tail_secs,
        "tail_cpu_secs": tail_cpu,
        "copy_rows_per_sec": copy_rate,
        "tail_rows_per_sec": tail_rate,
        "ratio": ratio,
        "copy_peak_rss_kib": copy_rss,
        "tail_peak_rss_kib": tail_rss,
        "command": cmd,
    });
    let runs: Vec<f64> = (1..=copy_secs.len()).map(|r| r as f64).collect();
    let rate = |secs: &[f64]| secs.iter().map(|s| total as f64 / s).collect::<Vec<f64>>();
    let chart = svg_shared(
        "snapshot: rows/s per run, COPY and odoo-cdc tail --snapshot",
        "runs",
        &runs,
        &[
            ("COPY rows/s", "gray", rate(&copy_secs)),
            ("tail --snapshot rows/s", "steelblue", rate(&tail_secs)),
        ],
    );
    write_results("snapshot", &json, &chart)
}
