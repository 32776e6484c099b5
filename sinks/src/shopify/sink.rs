//! The Shopify inventory sink: Odoo's sellable quantity, less what Shopify has sold that Odoo
//! has not reserved yet and less safety stock, written to Shopify `available` with
//! compare-and-swap — never giving back a unit Shopify already sold.
//!
//! Per (inventory item, location) the sink keeps `last_known` (what Shopify holds, from our own
//! successful writes and reads) and the [`Guard`]'s `pending` (units of orders received by
//! webhook whose reservation is not visible in the stream yet) and `unexplained` (units Shopify
//! lost that no webhook has explained yet). Target = sellable - pending - unexplained - safety
//! stock, clamped at 0; written with `changeFromQuantity = last_known`. On
//! `CHANGE_FROM_QUANTITY_STALE` the level is read again: a drop we did not cause is a sale whose
//! webhook is still coming (`unexplained`); a rise is a manual change that Odoo, the system of
//! record, overrides. Events are coalesced: only the newest target per key is sent, up to 250
//! quantities per call, each call with an `@idempotent` key derived from its content.

use std::collections::{BTreeMap, HashMap};

use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use serde_json::{json, Value};
use transforms::RetailEvent;

use super::client::ShopifyClient;
use super::config::{ShopifyConfig, MAX_QUANTITIES};
use crate::policy::SinkError;

/// (inventory item gid, location gid).
pub type LevelKey = (String, String);

/// Units Shopify sold that Odoo's stream does not show yet.
#[derive(Debug, Default, Clone)]
pub struct Guard {
    pending: HashMap<LevelKey, i64>,
    unexplained: HashMap<LevelKey, i64>,
    /// When the unexplained units were noticed, oldest first: (units, when).
    noticed: HashMap<LevelKey, std::collections::VecDeque<(i64, std::time::Instant)>>,
}

impl Guard {
    /// Units to hold back from a level.
    pub fn hold(&self, key: &LevelKey) -> i64 {
        self.pending.get(key).copied().unwrap_or(0)
            + self.unexplained.get(key).copied().unwrap_or(0)
    }

    /// Shopify lost units that no webhook explains yet.
    pub fn note_drop(&mut self, key: &LevelKey, units: i64) {
        *self.unexplained.entry(key.clone()).or_default() += units;
        self.noticed
            .entry(key.clone())
            .or_default()
            .push_back((units, std::time::Instant::now()));
    }

    /// An order webhook arrived for these units: they move from unexplained to pending
    /// (the oldest unexplained units first).
    pub fn order_received(&mut self, key: &LevelKey, units: i64) {
        let u = self.unexplained.entry(key.clone()).or_default();
        let explained = (*u).min(units);
        *u -= explained;
        *self.pending.entry(key.clone()).or_default() += units;
        self.forget_noticed(key, explained);
    }

    fn forget_noticed(&mut self, key: &LevelKey, mut units: i64) {
        let Some(q) = self.noticed.get_mut(key) else {
            return;
        };
        while units > 0 {
            let Some(front) = q.front_mut() else { break };
            let n = front.0.min(units);
            front.0 -= n;
            units -= n;
            if front.0 == 0 {
                q.pop_front();
            }
        }
    }

    /// Clears the unexplained units noticed longer than `window` ago (no webhook explained
    /// them within Shopify's retry window: the loss was not a sale odoo-cdc will hear of):
    /// (level, units cleared, age of the oldest).
    pub fn expire(
        &mut self,
        window: std::time::Duration,
    ) -> Vec<(LevelKey, i64, std::time::Duration)> {
        let mut out = Vec::new();
        for (key, q) in self.noticed.iter_mut() {
            let mut units = 0;
            let mut oldest = None;
            while let Some((n, at)) = q.front().copied() {
                if at.elapsed() < window {
                    break;
                }
                oldest.get_or_insert(at.elapsed());
                units += n;
                q.pop_front();
            }
            if let (true, Some(age)) = (units > 0, oldest) {
                if let Some(u) = self.unexplained.get_mut(key) {
                    *u = (*u - units).max(0);
                }
                out.push((key.clone(), units, age));
            }
        }
        self.noticed.retain(|_, q| !q.is_empty());
        out.sort();
        out
    }

