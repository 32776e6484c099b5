//! From the replication stream to the transforms' input: committed transactions of owned row
//! changes, and the initial snapshot as one leading transaction.

use cdc::decoder::{Event, EventHandler, RowChange as CdcChange};
use cdc::pgoutput::{Column, OldTuple, TupleData};
use cdc::{Lsn, ReplError};
use transforms::{OdooVersion, Op, Row, RowChange, Transaction, Transformer};

fn to_row(
    tuple: &TupleData<'_>,
    columns: &[cdc::decoder::ColumnInfo],
    keep: &[bool],
    keys_only: bool,
) -> Row {
    tuple
        .columns
        .iter()
        .zip(columns)
        .zip(keep)
        .filter(|((_, info), keep)| **keep && (!keys_only || info.is_key))
        .filter_map(|((col, info), _)| {
            let v = match col {
                Column::UnchangedToast => return None,
                Column::Null => None,
                Column::Text(b) | Column::Binary(b) => {
                    Some(String::from_utf8_lossy(b).into_owned())
                }
            };
            Some((info.name.clone(), v))
        })
        .collect()
}

/// Which columns of each relation the transforms read, worked out once per relation message.
#[derive(Debug, Default)]
struct Kept {
    /// Relation OID -> (its first column's name, which columns to keep). Holding the name keeps
    /// its allocation alive, so a relation message that redescribes the table (new `Arc`s) can
    /// never look like the one the mask was made for.
    by_relation: std::collections::HashMap<u32, (Option<std::sync::Arc<str>>, Vec<bool>)>,
}

impl Kept {
    fn mask(&mut self, rel: &cdc::decoder::RelationInfo) -> &[bool] {
        let first = rel.columns.first().map(|c| &c.name);
        let entry = self
            .by_relation
            .entry(rel.id)
            .or_insert_with(|| (None, Vec::new()));
        let fresh = entry.1.len() == rel.columns.len()
            && match (&entry.0, first) {
                (Some(a), Some(b)) => std::sync::Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            };
        if !fresh {
            *entry = (
                first.cloned(),
                rel.columns
                    .iter()
                    .map(|c| transforms::reads_column(&c.name))
                    .collect(),
            );
        }
        &entry.1
    }

    /// Converts a decoded change into the transforms' form: only the columns they read.
    fn convert(&mut self, c: &CdcChange<'_>) -> RowChange {
        let cols = &c.relation.columns;
        let keep = self.mask(c.relation);
        RowChange {
            table: c.relation.name.clone(),
            op: match c.op {
                cdc::decoder::Op::Insert => Op::Insert,
                cdc::decoder::Op::Update => Op::Update,
                cdc::decoder::Op::Delete => Op::Delete,
            },
            new: c.new.map(|t| to_row(t, cols, keep, false)),
            old: c.old.map(|o| match o {
                OldTuple::Key(t) => to_row(t, cols, keep, true),
                OldTuple::Full(t) => to_row(t, cols, keep, false),
            }),
        }
    }
}

/// Collects committed transactions from decoder events.
#[derive(Debug, Default)]
pub struct TxnCollector {
    current: Option<Transaction>,
    kept: Kept,
    /// Completed transactions, with the end LSN of their commit (to acknowledge).
    pub done: Vec<(Transaction, Lsn)>,
}

impl EventHandler for TxnCollector {
    type Error = ReplError;

    fn event(&mut self, event: Event<'_>) -> Result<(), ReplError> {
        match event {
            Event::Begin {
                commit_lsn,
                commit_time,
                ..
            } => {
                self.current = Some(Transaction {
                    commit_lsn: commit_lsn.0,
                    committed_us: commit_time
                        .saturating_add(cdc::pgtime::PG_EPOCH_UNIX_SECS * 1_000_000),
                    changes: Vec::new(),
                });
            }
            Event::Change(c) => {
                if let Some(t) = &mut self.current {
                    t.changes.push(self.kept.convert(&c));
                }
            }
            Event::Truncate { .. } | Event::Message { .. } => {}
            Event::Commit { end_lsn, .. } => {
                if let Some(t) = self.current.take() {
                    self.done.push((t, end_lsn));
                }
            }
        }
        Ok(())
    }
}

/// Copies every published table in the client's current transaction, one `Op::Snapshot`
/// change at a time; the number of rows.
async fn copy_published(
    client: &tokio_postgres::Client,
    publication: &str,
    mut each: impl FnMut(RowChange),
) -> Result<u64, ReplError> {
    let tables = cdc::snapshot::published_columns(client, publication).await?;
    let mut rows = 0;
    for (schema, table, columns) in &tables {
        // Every row shares its table's column names; only the columns the transforms read.
        let names: Vec<Option<std::sync::Arc<str>>> = columns
            .iter()
            .map(|c| transforms::reads_column(c).then(|| c.as_str().into()))
            .collect();
        rows += cdc::snapshot::copy_table(client, schema, table, columns, |values| {
            each(RowChange {
                table: table.clone(),
                op: Op::Snapshot,
                new: Some(
                    names
                        .iter()
                        .zip(values.iter())
                        .filter_map(|(n, v)| Some((n.clone()?, v.map(str::to_string))))
                        .collect(),
                ),
                old: None,
            });
            Ok(())
        })
        .await?;
    }
    Ok(rows)
}

