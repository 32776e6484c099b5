//! `odoo-cdc tail` prints exactly what PostgreSQL's own `test_decoding` plugin reports for the
//! same slot position: same changes, order and values, over a workload that covers every type,
//! quoting, NULL vs empty, unchanged TOAST, primary-key updates, deletes, truncates, rolled-back
//! savepoints and transactions, a 30,000-row transaction, ALTER TABLE mid-stream and a REPLICA
//! IDENTITY FULL table — under protocol 1 and under protocol 2 streaming (with spilling).

use odoo_cdc_tests::test_decoding::{from_tail, parse_test_decoding, Change};
use odoo_cdc_tests::{odoo_cdc_env, parse_lines, Db};

const SCHEMA: &str = r#"
CREATE TABLE kinds (
  id serial PRIMARY KEY, i2 int2, i4 int4, i8 int8, n numeric(12,4), n_free numeric,
  b bool, t text, v varchar(20), c char(3), j jsonb, js json, d date, ts timestamp,
  tstz timestamptz, f4 float4, f8 float8, by bytea, u uuid, iarr int[], tarr text[],
  big text
);
ALTER TABLE kinds ALTER COLUMN big SET STORAGE EXTERNAL;
CREATE TABLE full_t (id int PRIMARY KEY, qty numeric, note text);
ALTER TABLE full_t REPLICA IDENTITY FULL;
CREATE TABLE big_tx (id int PRIMARY KEY, product_id int, qty numeric, name text);
CREATE TABLE other (k text PRIMARY KEY, v int);
GRANT SELECT ON ALL TABLES IN SCHEMA public TO odoo_cdc;
CREATE PUBLICATION odoo_cdc FOR ALL TABLES;
"#;

const WORKLOAD: &[&str] = &[
    r#"INSERT INTO kinds (i2,i4,i8,n,n_free,b,t,v,c,j,js,d,ts,tstz,f4,f8,by,u,iarr,tarr) VALUES
      (-32768, 2147483647, -9223372036854775808, 12345678.1234,
       123456789012345678901234567890.123456789012345678901234567890, true,
       'it''s "quoted" \ back\slash', 'héllo wörld 日本', 'ab',
       '{"en_US": "Desk", "fr_FR": "Bureau", "n": 1.50, "nested": {"a": [1, null]}}',
       '{"x":  1}', '2026-11-29', '2026-11-29 18:00:00.123456', '2026-11-29 18:00:00.5+02',
       1.5, 3.141592653589793, '\x00ff10', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
       '{1,2,NULL}', '{"a b","c,d",NULL,"e\"f"}')"#,
    "INSERT INTO kinds (t, v, f8, n_free, d, tstz) VALUES ('', '', 'NaN', 'NaN', 'infinity', '-infinity')",
    "INSERT INTO kinds (t, f8, f4, n_free) VALUES (NULL, 'Infinity', '-Infinity', '-0.000000000000000000000000000000000001')",
    "INSERT INTO kinds (t, big) VALUES (E'line1\\nline2\\ttab', repeat('toasted-', 20000))",
    "UPDATE kinds SET t = 'only t changed' WHERE big IS NOT NULL",
    "UPDATE kinds SET id = 1000 WHERE id = 1",
    "UPDATE kinds SET b = NULL, t = 'x' WHERE id = 2",
    "DELETE FROM kinds WHERE id = 3",
    "BEGIN; INSERT INTO other VALUES ('kept-1', 1); SAVEPOINT s1; INSERT INTO other VALUES ('rolled-back', 2); ROLLBACK TO s1; INSERT INTO other VALUES ('kept-2', 3); COMMIT",
    "BEGIN; INSERT INTO other VALUES ('never', 9); ROLLBACK",
    "INSERT INTO big_tx SELECT g, g % 97, g * 1.25, 'row ' || g FROM generate_series(1, 30000) g",
    "ALTER TABLE kinds ADD COLUMN extra text DEFAULT 'dflt'",
    "INSERT INTO kinds (t, extra) VALUES ('after alter', 'new column')",
    "UPDATE kinds SET extra = 'set' WHERE id = 1000",
    "INSERT INTO full_t VALUES (1, 10.5, 'a'), (2, 20, NULL)",
    "UPDATE full_t SET qty = qty - 1 WHERE id = 1",
    "UPDATE full_t SET id = 3 WHERE id = 2",
    "DELETE FROM full_t WHERE id = 1",
    "BEGIN; UPDATE big_tx SET qty = qty + 1 WHERE id <= 500; SAVEPOINT a; DELETE FROM big_tx WHERE id <= 100; ROLLBACK TO a; DELETE FROM big_tx WHERE id > 29990; COMMIT",
    "TRUNCATE other, full_t",
    "INSERT INTO other VALUES ('after truncate', 7)",
];

