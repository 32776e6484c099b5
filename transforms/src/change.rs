//! The input of the transforms: committed row changes, grouped by source transaction, owned and
//! independent of the replication codec (the runtime converts, and so can a test).

use std::collections::BTreeMap;

/// A row: column (its name shared by every row of the table) -> value in PostgreSQL's text
/// format (`None` is SQL NULL). Unchanged TOAST columns are absent.
pub type Row = BTreeMap<std::sync::Arc<str>, Option<String>>;

/// What happened to a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// A row of the initial snapshot.
    Snapshot,
    /// INSERT.
    Insert,
    /// UPDATE.
    Update,
    /// DELETE (only the key, under Odoo's default REPLICA IDENTITY).
    Delete,
}

/// One row change.
#[derive(Debug, Clone, PartialEq)]
pub struct RowChange {
    /// Table (schema `public`).
    pub table: String,
    /// What happened.
    pub op: Op,
    /// New row (absent for deletes).
    pub new: Option<Row>,
    /// Old key or row, when the server sent one.
    pub old: Option<Row>,
}

impl RowChange {
    /// The row to read the id from: the new row, else the old key.
    pub fn row(&self) -> Option<&Row> {
        self.new.as_ref().or(self.old.as_ref())
    }

    /// The row's `id`.
    pub fn id(&self) -> Option<i64> {
        int(self.row()?, "id")
    }
}

/// A committed transaction's changes.
#[derive(Debug, Clone, PartialEq)]
pub struct Transaction {
    /// LSN of the commit record (`X/X` as u64).
    pub commit_lsn: u64,
    /// Commit time, Unix microseconds (0 when not known: a snapshot).
    pub committed_us: i64,
    /// The changes in commit order.
    pub changes: Vec<RowChange>,
}

/// Every column the transforms read, in every Odoo version they know (sorted): rows carry only
/// these. An Odoo table has dozens of columns, and building and dropping all of them for every
/// change was most of the pipeline's own CPU. A debug build checks every read against the list.
pub const COLUMNS_READ: &[&str] = &[
    "account_id",
    "account_type",
    "backorder_id",
    "carrier",
    "carrier_id",
    "carrier_tracking_ref",
    "city",
    "code",
    "code_store",
    "country_id",
    "credit",
    "currency_id",
    "date",
    "debit",
    "default_code",
    "id",
    "location_id",
    "move_id",
    "move_type",
    "name",
    "partner_id",
    "picked",
    "picking_id",
    "picking_type_id",
    "product_id",
    "product_uom",
    "product_uom_id",
    "product_uom_qty",
    "quantity",
    "reserved_quantity",
    "reversed_entry_id",
    "sale_id",
    "state",
    "state_id",
    "street",
    "tax_id",
    "tax_ids",
    "usage",
    "warehouse_id",
    "write_date",
    "zip",
];

/// Whether the transforms read a column of that name (in any table).
pub fn reads_column(name: &str) -> bool {
    COLUMNS_READ.binary_search(&name).is_ok()
}

/// Reads a column as text.
pub fn text<'a>(row: &'a Row, col: &str) -> Option<&'a str> {
    debug_assert!(
        reads_column(col),
        "column {col} is read but missing from COLUMNS_READ: rows would never carry it"
    );
    row.get(col)?.as_deref()
}

/// Reads an integer column.
pub fn int(row: &Row, col: &str) -> Option<i64> {
    text(row, col)?.parse().ok()
}

/// Reads an exact numeric column (`NULL` and non-numbers are `None`).
pub fn decimal(row: &Row, col: &str) -> Option<rust_decimal::Decimal> {
    text(row, col)?.parse().ok()
}

/// Reads a translated (jsonb) name: the `en_US` value, or the text itself.
pub fn translated(row: &Row, col: &str) -> Option<String> {
    let raw = text(row, col)?;
    match serde_json::from_str::<serde_json::Value>(raw) {
        Ok(serde_json::Value::Object(m)) => m
            .get("en_US")
            .or_else(|| m.values().next())
            .and_then(|v| v.as_str())
            .map(str::to_string),
        _ => Some(raw.to_string()),
    }
}

#[cfg(test)]
mod columns {
    #[test]
    fn the_list_is_sorted_and_answers() {
        assert!(super::COLUMNS_READ.windows(2).all(|w| w[0] < w[1]));
        assert!(super::reads_column("default_code"));
        assert!(super::reads_column("id"));
        assert!(!super::reads_column("write_uid"));
    }
}
