//! Outgoing pickings that become ready (`assigned`) become `FulfillmentRequested` (lines by
//! SKU, ship-to, carrier); a requested picking that is cancelled becomes `FulfillmentCancelled`.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use rust_decimal::Decimal;

use crate::change::{decimal, int, text, Op, RowChange};
use crate::events::{PickLine, RetailEvent, ShipTo};
use crate::mapping::Mapping;

#[derive(Debug, Clone, Default)]
struct Picking {
    name: String,
    state: String,
    picking_type: Option<i64>,
    partner: Option<i64>,
    carrier: Option<String>,
}

#[derive(Debug, Clone)]
struct Move {
    picking: Option<i64>,
    product: i64,
    qty: Decimal,
    state: String,
}

/// The fulfillment stage's state.
#[derive(Debug, Default)]
pub struct Fulfillment {
    pickings: HashMap<i64, Picking>,
    moves: HashMap<i64, Move>,
    types: HashMap<i64, (String, Option<i64>)>,
    warehouses: HashMap<i64, String>,
    skus: HashMap<i64, String>,
    partners: HashMap<i64, ShipTo>,
    requested: BTreeSet<i64>,
    touched: BTreeSet<i64>,
}

impl Fulfillment {
    /// Applies one change of the current transaction.
    pub fn apply(&mut self, c: &RowChange) {
        let Some(id) = c.id() else { return };
        let row = c.new.as_ref();
        match c.table.as_str() {
            Mapping::PICKING => {
                if c.op == Op::Delete {
                    self.pickings.remove(&id);
                    return;
                }
                let Some(r) = row else { return };
                self.pickings.insert(
                    id,
                    Picking {
                        name: text(r, "name").unwrap_or_default().to_string(),
                        state: text(r, "state").unwrap_or_default().to_string(),
                        picking_type: int(r, "picking_type_id"),
                        partner: int(r, "partner_id"),
                        carrier: text(r, "carrier_id")
                            .or_else(|| text(r, "carrier"))
                            .map(str::to_string),
                    },
                );
                self.touched.insert(id);
            }
            Mapping::MOVE => {
                if c.op == Op::Delete {
                    if let Some(m) = self.moves.remove(&id) {
                        self.touched.extend(m.picking);
                    }
                    return;
                }
                let Some(r) = row else { return };
                let Some(product) = int(r, "product_id") else {
                    return;
                };
                let m = Move {
                    picking: int(r, "picking_id"),
                    product,
                    qty: decimal(r, "product_uom_qty").unwrap_or_default(),
                    state: text(r, "state").unwrap_or_default().to_string(),
                };
                self.touched.extend(m.picking);
                self.moves.insert(id, m);
            }
            Mapping::PICKING_TYPE => {
                if let Some(r) = row {
                    self.types.insert(
                        id,
                        (
                            text(r, "code").unwrap_or_default().to_string(),
                            int(r, "warehouse_id"),
                        ),
                    );
                }
            }
            Mapping::WAREHOUSE => {
                if let Some(code) = row.and_then(|r| text(r, "code")) {
                    self.warehouses.insert(id, code.to_string());
                }
            }
            Mapping::PRODUCT => {
                if let Some(sku) = row.and_then(|r| text(r, "default_code")) {
                    self.skus.insert(id, sku.to_string());
                }
            }
            Mapping::PARTNER => {
                if let Some(r) = row {
                    self.partners.insert(
                        id,
                        ShipTo {
                            name: text(r, "name").unwrap_or_default().to_string(),
                            street: text(r, "street").map(str::to_string),
                            city: text(r, "city").map(str::to_string),
                            zip: text(r, "zip").map(str::to_string),
                        },
                    );
                }
            }
            _ => {}
        }
    }

    /// Ends the transaction: requests for pickings that became ready, cancellations.
    pub fn finish(&mut self) -> Vec<RetailEvent> {
        let mut out = Vec::new();
        for id in std::mem::take(&mut self.touched) {
            let Some(p) = self.pickings.get(&id).cloned() else {
                continue;
            };
            let (code, warehouse) = p
                .picking_type
                .and_then(|t| self.types.get(&t).cloned())
                .unwrap_or_default();
            if code != "outgoing" {
                continue;
            }
            match p.state.as_str() {
                "assigned" if !self.requested.contains(&id) => {
                    let mut lines: BTreeMap<String, Decimal> = BTreeMap::new();
                    let mut missing = None;
                    for m in self
                        .moves
                        .values()
                        .filter(|m| m.picking == Some(id) && m.state != "cancel")
                    {
                        match self.skus.get(&m.product) {
                            Some(sku) => *lines.entry(sku.clone()).or_default() += m.qty,
                            None => missing = Some(m.product),
                        }
                    }
                    if let Some(product) = missing {
                        out.push(RetailEvent::Unmappable {
                            reason: format!(
                                "picking {} has a product without SKU (product_product {product})",
                                p.name
                            ),
                            table: Mapping::PICKING.into(),
                            row_id: id,
                        });
                        continue;
                    }
                    let ship_to = p
                        .partner
                        .and_then(|pid| self.partners.get(&pid).cloned())
                        .unwrap_or(ShipTo {
                            name: String::new(),
                            street: None,
                            city: None,
                            zip: None,
                        });
                    self.requested.insert(id);
                    out.push(RetailEvent::FulfillmentRequested {
                        reference: p.name.clone(),
                        warehouse: warehouse
                            .and_then(|w| self.warehouses.get(&w).cloned())
                            .unwrap_or_default(),
                        lines: lines
                            .into_iter()
                            .map(|(sku, quantity)| PickLine {
                                sku,
                                quantity: quantity.normalize(),
                            })
                            .collect(),
                        ship_to,
                        carrier: p.carrier.clone(),
                    });
                }
                "cancel" => {
                    if self.requested.remove(&id) {
                        out.push(RetailEvent::FulfillmentCancelled {
                            reference: p.name.clone(),
                        });
                    }
                    self.forget(id);
                }
                "done" => {
                    self.requested.remove(&id);
                    self.forget(id);
                }
                _ => {}
            }
        }
        out
    }

    /// Ends a restore: finished pickings leave the state, nothing is requested (a ready picking
    /// touched in the replay window is requested then; one untouched was delivered before).
    pub fn finish_quietly(&mut self) {
        for id in std::mem::take(&mut self.touched) {
            if self
                .pickings
                .get(&id)
                .is_some_and(|p| p.state == "done" || p.state == "cancel")
            {
                self.forget(id);
            }
        }
    }

    /// Finished pickings and their moves leave the state: memory follows open work only.
    fn forget(&mut self, picking: i64) {
        self.pickings.remove(&picking);
        self.moves.retain(|_, m| m.picking != Some(picking));
    }
}
