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

/// Exit codes of `slot status` (documented in the runbook): 0 healthy.
pub mod exit {
    /// The slot or the publication does not exist.
    pub const MISSING: u8 = 3;
    /// The slot is invalidated (`wal_status lost`): recover with `odoo-cdc run --resync`.
    pub const LOST: u8 = 4;
    /// The slot is `unreserved`: WAL it needs is past `max_slot_wal_keep_size` and goes at the
    /// next checkpoint unless odoo-cdc catches up now.
    pub const UNRESERVED: u8 = 5;
    /// The slot is not a pgoutput logical slot (test_decoding, wal2json, physical).
    pub const WRONG_PLUGIN: u8 = 6;
    /// A published table has neither a primary key nor a usable replica identity: Odoo's own
    /// UPDATEs and DELETEs on it fail.
    pub const NO_KEY: u8 = 7;
}

/// Default `--min-safe-wal-mb`: below this `safe_wal_size`, `slot status` warns.
pub const DEFAULT_MIN_SAFE_WAL_MB: i64 = 1024;

/// A table that cannot replicate UPDATE and DELETE, and the statement that fixes it.
#[derive(Debug, Clone)]
pub struct Keyless {
    /// `schema.table`.
    pub table: String,
    /// What to run.
    pub fix: String,
}

/// Each of `tables` (`schema.table`, or `table` in `public`) that cannot be published as it
/// is: `Err(())` when it does not exist, `Ok(k)` when it has neither a primary key nor a usable
/// replica identity (publishing it makes Odoo's UPDATEs fail). One query for all of them.
async fn table_problems(
    conn: &mut ReplicationConnection,
    tables: &[String],
) -> Result<Vec<(String, Result<Keyless, ()>)>, ReplError> {
    if tables.is_empty() {
        return Ok(Vec::new());
    }
    let list: Vec<String> = tables
        .iter()
        .map(|t| {
            let (schema, table) = t.split_once('.').unwrap_or(("public", t));
            format!(
                "({}, {})",
                cdc::conn::quote_literal(schema),
                cdc::conn::quote_literal(table)
            )
        })
        .collect();
    let rows = conn
        .simple_query(&format!(
            "SELECT v.s || '.' || v.t, (c.oid IS NOT NULL)::text, coalesce(c.relreplident::text, ''), \
             EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)::text \
             FROM (VALUES {}) v(s, t) LEFT JOIN pg_namespace n ON n.nspname = v.s \
             LEFT JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = v.t AND c.relkind IN ('r', 'p') \
             ORDER BY 1",
            list.join(", ")
        ))
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| {
            let get = |i: usize| r.get(i).cloned().flatten().unwrap_or_default();
            let (name, exists, ident, pk) = (get(0), get(1) == "true", get(2), get(3) == "true");
            if !exists {
                return Some((name, Err(())));
            }
            let broken = ident == "n" || (ident == "d" && !pk);
            broken.then(|| {
                let fix = format!(
                    "ALTER TABLE {} REPLICA IDENTITY FULL;  -- or add a primary key",
                    name.split('.')
                        .map(cdc::conn::quote_ident)
                        .collect::<Vec<_>>()
                        .join(".")
                );
                (name.clone(), Ok(Keyless { table: name, fix }))
            })
        })
        .collect())
}

/// The tables of `tables` without a primary key or usable replica identity.
pub async fn keyless(
    conn: &mut ReplicationConnection,
    tables: &[String],
) -> Result<Vec<Keyless>, ReplError> {
    Ok(table_problems(conn, tables)
        .await?
        .into_iter()
        .filter_map(|(_, p)| p.ok())
        .collect())
}

/// What `slot status` found that needs a person: (exit code, problem), the worst first, and
/// warnings that need attention soon.
pub fn verdict(
    st: Option<&SlotStatus>,
    tables: Option<&[PublishedTable]>,
    keyless: &[Keyless],
    min_safe_wal: i64,
) -> (Option<(u8, String)>, Vec<String>) {
    let mut warnings = Vec::new();
    let problem = match st {
        None => Some((exit::MISSING, "the slot does not exist: `odoo-cdc slot create`".to_string())),
        Some(s) if s.wal_status.as_deref() == Some("lost") => Some((
            exit::LOST,
            "the slot is lost (invalidated): recover with `odoo-cdc run --config <file> --resync`, never by dropping and recreating it by hand"
                .to_string(),
        )),
        Some(s) if s.wal_status.as_deref() == Some("unreserved") => Some((
            exit::UNRESERVED,
            "the slot is unreserved: WAL it needs goes at the next checkpoint; let odoo-cdc catch up now or raise max_slot_wal_keep_size"
                .to_string(),
        )),
        Some(s) if s.plugin != "pgoutput" => Some((
            exit::WRONG_PLUGIN,
            if s.plugin.is_empty() {
                "this is a physical slot, not odoo-cdc's pgoutput slot".to_string()
            } else {
                format!("the slot uses the {} plugin; odoo-cdc needs pgoutput", s.plugin)
            },
        )),
        Some(_) if tables.is_none() => Some((
            exit::MISSING,
            "the publication does not exist: `odoo-cdc slot create`".to_string(),
        )),
        Some(_) if !keyless.is_empty() => Some((
            exit::NO_KEY,
            format!(
                "{} published table(s) have no primary key or usable replica identity: {}",
                keyless.len(),
                keyless.iter().map(|k| k.fix.as_str()).collect::<Vec<_>>().join(" ")
            ),
        )),
        Some(_) => None,
    };
    if let Some(safe) = st.and_then(|s| s.safe_wal_size) {
        if safe < min_safe_wal {
            warnings.push(format!(
                "safe_wal_size is {} MB (below {} MB): the slot is lost if that much more WAL is written before odoo-cdc confirms",
                safe / (1024 * 1024),
                min_safe_wal / (1024 * 1024)
            ));
        }
    }
    (problem, warnings)
}

