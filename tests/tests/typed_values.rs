//! The library path end to end: replication connection, stream, decoder and typed values, on
//! what a real server sends for every mapped type.

use std::str::FromStr;
use std::time::Duration;

use cdc::conn::{quote_ident, ReplicationConnection};
use cdc::decoder::{Decoder, Event, EventHandler};
use cdc::stream::ReplicationStream;
use cdc::value::{decode_column, Infinite, Numeric, Value};
use cdc::{Lsn, ReplError, SourceConfig};
use odoo_cdc_tests::Db;

#[derive(Default)]
struct Collect {
    rows: Vec<Vec<(String, Value)>>,
    last_end: Option<Lsn>,
}

impl EventHandler for Collect {
    type Error = ReplError;

    fn event(&mut self, event: Event<'_>) -> Result<(), ReplError> {
        match event {
            Event::Change(c) => {
                let new = c.new.expect("insert has a new row");
                let row = new
                    .columns
                    .iter()
                    .zip(&c.relation.columns)
                    .map(|(col, info)| {
                        let v = decode_column(col, info.type_oid)
                            .unwrap_or_else(|e| panic!("column {}: {e}", info.name));
                        (info.name.to_string(), v)
                    })
                    .collect();
                self.rows.push(row);
            }
            Event::Commit { end_lsn, .. } => self.last_end = Some(end_lsn),
            _ => {}
        }
        Ok(())
    }
}

#[tokio::test]
async fn every_mapped_type_decodes_exactly() {
    let db = Db::start();
    db.sql(
        "CREATE TABLE kinds (id int PRIMARY KEY, b bool, i8 int8, n numeric, nf numeric, f8 float8, \
         t text, j jsonb, d date, ts timestamp, tstz timestamptz, by bytea, u uuid, arr numeric[]); \
         GRANT SELECT ON kinds TO odoo_cdc; CREATE PUBLICATION odoo_cdc FOR TABLE kinds;",
    );
    db.sql("SELECT pg_create_logical_replication_slot('odoo_cdc', 'pgoutput')");
    db.sql(
        r#"INSERT INTO kinds VALUES (1, false, 9007199254740993, 10.5000,
           123456789012345678901234567890.12345, 'NaN', 'ünïcode ''q''',
           '{"name": {"en_US": "Desk"}, "price": 19.990}', '2026-11-29',
           '2026-11-29 18:00:00', '2026-11-29 18:00:00+00', '\xdeadbeef',
           'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{1.10,NULL,-2}'),
           (2, NULL, NULL, 'NaN', NULL, '-Infinity', '', NULL, '-infinity', NULL, 'infinity', NULL, NULL, '{}')"#,
    );
    let cfg = SourceConfig::from_str(&db.url()).unwrap();
    let conn = ReplicationConnection::connect(&cfg).await.unwrap();
    let options = [
        ("proto_version", "1".to_string()),
        ("publication_names", quote_ident("odoo_cdc")),
    ];
    let mut stream = ReplicationStream::start(
        conn,
        "odoo_cdc",
        Lsn::ZERO,
        &options,
        Duration::from_millis(100),
    )
    .await
    .unwrap();
    let mut decoder = Decoder::default();
    let mut collect = Collect::default();
    while collect.rows.len() < 2 || collect.last_end.is_none() {
        let batch = tokio::time::timeout(Duration::from_secs(10), stream.next_batch())
            .await
            .expect("changes arrive")
            .unwrap();
        for (lsn, data) in batch.iter() {
            decoder.process(lsn, data, &mut collect).unwrap();
        }
    }
    let end = collect.last_end.unwrap();
    stream.ack(end);
    stream.close().await.unwrap();
    assert!(odoo_cdc_tests::wait_until(Duration::from_secs(5), || db
        .confirmed_flush("odoo_cdc")
        >= end));

    let get = |row: usize, col: &str| {
        collect.rows[row]
            .iter()
            .find(|(n, _)| n == col)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    assert_eq!(get(0, "b"), Value::Bool(false));
    assert_eq!(get(0, "i8"), Value::Int(9_007_199_254_740_993));
    assert_eq!(
        get(0, "n"),
        Value::Numeric(Numeric::Decimal("10.5000".parse().unwrap()))
    );
    assert_eq!(
        get(0, "nf"),
        Value::Numeric(Numeric::Text("123456789012345678901234567890.12345".into()))
    );
    assert!(matches!(get(0, "f8"), Value::Float(f) if f.is_nan()));
    assert_eq!(get(0, "t"), Value::Text("ünïcode 'q'".into()));
    let Value::Json(j) = get(0, "j") else {
        panic!("jsonb")
    };
    assert_eq!(j["name"]["en_US"], "Desk");
    assert_eq!(j["price"].to_string(), "19.990");
    assert_eq!(get(0, "by"), Value::Bytea(vec![0xde, 0xad, 0xbe, 0xef]));
    assert!(matches!(get(0, "u"), Value::Uuid(_)));
    assert!(matches!(get(0, "ts"), Value::Timestamp(Infinite::Value(_))));
    assert_eq!(
        get(0, "arr"),
        Value::Array(vec![
            Value::Numeric(Numeric::Decimal("1.10".parse().unwrap())),
            Value::Null,
            Value::Numeric(Numeric::Decimal("-2".parse().unwrap())),
        ])
    );
    assert_eq!(get(1, "b"), Value::Null);
    assert_eq!(get(1, "n"), Value::Numeric(Numeric::Text("NaN".into())));
    assert_eq!(get(1, "f8"), Value::Float(f64::NEG_INFINITY));
    assert_eq!(get(1, "t"), Value::Text(String::new()));
    assert_eq!(get(1, "d"), Value::Date(Infinite::NegInfinity));
    assert_eq!(get(1, "tstz"), Value::TimestampTz(Infinite::PosInfinity));
    assert_eq!(get(1, "arr"), Value::Array(vec![]));
}
