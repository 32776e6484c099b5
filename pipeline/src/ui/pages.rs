//! The workbench's pages, each one SQL round over indexed, paged queries against odoo-cdc's
//! state (and Odoo's own tables for the order trail).

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Result;
use serde_json::Value;

use super::auth::Session;
use super::html::{csrf, esc, status, table, url_enc};
use super::Workbench;

/// Rows a page shows at once.
pub const PAGE: i64 = 50;

type Q = HashMap<String, String>;

fn param<'a>(q: &'a Q, k: &str) -> Option<&'a str> {
    q.get(k).map(|s| s.trim()).filter(|s| !s.is_empty())
}

fn pretty(text: &str) -> String {
    serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| text.to_string())
}

/// A comment box and a button: an operator's action form.
fn action(s: &Session, path: &str, id: &str, label: &str, hidden: &[(&str, &str)]) -> String {
    if !s.operator() {
        return String::new();
    }
    let mut fields = String::new();
    for (k, v) in hidden {
        let _ = write!(
            fields,
            "<input type=\"hidden\" name=\"{k}\" value=\"{}\">",
            esc(v)
        );
    }
    format!(
        "<form method=\"post\" action=\"{}\" class=\"inline action\" id=\"{id}-form\">{}{fields}\
         <input name=\"comment\" id=\"{id}-comment\" placeholder=\"why (required)\" required size=\"28\">\
         <button id=\"{id}\">{}</button></form>",
        esc(path),
        csrf(s),
        esc(label)
    )
}