    /// The order's reservation is now inside Odoo's sellable (the stream passed its fence).
    pub fn reservation_visible(&mut self, key: &LevelKey, units: i64) {
        let p = self.pending.entry(key.clone()).or_default();
        *p = (*p - units).max(0);
    }

    /// (pending, unexplained) of a level.
    pub fn get(&self, key: &LevelKey) -> (i64, i64) {
        (
            self.pending.get(key).copied().unwrap_or(0),
            self.unexplained.get(key).copied().unwrap_or(0),
        )
    }
}

/// What one delivery did.
#[derive(Debug, Default)]
pub struct Report {
    /// Quantities written.
    pub written: usize,
    /// Keys (`sku@warehouse`) that failed for good, with the reason.
    pub failed: Vec<(String, SinkError)>,
    /// Compare-and-swap conflicts resolved by re-reading.
    pub stale: usize,
}

/// One level as reconciliation sees it: what the sink would have Shopify show, and what
/// Shopify shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LevelCheck {
    /// SKU.
    pub sku: String,
    /// Odoo warehouse code.
    pub warehouse: String,
    /// Odoo's sellable quantity, whole units.
    pub sellable: i64,
    /// Units held back for Shopify orders Odoo has not reserved yet.
    pub held: i64,
    /// Safety stock of the SKU.
    pub safety: i64,
    /// What Shopify should show: sellable less held and safety stock, at least 0.
    pub target: i64,
    /// Shopify's `available`, or why the level cannot be read (no location mapping, SKU not in
    /// Shopify, item not stocked at the location).
    pub shopify: Result<i64, String>,
}

impl LevelCheck {
    /// Whether Shopify shows what it should.
    pub fn agrees(&self) -> bool {
        self.shopify.as_ref().is_ok_and(|q| *q == self.target)
    }
}

/// The Shopify inventory sink.
pub struct ShopifySink {
    cfg: ShopifyConfig,
    /// The API client (public for its counters).
    pub client: ShopifyClient,
    items: ItemIds,
    last_known: HashMap<LevelKey, i64>,
    sellable: BTreeMap<(String, String), Decimal>,
    /// The oversell guard.
    pub guard: Guard,
    /// Levels whose hold changed: their target is written again on the next delivery.
    recheck: std::collections::BTreeSet<(String, String)>,
    /// This sink instance (process start), and its write attempts: part of every idempotency key.
    instance: u64,
    attempts: u64,
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Shopify inventory item ids by SKU: the configured `sku_map`, then what searches found
/// (bounded, forgotten after an hour, so an item recreated in Shopify is found again).
struct ItemIds {
    configured: HashMap<String, String>,
    resolved: moka::sync::Cache<String, String>,
}

impl ItemIds {
    fn new(configured: HashMap<String, String>) -> Self {
        Self {
            configured,
            resolved: moka::sync::Cache::builder()
                .max_capacity(200_000)
                .time_to_live(std::time::Duration::from_secs(3600))
                .build(),
        }
    }

    fn get(&self, sku: &str) -> Option<String> {
        self.configured
            .get(sku)
            .cloned()
            .or_else(|| self.resolved.get(sku))
    }

    /// The SKU of an item id, if configured or still cached.
    fn sku_of(&self, item: &str) -> Option<String> {
        self.configured
            .iter()
            .find(|(_, i)| i.as_str() == item)
            .map(|(s, _)| s.clone())
            .or_else(|| {
                self.resolved
                    .iter()
                    .find(|(_, i)| i.as_str() == item)
                    .map(|(s, _)| (*s).clone())
            })
    }

    fn contains_key(&self, sku: &str) -> bool {
        self.configured.contains_key(sku) || self.resolved.contains_key(sku)
    }

