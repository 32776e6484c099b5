//! `odoo-cdc reconcile [--sink shopify|wms|accounting] [--fix]`: compares Odoo with each system the
//! pipeline keeps in step with it, reports the drift with the reason it can infer, and with
//! `--fix` heals it through the sink's own idempotent path, reading the result back.
//!
//! Odoo's side is a repeatable-read snapshot of the published tables taken through the same
//! transforms as the stream (what the initial synchronisation would deliver now). A system read
//! while the stream still carries a change is not drift: a difference found in a first round is
//! reported only when it is still there in a second round, taken after the running pipeline
//! confirmed the first snapshot's position (or `settle` ran out).

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use anyhow::{Context, Result};
use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::{json, Value};
use transforms::{OdooVersion, RetailEvent, Sourced};

use crate::config::Config;

/// The systems reconciliation compares with Odoo.
pub const SINKS: [&str; 3] = ["shopify", "wms", "accounting"];

/// One difference between Odoo and a system.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Drift {
    /// `shopify`, `wms` or `accounting`.
    pub sink: String,
    /// What differs: `sku@warehouse`, a picking's name, or `move-<id>`.
    pub key: String,
    /// What Odoo says it should be.
    pub odoo: String,
    /// What the system has.
    pub system: String,
    /// Why, as far as it can be told.
    pub reason: String,
    /// Whether delivering Odoo's state again through the sink heals it.
    pub fixable: bool,
    /// With `--fix`: healed and read back.
    pub fixed: bool,
}

impl Drift {
    /// A drift of `sink` at `key`, not fixed yet.
    fn new(
        sink: &str,
        key: String,
        odoo: String,
        system: String,
        reason: String,
        fixable: bool,
    ) -> Self {
        Self {
            sink: sink.into(),
            key,
            odoo,
            system,
            reason,
            fixable,
            fixed: false,
        }
    }
}

/// A run's result.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// When it ran (RFC 3339, the state database's clock).
    pub at: String,
    /// The last snapshot's position.
    pub snapshot_lsn: String,
    /// What was compared, per system.
    pub checked: BTreeMap<String, usize>,
    /// The differences still there in the second round.
    pub drifts: Vec<Drift>,
    /// What was not compared, by reason, with how many: an Odoo warehouse not mapped to a
    /// Shopify location, a SKU Shopify does not sell (configuration, not drift).
    pub skipped: BTreeMap<String, usize>,
    /// Said once when the running pipeline had not confirmed the first snapshot's position
    /// within the settle time (its drifts may be changes still on their way).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pipeline_behind: Option<String>,
    /// Units the running pipeline's oversell guard held back because Shopify lost them, and
    /// stopped holding because no webhook explained them within Shopify's retry window (only
    /// reconciliation inside `odoo-cdc run` — scheduled, or from the workbench — reaches the guard).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unexplained_cleared: Vec<Cleared>,
}

/// Unexplained units the oversell guard stopped holding back.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Cleared {
    /// SKU.
    pub sku: String,
    /// Odoo warehouse.
    pub warehouse: String,
    /// Units given back to the Shopify level.
    pub units: i64,
    /// Seconds since the oldest of them was noticed.
    pub age_secs: u64,
}

/// Asks the running pipeline's oversell guard to stop holding back the units no webhook explained
/// within `window`, and waits (up to 5 s) for what it cleared. Nothing when no guard runs here.
pub async fn expire_guard(shared: &crate::runtime::Shared, window: Duration) -> Vec<Cleared> {
    if !shared.guard.is_active() {
        return Vec::new();
    }
    shared
        .guard
        .send(sinks::shopify::guard::GuardNote::Expire { older_than: window });
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while shared.guard.in_flight() > 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    shared
        .guard
        .take_expired()
        .into_iter()
        .map(|e| Cleared {
            sku: e.sku,
            warehouse: e.warehouse,
            units: e.units,
            age_secs: e.age.as_secs(),
        })
        .collect()
}

