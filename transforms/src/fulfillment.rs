//! Outgoing pickings that become ready (`assigned`) become `FulfillmentRequested` for what
//! Odoo has **reserved** for them (`stock_move.quantity`), never the demand: a 3-unit order
//! with 2 units reserved asks the warehouse for 2, and its backorder (a picking of its own,
//! `backorder_id`) for the last one when that is reserved — the pickings of one order never
//! ask for more than it. When the reservation of a requested picking changes before it ships,
//! the request goes out again with the new lines (the WMS sink amends the order with that
//! reference, never a second one); a requested picking that loses its reservation
//! (`confirmed`) or is cancelled becomes `FulfillmentCancelled`.

use std::collections::{BTreeMap, HashMap};

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
    sale: Option<i64>,
    tracking: Option<String>,
    /// The id and name of the picking this is the backorder of (read while that one is known).
    parent: Option<(i64, String)>,
    /// The parent and what it delivered (once read, at the end of a transaction).
    backorder_of: Option<crate::events::BackorderOf>,
}

#[derive(Debug, Clone)]
struct Move {
    picking: Option<i64>,
    product: i64,
    /// Reserved (picked, then done) quantity.
    reserved: Decimal,
    state: String,
    /// Picked: the warehouse has it in hand (its quantity is what is being shipped).
    picked: bool,
}

#[derive(Debug, Clone)]
struct Partner {
    ship_to: ShipTo,
    country: Option<i64>,
    state: Option<i64>,
}