    fn insert_if_absent(&self, sku: &str, id: &str) {
        if !self.contains_key(sku) {
            self.resolved.insert(sku.to_string(), id.to_string());
        }
    }
}

const SET: &str = "mutation Set($input: InventorySetQuantitiesInput!) { inventorySetQuantities(input: $input) @idempotent(key: \"KEY\") { inventoryAdjustmentGroup { id } userErrors { code field message } } }";

impl ShopifySink {
    /// A sink.
    pub fn new(cfg: ShopifyConfig) -> Result<Self, SinkError> {
        let client = ShopifyClient::new(cfg.clone())?;
        let items = ItemIds::new(cfg.sku_map.clone().into_iter().collect());
        Ok(Self {
            cfg,
            client,
            items,
            last_known: HashMap::new(),
            sellable: BTreeMap::new(),
            guard: Guard::default(),
            recheck: std::collections::BTreeSet::new(),
            instance: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_micros() as u64)
                ^ u64::from(std::process::id()),
            attempts: 0,
        })
    }

    /// Longest a change waits for later ones to share its write.
    pub fn write_interval(&self) -> std::time::Duration {
        self.cfg.write_interval
    }

    /// Whether a change must go out without waiting for the write interval: it lowers a level
    /// Shopify shows to `urgent_below` units or fewer (or the level is not known yet).
    pub fn is_urgent(&self, event: &RetailEvent) -> bool {
        let RetailEvent::SellableChanged {
            sku,
            warehouse,
            qty,
        } = event
        else {
            return false;
        };
        let (Some(loc), Some(item)) = (self.cfg.location_map.get(warehouse), self.items.get(sku))
        else {
            return false;
        };
        let key = (item.clone(), loc.clone());
        let Some(shown) = self.last_known.get(&key).copied() else {
            return false;
        };
        let target =
            (qty.floor().to_i64().unwrap_or(0) - self.guard.hold(&key) - self.safety(sku)).max(0);
        target < shown && target <= self.cfg.urgent_below
    }

    /// Whether levels wait to be written again (their hold changed).
    pub fn has_recheck(&self) -> bool {
        !self.recheck.is_empty()
    }

    /// Whether this sink wants the event.
    pub fn wants(event: &RetailEvent) -> bool {
        matches!(event, RetailEvent::SellableChanged { .. })
    }

    /// The Shopify location of a Shopify location id, or the first mapped location.
    fn location_gid(&self, location: Option<&str>) -> Option<String> {
        match location {
            Some(l) if l.starts_with("gid://") => Some(l.to_string()),
            Some(l) => Some(format!("gid://shopify/Location/{l}")),
            None => self.cfg.location_map.values().next().cloned(),
        }
    }

    /// A Shopify order's webhook arrived: Shopify has taken `units` of `sku` at `location`
    /// (a Shopify location id) out of `available`, and Odoo has not reserved them yet. They
    /// are held back until [`ShopifySink::reservation_visible`]. Returns the level key.
    pub async fn order_received(
        &mut self,
        sku: &str,
        location: Option<&str>,
        units: i64,
    ) -> Result<Option<LevelKey>, SinkError> {
        let Some(loc) = self.location_gid(location) else {
            return Ok(None);
        };
        self.resolve_items(&[sku.to_string()]).await?;
        let Some(item) = self.items.get(sku) else {
            return Ok(None);
        };
        let key = (item, loc);
        let (_, unexplained) = self.guard.get(&key);
        let explained = unexplained.min(units);
        self.guard.order_received(&key, units);
        // Units a re-read already saw go are in last_known; the others are gone from Shopify
        // too, whether we have seen it or not.
        if let Some(k) = self.last_known.get_mut(&key) {
            *k -= units - explained;
        }
        tracing::debug!(sku, units, explained, guard = ?self.guard.get(&key), last_known = ?self.last_known.get(&key), "order received");
        Ok(Some(key))
    }

