//! The pgoutput and streaming-replication codec. Sans-IO: pure functions from bytes to messages
//! (and from status to bytes), no sockets, no async, so it can be fuzzed and tested byte for byte.
//!
//! Two layers, as in PostgreSQL's protocol docs ("Streaming Replication Protocol" and "Logical
//! Streaming Replication Protocol"):
//! - [`parse_replication`]: the CopyData payloads of a `START_REPLICATION` stream — XLogData (`w`)
//!   and primary keepalive (`k`) — and [`encode_status_update`] for the standby status update (`r`);
//! - [`parse`]: the pgoutput message inside an XLogData payload (Begin, Commit, Origin, Relation,
//!   Type, Insert, Update, Delete, Truncate, Message, and the protocol 2 Stream messages).
//!
//! Everything borrows from the input buffer: decoding allocates only the small column vectors.

mod reader;
mod tuple;

pub use tuple::{Column, TupleData};

use crate::lsn::Lsn;
use bytes::{BufMut, BytesMut};
use reader::Reader;

/// Why a message could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The message ended before the named field.
    #[error("message truncated while reading {0}")]
    Truncated(&'static str),
    /// A message tag this codec does not know.
    #[error("unknown {kind} message tag {tag:#04x}")]
    UnknownTag {
        /// Which layer the tag belongs to.
        kind: &'static str,
        /// The tag byte.
        tag: u8,
    },
    /// A name that is not valid UTF-8.
    #[error("{0} is not valid utf-8")]
    InvalidUtf8(&'static str),
    /// Bytes left over after a complete message.
    #[error("{extra} unexpected bytes after {what}")]
    TrailingBytes {
        /// The message.
        what: &'static str,
        /// How many bytes were left.
        extra: usize,
    },
    /// A field with a value the protocol does not allow.
    #[error("invalid {what}: {value}")]
    Invalid {
        /// The field.
        what: &'static str,
        /// The offending value.
        value: i64,
    },
}

/// A CopyData payload of a logical replication stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicationMessage<'a> {
    /// WAL data: one pgoutput message.
    XLogData {
        /// WAL position of the start of this data (the change's LSN).
        wal_start: Lsn,
        /// Current end of WAL on the server.
        wal_end: Lsn,
        /// Server clock, microseconds since 2000-01-01.
        send_time: i64,
        /// The pgoutput message.
        data: &'a [u8],
    },
    /// Primary keepalive.
    PrimaryKeepalive {
        /// Current end of WAL on the server.
        wal_end: Lsn,
        /// Server clock, microseconds since 2000-01-01.
        send_time: i64,
        /// The server asks for an immediate status update.
        reply_requested: bool,
    },
}

/// Parses one CopyData payload of a replication stream.
pub fn parse_replication(buf: &[u8]) -> Result<ReplicationMessage<'_>, DecodeError> {
    let mut r = Reader::new(buf);
    match r.u8("replication message tag")? {
        b'w' => Ok(ReplicationMessage::XLogData {
            wal_start: r.lsn("xlogdata start")?,
            wal_end: r.lsn("xlogdata end")?,
            send_time: r.i64("xlogdata send time")?,
            data: r.rest(),
        }),
        b'k' => {
            let msg = ReplicationMessage::PrimaryKeepalive {
                wal_end: r.lsn("keepalive wal end")?,
                send_time: r.i64("keepalive send time")?,
                reply_requested: r.u8("keepalive reply flag")? != 0,
            };
            r.finish("keepalive")?;
            Ok(msg)
        }
        tag => Err(DecodeError::UnknownTag {
            kind: "replication",
            tag,
        }),
    }
}

/// Appends a standby status update (`r`) as a complete CopyData message (tag, length, payload).
pub fn encode_status_update(
    write: Lsn,
    flush: Lsn,
    apply: Lsn,
    now_micros_since_2000: i64,
    reply_requested: bool,
    out: &mut BytesMut,
) {
    out.put_u8(b'd');
    out.put_i32(4 + 1 + 8 * 4 + 1);
    out.put_u8(b'r');
    out.put_u64(write.0);
    out.put_u64(flush.0);
    out.put_u64(apply.0);
    out.put_i64(now_micros_since_2000);
    out.put_u8(u8::from(reply_requested));
}

