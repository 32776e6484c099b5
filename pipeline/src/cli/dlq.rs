//! `odoo-cdc dlq list` and `odoo-cdc dlq replay [--id N | --all]`: what could not be delivered,
//! why, and delivering it again once the cause (a mapping, a missing SKU) is fixed.

use std::io::Write;
use std::str::FromStr;

use anyhow::{anyhow, bail, Result};
use cdc::SourceConfig;
use transforms::RetailEvent;

use crate::config::Config;

/// The source settings of a config (environment applied): the whole config is checked for
/// commands that deliver (`read_only` false), only the source for those that read.
pub fn source_of(cfg: &mut Config, read_only: bool) -> Result<SourceConfig> {
    cfg.apply_env(&|k| std::env::var(k).ok());
    if read_only {
        cfg.validate_source()
    } else {
        cfg.validate()
    }
    .map_err(|e| anyhow!("config: {e}"))?;
    let mut source = SourceConfig::from_str(&cfg.source.url)?;
    if !cfg.source.password.expose().is_empty() {
        source.password = Some(cfg.source.password.expose().to_string());
    }
    Ok(source)
}

async fn state_client(cfg: &mut Config, read_only: bool) -> Result<tokio_postgres::Client> {
    let source = source_of(cfg, read_only)?;
    let client = source.sql_client().await?;
    crate::state::migrate(&client).await?;
    Ok(client)
}

/// Prints the dead letters.
pub async fn list(mut cfg: Config, json: bool, out: &mut impl Write) -> Result<()> {
    let client = state_client(&mut cfg, true).await?;
    let rows = client
        .query(
            "SELECT id, sink, key, source_lsn, reason, created_at::text, replayed_at::text, event::text, \
             count, last_seen::text, generation, discarded_at::text FROM odoo_cdc.dead_letters ORDER BY id",
            &[],
        )
        .await?;
    for r in rows {
        let (id, sink, key, lsn, reason): (i64, String, String, String, String) =
            (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4));
        let created: String = r.get(5);
        let replayed: Option<String> = r.get(6);
        let (count, last_seen, generation): (i32, String, i32) = (r.get(8), r.get(9), r.get(10));
        let discarded: Option<String> = r.get(11);
        if json {
            let event: serde_json::Value =
                serde_json::from_str(&r.get::<_, String>(7)).unwrap_or_default();
            writeln!(
                out,
                "{}",
                serde_json::json!({"id": id, "sink": sink, "key": key, "source_lsn": lsn, "reason": reason,
                                   "created_at": created, "replayed_at": replayed, "event": event,
                                   "count": count, "last_seen": last_seen, "generation": generation,
                                   "discarded_at": discarded})
            )?;
        } else {
            let state = match (discarded, replayed) {
                (Some(t), _) => format!("discarded {t}"),
                (None, Some(t)) => format!("replayed {t}"),
                (None, None) => "pending".to_string(),
            };
            // The count and last sighting go after the reason: the first columns stay as they were.
            writeln!(
                out,
                "{id}\t{sink}\t{key}\t{lsn}\t{state}\t{reason}\tseen {count}x, last {last_seen}"
            )?;
        }
    }
    Ok(())
}

/// Which pending dead letters to deliver again.
#[derive(Debug, Clone)]
pub enum Selection {
    /// One, by id.
    One(i64),
    /// Every pending one.
    All,
    /// Every pending one of one sink and cause (the workbench's bulk replay).
    Cause {
        /// The sink.
        sink: String,
        /// The reason, exactly.
        reason: String,
    },
}

/// What replaying one dead letter came to.
#[derive(Debug, Clone)]
pub struct Replayed {
    /// The dead letter.
    pub id: i64,
    /// Its sink.
    pub sink: String,
    /// Its key (the audit trail's subject).
    pub key: String,
    /// Delivered (and marked), or why not.
    pub outcome: Result<(), String>,
}

