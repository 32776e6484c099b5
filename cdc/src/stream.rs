//! The CopyBoth replication stream and its checkpoint.
//!
//! # How progress is confirmed
//! The server keeps WAL from the slot's `confirmed_flush_lsn` on, and after a reconnect resends
//! every transaction whose commit ends after it. So the flush position sent in a standby status
//! update must never pass a transaction the consumer has not handled:
//! - the consumer calls [`ReplicationStream::ack`] with a Commit's `end_lsn` once everything up to
//!   that commit is durable on its side (written and flushed, delivered or parked); the flush
//!   position is the newest acknowledged commit end — never merely what was received;
//! - while nothing is in flight (no open transaction, every received commit acknowledged), a
//!   keepalive's `wal_end` is confirmed as well: the WAL before it holds no change for our
//!   publication, so the slot advances while the published tables are idle and WAL is not held;
//! - status updates go out every `status_interval` (default 1 s, well under the default
//!   `wal_sender_timeout / 2`), and at once when a keepalive asks for a reply.
//!
//! Reads are large (see [`crate::conn::READ_CHUNK`]) and every complete CopyData message in the
//! buffer is handed to the consumer in one [`Batch`], decoded in place without copying.

use std::ops::Range;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;

use crate::conn::{header, server_error, ReplicationConnection};
use crate::error::ReplError;
use crate::lsn::Lsn;
use crate::pgoutput::{encode_status_update, parse_replication, ReplicationMessage};

/// Default interval between standby status updates.
pub const DEFAULT_STATUS_INTERVAL: Duration = Duration::from_secs(1);

/// One XLogData message of a batch.
#[derive(Debug, Clone)]
struct Frame {
    wal_start: Lsn,
    data: Range<usize>,
}

/// The XLogData messages read by one [`ReplicationStream::next_batch`] call, in stream order.
pub struct Batch<'a> {
    buf: &'a [u8],
    frames: &'a [Frame],
}

impl<'a> Batch<'a> {
    /// The messages: the WAL position of each and its pgoutput bytes.
    pub fn iter(&self) -> impl Iterator<Item = (Lsn, &'a [u8])> + '_ {
        let buf = self.buf;
        self.frames
            .iter()
            .map(move |f| (f.wal_start, &buf[f.data.clone()]))
    }

    /// Number of messages.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Whether the batch holds no message (only keepalives came, or the stream ended).
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }
}

/// Progress of the stream, for metrics and `slot status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Highest WAL position received from the server.
    pub received: Lsn,
    /// Position confirmed to the server as flushed.
    pub confirmed: Lsn,
    /// Newest commit end acknowledged by the consumer.
    pub acked: Lsn,
}

/// A started logical replication stream.
pub struct ReplicationStream {
    conn: ReplicationConnection,
    frames: Vec<Frame>,
    consumed: usize,
    status_interval: Duration,
    last_status: Instant,
    reply_due: bool,
    received: Lsn,
    acked: Lsn,
    sent_flush: Lsn,
    txn: TxnTracker,
    /// A keepalive position that is safe to confirm once `acked` reaches the commit end that
    /// was the newest when the keepalive arrived.
    idle: Option<(Lsn, Lsn)>,
    ended: bool,
    saw_keepalive: bool,
    keepalive_end: Lsn,
    confirm: bool,
    /// Woken by the consumer when work downstream finished: the wait for data ends early, so
    /// what was delivered meanwhile is acknowledged at once rather than at the next interval.
    wake: Option<std::sync::Arc<tokio::sync::Notify>>,
}

impl ReplicationStream {
    /// Starts streaming from `start` on a connected replication connection.
    pub async fn start(
        mut conn: ReplicationConnection,
        slot: &str,
        start: Lsn,
        options: &[(&str, String)],
        status_interval: Duration,
    ) -> Result<Self, ReplError> {
        conn.start_replication(slot, start, options).await?;
        Ok(Self {
            conn,
            frames: Vec::with_capacity(1024),
            consumed: 0,
            status_interval,
            last_status: Instant::now(),
            reply_due: false,
            received: start,
            acked: start,
            sent_flush: Lsn::ZERO,
            txn: TxnTracker {
                last_commit_end: start,
                in_txn: false,
                in_stream_block: false,
            },
            idle: None,
            ended: false,
            saw_keepalive: false,
            keepalive_end: Lsn::ZERO,
            confirm: true,
            wake: None,
        })
    }

