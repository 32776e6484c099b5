//! Initial snapshot consistent with the slot: the slot is created with `EXPORT_SNAPSHOT`, the
//! published tables are copied inside that snapshot (`SET TRANSACTION SNAPSHOT`, `COPY ... TO
//! STDOUT`), and streaming starts at the slot's consistent point: every committed row is in the
//! snapshot or in the stream, never both, never neither.

use bytes::Bytes;
use futures_util::{pin_mut, TryStreamExt};

use crate::conn::{quote_ident, quote_literal, ReplicationConnection};
use crate::error::ReplError;
use crate::lsn::Lsn;

/// A slot created with an exported snapshot.
#[derive(Debug, Clone)]
pub struct ExportedSlot {
    /// Where streaming starts: changes committed after the snapshot.
    pub consistent_point: Lsn,
    /// Name of the exported snapshot, valid while the creating connection stays idle.
    pub snapshot_name: String,
}

/// Creates a pgoutput slot and exports its snapshot. Keep `conn` open and idle until the copy
/// is done.
pub async fn create_slot_with_snapshot(
    conn: &mut ReplicationConnection,
    slot: &str,
) -> Result<ExportedSlot, ReplError> {
    let rows = conn
        .simple_query(&format!(
            "CREATE_REPLICATION_SLOT {} LOGICAL pgoutput EXPORT_SNAPSHOT",
            quote_ident(slot)
        ))
        .await?;
    let consistent_point = crate::slot::consistent_point(&rows)?;
    let snapshot_name = rows
        .first()
        .and_then(|r| r.get(2).cloned().flatten())
        .ok_or_else(|| {
            ReplError::Protocol("CREATE_REPLICATION_SLOT exported no snapshot".into())
        })?;
    Ok(ExportedSlot {
        consistent_point,
        snapshot_name,
    })
}

/// Opens a repeatable-read transaction on `client` that sees exactly the exported snapshot.
pub async fn begin_in_snapshot(
    client: &tokio_postgres::Client,
    snapshot_name: &str,
) -> Result<(), ReplError> {
    client
        .batch_execute(&format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT {}",
            quote_literal(snapshot_name)
        ))
        .await?;
    Ok(())
}

/// The tables of a publication, schema-qualified, with their column names in order.
pub async fn published_columns(
    client: &tokio_postgres::Client,
    publication: &str,
) -> Result<Vec<(String, String, Vec<String>)>, ReplError> {
    let rows = client
        .query(
            "SELECT pt.schemaname::text, pt.tablename::text, \
             array_agg(a.attname::text ORDER BY a.attnum) \
             FROM pg_publication_tables pt \
             JOIN pg_namespace n ON n.nspname = pt.schemaname \
             JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename \
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
             WHERE pt.pubname = $1 GROUP BY 1, 2 ORDER BY 1, 2",
            &[&publication],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect())
}

/// One row of COPY's text output: every field unescaped into one reused buffer, so a row costs
/// no allocation once the buffers have grown.
#[derive(Debug, Default, Clone)]
pub struct CopyRow {
    buf: String,
    spans: Vec<Option<(usize, usize)>>,
    scratch: Vec<u8>,
}

impl CopyRow {
    /// Number of fields.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether the row has no fields.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Field `i` (`None` for NULL or past the end).
    pub fn get(&self, i: usize) -> Option<&str> {
        let (a, b) = (*self.spans.get(i)?)?;
        self.buf.get(a..b)
    }

    /// The fields in order.
    pub fn iter(&self) -> impl Iterator<Item = Option<&str>> + '_ {
        self.spans
            .iter()
            .map(|s| s.and_then(|(a, b)| self.buf.get(a..b)))
    }
}

