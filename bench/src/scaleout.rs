//! `scale-out`: the peak-season profile of `peak`, run twice on the same machine in one
//! bench run: by one `odoo-cdc run` (the baseline), then scaled out on a Fluvio cluster — one
//! `--role reader` and two `--role worker`s (Shopify's sinks in one, the WMS and the books in
//! the other), each its own process. Reports each figure of both side by side with the ratio
//! (scaled out / single), then both runs' full reports; JSON and a chart of both runs' lag go
//! to `target/bench/scale-out.{json,svg}`.
//!
//! Needs a Fluvio cluster (`--fluvio-endpoint` or `ODOO_CDC_FLUVIO_ENDPOINT`; see
//! pipeline/docs/scale-out.md) and builds odoo-cdc with `--features fluvio` (the baseline uses
//! that binary too).

use anyhow::Result;
use pipeline::cli::scale::TWO_WORKERS;
use serde_json::{json, Value};

use crate::peak::{self, Params};
use crate::rig::{svg_shared, write_results};

/// Runs the scenario.
pub fn run(p: &Params, endpoint: &str) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let _guard = rt.enter();
    let bin = crate::odoo_cdc_bin(&["fluvio"])?;
    let cmd = format!(
        "ODOO_CDC_FLUVIO_ENDPOINT={endpoint} cargo run --release -p bench -- scale-out --minutes {} --base-rate {} --shopify-restore-rate {} --shopify-write-interval-ms {} --hot-safety-stock {}",
        p.minutes, p.base_rate, p.restore_rate, p.write_interval_ms, p.hot_safety_stock
    );
    eprintln!("scale-out: the baseline, one odoo-cdc process");
    let single = peak::measure(&rt, p, Some(bin.clone()), None, &cmd)?;
    eprintln!(
        "scale-out: one reader and two workers ({} / {}) on Fluvio at {endpoint}",
        TWO_WORKERS[0].join(","),
        TWO_WORKERS[1].join(",")
    );
    let scaled = peak::measure(&rt, p, Some(bin), Some(endpoint), &cmd)?;
    let (a, b) = (&single.json, &scaled.json);

    println!(
        "## scale-out: {} minutes of the peak profile, one process against one reader and two workers on Fluvio\n",
        p.minutes
    );
    println!("| figure | single process | reader + 2 workers | ratio (scaled out / single) |\n|---|---:|---:|---:|");
    let row = |name: &str, x: Option<f64>, y: Option<f64>, unit: &str| {
        let show = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.2}{unit}"));
        let ratio = match (x, y) {
            (Some(x), Some(y)) if x > 0.0 => format!("{:.2}", y / x),
            _ => "-".to_string(),
        };
        println!("| {name} | {} | {} | {ratio} |", show(x), show(y));
    };
    let rate = |v: &Value| Some(num(&v["row_changes"])? / num(&v["load_secs"])?);
    row("row changes/s written by Odoo", rate(a), rate(b), "");
    for sink in ["shopify", "wms", "accounting"] {
        for q in ["p50", "p99"] {
            row(
                &format!("{sink} delivery latency {q} ≤ ms (from Odoo's commit)"),
                num(&a["latency_ms"][sink][q]),
                num(&b["latency_ms"][sink][q]),
                "",
            );
        }
    }
    let max_lag = |v: &Value| {
        v["series"]["lag_secs"]
            .as_array()
            .map(|l| l.iter().filter_map(Value::as_f64).fold(0.0, f64::max))
    };
    row(
        "slot lag, max s (single: until delivered; scaled out: until Fluvio holds it)",
        max_lag(a),
        max_lag(b),
        "",
    );
    row(
        "Shopify convergence after the last change, s",
        num(&a["convergence_secs"]),
        num(&b["convergence_secs"]),
        "",
    );
    row(
        "shipment webhook to Shopify fulfillment p99, s",
        secs(&a["shipments"]["to_fulfillment_p99"]),
        secs(&b["shipments"]["to_fulfillment_p99"]),
        "",
    );
    row(
        "Shopify fulfillments created",
        num(&a["shipments"]["fulfillments"]),
        num(&b["shipments"]["fulfillments"]),
        "",
    );
    row(
        "oversell incidents",
        num(&a["oversell_incidents"]),
        num(&b["oversell_incidents"]),
        "",
    );
    let cpu = |v: &Value| Some(num(&v["cpu_secs"])? * 1000.0 / num(&v["row_changes"])?.max(1.0));
    row(
        "odoo-cdc CPU per 1,000 row changes, s (all processes)",
        cpu(a),
        cpu(b),
        "",
    );
    row(
        "odoo-cdc peak RSS, MiB (all processes)",
        num(&a["peak_rss_kib"]).map(|k| k / 1024.0),
        num(&b["peak_rss_kib"]).map(|k| k / 1024.0),
        "",
    );
    println!(
        "\nBoth runs share this machine's cores: scaled out, the three processes and Fluvio compete for them, so the ratios show the cost of the seam (records through Fluvio, one more hop), not the gain of more machines.\n"
    );
    println!("Reproduce: `{cmd}`\n");
    print!(
        "### single process\n\n{}\n",
        strip_heading(&single.markdown)
    );
    print!(
        "### reader + 2 workers on Fluvio\n\n{}",
        strip_heading(&scaled.markdown)
    );

    let series = |v: &Value, k: &str| -> Vec<f64> {
        v["series"][k]
            .as_array()
            .map(|l| l.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default()
    };
    let t = series(a, "t");
    let chart = svg_shared(
        "scale-out: replication lag (s), one process against reader + 2 workers",
        "s",
        &t,
        &[
            ("single", "steelblue", series(a, "lag_secs")),
            ("scaled out", "crimson", series(b, "lag_secs")),
        ],
    );
    write_results(
        "scale-out",
        &json!({"scenario": "scale-out", "command": cmd, "single": a, "scaled_out": b,
                "workers": TWO_WORKERS.iter().map(|w| w.join(",")).collect::<Vec<_>>()}),
        &chart,
    )
}

/// A figure as a number ("12" and "-" as the reports write latencies, too).
fn num(v: &Value) -> Option<f64> {
    v.as_f64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

/// "0.42 s" as 0.42.
fn secs(v: &Value) -> Option<f64> {
    v.as_str()
        .and_then(|s| s.trim_end_matches(" s").parse().ok())
}

/// A report without its `## ` heading and its command line (the comparison has its own).
fn strip_heading(md: &str) -> String {
    let mut out = md
        .lines()
        .skip_while(|l| l.starts_with("## ") || l.is_empty())
        .filter(|l| !l.starts_with("Reproduce: "))
        .collect::<Vec<_>>()
        .join("\n");
    out.truncate(out.trim_end().len());
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_are_read_as_the_reports_write_them() {
        assert_eq!(num(&json!(12.5)), Some(12.5));
        assert_eq!(num(&json!("40")), Some(40.0));
        assert_eq!(num(&json!("-")), None);
        assert_eq!(secs(&json!("0.42 s")), Some(0.42));
        assert_eq!(secs(&json!("-")), None);
        assert_eq!(
            strip_heading("## peak: x\n\nSource: y\n| a |\n\nReproduce: `z`\n"),
            "Source: y\n| a |\n"
        );
    }
}