    /// Acknowledges that everything up to `lsn` (a Commit's `end_lsn`) is durable downstream.
    pub fn ack(&mut self, lsn: Lsn) {
        if lsn > self.acked {
            self.acked = lsn;
        }
    }

    /// Whether a transaction (or a streamed block) is open in what was received.
    pub fn in_transaction(&self) -> bool {
        self.txn.busy()
    }

    /// Ends a wait for data early (with an empty batch) whenever `wake` is notified.
    pub fn wake_on(&mut self, wake: std::sync::Arc<tokio::sync::Notify>) {
        self.wake = Some(wake);
    }

    /// Never confirm anything to the server (the slot does not move): for inspection only.
    pub fn set_confirm(&mut self, confirm: bool) {
        self.confirm = confirm;
    }

    /// The newest `wal_end` of a keepalive: the server has sent every transaction that
    /// committed before it.
    pub fn keepalive_end(&self) -> Lsn {
        self.keepalive_end
    }

    /// Whether the server ended the stream (CopyDone).
    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// Current progress.
    pub fn progress(&self) -> Progress {
        Progress {
            received: self.received,
            confirmed: self.sent_flush,
            acked: self.acked,
        }
    }

    /// The position that may be confirmed now.
    fn flush_position(&self) -> Lsn {
        match self.idle {
            Some((wal_end, needs)) if self.acked >= needs && !self.txn.busy() => {
                self.acked.max(wal_end)
            }
            _ => self.acked,
        }
    }

    /// Sends a standby status update now.
    pub async fn send_status(&mut self, reply_requested: bool) -> Result<(), ReplError> {
        // An invalid (zero) flush position is ignored by the server: the slot does not move.
        let flush = if self.confirm {
            self.flush_position()
        } else {
            Lsn::ZERO
        };
        let write = self.received.max(flush);
        encode_status_update(
            write,
            flush,
            flush,
            now_micros_since_2000(),
            reply_requested,
            &mut self.conn.write_buf,
        );
        self.conn.flush().await?;
        self.sent_flush = flush;
        self.last_status = Instant::now();
        self.reply_due = false;
        Ok(())
    }