/// Delivers pending dead letters again (one, or all); marks the delivered ones.
pub async fn replay(cfg: Config, id: Option<i64>, all: bool, out: &mut impl Write) -> Result<bool> {
    let selection = match (id, all) {
        (Some(id), _) => Selection::One(id),
        (None, true) => Selection::All,
        (None, false) => bail!("say which: --id N or --all"),
    };
    let results = replay_selected(cfg, &selection).await?;
    if results.is_empty() {
        writeln!(out, "nothing to replay")?;
        return Ok(true);
    }
    for r in &results {
        match &r.outcome {
            Ok(()) => writeln!(out, "{}\t{}\treplayed", r.id, r.sink)?,
            Err(e) => writeln!(out, "{}\t{}\tstill failing: {e}", r.id, r.sink)?,
        }
    }
    Ok(results.iter().all(|r| r.outcome.is_ok()))
}

/// Delivers the selected pending dead letters again through the configured sinks (the
/// webhook ones through Odoo's API), marking each delivered one; one result per dead letter.
pub async fn replay_selected(mut cfg: Config, selection: &Selection) -> Result<Vec<Replayed>> {
    let db = crate::state::StateDb::fixed(state_client(&mut cfg, false).await?);
    let client = db.client().await?;
    let (id, sink, reason) = match selection {
        Selection::One(id) => (Some(*id), None, None),
        Selection::All => (None, None, None),
        Selection::Cause { sink, reason } => (None, Some(sink.as_str()), Some(reason.as_str())),
    };
    let rows = client
        .query(
            "SELECT id, sink, event::text, generation, last_refused, key FROM odoo_cdc.dead_letters WHERE replayed_at IS NULL \
             AND ($1::bigint IS NULL OR id = $1) AND ($2::text IS NULL OR (sink = $2 AND md5(reason) = md5($3))) ORDER BY id",
            &[&id, &sink, &reason],
        )
        .await?;
    let mut results = Vec::with_capacity(rows.len());
    if rows.is_empty() {
        return Ok(results);
    }
    let mut sinks = crate::cli::run::build_sinks(&cfg, &db).await?;
    let fulfillment = sinks.fulfillment_sink(db.clone(), std::sync::Arc::default());
    for r in rows {
        let (id, sink, key): (i64, String, String) = (r.get(0), r.get(1), r.get(5));
        if sink == "odoo" {
            let outcome = replay_webhook(&cfg, &client, id, &r.get::<_, String>(2)).await?;
            results.push(Replayed {
                id,
                sink,
                key,
                outcome,
            });
            continue;
        }
        let event: RetailEvent = serde_json::from_str(&r.get::<_, String>(2))?;
        // After a permanent refusal the replay is a new attempt (a new idempotency key); after
        // a transient failure it is the same attempt again (its key kept, so it cannot book twice).
        let (generation, last_refused): (i32, bool) = (r.get(3), r.get(4));
        let attempt = if last_refused {
            generation + 1
        } else {
            generation
        };
        let mut transient = false;
        let result: Result<(), String> = match (sink.as_str(), &event) {
            ("shopify", _) => match sinks.shopify.as_mut() {
                Some(s) => match s.deliver(std::slice::from_ref(&event)).await {
                    Ok(report) => match report.failed.first() {
                        Some((_, e)) => Err(e.message.clone()),
                        None => Ok(()),
                    },
                    Err(e) => Err(e.message),
                },
                None => Err("the shopify sink is not configured".into()),
            },
            ("wms", _) => match sinks.wms.as_ref() {
                Some(s) => s.deliver(&event).await.map(drop).map_err(|e| e.message),
                None => Err("the wms sink is not configured".into()),
            },
            ("accounting", RetailEvent::JournalEntry(entry)) => match sinks.accounting.as_mut() {
                Some(s) => {
                    let r = s.deliver_as(entry, attempt.max(0) as u32).await;
                    transient = r.as_ref().is_err_and(|e| e.is_transient());
                    client
                        .execute(
                            "UPDATE odoo_cdc.dead_letters SET generation = $2, last_refused = $3 WHERE id = $1",
                            &[&id, &attempt, &!transient],
                        )
                        .await?;
                    r.map_err(|e| e.message)
                }
                None => Err("the accounting sink is not configured".into()),
            },
            ("shopify_fulfillment", _) => match fulfillment.as_ref() {
                Some(s) => {
                    let r = s.deliver(&event).await;
                    transient = r.as_ref().is_err_and(|e| e.is_transient());
                    r.map(drop).map_err(|e| e.message)
                }
                None => Err(
                    "the shopify fulfillment sink is not configured (sinks.shopify.fulfillments)"
                        .into(),
                ),
            },
            (other, _) => Err(format!("unknown sink {other}")),
        };
        let outcome = match result {
            Ok(()) => {
                client
                    .execute(
                        "UPDATE odoo_cdc.dead_letters SET replayed_at = now() WHERE id = $1",
                        &[&id],
                    )
                    .await?;
                Ok(())
            }
            Err(reason) if transient => Err(format!(
                "{reason} (transient; the next replay repeats this attempt)"
            )),
            Err(reason) => Err(reason),
        };
        results.push(Replayed {
            id,
            sink,
            key,
            outcome,
        });
    }
    Ok(results)
}

