//! The `tail` line format: one JSON object per row change (a contract other tools rely on).
//!
//! `{"op":"insert|update|delete|truncate","schema":..,"table":..,"lsn":"X/X","commit_lsn":"X/X",
//! "xid":N,"commit_time":"..Z","new":{..}|null,"old":{..}|null,"unchanged_toast":[..]}`.
//! Values are strings in PostgreSQL's text output format, exactly as pgoutput sent them, and JSON
//! `null` for SQL NULL. Unchanged TOASTed columns are left out of `new` and listed in
//! `unchanged_toast`. `old` holds what the server sent: the key columns (`K`) or the whole old
//! row under REPLICA IDENTITY FULL (`O`).

use std::io::{self, Write};

use cdc::decoder::{RelationInfo, RowChange};
use cdc::pgoutput::{Column, OldTuple, TupleData};
use cdc::Lsn;

/// Transaction fields repeated on every line of a transaction, formatted once.
pub struct TxnFields {
    /// `"commit_lsn":"..","xid":N,"commit_time":".."` without braces.
    text: String,
}

impl TxnFields {
    /// Formats the fields of a transaction.
    pub fn new(xid: u32, commit_lsn: Lsn, commit_time: i64) -> Self {
        Self {
            text: format!(
                "\"commit_lsn\":\"{commit_lsn}\",\"xid\":{xid},\"commit_time\":\"{}\"",
                cdc::pgtime::to_rfc3339(commit_time)
            ),
        }
    }
}

/// Writes `s` as a JSON string (with quotes).
pub fn write_str(out: &mut impl Write, s: &[u8]) -> io::Result<()> {
    out.write_all(b"\"")?;
    let mut start = 0;
    for (i, &b) in s.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => {
                out.write_all(&s[start..i])?;
                write!(out, "\\u{:04x}", b)?;
                start = i + 1;
                continue;
            }
            _ => continue,
        };
        out.write_all(&s[start..i])?;
        out.write_all(esc)?;
        start = i + 1;
    }
    out.write_all(&s[start..])?;
    out.write_all(b"\"")
}

fn write_value(out: &mut impl Write, bytes: &[u8]) -> io::Result<()> {
    match std::str::from_utf8(bytes) {
        Ok(_) => write_str(out, bytes),
        // The server encoding should be UTF8; never emit invalid JSON if it is not.
        Err(_) => write_str(out, String::from_utf8_lossy(bytes).as_bytes()),
    }
}

/// Writes a tuple as a JSON object; `keys_only` keeps only replica identity key columns.
/// Returns nothing; unchanged TOAST columns are skipped.
fn write_tuple(
    out: &mut impl Write,
    rel: &RelationInfo,
    tuple: &TupleData<'_>,
    keys_only: bool,
) -> io::Result<()> {
    out.write_all(b"{")?;
    let mut first = true;
    for (col, info) in tuple.columns.iter().zip(&rel.columns) {
        if keys_only && !info.is_key {
            continue;
        }
        let value = match col {
            Column::UnchangedToast => continue,
            Column::Null => None,
            Column::Text(b) | Column::Binary(b) => Some(*b),
        };
        if !first {
            out.write_all(b",")?;
        }
        first = false;
        write_str(out, info.name.as_bytes())?;
        out.write_all(b":")?;
        match value {
            None => out.write_all(b"null")?,
            Some(b) => write_value(out, b)?,
        }
    }
    out.write_all(b"}")
}

fn write_head(
    out: &mut impl Write,
    op: &str,
    rel: &RelationInfo,
    lsn: Lsn,
    txn: &TxnFields,
) -> io::Result<()> {
    write!(out, "{{\"op\":\"{op}\",\"schema\":")?;
    write_str(out, rel.schema.as_bytes())?;
    out.write_all(b",\"table\":")?;
    write_str(out, rel.name.as_bytes())?;
    write!(out, ",\"lsn\":\"{lsn}\",{}", txn.text)
}

/// Writes one row change line.
pub fn write_change(
    out: &mut impl Write,
    change: &RowChange<'_>,
    txn: &TxnFields,
) -> io::Result<()> {
    let rel = change.relation;
    write_head(out, change.op.as_str(), rel, change.lsn, txn)?;
    out.write_all(b",\"new\":")?;
    match change.new {
        Some(t) => write_tuple(out, rel, t, false)?,
        None => out.write_all(b"null")?,
    }
    out.write_all(b",\"old\":")?;
    match change.old {
        Some(OldTuple::Key(t)) => write_tuple(out, rel, t, true)?,
        Some(OldTuple::Full(t)) => write_tuple(out, rel, t, false)?,
        None => out.write_all(b"null")?,
    }
    out.write_all(b",\"unchanged_toast\":[")?;
    if let Some(t) = change.new {
        let mut first = true;
        for (col, info) in t.columns.iter().zip(&rel.columns) {
            if matches!(col, Column::UnchangedToast) {
                if !first {
                    out.write_all(b",")?;
                }
                first = false;
                write_str(out, info.name.as_bytes())?;
            }
        }
    }
    out.write_all(b"]}\n")
}

/// Writes one truncate line for one table.
pub fn write_truncate(
    out: &mut impl Write,
    rel: &RelationInfo,
    lsn: Lsn,
    txn: &TxnFields,
) -> io::Result<()> {
    write_head(out, "truncate", rel, lsn, txn)?;
    out.write_all(b",\"new\":null,\"old\":null,\"unchanged_toast\":[]}\n")
}

/// Writes the rows of one table's snapshot as JSON lines (`"op":"snapshot"`, at the slot's
/// consistent point); the parts every row shares are escaped once.
pub struct SnapshotRows {
    prefix: Vec<u8>,
    keys: Vec<Vec<u8>>,
}

impl SnapshotRows {
    /// For the rows of `schema.table` with these columns.
    pub fn new(schema: &str, table: &str, columns: &[String], consistent_point: Lsn) -> Self {
        let mut prefix = b"{\"op\":\"snapshot\",\"schema\":".to_vec();
        let _ = write_str(&mut prefix, schema.as_bytes());
        prefix.extend_from_slice(b",\"table\":");
        let _ = write_str(&mut prefix, table.as_bytes());
        let _ = write!(
            prefix,
            ",\"lsn\":\"{consistent_point}\",\"commit_lsn\":\"{consistent_point}\",\"xid\":null,\"commit_time\":null,\"new\":{{"
        );
        let keys = columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let mut k = if i > 0 { b",".to_vec() } else { Vec::new() };
                let _ = write_str(&mut k, c.as_bytes());
                k.push(b':');
                k
            })
            .collect();
        Self { prefix, keys }
    }

    /// Writes one row.
    pub fn write(&self, out: &mut impl Write, values: &cdc::snapshot::CopyRow) -> io::Result<()> {
        out.write_all(&self.prefix)?;
        for (key, value) in self.keys.iter().zip(values.iter()) {
            out.write_all(key)?;
            match value {
                None => out.write_all(b"null")?,
                Some(v) => write_str(out, v.as_bytes())?,
            }
        }
        out.write_all(b"},\"old\":null,\"unchanged_toast\":[]}\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_like_serde_json() {
        for s in [
            "plain",
            "quote\" back\\slash",
            "tab\tnl\ncr\r",
            "\u{1}\u{1f}",
            "é 日本 🎉",
            "",
        ] {
            let mut out = Vec::new();
            write_str(&mut out, s.as_bytes()).unwrap();
            let parsed: String = serde_json::from_slice(&out).unwrap();
            assert_eq!(parsed, s);
        }
    }
}
