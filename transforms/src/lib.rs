//! Pure stages that turn Odoo row changes, grouped by source transaction, into retail events.
//! Synchronous, no I/O, no clock: state comes in as rows (the initial snapshot, then the
//! stream), events go out per transaction, each tagged with its source commit.

pub mod accounting;
pub mod change;
pub mod events;
pub mod fulfillment;
pub mod inventory;
pub mod mapping;

pub use change::{Op, Row, RowChange, Transaction};
pub use events::{RetailEvent, Sourced};
pub use mapping::{Mapping, OdooVersion};

/// All stages together.
#[derive(Debug)]
pub struct Transformer {
    /// Sellable quantities.
    pub inventory: inventory::Inventory,
    /// Pickings to fulfil.
    pub fulfillment: fulfillment::Fulfillment,
    /// Journal entries.
    pub accounting: accounting::Accounting,
}

impl Transformer {
    /// Stages for an Odoo version.
    pub fn new(version: OdooVersion) -> Self {
        Self {
            inventory: inventory::Inventory::default(),
            fulfillment: fulfillment::Fulfillment::default(),
            accounting: accounting::Accounting::new(Mapping::new(version)),
        }
    }

    /// Applies one committed transaction; returns its events, in stage order.
    pub fn apply(&mut self, txn: &Transaction) -> Vec<Sourced> {
        for c in &txn.changes {
            self.inventory.apply(c);
            self.fulfillment.apply(c);
            self.accounting.apply(c);
        }
        let mut events = self.inventory.finish();
        events.extend(self.fulfillment.finish());
        events.extend(self.accounting.finish());
        events
            .into_iter()
            .map(|event| Sourced {
                event,
                source_commit_lsn: txn.commit_lsn,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
