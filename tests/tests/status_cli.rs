//! `odoo-cdc status`: readable by a person, `--json` for scripts, exit 0 / 1 (needs a
//! person) / 2 (cannot read), with only the source connection (no sink secret).

use odoo_cdc_tests::{odoo_cdc, scratch_dir, Db};

fn out(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn status_says_what_needs_a_person_with_its_exit_code() {
    let db = Db::start();
    db.sql("CREATE TABLE sale_order (id serial PRIMARY KEY, name text); GRANT SELECT ON ALL TABLES IN SCHEMA public TO odoo_cdc; \
            CREATE PUBLICATION odoo_cdc FOR TABLE sale_order");
    let dir = scratch_dir();
    let config = dir.join("odoo-cdc.toml");
    // A Shopify sink whose access token is not set: read-only commands do not need it.
    std::fs::write(
        &config,
        format!(
            "[source]\nurl = \"{}\"\n\n[sinks.shopify]\ngraphql_url = \"http://127.0.0.1:1/admin/api/2025-01/graphql.json\"\nlocation_map = {{ WH = \"gid://shopify/Location/1\" }}\n",
            db.url()
        ),
    )
    .unwrap();
    let cfg = config.to_str().unwrap();
    let st = odoo_cdc(&["status", "--config", cfg]);
    assert_eq!(st.status.code(), Some(1), "{}", out(&st));
    assert!(out(&st).contains("does not exist"), "{}", out(&st));

    db.sql("SELECT pg_create_logical_replication_slot('odoo_cdc', 'pgoutput')");
    let list = odoo_cdc(&["dlq", "list", "--config", cfg]);
    assert!(
        list.status.success(),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    let st = odoo_cdc(&["status", "--config", cfg]);
    assert_eq!(st.status.code(), Some(0), "{}", out(&st));
    assert!(out(&st).contains("nothing needs a person"), "{}", out(&st));
    assert!(
        out(&st).contains("sink      shopify: outbox 0, dead letters 0"),
        "{}",
        out(&st)
    );

    db.sql(
        r#"INSERT INTO odoo_cdc.dead_letters (sink, key, reason, source_lsn, event, count) VALUES ('shopify', 'NEW-1@WH',
           'SKU NEW-1 is not in Shopify', '0/16B3800', '{"SellableChanged": {"sku": "NEW-1", "warehouse": "WH", "qty": "7"}}', 3);
           INSERT INTO odoo_cdc.outbox (sink, key, source_lsn, event) VALUES ('shopify', 'A@WH', 1, '{}')"#,
    );
    let st = odoo_cdc(&["status", "--config", cfg]);
    assert_eq!(st.status.code(), Some(1), "{}", out(&st));
    let text = out(&st);
    assert!(
        text.contains("ATTENTION 1 dead letters of shopify"),
        "{text}"
    );
    assert!(text.contains("1 x SKU NEW-1 is not in Shopify"), "{text}");
    assert!(
        text.contains("ATTENTION 1 events of shopify parked in the outbox"),
        "{text}"
    );
    let js = odoo_cdc(&["status", "--config", cfg, "--json"]);
    assert_eq!(js.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_str(&out(&js)).unwrap();
    assert_eq!(v["sinks"]["shopify"]["outbox_depth"], 1);
    assert_eq!(v["sinks"]["shopify"]["dead_letter_reasons"][0]["seen"], 3);
    assert_eq!(v["slot"]["plugin"], "pgoutput");
    assert_eq!(v["needs_attention"].as_array().unwrap().len(), 2);

    // The state cannot be read: 2, and the error names the server.
    let down = dir.join("down.toml");
    std::fs::write(
        &down,
        "[source]\nurl = \"postgres://odoo_cdc@127.0.0.1:1/odoo\"\n",
    )
    .unwrap();
    let st = odoo_cdc(&["status", "--config", down.to_str().unwrap()]);
    assert_eq!(st.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&st.stderr).contains("127.0.0.1:1"),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
}