/// **Now**: readiness, sinks, the last hour, outbox and inbox.
pub async fn now(w: &Workbench, _s: &Session, _q: &Q) -> Result<String> {
    let shared = &w.shared;
    let (ready, checks) = crate::ops::health::readiness(shared).await;
    let mut out = String::new();
    let _ = write!(
        out,
        "<div class=\"banner {}\" id=\"ready\">{}</div>\
         <button type=\"button\" id=\"autorefresh\">Pause auto-refresh</button>",
        if ready { "ok" } else { "bad" },
        if ready {
            "Ready: every check passes (/readyz 200)"
        } else {
            "Not ready: a check fails (/readyz 503)"
        }
    );
    let mut rows = Vec::new();
    if let Some(map) = checks["checks"].as_object() {
        for (name, c) in map {
            if name == "sinks" {
                if let Some(sinks) = c.as_object() {
                    for (sink, c) in sinks {
                        rows.push(check_row(&format!("sink {sink}"), c));
                    }
                }
            } else {
                rows.push(check_row(name, c));
            }
        }
    }
    out.push_str("<h2>Readiness checks</h2>");
    out.push_str(&table("checks", &["check", "state", "detail"], &rows));

    let [tps, delivered, lag, lag_bytes] = w.series.points();
    out.push_str("<h2>Last hour</h2><div class=\"charts\" id=\"charts\">");
    out.push_str(&super::series::svg("Transactions read", "/s", &tps));
    out.push_str(&super::series::svg("Events delivered", "/s", &delivered));
    out.push_str(&super::series::svg("Replication lag", "s", &lag));
    out.push_str(&super::series::svg("Unconfirmed WAL", "bytes", &lag_bytes));
    out.push_str("</div>");

    let client = w.state.client().await?;
    let outbox: HashMap<String, i64> = client
        .query(
            "SELECT sink, count(*) FROM odoo_cdc.outbox GROUP BY sink",
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let stats = shared.stats.lock().map(|v| v.clone()).unwrap_or_default();
    let mut rows = Vec::new();
    for (name, st) in &stats {
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let done = load(&st.delivered) + load(&st.dead) + load(&st.parked);
        let failing = st.failing_for().map_or_else(
            || status(true, "delivering"),
            |d| {
                let e = st
                    .last_error
                    .lock()
                    .ok()
                    .and_then(|g| g.clone())
                    .unwrap_or_default();
                status(false, &format!("failing {}s: {e}", d.as_secs()))
            },
        );
        rows.push(vec![
            esc(name),
            failing,
            load(&st.delivered).to_string(),
            load(&st.retries).to_string(),
            load(&st.dead).to_string(),
            load(&st.enqueued).saturating_sub(done).to_string(),
            outbox.get(*name).copied().unwrap_or(0).to_string(),
        ]);
    }
    out.push_str("<h2>Sinks</h2>");
    out.push_str(&table(
        "sinks",
        &[
            "sink",
            "state",
            "delivered",
            "retries",
            "dead-lettered",
            "queued",
            "outbox",
        ],
        &rows,
    ));
    let r = client
        .query_one(
            "SELECT count(*) FILTER (WHERE status = 'pending'), count(*) FILTER (WHERE status = 'pending' AND attempts > 0), \
             coalesce(extract(epoch FROM now() - min(received_at) FILTER (WHERE status = 'pending'))::bigint, 0) \
             FROM odoo_cdc.inbox WHERE status = 'pending'",
            &[],
        )
        .await?;
    let (pending, retrying, oldest): (i64, i64, i64) = (r.get(0), r.get(1), r.get(2));
    let dead: i64 = client
        .query_one(
            "SELECT count(*) FROM odoo_cdc.dead_letters WHERE replayed_at IS NULL",
            &[],
        )
        .await?
        .get(0);
    out.push_str("<h2>Backlog</h2>");
    out.push_str(&table(
        "backlog",
        &["what", "count"],
        &[
            vec![
                "webhooks pending in the inbox".into(),
                format!("<span id=\"inbox-pending\">{pending}</span>"),
            ],
            vec!["of them retrying".into(), retrying.to_string()],
            vec!["oldest pending (s)".into(), oldest.to_string()],
            vec![
                "<a href=\"/exceptions\">dead letters open</a>".into(),
                format!("<span id=\"dead-open\">{dead}</span>"),
            ],
            vec![
                "events parked in the outbox".into(),
                outbox.values().sum::<i64>().to_string(),
            ],
        ],
    ));
    Ok(out)
}

fn check_row(name: &str, c: &Value) -> Vec<String> {
    let ok = c["ok"].as_bool().unwrap_or(false);
    let detail = match &c["detail"] {
        Value::String(s) => s.clone(),
        v => v.to_string(),
    };
    vec![
        esc(name),
        status(ok, if ok { "ok" } else { "failing" }),
        esc(&detail),
    ]
}

/// **Exceptions**: the dead letters, filtered and paged, with their causes.
pub async fn exceptions(w: &Workbench, s: &Session, q: &Q) -> Result<String> {
    let client = w.state.client().await?;
    let sink = param(q, "sink");
    let reason = param(q, "reason");
    let older: Option<f64> = param(q, "older_than_hours")
        .and_then(|h| h.parse::<f64>().ok())
        .map(|h| h * 3600.0);
    let state = param(q, "state").unwrap_or("open");
    let before: Option<i64> = param(q, "before").and_then(|b| b.parse().ok());
    let open_only = state == "open";
    let closed_only = state == "closed";
    let mut out = String::new();
    // The causes of what is open, biggest first.
    let causes = client
        .query(
            "SELECT sink, reason, count(*), min(created_at)::text FROM odoo_cdc.dead_letters WHERE replayed_at IS NULL \
             GROUP BY sink, reason ORDER BY count(*) DESC, sink, reason LIMIT 20",
            &[],
        )
        .await?;
    let rows: Vec<Vec<String>> = causes
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let (sink, reason, n, since): (String, String, i64, String) =
                (r.get(0), r.get(1), r.get(2), r.get(3));
            vec![
                esc(&sink),
                format!(
                    "<a href=\"/exceptions?sink={}&amp;reason={}\">{}</a>",
                    url_enc(&sink),
                    url_enc(&reason),
                    esc(&reason)
                ),
                n.to_string(),
                esc(&since),
                action(
                    s,
                    "/exceptions/replay-cause",
                    &format!("replay-cause-{i}"),
                    &format!("Replay all {n}"),
                    &[("sink", &sink), ("reason", &reason)],
                ),
            ]
        })
        .collect();
    out.push_str("<h2>Open causes</h2>");
    out.push_str(&table(
        "causes",
        &["sink", "reason", "open", "since", ""],
        &rows,
    ));
    let _ = write!(
        out,
        "<h2>Dead letters</h2><form class=\"filters\" method=\"get\" action=\"/exceptions\" id=\"filters\">\
         <label>sink <select name=\"sink\" id=\"f-sink\"><option value=\"\">all</option>{}</select></label>\
         <label>reason contains <input name=\"reason\" id=\"f-reason\" value=\"{}\"></label>\
         <label>older than (h) <input name=\"older_than_hours\" id=\"f-age\" size=\"4\" value=\"{}\"></label>\
         <label>state <select name=\"state\" id=\"f-state\">{}</select></label><button id=\"f-apply\">Filter</button></form>",
        ["shopify", "shopify_fulfillment", "wms", "accounting", "odoo"]
            .iter()
            .map(|k| format!(
                "<option value=\"{k}\"{}>{k}</option>",
                if Some(*k) == sink { " selected" } else { "" }
            ))
            .collect::<String>(),
        esc(reason.unwrap_or("")),
        esc(param(q, "older_than_hours").unwrap_or("")),
        ["open", "closed", "all"]
            .iter()
            .map(|k| format!(
                "<option value=\"{k}\"{}>{k}</option>",
                if *k == state { " selected" } else { "" }
            ))
            .collect::<String>(),
    );
    let limit = PAGE + 1;
    let rows = client
        .query(
            "SELECT id, sink, key, reason, count, created_at::text, last_seen::text, replayed_at::text, discarded_at::text \
             FROM odoo_cdc.dead_letters WHERE ($1::text IS NULL OR sink = $1) \
             AND ($2::text IS NULL OR strpos(lower(reason), lower($2)) > 0) \
             AND ($3::float8 IS NULL OR created_at < now() - make_interval(secs => $3)) \
             AND (NOT $4 OR replayed_at IS NULL) AND (NOT $5 OR replayed_at IS NOT NULL) \
             AND ($6::bigint IS NULL OR id < $6) ORDER BY id DESC LIMIT $7",
            &[&sink, &reason, &older, &open_only, &closed_only, &before, &limit],
        )
        .await?;
    let more = rows.len() as i64 > PAGE;
    let mut last_id = None;
    let cells: Vec<Vec<String>> = rows
        .iter()
        .take(PAGE as usize)
        .map(|r| {
            let id: i64 = r.get(0);
            last_id = Some(id);
            let (replayed, discarded): (Option<String>, Option<String>) = (r.get(7), r.get(8));
            let state = match (discarded, replayed) {
                (Some(t), _) => format!("discarded {t}"),
                (None, Some(t)) => format!("replayed {t}"),
                (None, None) => "open".into(),
            };
            vec![
                format!("<a href=\"/exceptions/{id}\" class=\"dl\">{id}</a>"),
                esc(&r.get::<_, String>(1)),
                esc(&r.get::<_, String>(2)),
                esc(&r.get::<_, String>(3)),
                r.get::<_, i32>(4).to_string(),
                esc(&r.get::<_, String>(5)),
                esc(&r.get::<_, String>(6)),
                esc(&state),
            ]
        })
        .collect();
    out.push_str(&table(
        "dead-letters",
        &[
            "id", "sink", "key", "reason", "seen", "first", "last", "state",
        ],
        &cells,
    ));
    if let (true, Some(last)) = (more, last_id) {
        let mut next: Vec<String> = q
            .iter()
            .filter(|(k, v)| k.as_str() != "before" && k.as_str() != "done" && !v.is_empty())
            .map(|(k, v)| format!("{}={}", url_enc(k), url_enc(v)))
            .collect();
        next.sort();
        next.push(format!("before={last}"));
        let _ = write!(
            out,
            "<a id=\"older\" href=\"/exceptions?{}\">Older →</a>",
            esc(&next.join("&"))
        );
    }
    Ok(out)
}