/// A snapshot of the published tables taken into a transformer's state, row by row as it was
/// read (memory holds the state the transforms keep, never the tables); nothing is emitted
/// until the runtime finishes it as the initial synchronisation or as a restore.
pub struct Loaded {
    /// The transformer holding the snapshot's state.
    pub transformer: Transformer,
    /// Rows read.
    pub rows: u64,
    /// The snapshot's position: the slot's consistent point, or for a restore a WAL position
    /// at or after every commit the snapshot sees.
    pub lsn: Lsn,
}

/// Creates the slot with an exported snapshot and hands every published row, as read, to
/// `each`; the rows read and the consistent point.
async fn exported(
    cfg: &cdc::SourceConfig,
    slot: &str,
    publication: &str,
    each: impl FnMut(RowChange),
) -> Result<(u64, Lsn), ReplError> {
    let mut conn = cdc::conn::ReplicationConnection::connect(cfg).await?;
    let exported = cdc::snapshot::create_slot_with_snapshot(&mut conn, slot).await?;
    let client = cfg.sql_client().await?;
    cdc::snapshot::begin_in_snapshot(&client, &exported.snapshot_name).await?;
    let rows = copy_published(&client, publication, each).await?;
    client.batch_execute("COMMIT").await?;
    // The exporting connection stays open until the copy is done.
    drop(conn);
    Ok((rows, exported.consistent_point))
}

/// Creates the slot with an exported snapshot and reads every published row into a new
/// transformer; streaming then starts at the consistent point.
pub async fn snapshot(
    cfg: &cdc::SourceConfig,
    slot: &str,
    publication: &str,
    version: OdooVersion,
) -> Result<Loaded, ReplError> {
    let mut transformer = Transformer::new(version);
    let (rows, lsn) = exported(cfg, slot, publication, |c| {
        transformer.apply_snapshot_row(&c)
    })
    .await?;
    Ok(Loaded {
        transformer,
        rows,
        lsn,
    })
}

/// The rows of [`snapshot`] as one transaction of `Op::Snapshot` changes at the consistent
/// point, for a caller that wants the rows themselves (the whole snapshot is in memory).
pub async fn snapshot_rows(
    cfg: &cdc::SourceConfig,
    slot: &str,
    publication: &str,
) -> Result<(Transaction, Lsn), ReplError> {
    let mut changes = Vec::new();
    let (_, lsn) = exported(cfg, slot, publication, |c| changes.push(c)).await?;
    Ok((
        Transaction {
            commit_lsn: lsn.0,
            committed_us: 0,
            changes,
        },
        lsn,
    ))
}

/// Reads every published row in one repeatable-read snapshot into a new transformer, for a
/// restart with an existing slot.
pub async fn restore_snapshot(
    cfg: &cdc::SourceConfig,
    publication: &str,
    version: OdooVersion,
) -> Result<Loaded, ReplError> {
    let client = cfg.sql_client().await?;
    client
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await?;
    // The first statement takes the snapshot; the insert position read in it is at or after
    // every commit the snapshot sees.
    let lsn: String = client
        .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
        .await?
        .get(0);
    let lsn: Lsn = lsn
        .parse()
        .map_err(|e| ReplError::Protocol(format!("{e}")))?;
    let mut transformer = Transformer::new(version);
    let rows = copy_published(&client, publication, |c| transformer.apply_snapshot_row(&c)).await?;
    client.batch_execute("COMMIT").await?;
    Ok(Loaded {
        transformer,
        rows,
        lsn,
    })
}

#[cfg(test)]
mod tests {
    use super::Kept;
    use cdc::decoder::{ColumnInfo, RelationInfo};

    fn relation(columns: &[&str]) -> RelationInfo {
        RelationInfo {
            id: 42,
            schema: "public".into(),
            name: "stock_move".into(),
            replica_identity: b'd',
            columns: columns
                .iter()
                .map(|c| ColumnInfo {
                    name: (*c).into(),
                    type_oid: 25,
                    type_modifier: -1,
                    is_key: *c == "id",
                })
                .collect(),
        }
    }

    #[test]
    fn a_redescribed_relation_gets_a_new_mask() {
        let mut kept = Kept::default();
        let v1 = relation(&["id", "write_uid", "state"]);
        assert_eq!(kept.mask(&v1), &[true, false, true]);
        assert_eq!(kept.mask(&v1), &[true, false, true]);
        // ALTER TABLE: the server describes the table again, same OID, same first column.
        let v2 = relation(&["id", "state", "write_uid", "product_id"]);
        assert_eq!(kept.mask(&v2), &[true, true, false, true]);
        let v3 = relation(&["id", "product_id", "state"]);
        assert_eq!(kept.mask(&v3), &[true, true, true]);
    }
}
