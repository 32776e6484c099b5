//! `odoo-cdc status --config odoo-cdc.toml [--json]`: what an operator needs to see, from the
//! source connection alone (no sink secret): the slot and its lag, each configured sink with
//! its outbox depth and dead letters by reason, the inbox, and — when `runtime.metrics_listen`
//! is set and odoo-cdc runs — its `/readyz` checks.
//!
//! Exit codes: 0 nothing needs a person; 1 something does (a lost, missing or unreserved slot,
//! pending dead letters, events parked in the outbox, overdue or dead webhooks, a running
//! odoo-cdc that is not ready); 2 the state cannot be read (bad config, database unreachable).

use std::io::Write;

use anyhow::Result;
use serde_json::{json, Value};

use crate::config::Config;

/// Collects the status; `(needs_a_person, document)`.
pub async fn collect(mut cfg: Config) -> Result<(Vec<String>, Value)> {
    let source = crate::cli::dlq::source_of(&mut cfg, true)?;
    let client = source.sql_client().await?;
    let mut attention = Vec::new();
    // The slot, judged as `slot status` judges it (one verdict, the same exit-code causes).
    let mut conn = cdc::conn::ReplicationConnection::connect(&source).await?;
    let st = cdc::slot::status(&mut conn, &cfg.source.slot).await?;
    let tables = cdc::slot::publication_tables(&mut conn, &cfg.source.publication).await?;
    let names: Vec<String> = tables
        .iter()
        .flatten()
        .map(|t| format!("{}.{}", t.schema, t.table))
        .collect();
    let keyless = crate::cli::slot::keyless(&mut conn, &names).await?;
    drop(conn);
    let (problem, warnings) = crate::cli::slot::verdict(
        st.as_ref(),
        tables.as_deref(),
        &keyless,
        crate::cli::slot::DEFAULT_MIN_SAFE_WAL_MB * 1024 * 1024,
    );
    attention.extend(problem.map(|(_, p)| format!("slot {}: {p}", cfg.source.slot)));
    attention.extend(warnings);
    let slot = match &st {
        None => json!({"name": cfg.source.slot, "exists": false}),
        Some(s) => {
            json!({"name": cfg.source.slot, "exists": true, "plugin": s.plugin, "active_pid": s.active_pid,
                          "confirmed_flush_lsn": s.confirmed_flush_lsn.map(|l| l.to_string()), "wal_status": s.wal_status,
                          "safe_wal_size": s.safe_wal_size, "lag_bytes": s.lag_bytes})
        }
    };
    // odoo_cdc's own tables exist once odoo-cdc has run.
    let has_state = client
        .query_one(
            "SELECT to_regclass('odoo_cdc.dead_letters') IS NOT NULL AND to_regclass('odoo_cdc.inbox') IS NOT NULL",
            &[],
        )
        .await?
        .get::<_, bool>(0);
    let mut sinks = serde_json::Map::new();
    let configured: Vec<&str> = [
        cfg.sinks.shopify.as_ref().map(|_| "shopify"),
        cfg.sinks.wms.as_ref().map(|_| "wms"),
        cfg.sinks.accounting.as_ref().map(|_| "accounting"),
        cfg.odoo.as_ref().map(|_| "odoo"),
    ]
    .into_iter()
    .flatten()
    .collect();
    let mut inbox = Value::Null;
    if has_state {
        for sink in &configured {
            let parked = client
                .query_one(
                    "SELECT count(*), extract(epoch FROM now() - min(created_at))::float8 FROM odoo_cdc.outbox WHERE sink = $1",
                    &[sink],
                )
                .await?;
            let (depth, oldest): (i64, Option<f64>) = (parked.get(0), parked.get(1));
            let dead = client
                .query(
                    "SELECT reason, count(*), sum(count)::bigint, max(last_seen)::text FROM odoo_cdc.dead_letters \
                     WHERE sink = $1 AND replayed_at IS NULL GROUP BY reason ORDER BY 2 DESC, 1 LIMIT 20",
                    &[sink],
                )
                .await?;
            let reasons: Vec<Value> = dead
                .iter()
                .map(|r| json!({"reason": r.get::<_, String>(0), "pending": r.get::<_, i64>(1), "seen": r.get::<_, Option<i64>>(2), "last_seen": r.get::<_, Option<String>>(3)}))
                .collect();
            let pending: i64 = dead.iter().map(|r| r.get::<_, i64>(1)).sum();
            if depth > 0 {
                attention.push(format!("{depth} events of {sink} parked in the outbox"));
            }
            if pending > 0 {
                attention.push(format!(
                    "{pending} dead letters of {sink} (`odoo-cdc dlq list`)"
                ));
            }
            sinks.insert(
                (*sink).to_string(),
                json!({"outbox_depth": depth, "oldest_parked_secs": oldest, "dead_letters": pending, "dead_letter_reasons": reasons}),
            );
        }
        let r = client
            .query_one(
                "SELECT count(*) FILTER (WHERE status = 'pending' AND attempts = 0), \
                 count(*) FILTER (WHERE status = 'pending' AND attempts > 0), \
                 count(*) FILTER (WHERE status = 'dead'), count(*) FILTER (WHERE status = 'done'), \
                 extract(epoch FROM now() - min(received_at) FILTER (WHERE status = 'pending'))::float8 FROM odoo_cdc.inbox",
                &[],
            )
            .await?;
        let (pending, retrying, dead, done): (i64, i64, i64, i64) =
            (r.get(0), r.get(1), r.get(2), r.get(3));
        let oldest: Option<f64> = r.get(4);
        if oldest.is_some_and(|s| s > cfg.runtime.unready_after_secs as f64) {
            attention.push(format!(
                "the oldest pending webhook is {:.0}s old",
                oldest.unwrap_or_default()
            ));
        }
        inbox = json!({"pending": pending, "retrying": retrying, "dead": dead, "applied": done, "oldest_pending_secs": oldest});
    } else {
        for sink in &configured {
            sinks.insert(
                (*sink).to_string(),
                json!({"outbox_depth": 0, "dead_letters": 0}),
            );
        }
    }
    // The running process, if it can be asked.
    let running = match &cfg.runtime.metrics_listen {
        Some(addr) => {
            let addr = addr
                .replace("0.0.0.0", "127.0.0.1")
                .replace("[::]", "[::1]");
            let http = reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(3))
                .build()?;
            match http.get(format!("http://{addr}/readyz")).send().await {
                Ok(r) => {
                    let ready = r.status().is_success();
                    let body: Value = r.json().await.unwrap_or(Value::Null);
                    if !ready {
                        attention.push(format!("odoo-cdc at {addr} is not ready"));
                    }
                    json!({"reachable": true, "ready": ready, "readyz": body})
                }
                Err(e) => json!({"reachable": false, "error": e.to_string()}),
            }
        }
        None => Value::Null,
    };
    // The last reconciliation's report (the command's, or the scheduled one's).
    let mut reconcile = Value::Null;
    if has_state {
        if let Some(row) = client
            .query_opt(
                "SELECT value FROM odoo_cdc.kv WHERE key = 'reconcile.last'",
                &[],
            )
            .await?
        {
            let report: Value = serde_json::from_str(&row.get::<_, String>(0)).unwrap_or_default();
            let open = report["drifts"]
                .as_array()
                .map_or(0, |d| d.iter().filter(|d| d["fixed"] != true).count());
            if open > 0 {
                attention.push(format!(
                    "reconcile at {}: {open} drift(s) open (odoo-cdc reconcile shows them)",
                    report["at"].as_str().unwrap_or("-")
                ));
            }
            reconcile = json!({"at": report["at"], "checked": report["checked"], "open": open});
        }
    }
    let doc = json!({"slot": slot, "sinks": sinks, "inbox": inbox, "running": running, "reconcile": reconcile, "needs_attention": attention});
    Ok((attention, doc))
}

