//! `odoo-cdc tail`: stream decoded changes to stdout as JSON lines, in commit order, confirming a
//! position to the server only after the lines up to that commit are written and flushed.
//!
//! Connection loss and server restarts reconnect with capped exponential backoff and resume
//! from the last confirmed commit; transactions already printed by this process are not printed
//! again (only one cut mid-transaction by the failure can repeat).

pub mod json;

use std::io::Write;
use std::str::FromStr;
use std::time::Duration;

use cdc::backoff::Backoff;
use cdc::conn::{quote_ident, ReplicationConnection};
use cdc::decoder::{Decoder, Event, EventHandler};
use cdc::stream::ReplicationStream;
use cdc::{slot, Lsn, ReplError, SourceConfig};

use json::TxnFields;

/// What `tail` is asked to do.
#[derive(Debug, Clone)]
pub struct TailOptions {
    /// Source database URL.
    pub source: String,
    /// Slot name.
    pub slot: String,
    /// Publication name.
    pub publication: String,
    /// Stop cleanly at this position (like `pg_recvlogical -E`).
    pub endpos: Option<Lsn>,
    /// Create the slot when it is missing.
    pub create_slot: bool,
    /// Never confirm a position to the server.
    pub no_ack: bool,
    /// pgoutput protocol version (1, or 2 for streaming of large transactions).
    pub proto_version: u32,
    /// Interval between standby status updates.
    pub status_interval: Duration,
    /// Interval of the `pg_logical_emit_message` heartbeat (`None`: off).
    pub heartbeat: Option<Duration>,
    /// Bytes of streamed transactions held in memory before spilling to a temp file.
    pub spool_memory: usize,
    /// Longest delay between reconnect attempts.
    pub max_backoff: Duration,
    /// Create the slot with an exported snapshot and print every published row first.
    pub snapshot: bool,
}

/// Why `tail` stopped.
#[derive(Debug, thiserror::Error)]
pub enum TailError {
    /// The replication side failed for good.
    #[error(transparent)]
    Repl(#[from] ReplError),
    /// Writing the output failed (e.g. the reader of stdout went away).
    #[error("writing output")]
    Output(#[source] std::io::Error),
}

/// Summary of a `tail` run.
#[derive(Debug, Default, Clone, Copy)]
pub struct TailSummary {
    /// Row change lines written.
    pub lines: u64,
    /// Transactions written.
    pub transactions: u64,
    /// End of the last commit written.
    pub last_commit_end: Lsn,
    /// Reconnects after transient failures.
    pub reconnects: u64,
}

struct Writer<'w, W: Write> {
    out: &'w mut W,
    endpos: Option<Lsn>,
    /// Commits at or before this were written in an earlier session of this process.
    written_through: Lsn,
    txn: Option<TxnFields>,
    skipping: bool,
    stop: bool,
    ack: Option<Lsn>,
    summary: TailSummary,
}

impl<W: Write> EventHandler for Writer<'_, W> {
    type Error = TailError;

    fn event(&mut self, event: Event<'_>) -> Result<(), TailError> {
        if self.stop {
            return Ok(());
        }
        match event {
            Event::Begin {
                xid,
                commit_lsn,
                commit_time,
            } => {
                if self.endpos.is_some_and(|end| commit_lsn > end) {
                    self.stop = true;
                    return Ok(());
                }
                self.skipping = commit_lsn < self.written_through;
                self.txn = Some(TxnFields::new(xid, commit_lsn, commit_time));
            }
            Event::Change(change) => {
                if let (Some(txn), false) = (&self.txn, self.skipping) {
                    json::write_change(self.out, &change, txn).map_err(TailError::Output)?;
                    self.summary.lines += 1;
                }
            }
            Event::Truncate { lsn, relations, .. } => {
                if let (Some(txn), false) = (&self.txn, self.skipping) {
                    for rel in relations {
                        json::write_truncate(self.out, rel, lsn, txn).map_err(TailError::Output)?;
                        self.summary.lines += 1;
                    }
                }
            }
            Event::Commit {
                commit_lsn,
                end_lsn,
                ..
            } => {
                self.txn = None;
                if !self.skipping {
                    self.summary.transactions += 1;
                    self.summary.last_commit_end = end_lsn;
                    self.written_through = self.written_through.max(commit_lsn);
                }
                self.skipping = false;
                self.ack = Some(end_lsn);
                if self.endpos.is_some_and(|end| end_lsn >= end) {
                    self.stop = true;
                }
            }
            Event::Message { .. } => {}
        }
        Ok(())
    }
}

/// Runs `tail` until `--endpos` is reached, the server ends the stream, or a permanent error.
pub async fn run<W: Write>(opts: &TailOptions, out: &mut W) -> Result<TailSummary, TailError> {
    let cfg = SourceConfig::from_str(&opts.source)?;
    let heartbeat = opts
        .heartbeat
        .map(|every| spawn_heartbeat(cfg.clone(), every));
    let mut decoder = Decoder::new(opts.spool_memory);
    let mut writer = Writer {
        out,
        endpos: opts.endpos,
        written_through: Lsn::ZERO,
        txn: None,
        skipping: false,
        stop: false,
        ack: None,
        summary: TailSummary::default(),
    };
    if opts.snapshot {
        snapshot(opts, &cfg, writer.out).await?;
    }
    let mut backoff = Backoff::new(Duration::from_millis(100), opts.max_backoff);
    let result = loop {
        match session(opts, &cfg, &mut decoder, &mut writer).await {
            Ok(()) => break Ok(writer.summary),
            Err(TailError::Repl(e)) if e.is_transient() => {
                let delay = backoff.next_delay();
                tracing::warn!(error = %e, source = ?std::error::Error::source(&e), ?delay, "replication interrupted; reconnecting");
                writer.summary.reconnects += 1;
                writer.txn = None;
                writer.skipping = false;
                tokio::time::sleep(delay).await;
            }
            Err(e) => break Err(e),
        }
    };
    if let Some(h) = heartbeat {
        h.abort();
    }
    result
}

