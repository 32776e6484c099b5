//! Slot and publication management for DBAs: status, create, drop, and the checks odoo-cdc runs
//! before streaming (in managed mode it never creates or drops anything).

use crate::conn::{quote_ident, quote_literal, ReplicationConnection};
use crate::error::ReplError;
use crate::lsn::Lsn;

/// Default replication slot name.
pub const DEFAULT_SLOT: &str = "odoo_cdc";
/// Default publication name.
pub const DEFAULT_PUBLICATION: &str = "odoo_cdc";

/// The Odoo tables odoo-cdc publishes by default (those that exist are used).
pub const ODOO_TABLES: &[&str] = &[
    "sale_order",
    "sale_order_line",
    "stock_move",
    "stock_move_line",
    "stock_quant",
    "stock_picking",
    "stock_picking_type",
    "stock_location",
    "stock_warehouse",
    "product_product",
    "product_template",
    "res_partner",
    "res_country",
    "res_country_state",
    "account_move",
    "account_move_line",
    "account_account",
    "res_currency",
];

/// What `slot status` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotStatus {
    /// Slot name.
    pub slot_name: String,
    /// Output plugin.
    pub plugin: String,
    /// PID of the walsender using the slot, if any.
    pub active_pid: Option<i32>,
    /// Position the consumer confirmed.
    pub confirmed_flush_lsn: Option<Lsn>,
    /// Oldest WAL the slot keeps for decoding.
    pub restart_lsn: Option<Lsn>,
    /// Current WAL insert position.
    pub current_wal_lsn: Lsn,
    /// Bytes of WAL between `confirmed_flush_lsn` and the current position.
    pub lag_bytes: Option<i64>,
    /// `reserved`, `extended`, `unreserved` or `lost`.
    pub wal_status: Option<String>,
    /// Bytes that can still be written before the slot is in danger of losing WAL.
    pub safe_wal_size: Option<i64>,
}

/// A published table and its REPLICA IDENTITY.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedTable {
    /// Schema.
    pub schema: String,
    /// Table.
    pub table: String,
    /// `default`, `nothing`, `full` or `index`.
    pub replica_identity: String,
}

fn parse_lsn(v: &Option<String>) -> Result<Option<Lsn>, ReplError> {
    v.as_deref()
        .map(|s| s.parse().map_err(|e| ReplError::Protocol(format!("{e}"))))
        .transpose()
}

fn parse_num<T: std::str::FromStr>(v: &Option<String>) -> Option<T> {
    v.as_deref().and_then(|s| s.parse().ok())
}

/// Reads the slot's status; `None` when it does not exist.
pub async fn status(
    conn: &mut ReplicationConnection,
    slot: &str,
) -> Result<Option<SlotStatus>, ReplError> {
    let rows = conn
        .simple_query(&format!(
            "SELECT slot_name::text, plugin::text, active_pid::text, confirmed_flush_lsn::text, \
             restart_lsn::text, pg_current_wal_lsn()::text, \
             (pg_current_wal_lsn() - confirmed_flush_lsn)::bigint::text, wal_status, \
             safe_wal_size::text \
             FROM pg_replication_slots WHERE slot_name = {}",
            quote_literal(slot)
        ))
        .await?;
    let Some(r) = rows.into_iter().next() else {
        return Ok(None);
    };
    let get = |i: usize| r.get(i).cloned().flatten();
    Ok(Some(SlotStatus {
        slot_name: get(0).unwrap_or_default(),
        plugin: get(1).unwrap_or_default(),
        active_pid: parse_num(&get(2)),
        confirmed_flush_lsn: parse_lsn(&get(3))?,
        restart_lsn: parse_lsn(&get(4))?,
        current_wal_lsn: parse_lsn(&get(5))?.unwrap_or_default(),
        lag_bytes: parse_num(&get(6)),
        wal_status: get(7),
        safe_wal_size: parse_num(&get(8)),
    }))
}

/// The tables of a publication with their REPLICA IDENTITY; `None` when it does not exist.
pub async fn publication_tables(
    conn: &mut ReplicationConnection,
    publication: &str,
) -> Result<Option<Vec<PublishedTable>>, ReplError> {
    let exists = conn
        .simple_query(&format!(
            "SELECT 1 FROM pg_publication WHERE pubname = {}",
            quote_literal(publication)
        ))
        .await?;
    if exists.is_empty() {
        return Ok(None);
    }
    let rows = conn
        .simple_query(&format!(
            "SELECT pt.schemaname::text, pt.tablename::text, \
             CASE c.relreplident WHEN 'd' THEN 'default' WHEN 'n' THEN 'nothing' \
             WHEN 'f' THEN 'full' WHEN 'i' THEN 'index' END \
             FROM pg_publication_tables pt \
             JOIN pg_namespace n ON n.nspname = pt.schemaname \
             JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename \
             WHERE pt.pubname = {} ORDER BY 1, 2",
            quote_literal(publication)
        ))
        .await?;
    Ok(Some(
        rows.into_iter()
            .map(|r| PublishedTable {
                schema: r.first().cloned().flatten().unwrap_or_default(),
                table: r.get(1).cloned().flatten().unwrap_or_default(),
                replica_identity: r.get(2).cloned().flatten().unwrap_or_default(),
            })
            .collect(),
    ))
}

