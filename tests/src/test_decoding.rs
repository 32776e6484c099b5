//! Reads PostgreSQL's `test_decoding` output and the `tail` JSON lines into one normalised form,
//! so a test can show both report the same changes, in the same order, with the same values.

use std::collections::{BTreeMap, BTreeSet};

/// One row change, normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Transaction id.
    pub xid: u32,
    /// WAL position of the change.
    pub lsn: String,
    /// `insert`, `update`, `delete` or `truncate`.
    pub op: String,
    /// `schema.table`.
    pub table: String,
    /// New row: column -> text value (None = SQL NULL); unchanged TOAST left out.
    pub new: Option<BTreeMap<String, Option<String>>>,
    /// Old key/row, without NULL columns (test_decoding skips them).
    pub old: Option<BTreeMap<String, String>>,
    /// Columns whose TOASTed value was left unchanged.
    pub unchanged_toast: BTreeSet<String>,
}

/// Parses rows of `pg_logical_slot_get_changes` (lsn, xid, data) from test_decoding with
/// `include-xids` on.
pub fn parse_test_decoding(rows: &[(String, String)]) -> Result<Vec<Change>, String> {
    let mut out = Vec::new();
    let mut xid = 0u32;
    for (lsn, data) in rows {
        if let Some(x) = data.strip_prefix("BEGIN ") {
            xid = x
                .trim()
                .parse()
                .map_err(|_| format!("bad BEGIN {data:?}"))?;
            continue;
        }
        if data.starts_with("COMMIT") || data.starts_with("message:") {
            continue;
        }
        let rest = data
            .strip_prefix("table ")
            .ok_or_else(|| format!("unexpected line {data:?}"))?;
        let (tables, rest) = rest
            .split_once(": ")
            .ok_or_else(|| format!("no table in {data:?}"))?;
        let (op, rest) = rest
            .split_once(':')
            .ok_or_else(|| format!("no op in {data:?}"))?;
        let rest = rest.strip_prefix(' ').unwrap_or(rest);
        match op {
            "TRUNCATE" => {
                for t in tables.split(", ") {
                    out.push(Change {
                        xid,
                        lsn: lsn.clone(),
                        op: "truncate".into(),
                        table: t.to_string(),
                        new: None,
                        old: None,
                        unchanged_toast: BTreeSet::new(),
                    });
                }
            }
            "INSERT" | "UPDATE" | "DELETE" => {
                let (old_part, new_part) = if op == "DELETE" {
                    (Some(rest), None)
                } else if let Some(r) = rest.strip_prefix("old-key: ") {
                    let (o, n) = r
                        .split_once(" new-tuple: ")
                        .ok_or_else(|| format!("no new-tuple in {data:?}"))?;
                    (Some(o), Some(n))
                } else {
                    (None, Some(rest))
                };
                let mut unchanged = BTreeSet::new();
                let new = match new_part {
                    Some(n) => {
                        let cols = parse_columns(n)?;
                        let mut map = BTreeMap::new();
                        for (name, v) in cols {
                            match v {
                                Val::Toast => {
                                    unchanged.insert(name);
                                }
                                Val::Null => {
                                    map.insert(name, None);
                                }
                                Val::Text(s) => {
                                    map.insert(name, Some(s));
                                }
                            }
                        }
                        Some(map)
                    }
                    None => None,
                };
                let old = match old_part {
                    Some("(no-tuple-data)") | None => None,
                    Some(o) => Some(
                        parse_columns(o)?
                            .into_iter()
                            .filter_map(|(n, v)| match v {
                                Val::Text(s) => Some((n, s)),
                                _ => None,
                            })
                            .collect(),
                    ),
                };
                out.push(Change {
                    xid,
                    lsn: lsn.clone(),
                    op: op.to_lowercase(),
                    table: tables.to_string(),
                    new,
                    old,
                    unchanged_toast: unchanged,
                });
            }
            other => return Err(format!("unknown op {other:?} in {data:?}")),
        }
    }
    Ok(out)
}

enum Val {
    Null,
    Toast,
    Text(String),
}

/// `name[type]:value name[type]:'quoted'' value' ...`
fn parse_columns(s: &str) -> Result<Vec<(String, Val)>, String> {
    let mut cols = Vec::new();
    let mut rest = s;
    while !rest.is_empty() {
        let open = rest
            .find('[')
            .ok_or_else(|| format!("no type in {rest:?}"))?;
        let name = rest[..open].to_string();
        let close = rest[open..]
            .find("]:")
            .ok_or_else(|| format!("no ]: in {rest:?}"))?
            + open;
        let ty = &rest[open + 1..close];
        rest = &rest[close + 2..];
        let (val, after) = if let Some(q) = rest.strip_prefix('\'') {
            let mut value = String::new();
            let mut chars = q.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                if c == '\'' {
                    if q[i + 1..].starts_with('\'') {
                        value.push('\'');
                        chars.next();
                    } else {
                        end = Some(i + 1);
                        break;
                    }
                } else {
                    value.push(c);
                }
            }
            let end = end.ok_or_else(|| format!("unterminated quote in {rest:?}"))?;
            (Val::Text(value), &q[end..])
        } else {
            let end = rest.find(' ').unwrap_or(rest.len());
            let token = &rest[..end];
            let v = match token {
                "null" => Val::Null,
                "unchanged-toast-datum" => Val::Toast,
                "true" if ty == "boolean" => Val::Text("t".into()),
                "false" if ty == "boolean" => Val::Text("f".into()),
                t => Val::Text(t.to_string()),
            };
            (v, &rest[end..])
        };
        cols.push((name, val));
        rest = after.strip_prefix(' ').unwrap_or(after);
    }
    Ok(cols)
}

/// Normalises `tail` JSON lines.
pub fn from_tail(lines: &[serde_json::Value]) -> Result<Vec<Change>, String> {
    lines
        .iter()
        .map(|l| {
            let s = |k: &str| {
                l.get(k)
                    .and_then(|v| v.as_str())
                    .map(str::to_string)
                    .ok_or_else(|| format!("line without {k}: {l}"))
            };
            let new = match l.get("new") {
                Some(serde_json::Value::Object(m)) => Some(
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().map(str::to_string)))
                        .collect(),
                ),
                _ => None,
            };
            let old = match l.get("old") {
                Some(serde_json::Value::Object(m)) => Some(
                    m.iter()
                        .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                        .collect(),
                ),
                _ => None,
            };
            let unchanged_toast = l
                .get("unchanged_toast")
                .and_then(|v| v.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            Ok(Change {
                xid: l
                    .get("xid")
                    .and_then(|v| v.as_u64())
                    .and_then(|v| u32::try_from(v).ok())
                    .ok_or_else(|| format!("line without xid: {l}"))?,
                lsn: s("lsn")?,
                op: s("op")?,
                table: format!("{}.{}", s("schema")?, s("table")?),
                new,
                old,
                unchanged_toast,
            })
        })
        .collect()
}