/// The fulfillment stage's state.
#[derive(Debug, Default)]
pub struct Fulfillment {
    pickings: HashMap<i64, Picking>,
    moves: HashMap<i64, Move>,
    types: HashMap<i64, (String, Option<i64>)>,
    warehouses: HashMap<i64, String>,
    skus: HashMap<i64, String>,
    partners: HashMap<i64, Partner>,
    countries: HashMap<i64, String>,
    states: HashMap<i64, String>,
    /// What each requested picking asked the warehouse for.
    requested: HashMap<i64, BTreeMap<String, Decimal>>,
    touched: std::collections::BTreeSet<i64>,
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
                // The parent's name is read while the parent is known (a backorder is made in
                // the transaction that validates its parent, which then leaves the state).
                let old = self.pickings.get(&id);
                let parent = int(r, "backorder_id")
                    .and_then(|b| self.pickings.get(&b).map(|p| (b, p.name.clone())))
                    .or_else(|| old.and_then(|p| p.parent.clone()));
                let backorder_of = old.and_then(|p| p.backorder_of.clone());
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
                        sale: int(r, "sale_id"),
                        tracking: text(r, "carrier_tracking_ref")
                            .filter(|t| !t.trim().is_empty())
                            .map(str::to_string),
                        parent,
                        backorder_of,
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
                    reserved: decimal(r, "quantity").unwrap_or_default(),
                    state: text(r, "state").unwrap_or_default().to_string(),
                    picked: matches!(text(r, "picked"), Some("t" | "true")),
                };
                // A move that changes picking (into a backorder) touches both.
                if let Some(old) = self.moves.get(&id) {
                    self.touched.extend(old.picking);
                }
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
            Mapping::COUNTRY => {
                if let Some(code) = row.and_then(|r| text(r, "code")) {
                    self.countries.insert(id, code.to_string());
                }
            }
            Mapping::COUNTRY_STATE => {
                if let Some(code) = row.and_then(|r| text(r, "code")) {
                    self.states.insert(id, code.to_string());
                }
            }
            Mapping::PARTNER => {
                if let Some(r) = row {
                    self.partners.insert(
                        id,
                        Partner {
                            ship_to: ShipTo {
                                name: text(r, "name").unwrap_or_default().to_string(),
                                street: text(r, "street").map(str::to_string),
                                city: text(r, "city").map(str::to_string),
                                zip: text(r, "zip").map(str::to_string),
                                state: None,
                                country: None,
                            },
                            country: int(r, "country_id"),
                            state: int(r, "state_id"),
                        },
                    );
                }
            }
            _ => {}
        }
    }

    fn ship_to(&self, partner: Option<i64>) -> ShipTo {
        let Some(p) = partner.and_then(|pid| self.partners.get(&pid)) else {
            return ShipTo {
                name: String::new(),
                street: None,
                city: None,
                zip: None,
                state: None,
                country: None,
            };
        };
        let mut s = p.ship_to.clone();
        s.country = p.country.and_then(|c| self.countries.get(&c).cloned());
        s.state = p.state.and_then(|c| self.states.get(&c).cloned());
        s
    }

    /// What is reserved for a picking, by SKU; `Err(product)` for a product without SKU.
    fn reserved(&self, picking: i64) -> Result<BTreeMap<String, Decimal>, i64> {
        let mut lines: BTreeMap<String, Decimal> = BTreeMap::new();
        for m in self.moves.values().filter(|m| {
            m.picking == Some(picking)
                && matches!(m.state.as_str(), "assigned" | "partially_available")
                && m.reserved > Decimal::ZERO
        }) {
            match self.skus.get(&m.product) {
                Some(sku) => *lines.entry(sku.clone()).or_default() += m.reserved,
                None => return Err(m.product),
            }
        }
        for q in lines.values_mut() {
            *q = q.normalize();
        }
        Ok(lines)
    }

    /// A backorder learns what its parent delivered while the parent's moves are known (the
    /// backorder is made in the transaction that validates the parent).
    fn learn_parents(&mut self, touched: &std::collections::BTreeSet<i64>) {
        for id in touched {
            let Some((parent, name)) = self
                .pickings
                .get(id)
                .filter(|p| p.backorder_of.is_none())
                .and_then(|p| p.parent.clone())
            else {
                continue;
            };
            if !self.pickings.contains_key(&parent) {
                continue;
            }
            let mut done: BTreeMap<String, Decimal> = BTreeMap::new();
            for m in self
                .moves
                .values()
                .filter(|m| m.picking == Some(parent) && m.state == "done")
            {
                if let Some(sku) = self.skus.get(&m.product) {
                    *done.entry(sku.clone()).or_default() += m.reserved;
                }
            }
            if let Some(p) = self.pickings.get_mut(id) {
                p.backorder_of = Some(crate::events::BackorderOf {
                    reference: name,
                    done: done
                        .into_iter()
                        .map(|(sku, quantity)| PickLine {
                            sku,
                            quantity: quantity.normalize(),
                        })
                        .collect(),
                });
            }
        }
    }

    /// Ends the transaction: requests for pickings that became ready or whose reservation
    /// changed, cancellations.
    pub fn finish(&mut self) -> Vec<RetailEvent> {
        let mut out = Vec::new();
        let touched = std::mem::take(&mut self.touched);
        self.learn_parents(&touched);
        let mut finished = Vec::new();
        for id in touched {
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
                "assigned" => {
                    let lines = match self.reserved(id) {
                        Ok(l) => l,
                        Err(product) => {
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
                    };
                    if lines.is_empty() {
                        // Ready with nothing reserved: nothing can ship now.
                        if self.requested.remove(&id).is_some() {
                            out.push(RetailEvent::FulfillmentCancelled {
                                reference: p.name.clone(),
                                backorder_of: p.backorder_of.clone(),
                            });
                        }
                        continue;
                    }
                    if self.requested.get(&id) == Some(&lines) {
                        continue;
                    }
                    // Picked moves are in the warehouse's hands: their quantities are what is
                    // being shipped (set by a shipment on its way to validation), not a new
                    // reservation to send to the warehouse.
                    if self.requested.contains_key(&id)
                        && self
                            .moves
                            .values()
                            .any(|m| m.picking == Some(id) && m.picked)
                    {
                        continue;
                    }
                    self.requested.insert(id, lines.clone());
                    out.push(RetailEvent::FulfillmentRequested {
                        reference: p.name.clone(),
                        warehouse: warehouse
                            .and_then(|w| self.warehouses.get(&w).cloned())
                            .unwrap_or_default(),
                        lines: lines
                            .into_iter()
                            .map(|(sku, quantity)| PickLine { sku, quantity })
                            .collect(),
                        ship_to: self.ship_to(p.partner),
                        carrier: p.carrier.clone(),
                        backorder_of: p.backorder_of.clone(),
                    });
                }
                "cancel" => {
                    // A backorder never requested may still be at the warehouse under its
                    // parent's reference (the rest of a partial shipment).
                    if self.requested.remove(&id).is_some() || p.backorder_of.is_some() {
                        out.push(RetailEvent::FulfillmentCancelled {
                            reference: p.name.clone(),
                            backorder_of: p.backorder_of.clone(),
                        });
                    }
                    finished.push(id);
                }
                "done" => {
                    self.requested.remove(&id);
                    let mut lines: BTreeMap<String, Decimal> = BTreeMap::new();
                    for m in self.moves.values().filter(|m| {
                        m.picking == Some(id) && m.state == "done" && m.reserved > Decimal::ZERO
                    }) {
                        if let Some(sku) = self.skus.get(&m.product) {
                            *lines.entry(sku.clone()).or_default() += m.reserved;
                        }
                    }
                    if !lines.is_empty() {
                        out.push(RetailEvent::DeliveryDone {
                            reference: p.name.clone(),
                            sale_id: p.sale,
                            lines: lines
                                .into_iter()
                                .map(|(sku, quantity)| PickLine {
                                    sku,
                                    quantity: quantity.normalize(),
                                })
                                .collect(),
                            tracking: p.tracking.clone(),
                            carrier: p.carrier.clone(),
                        });
                    }
                    finished.push(id);
                }
                // Its reservation was taken back: the warehouse must not ship it now.
                "confirmed" | "waiting" | "draft" if self.requested.remove(&id).is_some() => {
                    out.push(RetailEvent::FulfillmentCancelled {
                        reference: p.name.clone(),
                        backorder_of: p.backorder_of.clone(),
                    });
                }
                _ => {}
            }
        }
        for id in finished {
            self.forget(id);
        }
        out
    }

    /// Ends a restore: finished pickings leave the state, nothing is requested (a ready picking
    /// touched in the replay window is requested then — the WMS sink brings the existing order
    /// to what is reserved; one untouched was delivered before).
    pub fn finish_quietly(&mut self) {
        let touched = std::mem::take(&mut self.touched);
        // Every picking of a snapshot is touched: backorders learn their parents first.
        let all: std::collections::BTreeSet<i64> = self.pickings.keys().copied().collect();
        self.learn_parents(&all);
        for id in touched {
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