/// Prints the slot's status and the REPLICA IDENTITY of each published table; returns the
/// exit code (0 healthy, see [`exit`]). Problems and warnings also go to stderr.
pub async fn status(
    source: &str,
    slot_name: &str,
    publication: &str,
    as_json: bool,
    min_safe_wal_mb: i64,
    out: &mut impl Write,
) -> anyhow::Result<u8> {
    let cfg = SourceConfig::from_str(source)?;
    let mut conn = ReplicationConnection::connect(&cfg).await?;
    let st = slot::status(&mut conn, slot_name).await?;
    let tables = slot::publication_tables(&mut conn, publication).await?;
    let names: Vec<String> = tables
        .iter()
        .flatten()
        .map(|t| format!("{}.{}", t.schema, t.table))
        .collect();
    let keyless = keyless(&mut conn, &names).await?;
    let (problem, warnings) = verdict(
        st.as_ref(),
        tables.as_deref(),
        &keyless,
        min_safe_wal_mb.saturating_mul(1024 * 1024),
    );
    if as_json {
        let mut v = status_json(slot_name, st.as_ref(), publication, tables.as_deref());
        v["problem"] = problem
            .as_ref()
            .map_or(serde_json::Value::Null, |(_, p)| p.clone().into());
        v["exit_code"] = problem.as_ref().map_or(0, |(c, _)| *c).into();
        v["warnings"] = warnings.clone().into();
        v["keyless_tables"] = keyless
            .iter()
            .map(|k| k.table.clone())
            .collect::<Vec<_>>()
            .into();
        writeln!(out, "{v}")?;
    } else {
        write_status_text(out, slot_name, st.as_ref(), publication, tables.as_deref())?;
        for k in &keyless {
            writeln!(
                out,
                "  {}  has no primary key: updates and deletes fail; run: {}",
                k.table, k.fix
            )?;
        }
        for w in &warnings {
            writeln!(out, "warning              {w}")?;
        }
        if let Some((_, p)) = &problem {
            writeln!(out, "problem              {p}")?;
        }
    }
    for w in &warnings {
        eprintln!("odoo-cdc: warning: {w}");
    }
    if let Some((_, p)) = &problem {
        eprintln!("odoo-cdc: {p}");
    }
    Ok(problem.map_or(0, |(c, _)| c))
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
    let existing = slot::publication_tables(&mut conn, publication).await?;
    let pub_missing = existing.is_none();
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
    // Preflight: every check runs before anything is created, so a failure leaves nothing
    // half done (and a dry run fails the same way).
    let checked: Vec<String> = match (&table_list, &existing) {
        (Some(l), _) => l.clone(),
        (None, Some(ts)) => ts
            .iter()
            .map(|t| format!("{}.{}", t.schema, t.table))
            .collect(),
        (None, None) => Vec::new(),
    };
    let problems = preflight(&mut conn, &checked, slot_missing).await?;
    if !problems.is_empty() {
        for p in &problems {
            writeln!(out, "-- preflight: {p}")?;
        }
        return Err(anyhow::anyhow!(
            "{}:{}: preflight failed, nothing was created: {}",
            cfg.host,
            cfg.port,
            problems.join("; ")
        ));
    }
    let mut sql = slot::create_sql(slot_name, publication, table_list.as_deref());
    if !slot_missing {
        writeln!(out, "-- slot {slot_name:?} exists; left as it is")?;
        sql.retain(|s| !s.contains("pg_create_logical_replication_slot"));
    }
    run_sql(&mut conn, &sql, dry_run, out).await
}

/// What stops odoo-cdc's slot from working on this server: wal_level, free replication slots
/// and WAL senders, tables that do not exist or have no key. Empty when all is well.
pub async fn preflight(
    conn: &mut ReplicationConnection,
    tables: &[String],
    need_slot: bool,
) -> Result<Vec<String>, ReplError> {
    let mut problems = Vec::new();
    let rows = conn
        .simple_query(
            "SELECT current_setting('wal_level'), current_setting('max_replication_slots'), \
             (SELECT count(*) FROM pg_replication_slots)::text, current_setting('max_wal_senders')",
        )
        .await?;
    let get = |i: usize| {
        rows.first()
            .and_then(|r| r.get(i).cloned().flatten())
            .unwrap_or_default()
    };
    let wal_level = get(0);
    if wal_level != "logical" {
        problems.push(format!(
            "wal_level is {wal_level}, logical decoding needs logical: ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL"
        ));
    }
    let (max_slots, used): (i64, i64) = (get(1).parse().unwrap_or(0), get(2).parse().unwrap_or(0));
    if need_slot && used >= max_slots {
        problems.push(format!(
            "max_replication_slots is {max_slots} and {used} are in use: raise it (ALTER SYSTEM SET max_replication_slots = {}; restart)",
            used + 2
        ));
    }
    if get(3).parse::<i64>().unwrap_or(0) < 1 {
        problems.push(
            "max_wal_senders is 0: ALTER SYSTEM SET max_wal_senders = 10; then restart PostgreSQL"
                .into(),
        );
    }
    for (table, p) in table_problems(conn, tables).await? {
        problems.push(match p {
            Err(()) => format!("table {table} does not exist"),
            Ok(k) => format!(
                "table {} has no primary key or usable replica identity (Odoo's UPDATEs on it would fail once published): {}",
                k.table, k.fix
            ),
        });
    }
    Ok(problems)
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