/// The SQL `slot create` runs: the publication over the given tables (when it is missing) and
/// the pgoutput slot.
pub fn create_sql(slot: &str, publication: &str, tables: Option<&[String]>) -> Vec<String> {
    let mut sql = Vec::new();
    if let Some(tables) = tables {
        let list: Vec<String> = tables.iter().map(|t| qualified(t)).collect();
        sql.push(format!(
            "CREATE PUBLICATION {} FOR TABLE {}",
            quote_ident(publication),
            list.join(", ")
        ));
    }
    sql.push(format!(
        "SELECT pg_create_logical_replication_slot({}, 'pgoutput')",
        quote_literal(slot)
    ));
    sql
}

/// The SQL `slot drop` runs.
pub fn drop_sql(slot: &str, publication: &str, with_publication: bool) -> Vec<String> {
    let mut sql = vec![format!(
        "SELECT pg_drop_replication_slot({})",
        quote_literal(slot)
    )];
    if with_publication {
        sql.push(format!("DROP PUBLICATION {}", quote_ident(publication)));
    }
    sql
}

fn qualified(table: &str) -> String {
    match table.split_once('.') {
        Some((schema, name)) => format!("{}.{}", quote_ident(schema), quote_ident(name)),
        None => quote_ident(table),
    }
}

/// The default Odoo tables that exist in the database, schema-qualified.
pub async fn existing_odoo_tables(
    conn: &mut ReplicationConnection,
) -> Result<Vec<String>, ReplError> {
    let list: Vec<String> = ODOO_TABLES.iter().map(|t| quote_literal(t)).collect();
    let rows = conn
        .simple_query(&format!(
            "SELECT table_schema::text || '.' || table_name::text FROM information_schema.tables \
             WHERE table_schema = 'public' AND table_name IN ({}) ORDER BY table_name",
            list.join(", ")
        ))
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| r.into_iter().next().flatten())
        .collect())
}

/// Checks that the slot (pgoutput) and publication exist before streaming. With `create`, a
/// missing slot is created; otherwise (and always in managed mode) a missing one is an error
/// that says how to create it. Returns the slot's status.
pub async fn ensure(
    conn: &mut ReplicationConnection,
    slot: &str,
    publication: &str,
    create: bool,
) -> Result<SlotStatus, ReplError> {
    if publication_tables(conn, publication).await?.is_none() {
        return Err(ReplError::Missing(format!(
            "publication {publication:?} does not exist; create it with \
             `odoo-cdc slot create --publication {publication}` or CREATE PUBLICATION"
        )));
    }
    if let Some(s) = status(conn, slot).await? {
        if s.plugin != "pgoutput" {
            return Err(ReplError::Config(format!(
                "replication slot {slot:?} uses plugin {:?}; odoo-cdc needs pgoutput",
                s.plugin
            )));
        }
        if s.wal_status.as_deref() == Some("lost") {
            return Err(ReplError::Missing(format!(
                "replication slot {slot:?} has lost required WAL (wal_status = lost); drop and \
                 recreate it and take a new snapshot"
            )));
        }
        return Ok(s);
    }
    if !create {
        return Err(ReplError::Missing(format!(
            "replication slot {slot:?} does not exist; create it with `odoo-cdc slot create \
             --slot {slot}` or pass --create-slot"
        )));
    }
    create_slot(conn, slot).await?;
    status(conn, slot)
        .await?
        .ok_or_else(|| ReplError::Missing(format!("replication slot {slot:?} vanished")))
}

/// Creates a pgoutput slot with the replication command; returns its consistent point.
pub async fn create_slot(conn: &mut ReplicationConnection, slot: &str) -> Result<Lsn, ReplError> {
    let rows = conn
        .simple_query(&format!(
            "CREATE_REPLICATION_SLOT {} LOGICAL pgoutput NOEXPORT_SNAPSHOT",
            quote_ident(slot)
        ))
        .await?;
    consistent_point(&rows)
}

pub(crate) fn consistent_point(rows: &[Vec<Option<String>>]) -> Result<Lsn, ReplError> {
    let lsn = rows
        .first()
        .and_then(|r| r.get(1).cloned().flatten())
        .ok_or_else(|| ReplError::Protocol("CREATE_REPLICATION_SLOT returned no row".into()))?;
    lsn.parse()
        .map_err(|e| ReplError::Protocol(format!("consistent point: {e}")))
}