/// Reconciliation inside `odoo-cdc run`: the oversell guard's stale unexplained units are
/// cleared first (and reported, audited under `reconcile`), then [`reconcile`] runs.
pub async fn reconcile_in_process(
    cfg: Config,
    opts: &Options,
    shared: &crate::runtime::Shared,
) -> Result<Report> {
    let window = Duration::from_secs(cfg.reconcile.unexplained_after_secs);
    let cleared = if opts.sink.as_deref().is_none_or(|s| s == "shopify") {
        expire_guard(shared, window).await
    } else {
        Vec::new()
    };
    let state = shared.state.clone();
    let mut report = reconcile(cfg, opts).await?;
    if cleared.is_empty() {
        return Ok(report);
    }
    report.unexplained_cleared = cleared;
    if let Some(state) = state {
        let c = state.client().await?;
        for x in &report.unexplained_cleared {
            crate::state::audit(
                &c,
                "reconcile",
                None,
                "guard-expired",
                &format!(
                    "{}@{}: {} units Shopify lost {} s ago that no webhook explained within Shopify's retry window; no longer held back",
                    x.sku, x.warehouse, x.units, x.age_secs
                ),
                None,
            )
            .await;
        }
        crate::state::put(
            &state,
            "reconcile.last",
            &serde_json::to_string(&report).unwrap_or_default(),
        )
        .await?;
    }
    Ok(report)
}

impl Report {
    /// Drifts not healed.
    pub fn open(&self) -> usize {
        self.drifts.iter().filter(|d| !d.fixed).count()
    }
}

/// How to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// One system, or all configured ones.
    pub sink: Option<String>,
    /// Heal what can be healed.
    pub fix: bool,
    /// Longest wait for the running pipeline to pass the first snapshot.
    pub settle: Duration,
}

/// Odoo's side, from one snapshot.
struct OdooSide {
    lsn: cdc::Lsn,
    levels: BTreeMap<(String, String), Decimal>,
    deliveries: BTreeMap<String, RetailEvent>,
    entries: BTreeMap<i64, transforms::events::JournalEntry>,
}

async fn odoo_side(cfg: &Config, source: &cdc::SourceConfig) -> Result<OdooSide> {
    let version = match cfg.source.odoo_version {
        17 => OdooVersion::V17,
        19 => OdooVersion::V19,
        _ => OdooVersion::V18,
    };
    let mut loaded =
        crate::runtime::capture::restore_snapshot(source, &cfg.source.publication, version)
            .await
            .context("reading Odoo's tables")?;
    // Every level, every ready delivery and every posted move.
    let events: Vec<Sourced> = loaded.transformer.finish_resync(loaded.lsn.0, None);
    let mut side = OdooSide {
        lsn: loaded.lsn,
        levels: BTreeMap::new(),
        deliveries: BTreeMap::new(),
        entries: BTreeMap::new(),
    };
    for s in events {
        match s.event {
            RetailEvent::SellableChanged {
                sku,
                warehouse,
                qty,
            } => {
                side.levels.insert((sku, warehouse), qty);
            }
            e @ RetailEvent::FulfillmentRequested { .. } => {
                side.deliveries.insert(e.key(), e);
            }
            RetailEvent::JournalEntry(e) => {
                side.entries.insert(e.move_id, e);
            }
            _ => {}
        }
    }
    Ok(side)
}

/// Shopify orders whose webhook is committed and not yet applied to Odoo: Shopify took their
/// units, Odoo's sellable quantities do not show it yet.
async fn pending_orders(state: &crate::state::StateDb) -> Vec<sinks::shopify::GuardNote> {
    let mut settled = std::collections::BTreeSet::new();
    let notes = crate::writeback::inbox::held_orders(state).await;
    for n in &notes {
        if let sinks::shopify::GuardNote::Settled { order, .. } = n {
            settled.insert(order.clone());
        }
    }
    notes
        .into_iter()
        .filter(|n| matches!(n, sinks::shopify::GuardNote::Received { order, .. } if !settled.contains(order)))
        .collect()
}

