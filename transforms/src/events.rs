//! Retail events: what the sinks act on. Each carries only what its sink needs (data
//! minimisation): no customer email to accounting, no prices to the warehouse.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// Ship-to address for a packing slip.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShipTo {
    /// Recipient.
    pub name: String,
    /// Street.
    pub street: Option<String>,
    /// City.
    pub city: Option<String>,
    /// Postal code.
    pub zip: Option<String>,
    /// State or province code (`CA`, `ON`).
    #[serde(default)]
    pub state: Option<String>,
    /// ISO country code (`US`).
    #[serde(default)]
    pub country: Option<String>,
}

/// A line to pick.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PickLine {
    /// SKU.
    pub sku: String,
    /// Units.
    pub quantity: Decimal,
}

/// The picking a backorder was split from, and what that picking delivered: after a partial
/// shipment the warehouse holds (or already shipped) the rest under the parent's reference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackorderOf {
    /// The parent picking's name (its WMS reference).
    pub reference: String,
    /// What the parent delivered, by SKU.
    pub done: Vec<PickLine>,
}

/// A journal line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalLine {
    /// Odoo account code (e.g. `121000`).
    pub account_code: String,
    /// Odoo account type (`asset_receivable`, `income`, ...).
    pub account_type: String,
    /// Debit (>= 0).
    pub debit: Decimal,
    /// Credit (>= 0).
    pub credit: Decimal,
    /// Label.
    pub description: String,
}

/// What an accounting entry is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryKind {
    /// A customer invoice.
    Invoice,
    /// A credit note; reverses the named move when known.
    CreditNote {
        /// Name of the reversed invoice.
        reverses: Option<String>,
    },
    /// A payment or other entry.
    Entry,
}

/// A posted journal entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalEntry {
    /// Odoo move id.
    pub move_id: i64,
    /// How many times this move has been posted (a move reset to draft and posted again is a
    /// new entry): with `move_id`, the idempotency key.
    pub posting: u32,
    /// `INV/2026/00003`.
    pub name: String,
    /// Kind.
    pub kind: EntryKind,
    /// Accounting date.
    pub date: Option<String>,
    /// ISO currency code.
    pub currency: Option<String>,
    /// Customer (id and name only).
    pub customer: Option<(i64, String)>,
    /// Lines; debits equal credits.
    pub lines: Vec<JournalLine>,
}

/// An event for the sinks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RetailEvent {
    /// Odoo's sellable quantity of a SKU in a warehouse changed.
    SellableChanged {
        /// SKU.
        sku: String,
        /// Warehouse code.
        warehouse: String,
        /// On hand minus reserved over the warehouse's internal locations.
        qty: Decimal,
    },
    /// An outgoing picking is ready: the warehouse should pick it.
    FulfillmentRequested {
        /// The picking name (`WH/OUT/00017`): the WMS reference.
        reference: String,
        /// Warehouse code.
        warehouse: String,
        /// Lines by SKU.
        lines: Vec<PickLine>,
        /// Ship-to.
        ship_to: ShipTo,
        /// Carrier, when set.
        carrier: Option<String>,
        /// The picking this one is the backorder of (`backorder_id`), when known: after a
        /// partial shipment the warehouse may still hold the rest under that reference.
        #[serde(default)]
        backorder_of: Option<BackorderOf>,
    },
    /// A requested picking was cancelled.
    FulfillmentCancelled {
        /// The picking name.
        reference: String,
        /// The picking this one is the backorder of, when known.
        #[serde(default)]
        backorder_of: Option<BackorderOf>,
    },
    /// An outgoing picking was validated (`done`): what left the warehouse.
    DeliveryDone {
        /// The picking name.
        reference: String,
        /// The sale order it delivers (`sale_id`), if any.
        sale_id: Option<i64>,
        /// Done quantities by SKU (moves `done`).
        lines: Vec<PickLine>,
        /// The tracking number on the picking (`carrier_tracking_ref`, with stock_delivery).
        tracking: Option<String>,
        /// Carrier, when set.
        carrier: Option<String>,
    },
    /// A move was posted.
    JournalEntry(JournalEntry),
    /// A change that cannot become an event (to the dead-letter queue, with the reason).
    Unmappable {
        /// Why.
        reason: String,
        /// Source table.
        table: String,
        /// Source row id.
        row_id: i64,
    },
}

impl RetailEvent {
    /// The partition key: events with the same key are delivered in order.
    pub fn key(&self) -> String {
        match self {
            RetailEvent::SellableChanged { sku, warehouse, .. } => format!("{sku}@{warehouse}"),
            RetailEvent::FulfillmentRequested { reference, .. }
            | RetailEvent::FulfillmentCancelled { reference, .. } => reference.clone(),
            RetailEvent::DeliveryDone {
                sale_id, reference, ..
            } => match sale_id {
                // One order's deliveries in order: each fulfils what the last left.
                Some(id) => format!("sale-{id}"),
                None => reference.clone(),
            },
            RetailEvent::JournalEntry(e) => format!("move-{}", e.move_id),
            RetailEvent::Unmappable { table, row_id, .. } => format!("{table}-{row_id}"),
        }
    }
}

/// An event with the commit it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sourced {
    /// The event.
    pub event: RetailEvent,
    /// Commit LSN of the source transaction.
    pub source_commit_lsn: u64,
    /// When the source transaction committed, in Unix microseconds by the database server's
    /// clock; 0 when not known (rows of a snapshot).
    #[serde(default)]
    pub committed_us: i64,
}
