//! TupleData: the column values of a row in an Insert, Update or Delete message.

use super::reader::Reader;
use super::DecodeError;

/// One column value as sent by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Column<'a> {
    /// SQL NULL (`n`).
    Null,
    /// A TOASTed value the change did not touch (`u`): the server did not send it.
    UnchangedToast,
    /// A value in PostgreSQL's text output format (`t`).
    Text(&'a [u8]),
    /// A value in the type's binary format (`b`, only with the `binary` option).
    Binary(&'a [u8]),
}

/// The column values of a row, in relation column order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TupleData<'a> {
    /// The columns.
    pub columns: Vec<Column<'a>>,
}

impl<'a> TupleData<'a> {
    pub(crate) fn parse(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        let n = r.i16("tuple column count")?;
        if n < 0 {
            return Err(DecodeError::Invalid {
                what: "tuple column count",
                value: n.into(),
            });
        }
        let n = n as usize;
        // Every column takes at least one byte: never allocate more than the input could hold.
        if n > r.remaining() {
            return Err(DecodeError::Truncated("tuple columns"));
        }
        let mut columns = Vec::with_capacity(n);
        for _ in 0..n {
            let col = match r.u8("column kind")? {
                b'n' => Column::Null,
                b'u' => Column::UnchangedToast,
                kind @ (b't' | b'b') => {
                    let len = r.i32("column length")?;
                    let len = usize::try_from(len).map_err(|_| DecodeError::Invalid {
                        what: "column length",
                        value: len.into(),
                    })?;
                    let data = r.bytes(len, "column value")?;
                    if kind == b't' {
                        Column::Text(data)
                    } else {
                        Column::Binary(data)
                    }
                }
                tag => {
                    return Err(DecodeError::UnknownTag {
                        kind: "tuple column",
                        tag,
                    })
                }
            };
            columns.push(col);
        }
        Ok(Self { columns })
    }
}
