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
}

#[derive(Debug, Clone)]
struct Move {
    picking: Option<i64>,
    product: i64,
    /// Reserved (picked, then done) quantity.
    reserved: Decimal,
    state: String,
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
                    reserved: decimal(r, "quantity").unwrap_or_default(),
                    state: text(r, "state").unwrap_or_default().to_string(),
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

    /// Ends the transaction: requests for pickings that became ready or whose reservation
    /// changed, cancellations.
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
                            });
                        }
                        continue;
                    }
                    if self.requested.get(&id) == Some(&lines) {
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
                    });
                }
                "cancel" => {
                    if self.requested.remove(&id).is_some() {
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
                // Its reservation was taken back: the warehouse must not ship it now.
                "confirmed" | "waiting" | "draft" if self.requested.remove(&id).is_some() => {
                    out.push(RetailEvent::FulfillmentCancelled {
                        reference: p.name.clone(),
                    });
                }
                _ => {}
            }
        }
        out
    }

    /// Ends a restore: finished pickings leave the state, nothing is requested (a ready picking
    /// touched in the replay window is requested then — the WMS sink brings the existing order
    /// to what is reserved; one untouched was delivered before).
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
