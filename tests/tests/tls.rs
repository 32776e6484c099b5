//! `sslmode=require`: the replication connection and the SQL connections are encrypted, and a
//! server without TLS is refused with a clear message.

use std::time::Duration;

use odoo_cdc_tests::{odoo_cdc, parse_lines, scratch_dir, spawn_odoo_cdc, wait_until, Db};

fn setup(db: &Db) {
    db.sql(
        "CREATE TABLE sale_order (id serial PRIMARY KEY, name varchar); \
         GRANT SELECT ON sale_order TO odoo_cdc; CREATE PUBLICATION odoo_cdc FOR TABLE sale_order;",
    );
    db.sql("SELECT pg_create_logical_replication_slot('odoo_cdc', 'pgoutput')");
}

#[test]
fn tail_over_tls_is_encrypted_and_complete() {
    let db = Db::start_with(fixtures::ClusterOptions {
        extra_conf: vec![],
        tls: true,
    });
    setup(&db);
    let url = format!("{}?sslmode=require&application_name=tls_probe", db.url());

    let out = scratch_dir().join("out.jsonl");
    let mut child = spawn_odoo_cdc(&["tail", "--source", &url, "--heartbeat-secs", "1"], &out);
    let encrypted = wait_until(Duration::from_secs(10), || {
        db.sql(
            "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_replication r USING (pid) \
             WHERE r.application_name = 'tls_probe'",
        )
        .trim()
            == "t"
    });
    // The heartbeat's SQL connection is encrypted too.
    let sql_encrypted = wait_until(Duration::from_secs(10), || {
        db.sql(
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.application_name = 'tls_probe' AND a.backend_type = 'client backend' AND s.ssl",
        )
        .trim()
            == "1"
    });
    child.kill().ok();
    let _ = child.wait();
    assert!(encrypted, "the walsender connection is not encrypted");
    assert!(sql_encrypted, "the heartbeat connection is not encrypted");

    db.sql("INSERT INTO sale_order (name) VALUES ('S00042')");
    let endpos = db.current_lsn();
    let done = odoo_cdc(&["tail", "--source", &url, "--endpos", &endpos]);
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let lines = parse_lines(&done.stdout);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["new"]["name"], "S00042");
}

#[test]
fn sslmode_require_refuses_a_server_without_tls() {
    let db = Db::start();
    setup(&db);
    let url = format!("{}?sslmode=require", db.url());
    let out = odoo_cdc(&["slot", "status", "--source", &url]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("sslmode=require but the server does not offer tls"),
        "{stderr}"
    );
}