/// One dead letter: its event, the webhook behind it, its trail, and the actions.
pub async fn dead_letter(w: &Workbench, s: &Session, id: i64) -> Result<Option<String>> {
    let client = w.state.client().await?;
    let Some(r) = client
        .query_opt(
            "SELECT id, sink, key, reason, source_lsn, event::text, count, created_at::text, last_seen::text, \
             replayed_at::text, discarded_at::text, generation FROM odoo_cdc.dead_letters WHERE id = $1",
            &[&id],
        )
        .await?
    else {
        return Ok(None);
    };
    let (sink, key, reason, lsn, event): (String, String, String, String, String) =
        (r.get(1), r.get(2), r.get(3), r.get(4), r.get(5));
    let (replayed, discarded): (Option<String>, Option<String>) = (r.get(9), r.get(10));
    let open = replayed.is_none();
    let state = match (&discarded, &replayed) {
        (Some(t), _) => format!("discarded {t}"),
        (None, Some(t)) => format!("replayed {t}"),
        (None, None) => "open".into(),
    };
    let mut out = table(
        "dead-letter",
        &["field", "value"],
        &[
            vec!["sink".into(), esc(&sink)],
            vec![
                "key".into(),
                format!("<a href=\"/trail?q={}\">{}</a>", url_enc(&key), esc(&key)),
            ],
            vec![
                "reason".into(),
                format!("<span id=\"reason\">{}</span>", esc(&reason)),
            ],
            vec!["source commit LSN".into(), esc(&lsn)],
            vec![
                "seen".into(),
                format!(
                    "{} times, first {}, last {}",
                    r.get::<_, i32>(6),
                    esc(&r.get::<_, String>(7)),
                    esc(&r.get::<_, String>(8))
                ),
            ],
            vec![
                "idempotency generation".into(),
                r.get::<_, i32>(11).to_string(),
            ],
            vec![
                "state".into(),
                format!("<span id=\"state\">{}</span>", esc(&state)),
            ],
        ],
    );
    if open {
        out.push_str("<p>");
        out.push_str(&action(
            s,
            &format!("/exceptions/{id}/replay"),
            "replay",
            "Replay",
            &[],
        ));
        out.push(' ');
        out.push_str(&action(
            s,
            &format!("/exceptions/{id}/discard"),
            "discard",
            "Discard",
            &[],
        ));
        out.push_str("</p>");
    }
    let _ = write!(
        out,
        "<h2>Event</h2><pre id=\"event\">{}</pre>",
        esc(&pretty(&event))
    );
    // A webhook's dead letter: the webhook as Shopify or the warehouse sent it.
    if let Some(inbox) = serde_json::from_str::<Value>(&event)
        .ok()
        .and_then(|v| v["inbox_id"].as_i64())
    {
        if let Some(i) = client
            .query_opt(
                "SELECT topic, event_id, received_at::text, attempts, payload FROM odoo_cdc.inbox WHERE id = $1",
                &[&inbox],
            )
            .await?
        {
            let _ = write!(
                out,
                "<h2>Webhook {} ({}, received {}, {} attempts)</h2><pre id=\"payload\">{}</pre>",
                esc(&i.get::<_, String>(0)),
                esc(&i.get::<_, String>(1)),
                esc(&i.get::<_, String>(2)),
                i.get::<_, i32>(3),
                esc(&pretty(&i.get::<_, String>(4)))
            );
        }
    }
    out.push_str("<h2>Trail of this key</h2>");
    out.push_str(&audit_table(&client, &[key]).await?);
    Ok(Some(out))
}