async fn session<W: Write>(
    opts: &TailOptions,
    cfg: &SourceConfig,
    decoder: &mut Decoder,
    writer: &mut Writer<'_, W>,
) -> Result<(), TailError> {
    let mut conn = ReplicationConnection::connect(cfg).await?;
    let status = slot::ensure(&mut conn, &opts.slot, &opts.publication, opts.create_slot).await?;
    let start = status
        .confirmed_flush_lsn
        .unwrap_or(Lsn::ZERO)
        .max(writer.summary.last_commit_end);
    let mut options = vec![
        ("proto_version", opts.proto_version.to_string()),
        ("publication_names", quote_ident(&opts.publication)),
        ("messages", "true".to_string()),
    ];
    if opts.proto_version >= 2 {
        options.push(("streaming", "on".to_string()));
    }
    let mut stream =
        ReplicationStream::start(conn, &opts.slot, start, &options, opts.status_interval).await?;
    stream.set_confirm(!opts.no_ack);
    decoder.reset_session();
    tracing::info!(slot = %opts.slot, %start, "streaming");
    loop {
        let batch = stream.next_batch().await?;
        for (lsn, data) in batch.iter() {
            decoder.process(lsn, data, writer)?;
            if writer.stop {
                break;
            }
        }
        writer.out.flush().map_err(TailError::Output)?;
        if let Some(end) = writer.ack.take() {
            stream.ack(end);
        }
        let caught_up = opts
            .endpos
            .is_some_and(|end| !stream.in_transaction() && stream.keepalive_end() >= end);
        if writer.stop || caught_up || stream.is_ended() {
            stream.close().await?;
            return Ok(());
        }
    }
}

/// Creates the slot with an exported snapshot and prints every row of the published tables as
/// it was at the slot's consistent point; streaming then starts from that point.
async fn snapshot<W: Write>(
    opts: &TailOptions,
    cfg: &SourceConfig,
    out: &mut W,
) -> Result<(), TailError> {
    let mut conn = ReplicationConnection::connect(cfg).await?;
    if slot::publication_tables(&mut conn, &opts.publication)
        .await?
        .is_none()
    {
        return Err(ReplError::Missing(format!(
            "publication {:?} does not exist",
            opts.publication
        ))
        .into());
    }
    if slot::status(&mut conn, &opts.slot).await?.is_some() {
        return Err(ReplError::Config(format!(
            "--snapshot needs a new slot, and {:?} exists: its position is not the snapshot's",
            opts.slot
        ))
        .into());
    }
    let exported = cdc::snapshot::create_slot_with_snapshot(&mut conn, &opts.slot).await?;
    let client = cfg.sql_client().await?;
    cdc::snapshot::begin_in_snapshot(&client, &exported.snapshot_name).await?;
    let tables = cdc::snapshot::published_columns(&client, &opts.publication).await?;
    for (i, (schema, table, columns)) in tables.iter().enumerate() {
        let started = std::time::Instant::now();
        let writer = json::SnapshotRows::new(schema, table, columns, exported.consistent_point);
        let rows = cdc::snapshot::copy_table(&client, schema, table, columns, |values| {
            writer.write(out, values).map_err(ReplError::Output)
        })
        .await?;
        tracing::info!(table = %format!("{schema}.{table}"), rows, progress = %format!("{}/{}", i + 1, tables.len()), secs = started.elapsed().as_secs_f64(), "snapshot table copied");
    }
    client
        .batch_execute("COMMIT")
        .await
        .map_err(ReplError::from)?;
    out.flush().map_err(TailError::Output)?;
    drop(conn);
    tracing::info!(consistent_point = %exported.consistent_point, "snapshot done; streaming from the consistent point");
    Ok(())
}

/// Emits `pg_logical_emit_message(false, 'odoo_cdc.heartbeat', now())` periodically on an
/// ordinary SQL connection, so liveness shows in the stream even when Odoo is idle.
fn spawn_heartbeat(cfg: SourceConfig, every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut client = None;
        loop {
            tokio::time::sleep(every).await;
            if client.is_none() {
                client = cfg
                    .sql_client()
                    .await
                    .map_err(|e| tracing::debug!(error = %e, "heartbeat connect"))
                    .ok();
            }
            if let Some(c) = &client {
                let r = c
                    .simple_query(
                        "SELECT pg_logical_emit_message(false, 'odoo_cdc.heartbeat', now()::text)",
                    )
                    .await;
                if let Err(e) = r {
                    tracing::warn!(error = %e, "heartbeat failed");
                    client = None;
                }
            }
        }
    })
}