/// One system's comparison: the sink that read it, the drifts, how many were compared, and
/// what was not, by reason.
struct Checked<S> {
    sink: S,
    drifts: Vec<Drift>,
    checked: usize,
    skipped: BTreeMap<String, usize>,
}

/// Compares with Shopify through `sink`, a fresh one: the holds of the storefront orders still
/// in the inbox are taken into it here.
async fn shopify_drifts(
    mut sink: sinks::shopify::ShopifySink,
    state: &crate::state::StateDb,
    side: &OdooSide,
    only: Option<&[(String, String)]>,
) -> Result<Checked<sinks::shopify::ShopifySink>> {
    for note in pending_orders(state).await {
        if let sinks::shopify::GuardNote::Received { lines, .. } = note {
            for (sku, location, units) in lines {
                sink.order_received(&sku, location.as_deref(), units)
                    .await
                    .map_err(|e| anyhow::anyhow!("Shopify: {}", e.message))?;
            }
        }
    }
    let levels: Vec<(String, String, Decimal)> = side
        .levels
        .iter()
        .filter(|(k, _)| only.is_none_or(|o| o.contains(k)))
        .map(|((s, w), q)| (s.clone(), w.clone(), *q))
        .collect();
    let checks = sink
        .check_levels(&levels)
        .await
        .map_err(|e| anyhow::anyhow!("reading Shopify's levels: {}", e.message))?;
    let mut skipped = BTreeMap::new();
    let mut checked = 0;
    let mut drifts = Vec::new();
    for c in &checks {
        let q = match &c.shopify {
            Err(why) => {
                // Per reason, not per SKU: "SKU X is not in Shopify" -> one count.
                let why = if why.starts_with("SKU ") {
                    "SKU not in Shopify".to_string()
                } else if why.contains(" is not stocked at ") {
                    "item not stocked at the mapped location".to_string()
                } else {
                    why.clone()
                };
                *skipped.entry(why).or_default() += 1;
                continue;
            }
            Ok(q) => *q,
        };
        checked += 1;
        if c.agrees() {
            continue;
        }
        drifts.push({
            let odoo = format!(
                "{} (sellable {}, held {}, safety {})",
                c.target, c.sellable, c.held, c.safety
            );
            let (system, reason, fixable) = match q {
                q if q > c.target => (
                    q.to_string(),
                    format!(
                        "Shopify offers {} more than Odoo can sell: oversell risk",
                        q - c.target
                    ),
                    true,
                ),
                q => (
                    q.to_string(),
                    format!(
                        "Shopify shows {} fewer than Odoo can sell: lost sales",
                        c.target - q
                    ),
                    true,
                ),
            };
            Drift::new(
                "shopify",
                format!("{}@{}", c.sku, c.warehouse),
                odoo,
                system,
                reason,
                fixable,
            )
        });
    }
    Ok(Checked {
        sink,
        drifts,
        checked,
        skipped,
    })
}

async fn wms_drifts(
    sink: sinks::wms::WmsSink,
    side: &OdooSide,
    only: Option<&[String]>,
) -> Result<Checked<sinks::wms::WmsSink>> {
    let mut drifts = Vec::new();
    let mut checked = 0;
    for (reference, event) in &side.deliveries {
        if only.is_some_and(|o| !o.contains(reference)) {
            continue;
        }
        checked += 1;
        let found = sink
            .check(event)
            .await
            .map_err(|e| anyhow::anyhow!("reading the WMS: {}", e.message))?;
        if let Some((system, reason, fixable)) = found {
            let lines = match event {
                RetailEvent::FulfillmentRequested { lines, .. } => lines
                    .iter()
                    .map(|l| format!("{} x{}", l.sku, l.quantity.normalize()))
                    .collect::<Vec<_>>()
                    .join(", "),
                _ => String::new(),
            };
            drifts.push(Drift::new(
                "wms",
                reference.clone(),
                format!("ready: {lines}"),
                system,
                reason,
                fixable,
            ));
        }
    }
    Ok(Checked {
        sink,
        drifts,
        checked,
        skipped: BTreeMap::new(),
    })
}