async fn audit_table(client: &tokio_postgres::Client, keys: &[String]) -> Result<String> {
    let rows = client
        .query(
            "SELECT at::text, shopify_id, kind, odoo_id, coalesce(actor, ''), detail FROM odoo_cdc.audit \
             WHERE shopify_id = ANY($1) ORDER BY id DESC LIMIT 500",
            &[&keys],
        )
        .await?;
    let cells: Vec<Vec<String>> = rows
        .iter()
        .rev()
        .map(|r| {
            vec![
                esc(&r.get::<_, String>(0)),
                esc(&r.get::<_, String>(1)),
                esc(&r.get::<_, String>(2)),
                r.get::<_, Option<i64>>(3)
                    .map_or_else(|| "-".into(), |i| i.to_string()),
                esc(&r.get::<_, String>(4)),
                esc(&r.get::<_, String>(5)),
            ]
        })
        .collect();
    Ok(table(
        "audit",
        &["at", "subject", "what", "odoo id", "who", "detail"],
        &cells,
    ))
}

/// **Blocked orders**: held by the guard, webhooks pending or retrying, totals that differ.
pub async fn blocked(w: &Workbench, _s: &Session, _q: &Q) -> Result<String> {
    let client = w.state.client().await?;
    let mut out = String::new();
    let rows = client
        .query(
            "SELECT id, topic, order_key, received_at::text, attempts, next_attempt_at::text, coalesce(last_error, '') \
             FROM odoo_cdc.inbox WHERE status = 'pending' ORDER BY id LIMIT 200",
            &[],
        )
        .await?;
    let mut held = Vec::new();
    let mut waiting = Vec::new();
    for r in &rows {
        let (topic, key): (String, String) = (r.get(1), r.get(2));
        let attempts: i32 = r.get(4);
        let why = if attempts == 0 {
            "not applied yet".to_string()
        } else {
            format!(
                "retrying ({attempts} attempts), next at {}: {}",
                r.get::<_, String>(5),
                r.get::<_, String>(6)
            )
        };
        let row = vec![
            format!("<a href=\"/trail?q={}\">{}</a>", url_enc(&key), esc(&key)),
            esc(&topic),
            esc(&r.get::<_, String>(3)),
            esc(&why),
        ];
        if topic == "orders/create" {
            held.push(row.clone());
        }
        waiting.push(row);
    }
    out.push_str(
        "<h2>Held by the oversell guard</h2><p class=\"muted\">Storefront orders not yet in Odoo: \
         their units stay held back from Shopify's available until Odoo has the order.</p>",
    );
    out.push_str(&table(
        "held",
        &["Shopify order", "topic", "since", "why"],
        &held,
    ));
    out.push_str("<h2>Webhooks pending or retrying</h2>");
    out.push_str(&table(
        "pending",
        &["key", "topic", "received", "why"],
        &waiting,
    ));
    let rows = client
        .query(
            "SELECT at::text, shopify_id, odoo_id, detail FROM odoo_cdc.audit WHERE kind = 'total-mismatch' \
             ORDER BY id DESC LIMIT 100",
            &[],
        )
        .await?;
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let key: String = r.get(1);
            vec![
                format!("<a href=\"/trail?q={}\">{}</a>", url_enc(&key), esc(&key)),
                r.get::<_, Option<i64>>(2)
                    .map_or_else(|| "-".into(), |i| i.to_string()),
                esc(&r.get::<_, String>(0)),
                esc(&r.get::<_, String>(3)),
            ]
        })
        .collect();
    out.push_str("<h2>Odoo total differs from Shopify's</h2>");
    out.push_str(&table(
        "mismatches",
        &["Shopify order", "Odoo id", "since", "why"],
        &cells,
    ));
    let dead: i64 = client
        .query_one(
            "SELECT count(*) FROM odoo_cdc.dead_letters WHERE replayed_at IS NULL AND sink = 'odoo'",
            &[],
        )
        .await?
        .get(0);
    let _ = write!(
        out,
        "<p><a href=\"/exceptions?sink=odoo\">{dead} webhooks dead-lettered</a> (Odoo refused them; replay after the fix).</p>"
    );
    Ok(out)
}