    /// The order's effect (its reservation, or its cancellation) is now in Odoo's sellable
    /// quantities: its units stop being held, and the level is written again.
    pub fn reservation_visible(&mut self, sku: &str, key: &LevelKey, units: i64) {
        self.guard.reservation_visible(key, units);
        tracing::debug!(sku, units, guard = ?self.guard.get(key), "reservation visible");
        if let Some((wh, _)) = self.cfg.location_map.iter().find(|(_, l)| **l == key.1) {
            self.recheck.insert((sku.to_string(), wh.clone()));
        }
    }

    /// Clears the guard's unexplained units older than `window` and writes their levels again
    /// (Odoo, the system of record, says they are sellable): (sku, Odoo warehouse, units, age).
    pub fn expire_unexplained(
        &mut self,
        window: std::time::Duration,
    ) -> Vec<(String, String, i64, std::time::Duration)> {
        let mut out = Vec::new();
        for ((item, loc), units, age) in self.guard.expire(window) {
            let sku = self.items.sku_of(&item);
            let wh = self
                .cfg
                .location_map
                .iter()
                .find(|(_, l)| **l == loc)
                .map(|(w, _)| w.clone());
            match (sku, wh) {
                (Some(sku), Some(wh)) => {
                    self.recheck.insert((sku.clone(), wh.clone()));
                    out.push((sku, wh, units, age));
                }
                // The item's SKU is no longer cached: the hold is gone all the same, and the
                // level's next change writes it without these units held back.
                (sku, wh) => out.push((sku.unwrap_or(item), wh.unwrap_or(loc), units, age)),
            }
        }
        out
    }

    /// What Shopify holds for a level, as far as the sink knows.
    pub fn last_known(&self, key: &LevelKey) -> Option<i64> {
        self.last_known.get(key).copied()
    }

    async fn resolve_items(&mut self, skus: &[String]) -> Result<(), SinkError> {
        let missing: Vec<String> = skus
            .iter()
            .filter(|s| !self.items.contains_key(s))
            .cloned()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        // One search for 50 SKUs (`sku:"A" OR sku:"B" ...`, about one point a SKU): a cold
        // start after a restart resolves thousands of SKUs in a few calls.
        let per_query = self.client.items_per_query(2.0, 1.0, 50);
        for chunk in missing.chunks(per_query) {
            let query = chunk
                .iter()
                .map(|sku| format!("sku:{}", json!(sku)))
                .collect::<Vec<_>>()
                .join(" OR ");
            self.client.pace(2.0 + chunk.len() as f64).await;
            let data = self
                .client
                .graphql(
                    "query Resolve($q: String!, $n: Int!) { inventoryItems(first: $n, query: $q) { nodes { id sku } } }",
                    json!({"q": query, "n": chunk.len()}),
                )
                .await?;
            for node in data["inventoryItems"]["nodes"]
                .as_array()
                .into_iter()
                .flatten()
            {
                if let (Some(id), Some(sku)) = (node["id"].as_str(), node["sku"].as_str()) {
                    if chunk.iter().any(|c| c == sku) {
                        self.items.insert_if_absent(sku, id);
                    }
                }
            }
        }
        // SKUs the search left out (another item sharing a SKU took their place in the
        // answer): one lookup each, 20 to a call.
        let left: Vec<&String> = missing
            .iter()
            .filter(|s| !self.items.contains_key(s))
            .collect();
        let per_query = self.client.items_per_query(2.0, 3.0, 20);
        for chunk in left.chunks(per_query) {
            let fields: Vec<String> = chunk
                .iter()
                .enumerate()
                .map(|(i, sku)| {
                    format!(
                        "s{i}: inventoryItems(first: 1, query: {}) {{ nodes {{ id sku }} }}",
                        json!(format!("sku:{}", json!(sku)))
                    )
                })
                .collect();
            self.client.pace(2.0 + 3.0 * chunk.len() as f64).await;
            let data = self
                .client
                .graphql(&format!("{{ {} }}", fields.join(" ")), json!({}))
                .await?;
            for (i, sku) in chunk.iter().enumerate() {
                if let Some(id) = data[format!("s{i}")]["nodes"][0]["id"].as_str() {
                    self.items.insert_if_absent(sku, id);
                }
            }
        }
        Ok(())
    }

