//! `odoo-cdc slot status | create | drop` and managed mode, against a real cluster.

use odoo_cdc_tests::{odoo_cdc, Db};

fn odoo_tables(db: &Db) {
    db.sql(
        "CREATE TABLE sale_order (id serial PRIMARY KEY, name varchar, state varchar); \
         CREATE TABLE stock_quant (id serial PRIMARY KEY, product_id int, quantity numeric); \
         ALTER TABLE stock_quant REPLICA IDENTITY FULL; \
         CREATE TABLE unrelated (id int); \
         GRANT SELECT ON ALL TABLES IN SCHEMA public TO odoo_cdc;",
    );
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn create_status_drop_print_their_sql_and_do_what_they_say() {
    let db = Db::start();
    odoo_tables(&db);
    let admin = db.cluster.superuser_url("odoo");
    let role = db.url();

    let dry = odoo_cdc(&["slot", "create", "--source", &admin, "--dry-run"]);
    assert!(dry.status.success(), "{}", stderr(&dry));
    let text = stdout(&dry);
    assert!(text.contains(r#"CREATE PUBLICATION "odoo_cdc" FOR TABLE "public"."sale_order", "public"."stock_quant";"#), "{text}");
    assert!(
        text.contains("pg_create_logical_replication_slot('odoo_cdc', 'pgoutput')"),
        "{text}"
    );
    assert!(text.contains("dry run"), "{text}");
    let missing = odoo_cdc(&["slot", "status", "--source", &role]);
    assert_eq!(
        missing.status.code(),
        Some(3),
        "status must say the slot is missing"
    );
    assert!(stdout(&missing).contains("does not exist"));

    let created = odoo_cdc(&["slot", "create", "--source", &admin]);
    assert!(created.status.success(), "{}", stderr(&created));
    assert!(stdout(&created).contains("CREATE PUBLICATION"));
    assert_eq!(
        db.sql("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'odoo_cdc'")
            .trim(),
        "1"
    );

    // Status works for the least-privilege role, in text and JSON.
    db.sql("INSERT INTO unrelated SELECT generate_series(1, 1000)");
    let st = odoo_cdc(&["slot", "status", "--source", &role, "--json"]);
    assert!(st.status.success(), "{}", stderr(&st));
    let v: serde_json::Value = serde_json::from_str(&stdout(&st)).unwrap();
    assert_eq!(v["status"]["plugin"], "pgoutput");
    let confirmed: cdc::Lsn = v["status"]["confirmed_flush_lsn"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let current: cdc::Lsn = v["status"]["current_wal_lsn"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        v["status"]["lag_bytes"].as_i64().unwrap(),
        (current.0 - confirmed.0) as i64
    );
    assert!(v["status"]["lag_bytes"].as_i64().unwrap() > 0);
    assert_eq!(v["status"]["wal_status"], "reserved");
    assert_eq!(
        v["tables"],
        serde_json::json!([
            {"schema": "public", "table": "sale_order", "replica_identity": "default"},
            {"schema": "public", "table": "stock_quant", "replica_identity": "full"}
        ])
    );
    let text = stdout(&odoo_cdc(&["slot", "status", "--source", &role]));
    assert!(
        text.contains(&format!("confirmed_flush_lsn  {confirmed}")),
        "{text}"
    );
    assert!(
        text.contains("public.stock_quant  replica identity full"),
        "{text}"
    );

    // Creating again leaves both alone.
    let again = odoo_cdc(&["slot", "create", "--source", &admin]);
    assert!(again.status.success());
    assert!(stdout(&again).contains("exists; left as it is"));

    // Managed mode never drops.
    let refused = odoo_cdc(&["slot", "drop", "--source", &admin, "--managed"]);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("managed mode"),
        "{}",
        stderr(&refused)
    );
    assert_eq!(
        db.sql("SELECT count(*) FROM pg_replication_slots").trim(),
        "1"
    );

    let dropped = odoo_cdc(&["slot", "drop", "--source", &admin]);
    assert!(dropped.status.success(), "{}", stderr(&dropped));
    assert!(stdout(&dropped).contains("SELECT pg_drop_replication_slot('odoo_cdc');"));
    assert!(stdout(&dropped).contains(r#"DROP PUBLICATION "odoo_cdc";"#));
    assert_eq!(
        db.sql("SELECT count(*) FROM pg_replication_slots").trim(),
        "0"
    );
    assert_eq!(db.sql("SELECT count(*) FROM pg_publication").trim(), "0");
}

#[test]
fn tail_without_slot_fails_clearly_and_managed_mode_never_creates() {
    let db = Db::start();
    odoo_tables(&db);
    db.sql("CREATE PUBLICATION odoo_cdc FOR TABLE sale_order");
    let role = db.url();

    let out = odoo_cdc(&["tail", "--source", &role, "--managed", "--create-slot"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("managed mode"), "{}", stderr(&out));

    let out = odoo_cdc(&["tail", "--source", &role, "--managed"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(r#"replication slot "odoo_cdc" does not exist"#),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        db.sql("SELECT count(*) FROM pg_replication_slots").trim(),
        "0"
    );

    let out = odoo_cdc(&[
        "tail",
        "--source",
        &role,
        "--publication",
        "nope",
        "--create-slot",
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(r#"publication "nope" does not exist"#),
        "{}",
        stderr(&out)
    );

    // --create-slot creates it, as the least-privilege REPLICATION role; --endpos ends the run.
    db.sql("INSERT INTO sale_order (name, state) VALUES ('S00001', 'draft')");
    let endpos = db.current_lsn();
    let out = odoo_cdc(&[
        "tail",
        "--source",
        &role,
        "--create-slot",
        "--endpos",
        &endpos,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        db.sql("SELECT plugin FROM pg_replication_slots WHERE slot_name = 'odoo_cdc'")
            .trim(),
        "pgoutput"
    );
    // The slot starts after the insert: nothing before its creation is printed.
    assert_eq!(stdout(&out), "");
    db.sql("INSERT INTO sale_order (name, state) VALUES ('S00002', 'sale')");
    let endpos = db.current_lsn();
    let out = odoo_cdc(&["tail", "--source", &role, "--endpos", &endpos]);
    assert!(out.status.success(), "{}", stderr(&out));
    let lines = odoo_cdc_tests::parse_lines(&out.stdout);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["new"]["name"], "S00002");
}
