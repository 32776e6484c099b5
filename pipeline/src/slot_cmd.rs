//! `odoo-cdc slot status | create | drop`: what a DBA needs to see and do about the slot and the
//! publication. LSNs are printed in PostgreSQL's own `X/X` form; create and drop print every SQL
//! statement they run, and with `--dry-run` run none.

use std::io::Write;
use std::str::FromStr;

use cdc::conn::ReplicationConnection;
use cdc::slot::{self, PublishedTable, SlotStatus};
use cdc::{ReplError, SourceConfig};

/// Which tables `slot create` publishes.
#[derive(Debug, Clone)]
pub enum TableChoice {
    /// The default Odoo tables that exist in the database.
    Odoo,
    /// An explicit list (`schema.table` or `table`).
    List(Vec<String>),
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// Prints the slot's status and the REPLICA IDENTITY of each published table.
pub async fn status(
    source: &str,
    slot_name: &str,
    publication: &str,
    as_json: bool,
    out: &mut impl Write,
) -> anyhow::Result<bool> {
    let cfg = SourceConfig::from_str(source)?;
    let mut conn = ReplicationConnection::connect(&cfg).await?;
    let st = slot::status(&mut conn, slot_name).await?;
    let tables = slot::publication_tables(&mut conn, publication).await?;
    if as_json {
        writeln!(
            out,
            "{}",
            status_json(slot_name, st.as_ref(), publication, tables.as_deref())
        )?;
    } else {
        write_status_text(out, slot_name, st.as_ref(), publication, tables.as_deref())?;
    }
    Ok(st.is_some() && tables.is_some())
}

fn status_json(
    slot_name: &str,
    st: Option<&SlotStatus>,
    publication: &str,
    tables: Option<&[PublishedTable]>,
) -> serde_json::Value {
    let slot = st.map(|s| {
        serde_json::json!({
            "slot_name": s.slot_name,
            "plugin": s.plugin,
            "active_pid": s.active_pid,
            "confirmed_flush_lsn": s.confirmed_flush_lsn.map(|l| l.to_string()),
            "restart_lsn": s.restart_lsn.map(|l| l.to_string()),
            "current_wal_lsn": s.current_wal_lsn.to_string(),
            "lag_bytes": s.lag_bytes,
            "wal_status": s.wal_status,
            "safe_wal_size": s.safe_wal_size,
        })
    });
    let tables = tables.map(|ts| {
        ts.iter()
            .map(|t| serde_json::json!({"schema": t.schema, "table": t.table, "replica_identity": t.replica_identity}))
            .collect::<Vec<_>>()
    });
    serde_json::json!({
        "slot": slot_name,
        "exists": st.is_some(),
        "status": slot,
        "publication": publication,
        "publication_exists": tables.is_some(),
        "tables": tables,
    })
}

fn write_status_text(
    out: &mut impl Write,
    slot_name: &str,
    st: Option<&SlotStatus>,
    publication: &str,
    tables: Option<&[PublishedTable]>,
) -> std::io::Result<()> {
    match st {
        None => writeln!(out, "slot                 {slot_name} (does not exist)")?,
        Some(s) => {
            writeln!(out, "slot                 {}", s.slot_name)?;
            writeln!(out, "plugin               {}", s.plugin)?;
            writeln!(out, "active_pid           {}", opt(s.active_pid))?;
            writeln!(out, "confirmed_flush_lsn  {}", opt(s.confirmed_flush_lsn))?;
            writeln!(out, "restart_lsn          {}", opt(s.restart_lsn))?;
            writeln!(out, "current_wal_lsn      {}", s.current_wal_lsn)?;
            writeln!(out, "lag_bytes            {}", opt(s.lag_bytes))?;
            writeln!(out, "wal_status           {}", opt(s.wal_status.as_deref()))?;
            writeln!(out, "safe_wal_size        {}", opt(s.safe_wal_size))?;
        }
    }
    match tables {
        None => writeln!(out, "publication          {publication} (does not exist)")?,
        Some(ts) => {
            writeln!(
                out,
                "publication          {publication} ({} tables)",
                ts.len()
            )?;
            for t in ts {
                let warn = if t.replica_identity == "nothing" {
                    "  (updates and deletes cannot be replicated)"
                } else {
                    ""
                };
                writeln!(
                    out,
                    "  {}.{}  replica identity {}{warn}",
                    t.schema, t.table, t.replica_identity
                )?;
            }
        }
    }
    Ok(())
}

/// Creates the publication (if missing) and the slot (if missing), printing the SQL.
pub async fn create(
    source: &str,
    slot_name: &str,
    publication: &str,
    tables: TableChoice,
    dry_run: bool,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let cfg = SourceConfig::from_str(source)?;
    let mut conn = ReplicationConnection::connect(&cfg).await?;
    let pub_missing = slot::publication_tables(&mut conn, publication)
        .await?
        .is_none();
    let slot_missing = slot::status(&mut conn, slot_name).await?.is_none();
    let table_list = if pub_missing {
        let list = match tables {
            TableChoice::List(l) => l,
            TableChoice::Odoo => slot::existing_odoo_tables(&mut conn).await?,
        };
        if list.is_empty() {
            return Err(ReplError::Config(
                "none of the Odoo tables exists in this database; name them with --tables".into(),
            )
            .into());
        }
        Some(list)
    } else {
        writeln!(out, "-- publication {publication:?} exists; left as it is")?;
        None
    };
    let mut sql = slot::create_sql(slot_name, publication, table_list.as_deref());
    if !slot_missing {
        writeln!(out, "-- slot {slot_name:?} exists; left as it is")?;
        sql.retain(|s| !s.contains("pg_create_logical_replication_slot"));
    }
    run_sql(&mut conn, &sql, dry_run, out).await
}

/// Drops the slot (and the publication unless `keep_publication`), printing the SQL.
pub async fn drop(
    source: &str,
    slot_name: &str,
    publication: &str,
    keep_publication: bool,
    dry_run: bool,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let cfg = SourceConfig::from_str(source)?;
    let mut conn = ReplicationConnection::connect(&cfg).await?;
    let slot_exists = slot::status(&mut conn, slot_name).await?.is_some();
    let pub_exists = slot::publication_tables(&mut conn, publication)
        .await?
        .is_some();
    let mut sql = slot::drop_sql(slot_name, publication, pub_exists && !keep_publication);
    if !slot_exists {
        writeln!(out, "-- slot {slot_name:?} does not exist")?;
        sql.retain(|s| !s.contains("pg_drop_replication_slot"));
    }
    run_sql(&mut conn, &sql, dry_run, out).await
}

async fn run_sql(
    conn: &mut ReplicationConnection,
    sql: &[String],
    dry_run: bool,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    for s in sql {
        writeln!(out, "{s};")?;
        out.flush()?;
        if !dry_run {
            conn.simple_query(s).await?;
        }
    }
    if dry_run {
        writeln!(out, "-- dry run: nothing was executed")?;
    }
    Ok(())
}
