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
        self.row()?.get("id")?.as_deref()?.parse().ok()
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

/// Reads a column as text.
pub fn text<'a>(row: &'a Row, col: &str) -> Option<&'a str> {
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
