//! From pgoutput messages to row-change events, in commit order.
//!
//! The decoder keeps the relation cache (a Relation message takes effect for the changes after
//! it, so an `ALTER TABLE` mid-stream is seen exactly where the server says) and, under protocol
//! 2, holds streamed transactions in a [`Spool`] until they commit. Consumers see one shape for
//! both protocols: `Begin`, row changes, `Commit`, always for committed transactions only.

use std::collections::HashMap;

use crate::error::ReplError;
use crate::lsn::Lsn;
use crate::pgoutput::{self, LogicalMessage, OldTuple, TupleData};
use crate::spool::{Spool, DEFAULT_SPOOL_MEMORY};

/// A column of a published table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnInfo {
    /// Column name.
    pub name: std::sync::Arc<str>,
    /// Type OID (see [`crate::value`]).
    pub type_oid: u32,
    /// Type modifier.
    pub type_modifier: i32,
    /// Part of the replica identity key.
    pub is_key: bool,
}

/// A published table as last described by the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationInfo {
    /// Relation OID.
    pub id: u32,
    /// Schema.
    pub schema: String,
    /// Table name.
    pub name: String,
    /// `relreplident` (`d`, `n`, `f`, `i`).
    pub replica_identity: u8,
    /// Columns in order.
    pub columns: Vec<ColumnInfo>,
}

/// Kind of row change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// INSERT.
    Insert,
    /// UPDATE.
    Update,
    /// DELETE.
    Delete,
}

impl Op {
    /// Lowercase name, as printed by `tail`.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Insert => "insert",
            Op::Update => "update",
            Op::Delete => "delete",
        }
    }
}

/// One row change.
#[derive(Debug)]
pub struct RowChange<'a> {
    /// WAL position of the change.
    pub lsn: Lsn,
    /// What happened.
    pub op: Op,
    /// The table.
    pub relation: &'a RelationInfo,
    /// Old key or row, when the server sent one.
    pub old: Option<&'a OldTuple<'a>>,
    /// New row (absent for deletes).
    pub new: Option<&'a TupleData<'a>>,
}

/// What the decoder hands to its consumer.
#[derive(Debug)]
pub enum Event<'a> {
    /// A committed transaction starts.
    Begin {
        /// Transaction id.
        xid: u32,
        /// LSN of its commit record.
        commit_lsn: Lsn,
        /// Commit time, microseconds since 2000-01-01.
        commit_time: i64,
    },
    /// A row change of the current transaction.
    Change(RowChange<'a>),
    /// A truncate of the current transaction.
    Truncate {
        /// WAL position.
        lsn: Lsn,
        /// The truncated tables.
        relations: Vec<&'a RelationInfo>,
        /// Option bits: 1 = CASCADE, 2 = RESTART IDENTITY.
        options: u8,
    },
    /// A logical decoding message (e.g. odoo-cdc's heartbeat).
    Message {
        /// WAL position.
        lsn: Lsn,
        /// Part of a transaction.
        transactional: bool,
        /// Prefix.
        prefix: &'a str,
        /// Content.
        content: &'a [u8],
    },
    /// The current transaction ends; acknowledge `end_lsn` once it is durable downstream.
    Commit {
        /// LSN of the commit record.
        commit_lsn: Lsn,
        /// End of the commit record.
        end_lsn: Lsn,
        /// Commit time, microseconds since 2000-01-01.
        commit_time: i64,
    },
}

/// Receives decoded events.
pub trait EventHandler {
    /// The handler's error; decoder errors convert into it.
    type Error: From<ReplError>;
    /// Handles one event.
    fn event(&mut self, event: Event<'_>) -> Result<(), Self::Error>;
}

/// pgoutput decoder state for one replication session.
pub struct Decoder {
    relations: HashMap<u32, RelationInfo>,
    in_stream: Option<u32>,
    spool: Spool,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new(DEFAULT_SPOOL_MEMORY)
    }
}

impl Decoder {
    /// A decoder whose streamed transactions hold at most `spool_memory` bytes in memory.
    pub fn new(spool_memory: usize) -> Self {
        Self {
            relations: HashMap::new(),
            in_stream: None,
            spool: Spool::new(spool_memory),
        }
    }

    /// Forgets per-session state after a reconnect (the server resends relations and
    /// uncommitted streamed transactions).
    pub fn reset_session(&mut self) {
        self.relations.clear();
        self.in_stream = None;
        self.spool.clear();
    }

    /// The spool of streamed transactions (for memory figures).
    pub fn spool(&self) -> &Spool {
        &self.spool
    }

    /// Looks up a relation by OID.
    pub fn relation(&self, id: u32) -> Option<&RelationInfo> {
        self.relations.get(&id)
    }