/// Copies one table in the current transaction, calling `row` with each row (PostgreSQL's text
/// output format; `None` for NULL), its fields in the order of `columns`.
pub async fn copy_table(
    client: &tokio_postgres::Client,
    schema: &str,
    table: &str,
    columns: &[String],
    mut row: impl FnMut(&CopyRow) -> Result<(), ReplError>,
) -> Result<u64, ReplError> {
    let cols: Vec<String> = columns.iter().map(|c| quote_ident(c)).collect();
    let sql = format!(
        "COPY {}.{} ({}) TO STDOUT",
        quote_ident(schema),
        quote_ident(table),
        cols.join(", ")
    );
    let stream = client.copy_out(sql.as_str()).await?;
    pin_mut!(stream);
    let mut pending: Vec<u8> = Vec::new();
    let mut n = 0u64;
    let mut values = CopyRow::default();
    while let Some(chunk) = stream.try_next().await? {
        let chunk: Bytes = chunk;
        // Whole lines straight from the chunk; only a line split across chunks is copied.
        let mut data: &[u8] = &chunk;
        if !pending.is_empty() {
            let Some(nl) = data.iter().position(|&b| b == b'\n') else {
                pending.extend_from_slice(data);
                continue;
            };
            pending.extend_from_slice(&data[..nl]);
            data = &data[nl + 1..];
            let line = std::mem::take(&mut pending);
            emit(&line, &mut values, columns.len(), schema, table, &mut row)?;
            n += 1;
        }
        let mut start = 0;
        while let Some(nl) = data[start..].iter().position(|&b| b == b'\n') {
            emit(
                &data[start..start + nl],
                &mut values,
                columns.len(),
                schema,
                table,
                &mut row,
            )?;
            n += 1;
            start += nl + 1;
        }
        pending.extend_from_slice(&data[start..]);
    }
    Ok(n)
}

fn emit(
    line: &[u8],
    values: &mut CopyRow,
    expected: usize,
    schema: &str,
    table: &str,
    row: &mut impl FnMut(&CopyRow) -> Result<(), ReplError>,
) -> Result<(), ReplError> {
    parse_copy_line(line, values)?;
    if values.len() != expected {
        return Err(ReplError::Protocol(format!(
            "copy of {schema}.{table} returned {} columns, expected {expected}",
            values.len()
        )));
    }
    row(values)
}

/// Parses one line of COPY's text format: tab-separated, `\N` for NULL, backslash escapes.
pub fn parse_copy_line(line: &[u8], out: &mut CopyRow) -> Result<(), ReplError> {
    out.buf.clear();
    out.spans.clear();
    for field in line.split(|&b| b == b'\t') {
        if field == b"\\N" {
            out.spans.push(None);
            continue;
        }
        let bytes: &[u8] = if field.contains(&b'\\') {
            unescape(field, &mut out.scratch);
            &out.scratch
        } else {
            field
        };
        let text = std::str::from_utf8(bytes)
            .map_err(|_| ReplError::Protocol("copy returned a value that is not utf-8".into()))?;
        let start = out.buf.len();
        out.buf.push_str(text);
        out.spans.push(Some((start, out.buf.len())));
    }
    Ok(())
}

fn unescape(field: &[u8], v: &mut Vec<u8>) {
    v.clear();
    let mut i = 0;
    while i < field.len() {
        let b = field[i];
        if b != b'\\' || i + 1 == field.len() {
            v.push(b);
            i += 1;
            continue;
        }
        let e = field[i + 1];
        i += 2;
        match e {
            b'n' => v.push(b'\n'),
            b't' => v.push(b'\t'),
            b'r' => v.push(b'\r'),
            b'b' => v.push(8),
            b'f' => v.push(12),
            b'v' => v.push(11),
            b'0'..=b'7' => {
                let mut val = u32::from(e - b'0');
                let mut k = 0;
                while k < 2 && i < field.len() && (b'0'..=b'7').contains(&field[i]) {
                    val = val * 8 + u32::from(field[i] - b'0');
                    i += 1;
                    k += 1;
                }
                v.push((val & 0xff) as u8);
            }
            b'x' => {
                let mut val = 0u32;
                let mut k = 0;
                while k < 2 && i < field.len() && field[i].is_ascii_hexdigit() {
                    val = val * 16 + (field[i] as char).to_digit(16).unwrap_or(0);
                    i += 1;
                    k += 1;
                }
                v.push(val as u8);
            }
            other => v.push(other),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn copy_text_format_unescapes() {
        let mut row = super::CopyRow::default();
        super::parse_copy_line(b"1\t\\N\ta\\tb\\nc\\\\d\t\t\\101", &mut row).unwrap();
        let out: Vec<Option<String>> = row.iter().map(|v| v.map(str::to_string)).collect();
        assert_eq!(
            out,
            vec![
                Some("1".into()),
                None,
                Some("a\tb\nc\\d".into()),
                Some(String::new()),
                Some("A".into())
            ]
        );
    }
}