/// **Drift**: the last reconciliation, and running one (with `--fix`) from here.
pub async fn drift(w: &Workbench, s: &Session, q: &Q) -> Result<String> {
    let mut out = String::new();
    if s.operator() {
        let _ = write!(
            out,
            "<form method=\"post\" action=\"/drift/reconcile\" id=\"reconcile-form\">{}\
             <label>system <select name=\"sink\" id=\"r-sink\"><option value=\"\">all</option>\
             <option value=\"shopify\">shopify</option><option value=\"wms\">wms</option><option value=\"accounting\">accounting</option></select></label> \
             <label><input type=\"checkbox\" name=\"fix\" value=\"1\" id=\"r-fix\"> fix what can be fixed</label> \
             <input name=\"comment\" id=\"r-comment\" placeholder=\"why (required)\" required size=\"28\"> \
             <button id=\"reconcile\">Reconcile now</button></form>",
            csrf(s)
        );
    }
    let Some(report) = crate::ops::reconcile::last(&w.state).await else {
        out.push_str("<p id=\"no-report\">No reconciliation has run yet.</p>");
        return Ok(out);
    };
    let only = param(q, "sink");
    let checked: Vec<String> = report["checked"]
        .as_object()
        .map(|m| m.iter().map(|(k, v)| format!("{k} {v}")).collect())
        .unwrap_or_default();
    let _ = write!(
        out,
        "<p id=\"report\">Last run {} at snapshot {}: {} checked.{}</p>",
        esc(report["at"].as_str().unwrap_or("?")),
        esc(report["snapshot_lsn"].as_str().unwrap_or("?")),
        esc(&checked.join(", ")),
        report["pipeline_behind"]
            .as_str()
            .map(|b| format!(" <span class=\"bad\">{}</span>", esc(b)))
            .unwrap_or_default()
    );
    let empty = Vec::new();
    let drifts = report["drifts"].as_array().unwrap_or(&empty);
    let cells: Vec<Vec<String>> = drifts
        .iter()
        .filter(|d| only.is_none_or(|o| d["sink"] == o))
        .map(|d| {
            let key = d["key"].as_str().unwrap_or("");
            let fixed = d["fixed"].as_bool().unwrap_or(false);
            vec![
                esc(d["sink"].as_str().unwrap_or("")),
                format!("<a href=\"/trail?q={}\">{}</a>", url_enc(key), esc(key)),
                esc(d["odoo"].as_str().unwrap_or("")),
                esc(d["system"].as_str().unwrap_or("")),
                esc(d["reason"].as_str().unwrap_or("")),
                if fixed {
                    status(true, "fixed")
                } else if d["fixable"].as_bool().unwrap_or(false) {
                    status(false, "open (fixable)")
                } else {
                    status(false, "open (needs a person)")
                },
            ]
        })
        .collect();
    out.push_str("<h2>Drift</h2>");
    out.push_str(&table(
        "drifts",
        &["system", "key", "Odoo", "system has", "reason", "state"],
        &cells,
    ));
    let skipped: Vec<Vec<String>> = report["skipped"]
        .as_object()
        .map(|m| m.iter().map(|(k, v)| vec![esc(k), v.to_string()]).collect())
        .unwrap_or_default();
    let cleared: Vec<Vec<String>> = report["unexplained_cleared"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            vec![
                esc(&format!(
                    "{}@{}",
                    c["sku"].as_str().unwrap_or(""),
                    c["warehouse"].as_str().unwrap_or("")
                )),
                c["units"].to_string(),
                c["age_secs"].to_string(),
            ]
        })
        .collect();
    out.push_str(
        "<h2>Cleared from the oversell guard</h2><p class=\"muted\">Units Shopify lost that no webhook \
         explained within Shopify's retry window: no longer held back from the level.</p>",
    );
    out.push_str(&table(
        "cleared",
        &["level", "units", "held for (s)"],
        &cleared,
    ));
    out.push_str("<h2>Not compared</h2>");
    out.push_str(&table("skipped", &["why", "count"], &skipped));
    Ok(out)
}

