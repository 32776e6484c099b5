//! Holding area for protocol 2 streamed transactions.
//!
//! With `streaming 'on'` the server sends a large transaction in blocks before it commits. Its
//! messages are kept here until Stream Commit (then replayed in order) or Stream Abort (then
//! dropped, or, for a subtransaction, skipped at replay). Memory is bounded: once the bytes held
//! in memory by all open transactions pass the bound, the transaction being appended to moves to
//! an anonymous temp file, and further messages go there.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};

use crate::error::ReplError;
use crate::lsn::Lsn;

/// Default bound on the bytes of streamed transactions held in memory.
pub const DEFAULT_SPOOL_MEMORY: usize = 16 * 1024 * 1024;

const RECORD_HEADER: usize = 8 + 4 + 4;

#[derive(Default)]
struct TxnSpool {
    mem: Vec<u8>,
    file: Option<BufWriter<File>>,
    aborted: HashSet<u32>,
}

/// The streamed transactions in progress.
pub struct Spool {
    txns: HashMap<u32, TxnSpool>,
    mem_bound: usize,
    mem_used: usize,
    spilled_bytes: u64,
}

/// A replayed record: WAL position, (sub)transaction id, pgoutput bytes.
pub type Record = (Lsn, u32, Vec<u8>);

impl Spool {
    /// A spool holding at most `mem_bound` bytes in memory.
    pub fn new(mem_bound: usize) -> Self {
        Self {
            txns: HashMap::new(),
            mem_bound,
            mem_used: 0,
            spilled_bytes: 0,
        }
    }

    /// Bytes currently held in memory.
    pub fn memory_used(&self) -> usize {
        self.mem_used
    }

    /// Bytes written to temp files so far.
    pub fn spilled_bytes(&self) -> u64 {
        self.spilled_bytes
    }

    /// Appends a message of top-level transaction `top`, sent by (sub)transaction `xid`.
    pub fn push(&mut self, top: u32, xid: u32, lsn: Lsn, data: &[u8]) -> Result<(), ReplError> {
        let len = u32::try_from(data.len())
            .map_err(|_| ReplError::Protocol("streamed message over 4 GiB".into()))?;
        let mut header = [0u8; RECORD_HEADER];
        header[..8].copy_from_slice(&lsn.0.to_be_bytes());
        header[8..12].copy_from_slice(&xid.to_be_bytes());
        header[12..].copy_from_slice(&len.to_be_bytes());
        let over = self.mem_used + RECORD_HEADER + data.len() > self.mem_bound;
        let txn = self.txns.entry(top).or_default();
        if txn.file.is_none() && over {
            let file = tempfile::tempfile().map_err(ReplError::Spool)?;
            let mut w = BufWriter::with_capacity(256 * 1024, file);
            w.write_all(&txn.mem).map_err(ReplError::Spool)?;
            self.spilled_bytes += txn.mem.len() as u64;
            self.mem_used -= txn.mem.len();
            txn.mem = Vec::new();
            txn.file = Some(w);
            tracing::debug!(xid = top, "streamed transaction spilled to a temp file");
        }
        match &mut txn.file {
            Some(w) => {
                w.write_all(&header).map_err(ReplError::Spool)?;
                w.write_all(data).map_err(ReplError::Spool)?;
                self.spilled_bytes += (RECORD_HEADER + data.len()) as u64;
            }
            None => {
                txn.mem.extend_from_slice(&header);
                txn.mem.extend_from_slice(data);
                self.mem_used += RECORD_HEADER + data.len();
            }
        }
        Ok(())
    }

    /// Handles a Stream Abort: drops the whole transaction, or marks a subtransaction skipped.
    pub fn abort(&mut self, top: u32, subxid: u32) {
        if top == subxid {
            if let Some(txn) = self.txns.remove(&top) {
                self.mem_used -= txn.mem.len();
            }
        } else if let Some(txn) = self.txns.get_mut(&top) {
            txn.aborted.insert(subxid);
        }
    }