    /// Reads until at least one XLogData message or keepalive is available, or a status
    /// interval passes, and returns every complete XLogData message in the buffer. Keepalives
    /// are handled here (the batch is empty when only keepalives came or the interval passed);
    /// status updates are sent when due. After CopyDone from the server, [`Self::is_ended`] is
    /// true.
    pub async fn next_batch(&mut self) -> Result<Batch<'_>, ReplError> {
        self.conn.read_buf.advance(self.consumed);
        self.consumed = 0;
        self.frames.clear();
        self.saw_keepalive = false;
        loop {
            if self.reply_due || self.last_status.elapsed() >= self.status_interval {
                self.send_status(false).await?;
            }
            self.scan()?;
            if !self.frames.is_empty() || self.ended || self.saw_keepalive {
                return Ok(Batch {
                    buf: &self.conn.read_buf[..self.consumed],
                    frames: &self.frames,
                });
            }
            // Nothing complete yet: drop what was scanned (keepalives) and read more.
            self.conn.read_buf.advance(self.consumed);
            self.consumed = 0;
            let wait = self
                .status_interval
                .saturating_sub(self.last_status.elapsed())
                .max(Duration::from_millis(1));
            let wake = self.wake.clone();
            let woken = async {
                match wake {
                    Some(w) => w.notified().await,
                    None => std::future::pending().await,
                }
            };
            // Reading into the buffer is cancel-safe: a wake-up loses nothing.
            tokio::select! {
                r = tokio::time::timeout(wait, self.conn.fill()) => match r {
                    Ok(r) => r?,
                    // A status interval passed with nothing to read: hand back an empty batch,
                    // so the consumer can acknowledge work that finished meanwhile (an idle
                    // stream must still move the slot).
                    Err(_) => {
                        self.send_status(false).await?;
                        return Ok(Batch {
                            buf: &[],
                            frames: &[],
                        });
                    }
                },
                () = woken => {
                    return Ok(Batch {
                        buf: &[],
                        frames: &[],
                    });
                }
            }
        }
    }

    /// Frames every complete message in the read buffer from `consumed` on.
    fn scan(&mut self) -> Result<(), ReplError> {
        loop {
            let buf = &self.conn.read_buf[self.consumed..];
            let Some((tag, len)) = header(buf)? else {
                return Ok(());
            };
            if buf.len() < len {
                if self.conn.read_buf.capacity() < self.consumed + len {
                    self.conn.read_buf.reserve(len);
                }
                return Ok(());
            }
            let start = self.consumed;
            self.consumed += len;
            match tag {
                b'd' => {
                    let body = start + 5..start + len;
                    match parse_replication(&self.conn.read_buf[body.clone()])? {
                        ReplicationMessage::XLogData {
                            wal_start,
                            wal_end,
                            data,
                            ..
                        } => {
                            self.txn.track(data);
                            self.received = self.received.max(wal_start).max(wal_end);
                            let data_start = body.end - data.len();
                            self.frames.push(Frame {
                                wal_start,
                                data: data_start..body.end,
                            });
                        }
                        ReplicationMessage::PrimaryKeepalive {
                            wal_end,
                            reply_requested,
                            ..
                        } => {
                            self.received = self.received.max(wal_end);
                            self.keepalive_end = self.keepalive_end.max(wal_end);
                            if !self.txn.busy() {
                                self.idle = Some((wal_end, self.txn.last_commit_end));
                            }
                            self.reply_due |= reply_requested;
                            self.saw_keepalive = true;
                        }
                    }
                }
                b'c' => self.ended = true,
                b'E' => {
                    let mut b = BytesMut::from(&self.conn.read_buf[start..start + len]);
                    return Err(match Message::parse(&mut b)? {
                        Some(Message::ErrorResponse(body)) => server_error(body.fields()),
                        _ => ReplError::Protocol("unreadable error response".into()),
                    });
                }
                // NoticeResponse, ParameterStatus and the like: nothing to do.
                _ => {}
            }
        }
    }

    /// Ends the stream politely: a final status update with the acknowledged position, then
    /// CopyDone and Terminate.
    pub async fn close(mut self) -> Result<Progress, ReplError> {
        self.send_status(false).await?;
        frontend::copy_done(&mut self.conn.write_buf);
        frontend::terminate(&mut self.conn.write_buf);
        self.conn.flush().await?;
        Ok(self.progress())
    }
}

/// Transaction boundaries seen in the stream, from the first bytes of each pgoutput message.
struct TxnTracker {
    last_commit_end: Lsn,
    in_txn: bool,
    in_stream_block: bool,
}

impl TxnTracker {
    fn busy(&self) -> bool {
        self.in_txn || self.in_stream_block
    }

    /// Follows transaction boundaries from the first bytes of each pgoutput message.
    fn track(&mut self, data: &[u8]) {
        let end_at = |off: usize| {
            data.get(off..off + 8)
                .and_then(|b| b.try_into().ok())
                .map(|b: [u8; 8]| Lsn(u64::from_be_bytes(b)))
        };
        match data.first() {
            Some(b'B') => self.in_txn = true,
            Some(b'C') => {
                self.in_txn = false;
                if let Some(end) = end_at(10) {
                    self.last_commit_end = self.last_commit_end.max(end);
                }
            }
            Some(b'S') => self.in_stream_block = true,
            Some(b'E') => self.in_stream_block = false,
            Some(b'c') => {
                if let Some(end) = end_at(14) {
                    self.last_commit_end = self.last_commit_end.max(end);
                }
            }
            _ => {}
        }
    }
}

/// Microseconds since 2000-01-01, PostgreSQL's epoch.
pub fn now_micros_since_2000() -> i64 {
    const PG_EPOCH_UNIX_SECS: i64 = 946_684_800;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    i64::try_from(now.as_micros()).unwrap_or(i64::MAX) - PG_EPOCH_UNIX_SECS * 1_000_000
}