/// **Order trail**: everything known of a Shopify order, Odoo order, picking or invoice.
pub async fn trail(w: &Workbench, _s: &Session, q: &Q) -> Result<String> {
    let query = param(q, "q").unwrap_or("");
    let mut out = format!(
        "<form method=\"get\" action=\"/trail\" id=\"trail-form\"><input name=\"q\" id=\"q\" size=\"40\" value=\"{}\" \
         placeholder=\"Shopify order id, S00042, WH/OUT/00012, INV/2026/00001\"> <button id=\"search\">Search</button></form>",
        esc(query)
    );
    if query.is_empty() {
        return Ok(out);
    }
    let client = w.state.client().await?;
    let numeric: Option<i64> = query.parse().ok();
    let shopify_id = query.rsplit('/').next().unwrap_or(query).to_string();
    let mut keys: BTreeSet<String> = [query.to_string(), shopify_id.clone()].into();
    // A picking or an invoice leads to its sale order (their origin), and the order to the rest.
    let mut names: Vec<String> = vec![query.to_string()];
    if let Ok(rows) = client
        .query(
            "SELECT o.name FROM stock_picking p JOIN sale_order o ON o.id = p.sale_id WHERE p.name = $1 \
             UNION SELECT invoice_origin FROM account_move WHERE name = $1 AND invoice_origin IS NOT NULL LIMIT 20",
            &[&query],
        )
        .await
    {
        names.extend(rows.iter().map(|r| r.get::<_, String>(0)));
    }
    // Odoo's records: the sale order, its deliveries and invoices.
    let orders = client
        .query(
            "SELECT id, name, state, amount_total::text, coalesce(client_order_ref, '') FROM sale_order \
             WHERE name = ANY($1) OR client_order_ref = $2 OR id = $3::bigint ORDER BY id LIMIT 20",
            &[&names, &transforms::shopify::client_order_ref(&shopify_id), &numeric],
        )
        .await;
    let mut records = Vec::new();
    let mut origins: Vec<String> = vec![query.to_string()];
    let mut order_ids: Vec<i32> = Vec::new();
    match orders {
        Ok(rows) => {
            for r in &rows {
                let (id, name, state, total, reference): (
                    i32,
                    String,
                    String,
                    Option<String>,
                    String,
                ) = (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4));
                if let Some(s) = reference.strip_prefix("shopify:") {
                    keys.insert(s.to_string());
                }
                origins.push(name.clone());
                order_ids.push(id);
                records.push(vec![
                    "sale.order".into(),
                    id.to_string(),
                    esc(&name),
                    esc(&state),
                    esc(&total.unwrap_or_default()),
                    esc(&reference),
                ]);
            }
        }
        Err(e) => records.push(vec![
            "sale.order".into(),
            "-".into(),
            esc(&format!("cannot read: {e}")),
            String::new(),
            String::new(),
            String::new(),
        ]),
    }
    if let Ok(rows) = client
        .query(
            // Odoo 18's origin is `S00025 - <customer reference>`: the order's deliveries by
            // sale_id, its returns by their origin naming a delivery.
            "SELECT id, name, state, coalesce(origin, '') FROM stock_picking WHERE name = $1 OR origin = ANY($2) \
             OR sale_id = ANY($3) ORDER BY id LIMIT 50",
            &[&query, &origins, &order_ids],
        )
        .await
    {
        for r in &rows {
            let (id, name, state, origin): (i32, String, String, String) =
                (r.get(0), r.get(1), r.get(2), r.get(3));
            keys.insert(name.clone());
            records.push(vec![
                "stock.picking".into(),
                id.to_string(),
                esc(&name),
                esc(&state),
                String::new(),
                esc(&origin),
            ]);
        }
    }
    let mut posted: Vec<(i64, String)> = Vec::new();
    if let Ok(rows) = client
        .query(
            "SELECT id, coalesce(name, ''), state, move_type, amount_total::text, coalesce(invoice_origin, '') FROM account_move \
             WHERE name = $1 OR invoice_origin = ANY($2) OR id = $3::bigint ORDER BY id LIMIT 50",
            &[&query, &origins, &numeric],
        )
        .await
    {
        for r in &rows {
            let id: i32 = r.get(0);
            keys.insert(format!("move-{id}"));
            if r.get::<_, String>(2) == "posted" {
                posted.push((i64::from(id), r.get::<_, String>(1)));
            }
            records.push(vec![
                format!("account.move ({})", esc(&r.get::<_, String>(3))),
                id.to_string(),
                esc(&r.get::<_, String>(1)),
                esc(&r.get::<_, String>(2)),
                esc(&r.get::<_, Option<String>>(4).unwrap_or_default()),
                esc(&r.get::<_, String>(5)),
            ]);
        }
    }
    out.push_str("<h2>Odoo</h2>");
    out.push_str(&table(
        "odoo-records",
        &["model", "id", "name", "state", "total", "reference"],
        &records,
    ));
    if w.cfg.sinks.accounting.is_some() && !posted.is_empty() {
        out.push_str("<h2>Journal entries (the books)</h2>");
        out.push_str(&journal_entries(w, &posted).await);
    }
    let keys: Vec<String> = keys.into_iter().collect();
    // Webhooks received for it.
    let rows = client
        .query(
            "SELECT id, topic, received_at::text, status, attempts, coalesce(last_error, ''), applied_at::text FROM odoo_cdc.inbox \
             WHERE order_key = ANY($1) ORDER BY id LIMIT 200",
            &[&keys],
        )
        .await?;
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.get::<_, i64>(0).to_string(),
                esc(&r.get::<_, String>(1)),
                esc(&r.get::<_, String>(2)),
                esc(&r.get::<_, String>(3)),
                r.get::<_, i32>(4).to_string(),
                esc(&r.get::<_, Option<String>>(6).unwrap_or_default()),
                esc(&r.get::<_, String>(5)),
            ]
        })
        .collect();
    out.push_str("<h2>Webhooks</h2>");
    out.push_str(&table(
        "webhooks",
        &[
            "inbox",
            "topic",
            "received",
            "status",
            "attempts",
            "applied",
            "last error",
        ],
        &cells,
    ));
    // The warehouse: shipments and receipts, and the Shopify fulfillment of each.
    let rows = client
        .query(
            "SELECT id, kind, reference, coalesce(picking, ''), sequence, status, coalesce(carrier, ''), \
             coalesce(tracking_number, ''), coalesce(backorder, ''), coalesce(fulfillment, ''), applied_at::text \
             FROM odoo_cdc.transfers WHERE reference = ANY($1) OR picking = ANY($1) ORDER BY reference, sequence LIMIT 100",
            &[&keys],
        )
        .await?;
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            (0..11)
                .map(|i| match i {
                    4 => r.get::<_, i32>(4).to_string(),
                    10 => esc(&r.get::<_, Option<String>>(10).unwrap_or_default()),
                    _ => esc(&r.get::<_, String>(i)),
                })
                .collect()
        })
        .collect();
    out.push_str("<h2>Warehouse and fulfillment</h2>");
    out.push_str(&table(
        "transfers",
        &[
            "WMS id",
            "kind",
            "order",
            "picking",
            "parcel",
            "status",
            "carrier",
            "tracking",
            "backorder",
            "Shopify fulfillment",
            "applied",
        ],
        &cells,
    ));
    let rows = client
        .query(
            "SELECT id, sink, key, reason, replayed_at IS NULL FROM odoo_cdc.dead_letters WHERE key = ANY($1) ORDER BY id LIMIT 100",
            &[&keys],
        )
        .await?;
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let id: i64 = r.get(0);
            vec![
                format!("<a href=\"/exceptions/{id}\">{id}</a>"),
                esc(&r.get::<_, String>(1)),
                esc(&r.get::<_, String>(2)),
                esc(&r.get::<_, String>(3)),
                if r.get::<_, bool>(4) {
                    status(false, "open")
                } else {
                    "closed".into()
                },
            ]
        })
        .collect();
    out.push_str("<h2>Dead letters</h2>");
    out.push_str(&table(
        "trail-dead-letters",
        &["id", "sink", "key", "reason", "state"],
        &cells,
    ));
    if let Some(report) = crate::ops::reconcile::last(&w.state).await {
        let drifts: Vec<Vec<String>> = report["drifts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|d| {
                d["key"]
                    .as_str()
                    .is_some_and(|k| keys.iter().any(|x| x == k))
            })
            .map(|d| {
                vec![
                    esc(d["sink"].as_str().unwrap_or("")),
                    esc(d["key"].as_str().unwrap_or("")),
                    esc(d["reason"].as_str().unwrap_or("")),
                    if d["fixed"] == true {
                        "fixed".into()
                    } else {
                        "open".into()
                    },
                ]
            })
            .collect();
        out.push_str("<h2>Drift (last reconciliation)</h2>");
        out.push_str(&table(
            "trail-drift",
            &["system", "key", "reason", "state"],
            &drifts,
        ));
    }
    out.push_str("<h2>Audit trail (webhooks, RPC calls and answers, fixes, actions)</h2>");
    out.push_str(&audit_table(&client, &keys).await?);
    Ok(out)
}

