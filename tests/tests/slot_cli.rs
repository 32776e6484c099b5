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

#[test]
fn slot_create_preflight_refuses_and_leaves_nothing_behind() {
    // A server without logical decoding.
    let replica = Db::start_with(fixtures::ClusterOptions {
        extra_conf: vec!["wal_level = replica".into()],
        ..Default::default()
    });
    odoo_tables(&replica);
    let admin = replica.cluster.superuser_url("odoo");
    for dry in [true, false] {
        let mut args = vec!["slot", "create", "--source", &admin];
        if dry {
            args.push("--dry-run");
        }
        let out = odoo_cdc(&args);
        assert!(!out.status.success(), "{}", stdout(&out));
        let err = stderr(&out);
        assert!(err.contains("wal_level is replica"), "{err}");
        assert!(
            err.contains("ALTER SYSTEM SET wal_level = logical"),
            "{err}"
        );
        assert!(
            err.contains(&format!(":{}", replica.cluster.port())),
            "{err}"
        );
        assert!(err.contains("nothing was created"), "{err}");
    }
    assert_eq!(
        replica.sql("SELECT count(*) FROM pg_publication").trim(),
        "0"
    );
    assert_eq!(
        replica
            .sql("SELECT count(*) FROM pg_replication_slots")
            .trim(),
        "0"
    );

    // A table without a key, and one that does not exist.
    let db = Db::start();
    odoo_tables(&db);
    db.sql("CREATE TABLE stock_move (id int, product_id int)");
    let admin = db.cluster.superuser_url("odoo");
    let out = odoo_cdc(&["slot", "create", "--source", &admin]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("public.stock_move has no primary key"),
        "{err}"
    );
    assert!(
        err.contains(r#"ALTER TABLE "public"."stock_move" REPLICA IDENTITY FULL"#),
        "{err}"
    );
    assert_eq!(db.sql("SELECT count(*) FROM pg_publication").trim(), "0");
    assert_eq!(
        db.sql("SELECT count(*) FROM pg_replication_slots").trim(),
        "0"
    );
    let out = odoo_cdc(&[
        "slot",
        "create",
        "--source",
        &admin,
        "--tables",
        "sale_order,does_not_exist",
        "--dry-run",
    ]);
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("public.does_not_exist does not exist"),
        "{}",
        stderr(&out)
    );
    // What the advice says works.
    db.sql("ALTER TABLE stock_move REPLICA IDENTITY FULL");
    let out = odoo_cdc(&["slot", "create", "--source", &admin]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        db.sql("SELECT count(*) FROM pg_replication_slots").trim(),
        "1"
    );
}

#[test]
fn slot_status_exit_codes_name_what_needs_a_person() {
    let db = Db::start();
    odoo_tables(&db);
    let admin = db.cluster.superuser_url("odoo");
    db.sql("CREATE PUBLICATION odoo_cdc FOR TABLE sale_order, stock_quant");
    let code = |slot: &str| {
        let out = odoo_cdc(&[
            "slot", "status", "--source", &admin, "--slot", slot, "--json",
        ]);
        let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap_or_default();
        (out.status.code(), v, stderr(&out))
    };
    assert_eq!(code("odoo_cdc").0, Some(3));
    db.sql("SELECT pg_create_logical_replication_slot('odoo_cdc', 'pgoutput')");
    let (c, v, _) = code("odoo_cdc");
    assert_eq!(c, Some(0), "{v}");
    assert!(v["problem"].is_null(), "{v}");
    db.sql("SELECT pg_create_logical_replication_slot('other', 'test_decoding')");
    let (c, v, err) = code("other");
    assert_eq!(c, Some(6), "{v}");
    assert!(err.contains("test_decoding"), "{err}");
    db.sql("SELECT pg_create_physical_replication_slot('standby')");
    let (c, _, err) = code("standby");
    assert_eq!(c, Some(6));
    assert!(err.contains("physical"), "{err}");
    // A published table that lost its key.
    db.sql("ALTER TABLE sale_order DROP CONSTRAINT sale_order_pkey");
    let (c, v, err) = code("odoo_cdc");
    assert_eq!(c, Some(7), "{v}");
    assert!(err.contains("REPLICA IDENTITY FULL"), "{err}");
    // The text form says the same, and a closed stdout pipe is not an error of odoo-cdc's.
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{} slot status --source '{admin}' | head -c 1 >/dev/null; echo \"${{PIPESTATUS:-}}\"",
            odoo_cdc_tests::odoo_cdc_bin().display()
        ))
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("replication connection"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