/// Applies a dead-lettered webhook to Odoo again (after the SKU, tax or data is fixed).
async fn replay_webhook(
    cfg: &Config,
    client: &tokio_postgres::Client,
    dead_id: i64,
    event: &str,
) -> Result<Result<(), String>> {
    let Some(odoo) = &cfg.odoo else {
        return Ok(Err("no [odoo] section in the config".into()));
    };
    let inbox_id = serde_json::from_str::<serde_json::Value>(event)?["inbox_id"]
        .as_i64()
        .ok_or_else(|| anyhow!("dead letter {dead_id} names no inbox row"))?;
    let Some(r) = client
        .query_opt(
            "SELECT id, topic, order_key, payload, attempts FROM odoo_cdc.inbox WHERE id = $1",
            &[&inbox_id],
        )
        .await?
    else {
        bail!("inbox row {inbox_id} of dead letter {dead_id} is gone");
    };
    let row = crate::writeback::inbox::Row {
        id: r.get(0),
        topic: r.get(1),
        order_key: r.get(2),
        payload: r.get(3),
        attempts: 0,
        age_secs: 0.0,
    };
    let wb = crate::cli::run::build_writeback(odoo, cfg.wms.as_ref())?;
    crate::state::audit(
        client,
        &row.order_key,
        Some(row.id),
        "replay",
        &format!("dead letter {dead_id} replayed"),
        None,
    )
    .await;
    let outcome = crate::writeback::inbox::apply(client, &wb, &row).await;
    match &outcome {
        crate::writeback::inbox::Outcome::Applied(_) => {
            crate::writeback::inbox::record(client, &row, &outcome, None).await?;
            client
                .execute(
                    "UPDATE odoo_cdc.dead_letters SET replayed_at = now() WHERE id = $1",
                    &[&dead_id],
                )
                .await?;
            Ok(Ok(()))
        }
        crate::writeback::inbox::Outcome::Retry(e) => Ok(Err(e.to_string())),
        crate::writeback::inbox::Outcome::Dead(reason) => {
            crate::state::audit(
                client,
                &row.order_key,
                Some(row.id),
                "replay-failed",
                reason,
                None,
            )
            .await;
            Ok(Err(reason.clone()))
        }
    }
}

/// `odoo-cdc audit --order <shopify id>`: the trail, oldest first; false when there is none.
pub async fn audit(mut cfg: Config, order: &str, json: bool, out: &mut impl Write) -> Result<bool> {
    let client = state_client(&mut cfg, true).await?;
    let rows = client
        .query(
            "SELECT id, at::text, kind, inbox_id, odoo_id, detail FROM odoo_cdc.audit WHERE shopify_id = $1 ORDER BY id",
            &[&order],
        )
        .await?;
    for r in &rows {
        let (at, kind, detail): (String, String, String) = (r.get(1), r.get(2), r.get(5));
        let (inbox, odoo): (Option<i64>, Option<i64>) = (r.get(3), r.get(4));
        if json {
            writeln!(
                out,
                "{}",
                serde_json::json!({"at": at, "shopify_id": order, "kind": kind, "inbox_id": inbox, "odoo_id": odoo, "detail": detail})
            )?;
        } else {
            let odoo = odoo.map_or_else(|| "-".to_string(), |i| i.to_string());
            writeln!(out, "{at}\t{kind}\todoo:{odoo}\t{detail}")?;
        }
    }
    Ok(!rows.is_empty())
}