    async fn read_levels(
        &mut self,
        keys: &[LevelKey],
    ) -> Result<HashMap<LevelKey, Option<i64>>, SinkError> {
        let mut out = HashMap::new();
        let per_query = self.client.items_per_query(1.0, 3.0, 50);
        for chunk in keys.chunks(per_query) {
            let fields: Vec<String> = chunk
                .iter()
                .enumerate()
                .map(|(i, (item, loc))| {
                    format!(
                        "l{i}: inventoryItem(id: {}) {{ inventoryLevel(locationId: {}) {{ quantities(names: [\"available\"]) {{ name quantity }} }} }}",
                        json!(item),
                        json!(loc)
                    )
                })
                .collect();
            self.client.pace(1.0 + 3.0 * chunk.len() as f64).await;
            let data = self
                .client
                .graphql(&format!("{{ {} }}", fields.join(" ")), json!({}))
                .await?;
            for (i, key) in chunk.iter().enumerate() {
                let q =
                    data[format!("l{i}")]["inventoryLevel"]["quantities"][0]["quantity"].as_i64();
                out.insert(key.clone(), q);
            }
        }
        Ok(out)
    }

    /// Reads Shopify's `available` for each (sku, warehouse, Odoo sellable) and says what the
    /// sink would write there; the levels read become the sink's known levels, so a
    /// [`ShopifySink::deliver`] of the same levels afterwards writes only those that differ,
    /// compare-and-swap against what was read.
    pub async fn check_levels(
        &mut self,
        levels: &[(String, String, Decimal)],
    ) -> Result<Vec<LevelCheck>, SinkError> {
        for (sku, wh, qty) in levels {
            self.sellable.insert((sku.clone(), wh.clone()), *qty);
        }
        let skus: Vec<String> = levels.iter().map(|(s, _, _)| s.clone()).collect();
        self.resolve_items(&skus).await?;
        let keys: Vec<Option<LevelKey>> = levels
            .iter()
            .map(|(sku, wh, _)| {
                Some((self.items.get(sku)?, self.cfg.location_map.get(wh)?.clone()))
            })
            .collect();
        let wanted: Vec<LevelKey> = keys.iter().flatten().cloned().collect();
        let read = self.read_levels(&wanted).await?;
        let mut out = Vec::with_capacity(levels.len());
        for ((sku, wh, qty), key) in levels.iter().zip(&keys) {
            let sellable = qty.floor().to_i64().unwrap_or(0);
            let safety = self.safety(sku);
            let held = key.as_ref().map_or(0, |k| self.guard.hold(k));
            let shopify = match key {
                None if !self.cfg.location_map.contains_key(wh) => {
                    Err(format!("warehouse {wh} has no Shopify location mapping"))
                }
                None => Err(format!("SKU {sku} is not in Shopify")),
                Some(k) => match read.get(k).copied().flatten() {
                    Some(q) => {
                        self.last_known.insert(k.clone(), q);
                        Ok(q)
                    }
                    None => Err(format!("{} is not stocked at {}", k.0, k.1)),
                },
            };
            out.push(LevelCheck {
                sku: sku.clone(),
                warehouse: wh.clone(),
                sellable,
                held,
                safety,
                target: (sellable - held - safety).max(0),
                shopify,
            });
        }
        Ok(out)
    }

    fn safety(&self, sku: &str) -> i64 {
        self.cfg
            .safety_stock_by_sku
            .get(sku)
            .copied()
            .unwrap_or(self.cfg.safety_stock)
    }

    /// Delivers sellable changes. `Err` is a transient failure of the whole call (retry it);
    /// keys that fail for good are in the report.
    pub async fn deliver(&mut self, events: &[RetailEvent]) -> Result<Report, SinkError> {
        let recheck = self.recheck.clone();
        let result = self.deliver_inner(events).await;
        if result.is_err() {
            self.recheck.extend(recheck);
        }
        result
    }