async fn accounting_drifts(
    mut sink: sinks::accounting::AccountingSink,
    state: &crate::state::StateDb,
    side: &OdooSide,
    only: Option<&[String]>,
) -> Result<Checked<sinks::accounting::AccountingSink>> {
    let wanted = |key: &str| only.is_none_or(|o| o.iter().any(|k| k == key));
    // The books are read from the earliest posted move's date on.
    let since = side
        .entries
        .values()
        .map(|e| e.date.clone())
        .collect::<Option<Vec<String>>>()
        .and_then(|d| d.into_iter().min());
    let booked = sink
        .booked(since.as_deref())
        .await
        .map_err(|e| anyhow::anyhow!("reading the books: {}", e.message))?;
    let client = state.client().await?;
    let queued: std::collections::BTreeSet<String> = client
        .query(
            "SELECT DISTINCT key FROM odoo_cdc.outbox WHERE sink = 'accounting'",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let dead: BTreeMap<String, String> = client
        .query(
            "SELECT key, reason FROM odoo_cdc.dead_letters WHERE sink = 'accounting' AND replayed_at IS NULL ORDER BY id",
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let mut drifts = Vec::new();
    let mut skipped = BTreeMap::new();
    let mut checked = 0;
    let drift = |key, odoo, system, reason, fixable| {
        Drift::new("accounting", key, odoo, system, reason, fixable)
    };
    for (id, e) in &side.entries {
        let key = format!("move-{id}");
        if !wanted(&key) {
            continue;
        }
        let total = sinks::accounting::debits_of(e);
        let odoo = format!(
            "{} posted (posting {}), {}",
            e.name,
            e.posting,
            total.normalize()
        );
        let found: Vec<&sinks::accounting::Booked> = booked
            .iter()
            .filter(|b| b.move_id == *id && b.posting == e.posting)
            .collect();
        match found.as_slice() {
            [] if queued.contains(&key) => {
                *skipped
                    .entry("queued in the outbox, not booked yet".to_string())
                    .or_default() += 1;
                continue;
            }
            [] => {
                let reason = match dead.get(&key) {
                    Some(why) => format!("posted in Odoo, not in the books; dead-lettered: {why}"),
                    None => "posted in Odoo, not in the books".to_string(),
                };
                drifts.push(drift(key, odoo, "not booked".into(), reason, true));
            }
            [b] if b.debits != total => drifts.push(drift(
                key,
                odoo,
                format!("{} {}", b.doc_number, b.debits.normalize()),
                format!(
                    "the books have {} for Odoo's {}: needs a person (correct it in the books)",
                    b.debits.normalize(),
                    total.normalize()
                ),
                false,
            )),
            [_] => {}
            many => drifts.push(drift(
                key,
                odoo,
                many.iter()
                    .map(|b| format!("#{}", b.id))
                    .collect::<Vec<_>>()
                    .join(" "),
                format!(
                    "booked {} times: needs a person (delete the duplicates in the books)",
                    many.len()
                ),
                false,
            )),
        }
        checked += 1;
    }
    // What the books have that Odoo no longer posts.
    for b in &booked {
        let key = format!("move-{}", b.move_id);
        if !wanted(&key) {
            continue;
        }
        let reason = match side.entries.get(&b.move_id) {
            Some(e) if e.posting == b.posting => continue,
            Some(e) => format!(
                "booked for posting {} of a move Odoo reset and posted again (posting {}): needs a \
                 person (reverse the earlier entry in the books)",
                b.posting, e.posting
            ),
            None => "booked, not posted in Odoo (reset to draft or cancelled since): needs a \
                     person (reverse it in the books)"
                .to_string(),
        };
        drifts.push(drift(
            key,
            side.entries.get(&b.move_id).map_or_else(
                || "not posted".to_string(),
                |e| format!("{} posting {}", e.name, e.posting),
            ),
            format!("#{} {} {}", b.id, b.doc_number, b.debits.normalize()),
            reason,
            false,
        ));
    }
    Ok(Checked {
        sink,
        drifts,
        checked,
        skipped,
    })
}

async fn fix_accounting(
    sink: &mut sinks::accounting::AccountingSink,
    drifts: &mut [Drift],
    side: &OdooSide,
) -> Result<()> {
    // A new attempt (a new requestid): QuickBooks answers a repeated requestid with its first
    // answer, which would be the entry deleted since.
    let generation = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| (d.as_secs() % 1_000_000_000) as u32)
        .max(1);
    let mut sent = Vec::new();
    for d in drifts.iter_mut().filter(|d| d.fixable) {
        let Some(e) = d
            .key
            .strip_prefix("move-")
            .and_then(|id| id.parse::<i64>().ok())
            .and_then(|id| side.entries.get(&id))
        else {
            continue;
        };
        // QuickBooks takes 10 requests a second: a throttled entry waits (Retry-After, else a
        // second) and goes again under the same requestid, a few times.
        let mut tries = 0;
        let result = loop {
            match sink.deliver_as(e, generation).await {
                Err(err) if sinks::policy::pause_before_retry(&err, &mut tries).await => {}
                other => break other,
            }
        };
        match result {
            Ok(()) => sent.push((e.move_id, e.posting)),
            Err(err) => d.reason = format!("{}; the fix failed: {}", d.reason, err.message),
        }
    }
    if sent.is_empty() {
        return Ok(());
    }
    // Read back: booked once now.
    let since = side.entries.values().filter_map(|e| e.date.clone()).min();
    let booked = sink
        .booked(since.as_deref())
        .await
        .map_err(|e| anyhow::anyhow!("reading the books back: {}", e.message))?;
    for d in drifts.iter_mut() {
        let Some(id) = d
            .key
            .strip_prefix("move-")
            .and_then(|id| id.parse::<i64>().ok())
        else {
            continue;
        };
        if let Some((_, posting)) = sent.iter().find(|(m, _)| *m == id) {
            d.fixed = booked
                .iter()
                .filter(|b| b.move_id == id && b.posting == *posting)
                .count()
                == 1;
        }
    }
    Ok(())
}

/// The slot's confirmed position, when there is a slot.
async fn confirmed(client: &tokio_postgres::Client, slot: &str) -> Option<cdc::Lsn> {
    let row = client
        .query_opt(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .ok()??;
    row.get::<_, Option<String>>(0)?.parse().ok()
}

/// Runs reconciliation: two rounds, then the fixes, each read back.
pub async fn reconcile(mut cfg: Config, opts: &Options) -> Result<Report> {
    let source = crate::cli::dlq::source_of(&mut cfg, !opts.fix)?;
    let client = source.sql_client().await?;
    crate::state::migrate(&client).await?;
    let state = crate::state::StateDb::fixed(client);
    let wanted = |name: &str| {
        opts.sink.as_deref().is_none_or(|s| s == name)
            && match name {
                "shopify" => cfg.sinks.shopify.is_some(),
                "wms" => cfg.sinks.wms.is_some(),
                "accounting" => cfg.sinks.accounting.is_some(),
                _ => false,
            }
    };
    if let Some(s) = opts.sink.as_deref() {
        anyhow::ensure!(
            SINKS.contains(&s),
            "--sink {s}: reconciliation compares Odoo with {}",
            SINKS.join(" or ")
        );
        anyhow::ensure!(wanted(s), "--sink {s}: the {s} sink is not configured");
    }
    // Round 1: every level and ready delivery.
    let first = odoo_side(&cfg, &source).await?;
    // The sinks, built once; round 2 needs only a fresh Shopify sink (its holds are taken
    // again), the WMS and accounting sinks serve both rounds and the fixes.
    let mut built = crate::cli::run::build_sinks(&cfg, &state).await?;
    let mut shopify = None;
    let mut wms = None;
    let mut books = None;
    if wanted("shopify") {
        let sink = built
            .shopify
            .take()
            .context("the shopify sink is not configured")?;
        shopify = Some(shopify_drifts(sink, &state, &first, None).await?);
    }
    if wanted("wms") {
        let sink = built.wms.take().context("the wms sink is not configured")?;
        wms = Some(wms_drifts(sink, &first, None).await?);
    }
    if wanted("accounting") {
        let sink = built
            .accounting
            .take()
            .context("the accounting sink is not configured")?;
        books = Some(accounting_drifts(sink, &state, &first, None).await?);
    }
    let mut checked = BTreeMap::new();
    let mut skipped = BTreeMap::new();
    for (name, c) in [
        ("shopify", shopify.as_ref().map(|c| (c.checked, &c.skipped))),
        ("wms", wms.as_ref().map(|c| (c.checked, &c.skipped))),
        (
            "accounting",
            books.as_ref().map(|c| (c.checked, &c.skipped)),
        ),
    ] {
        if let Some((n, s)) = c {
            checked.insert(name.to_string(), n);
            for (why, k) in s {
                skipped.insert(format!("{name}: {why}"), *k);
            }
        }
    }
    let any = shopify.as_ref().is_some_and(|c| !c.drifts.is_empty())
        || wms.as_ref().is_some_and(|c| !c.drifts.is_empty())
        || books.as_ref().is_some_and(|c| !c.drifts.is_empty());
    let mut last = first.lsn;
    let mut behind = None;
    if any {
        // Round 2, once the running pipeline has delivered what the first snapshot saw.
        let client = state.client().await?;
        let deadline = tokio::time::Instant::now() + opts.settle;
        loop {
            match confirmed(&client, &cfg.source.slot).await {
                Some(at) if at >= first.lsn => break,
                None => break,
                Some(at) if tokio::time::Instant::now() >= deadline => {
                    behind = Some(format!(
                        "the pipeline confirmed {at}, not yet the snapshot's {} after {:?}: drifts may be changes on their way",
                        first.lsn, opts.settle
                    ));
                    break;
                }
                Some(_) => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
        let second = odoo_side(&cfg, &source).await?;
        last = second.lsn;
        if let Some(c) = shopify.as_mut() {
            let keys: Vec<(String, String)> = c
                .drifts
                .iter()
                .filter_map(|d| {
                    let (s, w) = d.key.rsplit_once('@')?;
                    Some((s.to_string(), w.to_string()))
                })
                .collect();
            let fresh = crate::cli::run::build_sinks(&cfg, &state)
                .await?
                .shopify
                .context("the shopify sink is not configured")?;
            let again = shopify_drifts(fresh, &state, &second, Some(&keys)).await?;
            c.sink = again.sink;
            c.drifts = again.drifts;
        }
        if let Some(c) = wms.take() {
            let keys: Vec<String> = c.drifts.iter().map(|d| d.key.clone()).collect();
            let again = wms_drifts(c.sink, &second, Some(&keys)).await?;
            wms = Some(Checked {
                drifts: again.drifts,
                sink: again.sink,
                ..c
            });
        }
        if let Some(c) = books.take() {
            let keys: Vec<String> = c.drifts.iter().map(|d| d.key.clone()).collect();
            let again = accounting_drifts(c.sink, &state, &second, Some(&keys)).await?;
            books = Some(Checked {
                drifts: again.drifts,
                sink: again.sink,
                ..c
            });
        }
        if opts.fix {
            if let Some(c) = books.as_mut() {
                if behind.is_none() {
                    fix_accounting(&mut c.sink, &mut c.drifts, &second).await?;
                } else {
                    // The stream may still carry these entries to the books under their own
                    // requestid; booking them under a new one now could book them twice.
                    for d in c.drifts.iter_mut().filter(|d| d.fixable) {
                        d.reason = format!(
                            "{}; not fixed: the pipeline has not passed the snapshot yet (run again)",
                            d.reason
                        );
                    }
                }
            }
            if let Some(c) = shopify.as_mut() {
                fix_shopify(&mut c.sink, &mut c.drifts, &second).await?;
            }
            if let Some(c) = wms.as_mut() {
                fix_wms(&mut c.sink, &mut c.drifts, &second).await?;
            }
        }
    }
    let mut drifts = Vec::new();
    drifts.extend(shopify.map(|c| c.drifts).unwrap_or_default());
    drifts.extend(wms.map(|c| c.drifts).unwrap_or_default());
    drifts.extend(books.map(|c| c.drifts).unwrap_or_default());
    let at: String = state
        .client()
        .await?
        .query_one(
            "SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')",
            &[],
        )
        .await?
        .get(0);
    let report = Report {
        at,
        snapshot_lsn: last.to_string(),
        checked,
        drifts,
        skipped,
        pipeline_behind: behind,
        unexplained_cleared: Vec::new(),
    };
    // Kept for the workbench's Drift page and `status`.
    crate::state::put(
        &state,
        "reconcile.last",
        &serde_json::to_string(&report).unwrap_or_default(),
    )
    .await?;
    // Each fix in the audit trail (under `reconcile`: `odoo-cdc audit --order reconcile`).
    let client = state.client().await?;
    for d in report.drifts.iter().filter(|d| d.fixed) {
        let detail = json!({"sink": d.sink, "key": d.key, "was": d.system, "now": d.odoo, "reason": d.reason});
        crate::state::audit(
            &client,
            "reconcile",
            None,
            "reconcile.fixed",
            &detail.to_string(),
            None,
        )
        .await;
    }
    Ok(report)
}

async fn fix_shopify(
    sink: &mut sinks::shopify::ShopifySink,
    drifts: &mut [Drift],
    side: &OdooSide,
) -> Result<()> {
    let events: Vec<RetailEvent> = drifts
        .iter()
        .filter(|d| d.fixable)
        .filter_map(|d| {
            let (sku, wh) = d.key.rsplit_once('@')?;
            let qty = side.levels.get(&(sku.to_string(), wh.to_string()))?;
            Some(RetailEvent::SellableChanged {
                sku: sku.to_string(),
                warehouse: wh.to_string(),
                qty: *qty,
            })
        })
        .collect();
    if events.is_empty() {
        return Ok(());
    }
    let report = sink
        .deliver(&events)
        .await
        .map_err(|e| anyhow::anyhow!("writing Shopify: {}", e.message))?;
    for (key, e) in &report.failed {
        if let Some(d) = drifts.iter_mut().find(|d| &d.key == key) {
            d.reason = format!("{}; the fix failed: {}", d.reason, e.message);
        }
    }
    // Read back: a level counts as fixed only when Shopify now shows what it should.
    let levels: Vec<(String, String, Decimal)> = events
        .iter()
        .filter_map(|e| match e {
            RetailEvent::SellableChanged {
                sku,
                warehouse,
                qty,
            } => Some((sku.clone(), warehouse.clone(), *qty)),
            _ => None,
        })
        .collect();
    let after = sink
        .check_levels(&levels)
        .await
        .map_err(|e| anyhow::anyhow!("reading Shopify's levels back: {}", e.message))?;
    for c in after {
        let key = format!("{}@{}", c.sku, c.warehouse);
        if let Some(d) = drifts.iter_mut().find(|d| d.key == key) {
            d.fixed = c.agrees();
        }
    }
    Ok(())
}

async fn fix_wms(
    sink: &mut sinks::wms::WmsSink,
    drifts: &mut [Drift],
    side: &OdooSide,
) -> Result<()> {
    for d in drifts.iter_mut().filter(|d| d.fixable) {
        let Some(event) = side.deliveries.get(&d.key) else {
            continue;
        };
        if let Err(e) = sink.deliver(event).await {
            d.reason = format!("{}; the fix failed: {}", d.reason, e.message);
            continue;
        }
        // Read back.
        d.fixed = sink
            .check(event)
            .await
            .map_err(|e| anyhow::anyhow!("reading the WMS back: {}", e.message))?
            .is_none();
    }
    Ok(())
}

/// Prints a report: one line per drift and a closing line, or one JSON document.
pub fn print(report: &Report, as_json: bool, out: &mut impl Write) -> Result<()> {
    if as_json {
        writeln!(out, "{}", serde_json::to_string_pretty(report)?)?;
        return Ok(());
    }
    for d in &report.drifts {
        let state = if d.fixed {
            "fixed"
        } else if d.fixable {
            "drift"
        } else {
            "needs a person"
        };
        writeln!(
            out,
            "{state}\t{}\t{}\todoo {}\t{} {}\t{}",
            d.sink, d.key, d.odoo, d.sink, d.system, d.reason
        )?;
    }
    for (why, n) in &report.skipped {
        writeln!(out, "not compared\t{n}\t{why}")?;
    }
    for x in &report.unexplained_cleared {
        writeln!(
            out,
            "cleared\tshopify\t{}@{}\t{} unexplained units held back for {} s: no webhook explained them within Shopify's retry window",
            x.sku, x.warehouse, x.units, x.age_secs
        )?;
    }
    if let Some(b) = &report.pipeline_behind {
        writeln!(out, "note: {b}")?;
    }
    let checked: Vec<String> = report
        .checked
        .iter()
        .map(|(s, n)| {
            let what = match s.as_str() {
                "shopify" => "levels",
                "wms" => "ready deliveries",
                _ => "posted moves",
            };
            format!("{s} {n} {what}")
        })
        .collect();
    let fixed = report.drifts.len() - report.open();
    writeln!(
        out,
        "reconcile at {} (snapshot {}): {} checked; {} drift(s), {fixed} fixed, {} open",
        report.at,
        report.snapshot_lsn,
        checked.join(", "),
        report.drifts.len(),
        report.open()
    )?;
    Ok(())
}

/// `odoo-cdc reconcile`: exit 0 when nothing drifts (or everything was fixed and read back),
/// 1 when drift remains.
pub async fn run(cfg: Config, opts: Options, as_json: bool, out: &mut impl Write) -> Result<u8> {
    let report = reconcile(cfg, &opts).await?;
    print(&report, as_json, out)?;
    Ok(if report.open() == 0 { 0 } else { 1 })
}

/// The last run's report as kept in the state database.
pub async fn last(state: &crate::state::StateDb) -> Option<Value> {
    let text = crate::state::get(state, "reconcile.last").await.ok()??;
    serde_json::from_str(&text).ok()
}

/// What scheduled reconciliation (`[reconcile] interval_secs`) found, for `/metrics`.
#[derive(Debug, Default)]
pub struct Scheduled {
    /// Runs that completed.
    pub runs_ok: std::sync::atomic::AtomicU64,
    /// Runs that could not complete (a system unreachable).
    pub runs_failed: std::sync::atomic::AtomicU64,
    /// Open drifts of the last completed run, by system.
    pub open: std::sync::Mutex<BTreeMap<String, u64>>,
}

/// Runs reconciliation every `interval` inside `odoo-cdc run`, until `stopping` is set; each
/// report is kept like the command's (`reconcile.last`) and logged.
pub async fn schedule(
    cfg: Config,
    opts: Options,
    interval: Duration,
    shared: std::sync::Arc<crate::runtime::Shared>,
) {
    use std::sync::atomic::Ordering;
    loop {
        tokio::time::sleep(interval).await;
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        match reconcile_in_process(cfg.clone(), &opts, &shared).await {
            Ok(report) => {
                shared.reconcile.runs_ok.fetch_add(1, Ordering::Relaxed);
                let mut open: BTreeMap<String, u64> =
                    report.checked.keys().map(|k| (k.clone(), 0)).collect();
                for d in report.drifts.iter().filter(|d| !d.fixed) {
                    *open.entry(d.sink.clone()).or_default() += 1;
                    tracing::warn!(sink = %d.sink, key = %d.key, odoo = %d.odoo, system = %d.system, reason = %d.reason, "reconcile: drift");
                }
                let fixed = report.drifts.len() - report.open();
                tracing::info!(checked = ?report.checked, drifts = report.drifts.len(), fixed, "reconcile done");
                if let Ok(mut g) = shared.reconcile.open.lock() {
                    *g = open;
                }
            }
            Err(e) => {
                shared.reconcile.runs_failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %format!("{e:#}"), "reconcile could not run; next try in one interval");
            }
        }
    }
}