/// Begin of a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Begin {
    /// LSN of the transaction's commit record.
    pub final_lsn: Lsn,
    /// Commit time, microseconds since 2000-01-01.
    pub commit_time: i64,
    /// Transaction id.
    pub xid: u32,
}

/// Commit of a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Commit {
    /// Flags (unused, 0).
    pub flags: u8,
    /// LSN of the commit record.
    pub commit_lsn: Lsn,
    /// End of the commit record: the position to confirm once the transaction is handled.
    pub end_lsn: Lsn,
    /// Commit time, microseconds since 2000-01-01.
    pub commit_time: i64,
}

/// Commit of a streamed (protocol 2) transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamCommit {
    /// Top-level transaction id.
    pub xid: u32,
    /// The commit.
    pub commit: Commit,
}

/// One column of a Relation message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationColumn<'a> {
    /// Flags; bit 1 marks a column of the replica identity key.
    pub flags: u8,
    /// Column name.
    pub name: &'a str,
    /// Type OID.
    pub type_oid: u32,
    /// Type modifier (atttypmod).
    pub type_modifier: i32,
}

impl RelationColumn<'_> {
    /// Whether the column is part of the replica identity key.
    pub fn is_key(&self) -> bool {
        self.flags & 1 != 0
    }
}

/// Describes a relation before its first change (and again after it changes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation<'a> {
    /// Xid, inside a streamed transaction.
    pub xid: Option<u32>,
    /// Relation OID.
    pub id: u32,
    /// Schema.
    pub namespace: &'a str,
    /// Table name.
    pub name: &'a str,
    /// `relreplident`: `d` default, `n` nothing, `f` full, `i` index.
    pub replica_identity: u8,
    /// Columns, in order.
    pub columns: Vec<RelationColumn<'a>>,
}

/// A decoded pgoutput message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogicalMessage<'a> {
    /// Begin of a transaction.
    Begin(Begin),
    /// Commit of a transaction.
    Commit(Commit),
    /// Origin of the following changes.
    Origin {
        /// Commit LSN on the origin server.
        lsn: Lsn,
        /// Origin name.
        name: &'a str,
    },
    /// Relation description.
    Relation(Relation<'a>),
    /// Type description (for non-builtin types).
    Type {
        /// Xid, inside a streamed transaction.
        xid: Option<u32>,
        /// Type OID.
        oid: u32,
        /// Schema of the type.
        namespace: &'a str,
        /// Type name.
        name: &'a str,
    },
    /// A row insert.
    Insert {
        /// Xid, inside a streamed transaction.
        xid: Option<u32>,
        /// Relation OID.
        relation: u32,
        /// The new row.
        new: TupleData<'a>,
    },
    /// A row update.
    Update {
        /// Xid, inside a streamed transaction.
        xid: Option<u32>,
        /// Relation OID.
        relation: u32,
        /// Old key (`K`) or old row (`O`, REPLICA IDENTITY FULL), when the server sent one.
        old: Option<OldTuple<'a>>,
        /// The new row.
        new: TupleData<'a>,
    },
    /// A row delete.
    Delete {
        /// Xid, inside a streamed transaction.
        xid: Option<u32>,
        /// Relation OID.
        relation: u32,
        /// Old key or old row.
        old: OldTuple<'a>,
    },
    /// A truncate of one or more relations.
    Truncate {
        /// Xid, inside a streamed transaction.
        xid: Option<u32>,
        /// Option bits: 1 = CASCADE, 2 = RESTART IDENTITY.
        options: u8,
        /// Relation OIDs.
        relations: Vec<u32>,
    },
    /// A logical decoding message (`pg_logical_emit_message`).
    Message {
        /// Xid, inside a streamed transaction.
        xid: Option<u32>,
        /// Whether the message is transactional.
        transactional: bool,
        /// LSN of the message.
        lsn: Lsn,
        /// Prefix.
        prefix: &'a str,
        /// Content.
        content: &'a [u8],
    },
    /// Start of a block of a streamed transaction (protocol 2).
    StreamStart {
        /// Top-level transaction id.
        xid: u32,
        /// Whether this is the first block of that transaction.
        first_segment: bool,
    },
    /// End of a block of a streamed transaction.
    StreamStop,
    /// Commit of a streamed transaction.
    StreamCommit(StreamCommit),
    /// Abort of a streamed transaction or of one of its subtransactions.
    StreamAbort {
        /// Top-level transaction id.
        xid: u32,
        /// The aborted (sub)transaction; equal to `xid` when the whole transaction aborts.
        subxid: u32,
    },
}

