//! Sellable quantity per (product, warehouse) = sum over the warehouse's internal locations of
//! `stock_quant.quantity - reserved_quantity`, kept from the snapshot plus the stream.
//!
//! Under Odoo's default REPLICA IDENTITY an UPDATE carries no old row and a DELETE only the id,
//! so the stage keeps every quant's last product, location and quantities to compute deltas.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use rust_decimal::Decimal;

use crate::change::{decimal, int, text, Op, RowChange};
use crate::events::RetailEvent;
use crate::mapping::Mapping;

#[derive(Debug, Clone, Copy)]
struct Quant {
    product: i64,
    location: i64,
    sellable: Decimal,
}

#[derive(Debug, Clone, Default)]
struct Location {
    internal: bool,
    warehouse: Option<i64>,
}

/// The inventory stage's state.
#[derive(Debug, Default)]
pub struct Inventory {
    quants: HashMap<i64, Quant>,
    locations: HashMap<i64, Location>,
    warehouses: HashMap<i64, String>,
    skus: HashMap<i64, String>,
    sellable: BTreeMap<(i64, i64), Decimal>,
    /// Sellable quantities before the current transaction touched them.
    txn_before: BTreeMap<(i64, i64), Option<Decimal>>,
    /// Pairs to report even if unchanged (their SKU changed).
    forced: BTreeSet<(i64, i64)>,
}

impl Inventory {
    fn bucket(&self, location: i64) -> Option<i64> {
        let l = self.locations.get(&location)?;
        if l.internal {
            l.warehouse
        } else {
            None
        }
    }

    fn remember(&mut self, key: (i64, i64)) {
        let prev = self.sellable.get(&key).copied();
        self.txn_before.entry(key).or_insert(prev);
    }

    fn add(&mut self, q: Quant, sign: Decimal) {
        if let Some(w) = self.bucket(q.location) {
            let key = (q.product, w);
            self.remember(key);
            *self.sellable.entry(key).or_default() += q.sellable * sign;
        }
    }

    /// Applies one change of the current transaction.
    pub fn apply(&mut self, c: &RowChange) {
        let Some(id) = c.id() else { return };
        match c.table.as_str() {
            Mapping::QUANT => {
                if let Some(old) = self.quants.remove(&id) {
                    self.add(old, Decimal::NEGATIVE_ONE);
                }
                if c.op == Op::Delete {
                    return;
                }
                let Some(row) = &c.new else { return };
                let (Some(product), Some(location)) =
                    (int(row, "product_id"), int(row, "location_id"))
                else {
                    return;
                };
                let q = Quant {
                    product,
                    location,
                    sellable: decimal(row, "quantity").unwrap_or_default()
                        - decimal(row, "reserved_quantity").unwrap_or_default(),
                };
                self.quants.insert(id, q);
                self.add(q, Decimal::ONE);
            }
            Mapping::LOCATION => {
                let loc = match (&c.new, c.op) {
                    (Some(row), op) if op != Op::Delete => Some(Location {
                        internal: text(row, "usage") == Some("internal"),
                        warehouse: int(row, "warehouse_id"),
                    }),
                    _ => None,
                };
                let unchanged = match (&loc, self.locations.get(&id)) {
                    (Some(a), Some(b)) => a.internal == b.internal && a.warehouse == b.warehouse,
                    _ => false,
                };
                if unchanged {
                    return;
                }
                // The location's quants move between buckets: take them out, then back in.
                let quants: Vec<Quant> = self
                    .quants
                    .values()
                    .filter(|q| q.location == id)
                    .copied()
                    .collect();
                for q in &quants {
                    self.add(*q, Decimal::NEGATIVE_ONE);
                }
                match loc {
                    Some(l) => {
                        self.locations.insert(id, l);
                    }
                    None => {
                        self.locations.remove(&id);
                    }
                }
                for q in quants {
                    self.add(q, Decimal::ONE);
                }
            }
            Mapping::WAREHOUSE => {
                if let Some(code) = c.new.as_ref().and_then(|r| text(r, "code")) {
                    self.warehouses.insert(id, code.to_string());
                }
            }
            Mapping::PRODUCT => {
                if let Some(sku) = c.new.as_ref().and_then(|r| text(r, "default_code")) {
                    let changed = self.skus.get(&id).is_some_and(|s| s != sku);
                    self.skus.insert(id, sku.to_string());
                    if changed {
                        let keys: Vec<(i64, i64)> = self
                            .sellable
                            .keys()
                            .filter(|(p, _)| *p == id)
                            .copied()
                            .collect();
                        self.forced.extend(keys);
                    }
                }
            }
            _ => {}
        }
    }

    /// Ends the transaction: an event for every (product, warehouse) whose sellable quantity
    /// changed (products without a SKU have no Shopify counterpart and are skipped).
    pub fn finish(&mut self) -> Vec<RetailEvent> {
        let before = std::mem::take(&mut self.txn_before);
        let forced = std::mem::take(&mut self.forced);
        let mut keys: BTreeSet<(i64, i64)> = before.keys().copied().collect();
        keys.extend(forced.iter().copied());
        let mut out = Vec::new();
        for key in keys {
            let now = self.sellable.get(&key).copied().unwrap_or_default();
            let was = before.get(&key).copied().flatten();
            if was == Some(now) && !forced.contains(&key) {
                continue;
            }
            let (product, warehouse) = key;
            let (Some(sku), Some(code)) =
                (self.skus.get(&product), self.warehouses.get(&warehouse))
            else {
                continue;
            };
            out.push(RetailEvent::SellableChanged {
                sku: sku.clone(),
                warehouse: code.clone(),
                qty: now.normalize(),
            });
        }
        out
    }

    /// Every known (SKU, warehouse) with its sellable quantity: a full resync.
    pub fn all(&mut self) -> Vec<RetailEvent> {
        self.txn_before.clear();
        self.forced.clear();
        self.sellable
            .iter()
            .filter_map(|((p, w), q)| {
                Some(RetailEvent::SellableChanged {
                    sku: self.skus.get(p)?.clone(),
                    warehouse: self.warehouses.get(w)?.clone(),
                    qty: q.normalize(),
                })
            })
            .collect()
    }

    /// Sellable quantity of a SKU in a warehouse (by code).
    pub fn sellable(&self, sku: &str, warehouse: &str) -> Option<Decimal> {
        let product = self.skus.iter().find(|(_, s)| s.as_str() == sku)?.0;
        let wh = self
            .warehouses
            .iter()
            .find(|(_, c)| c.as_str() == warehouse)?
            .0;
        Some(
            self.sellable
                .get(&(*product, *wh))
                .copied()
                .unwrap_or_default(),
        )
    }
}
