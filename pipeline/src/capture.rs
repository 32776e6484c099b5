//! From the replication stream to the transforms' input: committed transactions of owned row
//! changes, and the initial snapshot as one leading transaction.

use cdc::decoder::{Event, EventHandler, RowChange as CdcChange};
use cdc::pgoutput::{Column, OldTuple, TupleData};
use cdc::{Lsn, ReplError};
use transforms::{Op, Row, RowChange, Transaction};

fn to_row(tuple: &TupleData<'_>, columns: &[cdc::decoder::ColumnInfo], keys_only: bool) -> Row {
    tuple
        .columns
        .iter()
        .zip(columns)
        .filter(|(_, info)| !keys_only || info.is_key)
        .filter_map(|(col, info)| {
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

/// Converts a decoded change into the transforms' form.
pub fn convert(c: &CdcChange<'_>) -> RowChange {
    let cols = &c.relation.columns;
    RowChange {
        table: c.relation.name.clone(),
        op: match c.op {
            cdc::decoder::Op::Insert => Op::Insert,
            cdc::decoder::Op::Update => Op::Update,
            cdc::decoder::Op::Delete => Op::Delete,
        },
        new: c.new.map(|t| to_row(t, cols, false)),
        old: c.old.map(|o| match o {
            OldTuple::Key(t) => to_row(t, cols, true),
            OldTuple::Full(t) => to_row(t, cols, false),
        }),
    }
}

/// Collects committed transactions from decoder events.
#[derive(Debug, Default)]
pub struct TxnCollector {
    current: Option<Transaction>,
    /// Completed transactions, with the end LSN of their commit (to acknowledge).
    pub done: Vec<(Transaction, Lsn)>,
}

impl EventHandler for TxnCollector {
    type Error = ReplError;

    fn event(&mut self, event: Event<'_>) -> Result<(), ReplError> {
        match event {
            Event::Begin { commit_lsn, .. } => {
                self.current = Some(Transaction {
                    commit_lsn: commit_lsn.0,
                    changes: Vec::new(),
                });
            }
            Event::Change(c) => {
                if let Some(t) = &mut self.current {
                    t.changes.push(convert(&c));
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

/// Copies every published table in the client's current transaction into one transaction of
/// `Op::Snapshot` changes at `lsn`.
async fn copy_published(
    client: &tokio_postgres::Client,
    publication: &str,
    lsn: Lsn,
) -> Result<Transaction, ReplError> {
    let tables = cdc::snapshot::published_columns(client, publication).await?;
    let mut txn = Transaction {
        commit_lsn: lsn.0,
        changes: Vec::new(),
    };
    for (schema, table, columns) in &tables {
        cdc::snapshot::copy_table(client, schema, table, columns, |values| {
            txn.changes.push(RowChange {
                table: table.clone(),
                op: Op::Snapshot,
                new: Some(
                    columns
                        .iter()
                        .cloned()
                        .zip(values.iter().map(|v| v.map(str::to_string)))
                        .collect(),
                ),
                old: None,
            });
            Ok(())
        })
        .await?;
    }
    Ok(txn)
}

/// Creates the slot with an exported snapshot and reads every published row as one
/// transaction of `Op::Snapshot` changes (commit LSN = the consistent point); streaming then
/// starts at that point.
pub async fn snapshot(
    cfg: &cdc::SourceConfig,
    slot: &str,
    publication: &str,
) -> Result<(Transaction, Lsn), ReplError> {
    let mut conn = cdc::conn::ReplicationConnection::connect(cfg).await?;
    let exported = cdc::snapshot::create_slot_with_snapshot(&mut conn, slot).await?;
    let client = cfg.sql_client().await?;
    cdc::snapshot::begin_in_snapshot(&client, &exported.snapshot_name).await?;
    let txn = copy_published(&client, publication, exported.consistent_point).await?;
    client.batch_execute("COMMIT").await?;
    drop(conn);
    Ok((txn, exported.consistent_point))
}

/// Reads every published row in one repeatable-read snapshot, for a restart with an existing
/// slot; returns the rows and a WAL position at or after every commit they include.
pub async fn restore_snapshot(
    cfg: &cdc::SourceConfig,
    publication: &str,
) -> Result<(Transaction, Lsn), ReplError> {
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
    let txn = copy_published(&client, publication, lsn).await?;
    client.batch_execute("COMMIT").await?;
    Ok((txn, lsn))
}