    async fn deliver_inner(&mut self, events: &[RetailEvent]) -> Result<Report, SinkError> {
        let mut report = Report::default();
        // Coalesce: only the newest quantity per (sku, warehouse) matters.
        let mut dirty: BTreeMap<(String, String), Decimal> = BTreeMap::new();
        for e in events {
            if let RetailEvent::SellableChanged {
                sku,
                warehouse,
                qty,
            } = e
            {
                dirty.insert((sku.clone(), warehouse.clone()), *qty);
                self.sellable.insert((sku.clone(), warehouse.clone()), *qty);
            }
        }
        for k in std::mem::take(&mut self.recheck) {
            if let Some(q) = self.sellable.get(&k) {
                dirty.insert(k, *q);
            }
        }
        let skus: Vec<String> = dirty.keys().map(|(s, _)| s.clone()).collect();
        self.resolve_items(&skus).await?;
        let mut targets: Vec<(String, LevelKey)> = Vec::new();
        for (sku, wh) in dirty.keys() {
            let label = format!("{sku}@{wh}");
            let Some(loc) = self.cfg.location_map.get(wh) else {
                report.failed.push((
                    label,
                    SinkError::permanent(format!("warehouse {wh} has no Shopify location mapping")),
                ));
                continue;
            };
            let Some(item) = self.items.get(sku) else {
                report.failed.push((
                    label,
                    SinkError::permanent(format!("SKU {sku} is not in Shopify")),
                ));
                continue;
            };
            targets.push((sku.clone(), (item.clone(), loc.clone())));
        }
        let unknown: Vec<LevelKey> = targets
            .iter()
            .map(|(_, k)| k.clone())
            .filter(|k| !self.last_known.contains_key(k))
            .collect();
        for (k, v) in self.read_levels(&unknown).await? {
            match v {
                Some(q) => {
                    self.last_known.insert(k, q);
                }
                None => {
                    if let Some((sku, _)) = targets.iter().find(|(_, key)| *key == k) {
                        report.failed.push((
                            self.label(sku, &k),
                            SinkError::permanent(format!("{} is not stocked at {}", k.0, k.1)),
                        ));
                    }
                }
            }
        }
        targets.retain(|(_, k)| self.last_known.contains_key(k));
        for chunk in targets.chunks(MAX_QUANTITIES) {
            self.write_chunk(chunk, &mut report).await?;
        }
        Ok(report)
    }

    /// `sku@warehouse`: the key of the event behind a level.
    fn label(&self, sku: &str, key: &LevelKey) -> String {
        let wh = self
            .cfg
            .location_map
            .iter()
            .find(|(_, l)| **l == key.1)
            .map(|(w, _)| w.as_str())
            .unwrap_or("");
        format!("{sku}@{wh}")
    }

    fn target(&self, sku: &str, key: &LevelKey) -> Option<i64> {
        let wh = self
            .cfg
            .location_map
            .iter()
            .find(|(_, l)| **l == key.1)
            .map(|(w, _)| w.clone())?;
        let sellable = self
            .sellable
            .get(&(sku.to_string(), wh))?
            .floor()
            .to_i64()?;
        Some((sellable - self.guard.hold(key) - self.safety(sku)).max(0))
    }