/// Each posted move's journal entries as the books answer now (by `DocNumber`, matched on the
/// `PrivateNote` odoo-cdc writes), or why the books could not be asked.
async fn journal_entries(w: &Workbench, posted: &[(i64, String)]) -> String {
    let mut books = w.books.lock().await;
    if books.is_none() {
        match crate::cli::run::accounting_sink(&w.cfg, &w.state, Duration::from_secs(10)).await {
            Ok(sink) => *books = sink,
            Err(e) => {
                return format!(
                    "<p class=\"bad\" id=\"books-error\">cannot ask the books: {}</p>",
                    esc(&format!("{e:#}"))
                )
            }
        }
    }
    let Some(sink) = books.as_mut() else {
        return String::new();
    };
    let mut cells = Vec::new();
    for (id, name) in posted {
        let found = tokio::time::timeout(Duration::from_secs(10), sink.booked_as(name)).await;
        match found {
            Ok(Ok(entries)) => {
                let mine: Vec<_> = entries.iter().filter(|e| e.move_id == *id).collect();
                if mine.is_empty() {
                    cells.push(vec![
                        id.to_string(),
                        esc(name),
                        status(false, "not in the books"),
                        String::new(),
                        String::new(),
                    ]);
                }
                for e in mine {
                    cells.push(vec![
                        id.to_string(),
                        esc(name),
                        esc(&e.id),
                        e.posting.to_string(),
                        e.debits.to_string(),
                    ]);
                }
            }
            Ok(Err(e)) => cells.push(vec![
                id.to_string(),
                esc(name),
                status(false, &format!("cannot ask the books: {e}")),
                String::new(),
                String::new(),
            ]),
            Err(_) => cells.push(vec![
                id.to_string(),
                esc(name),
                status(false, "the books did not answer within 10 s"),
                String::new(),
                String::new(),
            ]),
        }
    }
    table(
        "journal-entries",
        &["Odoo move", "name", "journal entry", "posting", "debits"],
        &cells,
    )
}