    /// Decodes one XLogData payload and hands the resulting events to `handler`.
    pub fn process<H: EventHandler>(
        &mut self,
        lsn: Lsn,
        data: &[u8],
        handler: &mut H,
    ) -> Result<(), H::Error> {
        let msg = pgoutput::parse(data, self.in_stream.is_some()).map_err(ReplError::from)?;
        match msg {
            LogicalMessage::StreamStart { xid, .. } => {
                self.in_stream = Some(xid);
                Ok(())
            }
            LogicalMessage::StreamStop => {
                self.in_stream = None;
                Ok(())
            }
            LogicalMessage::StreamAbort { xid, subxid } => {
                self.spool.abort(xid, subxid);
                Ok(())
            }
            LogicalMessage::StreamCommit(sc) => {
                let mut replay = self.spool.commit(sc.xid)?;
                handler.event(Event::Begin {
                    xid: sc.xid,
                    commit_lsn: sc.commit.commit_lsn,
                    commit_time: sc.commit.commit_time,
                })?;
                while let Some((lsn, _xid, data)) = replay.next_record()? {
                    let msg = pgoutput::parse(&data, true).map_err(ReplError::from)?;
                    self.apply(lsn, msg, handler)?;
                }
                handler.event(Event::Commit {
                    commit_lsn: sc.commit.commit_lsn,
                    end_lsn: sc.commit.end_lsn,
                    commit_time: sc.commit.commit_time,
                })
            }
            msg => match self.in_stream {
                Some(top) => {
                    let xid = message_xid(&msg).unwrap_or(top);
                    self.spool.push(top, xid, lsn, data)?;
                    Ok(())
                }
                None => self.apply(lsn, msg, handler),
            },
        }
    }

    fn apply<H: EventHandler>(
        &mut self,
        lsn: Lsn,
        msg: LogicalMessage<'_>,
        handler: &mut H,
    ) -> Result<(), H::Error> {
        match msg {
            LogicalMessage::Begin(b) => handler.event(Event::Begin {
                xid: b.xid,
                commit_lsn: b.final_lsn,
                commit_time: b.commit_time,
            }),
            LogicalMessage::Commit(c) => handler.event(Event::Commit {
                commit_lsn: c.commit_lsn,
                end_lsn: c.end_lsn,
                commit_time: c.commit_time,
            }),
            LogicalMessage::Relation(r) => {
                let info = RelationInfo {
                    id: r.id,
                    schema: r.namespace.to_string(),
                    name: r.name.to_string(),
                    replica_identity: r.replica_identity,
                    columns: r
                        .columns
                        .iter()
                        .map(|c| ColumnInfo {
                            name: c.name.into(),
                            type_oid: c.type_oid,
                            type_modifier: c.type_modifier,
                            is_key: c.is_key(),
                        })
                        .collect(),
                };
                tracing::debug!(relation = %info.name, columns = info.columns.len(), "relation");
                self.relations.insert(r.id, info);
                Ok(())
            }
            LogicalMessage::Insert { relation, new, .. } => {
                let rel = self.checked(relation, Some(&new), None)?;
                handler.event(Event::Change(RowChange {
                    lsn,
                    op: Op::Insert,
                    relation: rel,
                    old: None,
                    new: Some(&new),
                }))
            }
            LogicalMessage::Update {
                relation, old, new, ..
            } => {
                let rel = self.checked(relation, Some(&new), old.as_ref())?;
                handler.event(Event::Change(RowChange {
                    lsn,
                    op: Op::Update,
                    relation: rel,
                    old: old.as_ref(),
                    new: Some(&new),
                }))
            }
            LogicalMessage::Delete { relation, old, .. } => {
                let rel = self.checked(relation, None, Some(&old))?;
                handler.event(Event::Change(RowChange {
                    lsn,
                    op: Op::Delete,
                    relation: rel,
                    old: Some(&old),
                    new: None,
                }))
            }
            LogicalMessage::Truncate {
                options, relations, ..
            } => {
                let mut rels = Vec::with_capacity(relations.len());
                for id in relations {
                    rels.push(self.relations.get(&id).ok_or_else(|| unknown(id))?);
                }
                handler.event(Event::Truncate {
                    lsn,
                    relations: rels,
                    options,
                })
            }
            LogicalMessage::Message {
                transactional,
                lsn: msg_lsn,
                prefix,
                content,
                ..
            } => handler.event(Event::Message {
                lsn: msg_lsn,
                transactional,
                prefix,
                content,
            }),
            // Origin and Type carry nothing a consumer of Odoo's tables needs.
            LogicalMessage::Origin { .. } | LogicalMessage::Type { .. } => Ok(()),
            LogicalMessage::StreamStart { .. }
            | LogicalMessage::StreamStop
            | LogicalMessage::StreamCommit(_)
            | LogicalMessage::StreamAbort { .. } => Err(ReplError::Protocol(
                "stream control message inside a streamed transaction".into(),
            )
            .into()),
        }
    }

    fn checked(
        &self,
        id: u32,
        new: Option<&TupleData<'_>>,
        old: Option<&OldTuple<'_>>,
    ) -> Result<&RelationInfo, ReplError> {
        let rel = self.relations.get(&id).ok_or_else(|| unknown(id))?;
        let want = rel.columns.len();
        for t in new.into_iter().chain(old.map(OldTuple::tuple)) {
            if t.columns.len() != want {
                return Err(ReplError::Protocol(format!(
                    "row of {}.{} has {} columns, its relation message {}",
                    rel.schema,
                    rel.name,
                    t.columns.len(),
                    want
                )));
            }
        }
        Ok(rel)
    }
}

fn unknown(id: u32) -> ReplError {
    ReplError::Protocol(format!(
        "change for relation {id} before its relation message"
    ))
}

fn message_xid(msg: &LogicalMessage<'_>) -> Option<u32> {
    match msg {
        LogicalMessage::Relation(r) => r.xid,
        LogicalMessage::Type { xid, .. }
        | LogicalMessage::Insert { xid, .. }
        | LogicalMessage::Update { xid, .. }
        | LogicalMessage::Delete { xid, .. }
        | LogicalMessage::Truncate { xid, .. }
        | LogicalMessage::Message { xid, .. } => *xid,
        _ => None,
    }
}