async fn test_decoding_changes(db: &Db, upto: &str) -> Vec<Change> {
    let client = db
        .cluster
        .superuser_client("odoo")
        .await
        .expect("superuser connection");
    let rows = client
        .query(
            "SELECT lsn::text, data FROM pg_logical_slot_peek_changes('td', $1::text::pg_lsn, NULL, \
             'include-xids', '1', 'skip-empty-xacts', '1')",
            &[&upto],
        )
        .await
        .expect("test_decoding changes");
    let rows: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    parse_test_decoding(&rows).expect("parse test_decoding")
}

fn assert_same(expected: &[Change], actual: &[Change]) {
    for (i, (e, a)) in expected.iter().zip(actual).enumerate() {
        assert_eq!(e, a, "change #{i} differs (test_decoding left, tail right)");
    }
    assert_eq!(
        expected.len(),
        actual.len(),
        "test_decoding reported {} changes, tail {}",
        expected.len(),
        actual.len()
    );
}

fn run_differential(proto: &str, extra_conf: Vec<String>) {
    let db = Db::start_with(fixtures::ClusterOptions {
        extra_conf,
        tls: false,
    });
    db.sql(SCHEMA);
    db.sql("SELECT pg_create_logical_replication_slot('td', 'test_decoding')");
    db.sql("SELECT pg_create_logical_replication_slot('odoo_cdc', 'pgoutput')");
    for stmt in WORKLOAD {
        db.sql(stmt);
    }
    let endpos = db.current_lsn();
    let out = odoo_cdc_env(
        &[
            "tail",
            "--source",
            &db.url(),
            "--endpos",
            &endpos,
            "--proto-version",
            proto,
            "--spool-memory-mib",
            "1",
        ],
        &[("RUST_LOG", "cdc::spool=debug")],
    );
    assert!(
        out.status.success(),
        "tail failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    if proto == "2" {
        assert!(
            stderr.contains("spilled to a temp file"),
            "the large transactions were not streamed and spilled: {stderr}"
        );
    }
    let lines = parse_lines(&out.stdout);
    let tail = from_tail(&lines).expect("tail lines");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let expected = rt.block_on(test_decoding_changes(&db, &endpos));
    assert!(
        expected.len() > 30_000,
        "workload produced {} changes",
        expected.len()
    );
    assert_same(&expected, &tail);

    // Spot checks on the contract itself, beyond agreement with test_decoding.
    let first = &lines[0];
    for key in [
        "op",
        "schema",
        "table",
        "lsn",
        "commit_lsn",
        "xid",
        "commit_time",
        "new",
        "old",
        "unchanged_toast",
    ] {
        assert!(first.get(key).is_some(), "line lacks {key}: {first}");
    }
    assert!(first["commit_time"].as_str().unwrap().ends_with('Z'));
    let toast_update = lines
        .iter()
        .find(|l| l["new"]["t"] == "only t changed")
        .expect("toast update line");
    assert_eq!(toast_update["unchanged_toast"], serde_json::json!(["big"]));
    assert!(toast_update["new"].get("big").is_none());
    let empty_vs_null = lines
        .iter()
        .find(|l| l["new"]["f8"] == "NaN")
        .expect("NaN line");
    assert_eq!(empty_vs_null["new"]["t"], "");
    assert_eq!(empty_vs_null["new"]["b"], serde_json::Value::Null);
    assert!(!lines
        .iter()
        .any(|l| l["new"]["k"] == "rolled-back" || l["new"]["k"] == "never"));
    // commit order: commit_lsn never decreases
    let commits: Vec<cdc::Lsn> = lines
        .iter()
        .map(|l| l["commit_lsn"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(
        commits.windows(2).all(|w| w[0] <= w[1]),
        "lines out of commit order"
    );
}

#[test]
fn tail_matches_test_decoding_protocol_1() {
    run_differential("1", vec![]);
}

#[test]
fn tail_matches_test_decoding_protocol_2_streaming() {
    // A small logical_decoding_work_mem makes the server stream the large transactions, and a
    // 1 MiB spool bound makes odoo-cdc spill them to disk before they commit.
    run_differential("2", vec!["logical_decoding_work_mem = '64kB'".into()]);
}