    async fn write_chunk(
        &mut self,
        chunk: &[(String, LevelKey)],
        report: &mut Report,
    ) -> Result<(), SinkError> {
        for _round in 0..5 {
            let mut quantities = Vec::new();
            let mut sent: Vec<(LevelKey, i64)> = Vec::new();
            for (sku, key) in chunk {
                let (Some(target), Some(from)) =
                    (self.target(sku, key), self.last_known.get(key).copied())
                else {
                    continue;
                };
                if target == from {
                    continue;
                }
                quantities.push(json!({"inventoryItemId": key.0, "locationId": key.1, "quantity": target, "changeFromQuantity": from}));
                sent.push((key.clone(), target));
            }
            if quantities.is_empty() {
                return Ok(());
            }
            let input = json!({"name": "available", "reason": "correction", "referenceDocumentUri": "odoo-cdc://inventory", "quantities": quantities});
            // One key per attempt: a transport retry of this request replays Shopify's answer,
            // while a later write that happens to carry the same quantities (a hot SKU set to 0
            // from 1 again) is a new request, not the replay of an old, possibly stale, answer.
            self.attempts += 1;
            let key = format!(
                "odoo-cdc-{:016x}-{}-{}",
                fnv(&input.to_string()),
                self.instance,
                self.attempts
            );
            // mutation 10 + payload 1 + group 1 + userErrors 1
            self.client.pace(13.0).await;
            let data = self
                .client
                .graphql(&SET.replace("KEY", &key), json!({"input": input}))
                .await?;
            let errors = data["inventorySetQuantities"]["userErrors"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if errors.is_empty() {
                tracing::debug!(?sent, "levels written");
                for (k, t) in sent {
                    self.last_known.insert(k, t);
                }
                report.written += quantities.len();
                return Ok(());
            }
            // The mutation is atomic: nothing was applied. Re-read stale levels and try again.
            let mut stale_keys = Vec::new();
            for e in &errors {
                let idx = e["field"]
                    .as_array()
                    .and_then(|f| f.get(2))
                    .and_then(Value::as_str)
                    .and_then(|i| i.parse::<usize>().ok());
                let Some((k, _)) = idx.and_then(|i| sent.get(i)) else {
                    return Err(SinkError::permanent(format!("inventorySetQuantities: {e}")));
                };
                if e["code"] == "CHANGE_FROM_QUANTITY_STALE" {
                    stale_keys.push(k.clone());
                } else {
                    return Err(SinkError::permanent(format!(
                        "inventorySetQuantities for {}: {}",
                        k.0, e["message"]
                    )));
                }
            }
            report.stale += stale_keys.len();
            for (k, v) in self.read_levels(&stale_keys).await? {
                let Some(current) = v else { continue };
                let before = self.last_known.get(&k).copied().unwrap_or(current);
                if current < before {
                    // Sold in Shopify, not yet seen in Odoo: never give these units back.
                    self.guard.note_drop(&k, before - current);
                }
                tracing::debug!(item = %k.0, before, current, guard = ?self.guard.get(&k), "level re-read after a stale write");
                self.last_known.insert(k, current);
            }
        }
        Err(SinkError::transient(
            "inventorySetQuantities: levels keep changing; will retry",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn unexplained_units_a_webhook_explains_stay_explained_and_the_rest_expire_oldest_first() {
        let key: LevelKey = (
            "gid://shopify/InventoryItem/1".into(),
            "gid://shopify/Location/1".into(),
        );
        let mut g = Guard::default();
        g.note_drop(&key, 3);
        std::thread::sleep(Duration::from_millis(60));
        g.note_drop(&key, 2);
        assert_eq!(g.hold(&key), 5);
        // A webhook for 2 units explains the two oldest: they are pending now.
        g.order_received(&key, 2);
        assert_eq!(g.get(&key), (2, 3));
        // Nothing is older than an hour.
        assert!(g.expire(Duration::from_secs(3600)).is_empty());
        // The one unit left of the first drop is older than 50 ms; the second drop is not.
        let cleared = g.expire(Duration::from_millis(50));
        assert_eq!(cleared.len(), 1);
        assert_eq!((cleared[0].0.clone(), cleared[0].1), (key.clone(), 1));
        assert!(cleared[0].2 >= Duration::from_millis(50));
        assert_eq!(g.get(&key), (2, 2));
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(g.expire(Duration::from_millis(50))[0].1, 2);
        assert_eq!(g.get(&key), (2, 0));
        // Pending units (a webhook came) never expire: their fence releases them.
        assert!(g.expire(Duration::ZERO).is_empty());
        assert_eq!(g.hold(&key), 2);
    }
}