    /// Drops every transaction (after a reconnect the server sends them again).
    pub fn clear(&mut self) {
        self.txns.clear();
        self.mem_used = 0;
    }

    /// Takes a committed transaction out for replay, in the order its messages arrived, without
    /// those of aborted subtransactions.
    pub fn commit(&mut self, top: u32) -> Result<Replay, ReplError> {
        let Some(txn) = self.txns.remove(&top) else {
            return Ok(Replay {
                source: Source::Mem(std::io::Cursor::new(Vec::new())),
                aborted: HashSet::new(),
            });
        };
        self.mem_used -= txn.mem.len();
        let source = match txn.file {
            Some(w) => {
                let mut file = w
                    .into_inner()
                    .map_err(|e| ReplError::Spool(e.into_error()))?;
                file.seek(SeekFrom::Start(0)).map_err(ReplError::Spool)?;
                Source::File(BufReader::with_capacity(256 * 1024, file))
            }
            None => Source::Mem(std::io::Cursor::new(txn.mem)),
        };
        Ok(Replay {
            source,
            aborted: txn.aborted,
        })
    }
}

enum Source {
    Mem(std::io::Cursor<Vec<u8>>),
    File(BufReader<File>),
}

/// The messages of a committed streamed transaction.
pub struct Replay {
    source: Source,
    aborted: HashSet<u32>,
}

impl Replay {
    /// The next message not belonging to an aborted subtransaction.
    pub fn next_record(&mut self) -> Result<Option<Record>, ReplError> {
        loop {
            let mut header = [0u8; RECORD_HEADER];
            let reader: &mut dyn Read = match &mut self.source {
                Source::Mem(c) => c,
                Source::File(f) => f,
            };
            match reader.read_exact(&mut header) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
                Err(e) => return Err(ReplError::Spool(e)),
            }
            let mut b8 = [0u8; 8];
            b8.copy_from_slice(&header[..8]);
            let mut b4 = [0u8; 4];
            b4.copy_from_slice(&header[8..12]);
            let xid = u32::from_be_bytes(b4);
            b4.copy_from_slice(&header[12..]);
            let len = u32::from_be_bytes(b4) as usize;
            let mut data = vec![0u8; len];
            reader.read_exact(&mut data).map_err(ReplError::Spool)?;
            if self.aborted.contains(&xid) {
                continue;
            }
            return Ok(Some((Lsn(u64::from_be_bytes(b8)), xid, data)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replays_in_order_skipping_aborted_subtransactions_and_spills_past_the_bound() {
        let mut spool = Spool::new(64);
        for i in 0..10u32 {
            let xid = if i % 3 == 0 { 101 } else { 100 };
            spool
                .push(100, xid, Lsn(u64::from(i)), &[i as u8; 10])
                .unwrap();
        }
        assert!(spool.memory_used() <= 64, "memory stays under the bound");
        assert!(spool.spilled_bytes() > 0, "the transaction went to disk");
        spool.abort(100, 101);
        let mut replay = spool.commit(100).unwrap();
        let mut seen = Vec::new();
        while let Some((lsn, xid, data)) = replay.next_record().unwrap() {
            assert_eq!(xid, 100);
            assert_eq!(data, vec![lsn.0 as u8; 10]);
            seen.push(lsn.0);
        }
        assert_eq!(seen, vec![1, 2, 4, 5, 7, 8]);
        assert_eq!(spool.memory_used(), 0);
    }

    #[test]
    fn whole_abort_drops_the_transaction() {
        let mut spool = Spool::new(1024);
        spool.push(7, 7, Lsn(1), b"abc").unwrap();
        spool.abort(7, 7);
        assert_eq!(spool.memory_used(), 0);
        assert!(spool.commit(7).unwrap().next_record().unwrap().is_none());
    }
}