/// Prints the status; returns the exit code.
pub async fn run(cfg: Config, as_json: bool, out: &mut impl Write) -> Result<u8> {
    let (attention, doc) = match collect(cfg).await {
        Ok(v) => v,
        Err(e) => {
            if as_json {
                writeln!(out, "{}", json!({"error": format!("{e:#}")}))?;
            }
            eprintln!("odoo-cdc: cannot read the status: {e:#}");
            return Ok(2);
        }
    };
    if as_json {
        writeln!(out, "{doc}")?;
    } else {
        let s = &doc["slot"];
        if s["exists"].as_bool() == Some(true) {
            writeln!(
                out,
                "slot      {} ({}, wal_status {}, confirmed {}, lag {} bytes, safe_wal_size {})",
                s["name"].as_str().unwrap_or(""),
                if s["active_pid"].is_null() {
                    "inactive"
                } else {
                    "active"
                },
                s["wal_status"].as_str().unwrap_or("-"),
                s["confirmed_flush_lsn"].as_str().unwrap_or("-"),
                s["lag_bytes"],
                s["safe_wal_size"]
            )?;
        } else {
            writeln!(
                out,
                "slot      {} (does not exist)",
                s["name"].as_str().unwrap_or("")
            )?;
        }
        match doc["running"].as_object() {
            Some(r) if r.get("reachable") == Some(&json!(true)) => writeln!(
                out,
                "running   {}",
                if r.get("ready") == Some(&json!(true)) {
                    "ready"
                } else {
                    "NOT READY"
                }
            )?,
            Some(_) => writeln!(
                out,
                "running   not reachable (not running, or metrics_listen is elsewhere)"
            )?,
            None => writeln!(out, "running   unknown (no runtime.metrics_listen)")?,
        }
        if let Some(sinks) = doc["sinks"].as_object() {
            for (name, v) in sinks {
                writeln!(
                    out,
                    "sink      {name}: outbox {}, dead letters {}",
                    v["outbox_depth"], v["dead_letters"]
                )?;
                for r in v["dead_letter_reasons"].as_array().into_iter().flatten() {
                    writeln!(
                        out,
                        "            {} x {}",
                        r["pending"],
                        r["reason"].as_str().unwrap_or("")
                    )?;
                }
            }
        }
        let i = &doc["inbox"];
        if !i.is_null() {
            writeln!(
                out,
                "inbox     {} pending, {} retrying, {} dead, {} applied",
                i["pending"], i["retrying"], i["dead"], i["applied"]
            )?;
        }
        let r = &doc["reconcile"];
        if !r.is_null() {
            writeln!(
                out,
                "reconcile last at {}: {} drift(s) open",
                r["at"].as_str().unwrap_or("-"),
                r["open"]
            )?;
        }
        if attention.is_empty() {
            writeln!(out, "ok        nothing needs a person")?;
        } else {
            for a in &attention {
                writeln!(out, "ATTENTION {a}")?;
            }
        }
    }
    Ok(u8::from(!attention.is_empty()))
}