/// The old row of an Update or Delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OldTuple<'a> {
    /// Only the replica identity key columns (`K`); other columns are null.
    Key(TupleData<'a>),
    /// The whole old row (`O`, REPLICA IDENTITY FULL).
    Full(TupleData<'a>),
}

impl<'a> OldTuple<'a> {
    /// The tuple, whichever kind.
    pub fn tuple(&self) -> &TupleData<'a> {
        match self {
            OldTuple::Key(t) | OldTuple::Full(t) => t,
        }
    }
}

/// Parses one pgoutput message. `in_stream` is true between Stream Start and Stream Stop, where
/// change messages carry the (sub)transaction id first.
pub fn parse(buf: &[u8], in_stream: bool) -> Result<LogicalMessage<'_>, DecodeError> {
    let mut r = Reader::new(buf);
    let tag = r.u8("pgoutput message tag")?;
    let stream_xid = |r: &mut Reader<'_>| -> Result<Option<u32>, DecodeError> {
        if in_stream {
            Ok(Some(r.u32("streamed xid")?))
        } else {
            Ok(None)
        }
    };
    let msg = match tag {
        b'B' => LogicalMessage::Begin(Begin {
            final_lsn: r.lsn("begin final lsn")?,
            commit_time: r.i64("begin commit time")?,
            xid: r.u32("begin xid")?,
        }),
        b'C' => LogicalMessage::Commit(parse_commit(&mut r)?),
        b'O' => LogicalMessage::Origin {
            lsn: r.lsn("origin lsn")?,
            name: r.cstr("origin name")?,
        },
        b'R' => {
            let xid = stream_xid(&mut r)?;
            let id = r.u32("relation id")?;
            let namespace = r.cstr("relation namespace")?;
            let name = r.cstr("relation name")?;
            let replica_identity = r.u8("replica identity")?;
            let ncols = r.i16("relation column count")?;
            if ncols < 0 {
                return Err(DecodeError::Invalid {
                    what: "relation column count",
                    value: ncols.into(),
                });
            }
            let mut columns = Vec::with_capacity(usize::try_from(ncols).unwrap_or(0).min(1600));
            for _ in 0..ncols {
                columns.push(RelationColumn {
                    flags: r.u8("column flags")?,
                    name: r.cstr("column name")?,
                    type_oid: r.u32("column type")?,
                    type_modifier: r.i32("column type modifier")?,
                });
            }
            LogicalMessage::Relation(Relation {
                xid,
                id,
                namespace,
                name,
                replica_identity,
                columns,
            })
        }
        b'Y' => LogicalMessage::Type {
            xid: stream_xid(&mut r)?,
            oid: r.u32("type oid")?,
            namespace: r.cstr("type namespace")?,
            name: r.cstr("type name")?,
        },
        b'I' => {
            let xid = stream_xid(&mut r)?;
            let relation = r.u32("insert relation")?;
            expect_tag(&mut r, b'N', "insert tuple marker")?;
            LogicalMessage::Insert {
                xid,
                relation,
                new: TupleData::parse(&mut r)?,
            }
        }
        b'U' => {
            let xid = stream_xid(&mut r)?;
            let relation = r.u32("update relation")?;
            let mut old = None;
            let mut marker = r.u8("update tuple marker")?;
            if marker == b'K' || marker == b'O' {
                let t = TupleData::parse(&mut r)?;
                old = Some(if marker == b'K' {
                    OldTuple::Key(t)
                } else {
                    OldTuple::Full(t)
                });
                marker = r.u8("update new tuple marker")?;
            }
            if marker != b'N' {
                return Err(DecodeError::UnknownTag {
                    kind: "update tuple",
                    tag: marker,
                });
            }
            LogicalMessage::Update {
                xid,
                relation,
                old,
                new: TupleData::parse(&mut r)?,
            }
        }
        b'D' => {
            let xid = stream_xid(&mut r)?;
            let relation = r.u32("delete relation")?;
            let old = match r.u8("delete tuple marker")? {
                b'K' => OldTuple::Key(TupleData::parse(&mut r)?),
                b'O' => OldTuple::Full(TupleData::parse(&mut r)?),
                tag => {
                    return Err(DecodeError::UnknownTag {
                        kind: "delete tuple",
                        tag,
                    })
                }
            };
            LogicalMessage::Delete { xid, relation, old }
        }
        b'T' => {
            let xid = stream_xid(&mut r)?;
            let n = r.u32("truncate relation count")?;
            let options = r.u8("truncate options")?;
            let n = usize::try_from(n).unwrap_or(usize::MAX);
            if n > r.remaining() / 4 {
                return Err(DecodeError::Truncated("truncate relation ids"));
            }
            let mut relations = Vec::with_capacity(n);
            for _ in 0..n {
                relations.push(r.u32("truncate relation id")?);
            }
            LogicalMessage::Truncate {
                xid,
                options,
                relations,
            }
        }
        b'M' => {
            let xid = stream_xid(&mut r)?;
            let transactional = r.u8("message flags")? & 1 != 0;
            let lsn = r.lsn("message lsn")?;
            let prefix = r.cstr("message prefix")?;
            let len = r.u32("message length")?;
            let content = r.bytes(
                usize::try_from(len).unwrap_or(usize::MAX),
                "message content",
            )?;
            LogicalMessage::Message {
                xid,
                transactional,
                lsn,
                prefix,
                content,
            }
        }
        b'S' => LogicalMessage::StreamStart {
            xid: r.u32("stream start xid")?,
            first_segment: r.u8("stream start first segment")? == 1,
        },
        b'E' => LogicalMessage::StreamStop,
        b'c' => {
            let xid = r.u32("stream commit xid")?;
            LogicalMessage::StreamCommit(StreamCommit {
                xid,
                commit: parse_commit(&mut r)?,
            })
        }
        b'A' => {
            let xid = r.u32("stream abort xid")?;
            let subxid = r.u32("stream abort subxid")?;
            // Protocol 4 (parallel apply) appends the abort LSN and time; accept and ignore them.
            let _ = r.rest();
            return Ok(LogicalMessage::StreamAbort { xid, subxid });
        }
        tag => {
            return Err(DecodeError::UnknownTag {
                kind: "pgoutput",
                tag,
            })
        }
    };
    r.finish("pgoutput message")?;
    Ok(msg)
}

fn parse_commit(r: &mut Reader<'_>) -> Result<Commit, DecodeError> {
    Ok(Commit {
        flags: r.u8("commit flags")?,
        commit_lsn: r.lsn("commit lsn")?,
        end_lsn: r.lsn("commit end lsn")?,
        commit_time: r.i64("commit time")?,
    })
}

fn expect_tag(r: &mut Reader<'_>, want: u8, what: &'static str) -> Result<(), DecodeError> {
    let tag = r.u8(what)?;
    if tag != want {
        return Err(DecodeError::UnknownTag { kind: what, tag });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
