//! Parsing, defaults, environment overrides and validation of the configuration.

use super::*;

const GOOD: &str = r#"
[source]
url = "postgres://odoo_cdc@127.0.0.1:5432/odoo"

[runtime]
max_hold_secs = 30

[sinks.shopify]
graphql_url = "https://shop.myshopify.com/admin/api/2026-10/graphql.json"
location_map = { WH = "gid://shopify/Location/1" }
safety_stock = 1

[sinks.wms]
base_url = "https://wms.example.com"

[sinks.accounting]
base_url = "https://quickbooks.api.intuit.com"
realm_id = "9130357"
client_id = "odoo-cdc"
mode = "batch"
account_map = { "121000" = "84", "400000" = "79" }
"#;

fn env(k: &str) -> Option<String> {
    match k {
        "ODOO_CDC_SHOPIFY_ACCESS_TOKEN" => Some("shpat_x".into()),
        "ODOO_CDC_WMS_API_KEY" => Some("wms".into()),
        "ODOO_CDC_ACCOUNTING_CLIENT_SECRET" => Some("secret".into()),
        _ => None,
    }
}

#[test]
fn a_good_file_with_secrets_from_the_environment_validates() {
    let mut c: Config = GOOD.parse().unwrap();
    c.apply_env(&env);
    c.validate().unwrap();
    assert_eq!(c.source.slot, DEFAULT_SLOT);
    assert_eq!(c.runtime.queue_capacity, DEFAULT_QUEUE_CAPACITY);
    let shown = format!("{c:?}");
    assert!(
        !shown.contains("shpat_x") && !shown.contains("secret\""),
        "secrets never print: {shown}"
    );
}

#[test]
fn the_bad_field_is_named() {
    let e = format!("{GOOD}\n[sinks.wms2]\nx = 1\n")
        .parse::<Config>()
        .unwrap_err();
    assert!(e.message.contains("unknown field `wms2`"), "{e}");
    let e = GOOD
        .replace("safety_stock = 1", "safety_stok = 1")
        .parse::<Config>()
        .unwrap_err();
    assert!(e.to_string().contains("safety_stok"), "{e}");
    let mut c: Config = GOOD.parse().unwrap();
    assert_eq!(
        c.validate().unwrap_err().field,
        "sinks.shopify.access_token"
    );
    c.apply_env(&env);
    let mut bad = c.clone();
    bad.sinks
        .shopify
        .as_mut()
        .unwrap()
        .location_map
        .insert("WH2".into(), "Location 2".into());
    assert_eq!(
        bad.validate().unwrap_err().field,
        "sinks.shopify.location_map.WH2"
    );
    let mut bad = c.clone();
    bad.sinks.accounting.as_mut().unwrap().batch_size = 31;
    assert_eq!(
        bad.validate().unwrap_err().field,
        "sinks.accounting.batch_size"
    );
    let mut bad = c.clone();
    bad.sinks.shopify.as_mut().unwrap().write_interval_ms = 60_000;
    assert_eq!(
        bad.validate().unwrap_err().field,
        "sinks.shopify.write_interval_ms"
    );
    assert_eq!(
        c.sinks.shopify.as_ref().unwrap().write_interval_ms,
        250,
        "the default write interval"
    );
    let mut bad = c;
    bad.source.url = "not a url at all ::".into();
    assert_eq!(bad.validate().unwrap_err().field, "source.url");
}

#[test]
fn the_workbench_needs_somebody_who_can_log_in_with_a_real_hash() {
    let with = |ui: &str| {
        let mut c: Config = format!("{GOOD}\n{ui}").parse().unwrap();
        c.apply_env(&|k| match k {
            "ODOO_CDC_UI_TOKEN" => Some("an-operator-token-of-length".into()),
            other => env(other),
        });
        c.validate()
    };
    let no_env = |ui: &str| {
        let mut c: Config = format!("{GOOD}\n{ui}").parse().unwrap();
        c.apply_env(&env);
        c.validate().map_err(|e| e.field)
    };
    assert_eq!(with("[ui]\nlisten = \"127.0.0.1:8088\"\n"), Ok(()));
    assert_eq!(
        no_env("[ui]\nlisten = \"127.0.0.1:8088\"\n"),
        Err("ui.users".into())
    );
    assert_eq!(
        no_env("[ui]\nlisten = \"localhost\"\n"),
        Err("ui.listen".into())
    );
    let hash = crate::ui::auth::hash_password("a long password").unwrap();
    assert_eq!(
        no_env(&format!(
            "[ui]\nlisten = \"127.0.0.1:8088\"\n[[ui.users]]\nname = \"ops\"\nrole = \"operator\"\npassword_hash = \"{hash}\"\n"
        )),
        Ok(())
    );
    assert_eq!(
        no_env("[ui]\nlisten = \"127.0.0.1:8088\"\n[[ui.users]]\nname = \"ops\"\nrole = \"operator\"\npassword_hash = \"hunter2\"\n"),
        Err("ui.users[0].password_hash".into())
    );
    // A role that does not exist is refused when parsing.
    assert!(format!("{GOOD}\n[ui]\nlisten = \"127.0.0.1:8088\"\n[[ui.users]]\nname = \"x\"\nrole = \"admin\"\npassword_hash = \"{hash}\"\n")
        .parse::<Config>()
        .is_err());
}

#[test]
fn fluvio_tls_names_what_is_missing_and_takes_files_that_exist() {
    let dir = std::env::temp_dir().join(format!("odoo-cdc-fluvio-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["ca.pem", "client.pem", "client.key"] {
        std::fs::write(dir.join(f), "-----BEGIN CERTIFICATE-----\n").unwrap();
    }
    let with = |tls: &str| {
        let mut c: Config =
            format!("{GOOD}\n[fluvio]\nendpoint = \"fluvio-sc:9003\"\n\n[fluvio.tls]\n{tls}")
                .parse()
                .unwrap();
        c.apply_env(&env);
        c
    };
    let files = |ca: &str| {
        format!(
            "domain = \"fluvio.internal\"\nca_cert = {:?}\ncert = {:?}\nkey = {:?}\n",
            dir.join(ca),
            dir.join("client.pem"),
            dir.join("client.key")
        )
    };
    let c = with(&files("ca.pem"));
    c.validate().unwrap();
    let tls = c.fluvio.as_ref().and_then(|f| f.tls.as_ref()).unwrap();
    assert_eq!(tls.domain, "fluvio.internal");
    let e = with(&files("missing.pem")).validate().unwrap_err();
    assert_eq!(e.field, "fluvio.tls.ca_cert");
    assert!(e.message.contains("missing.pem"), "{e}");
    let e = with(&files("ca.pem").replace("fluvio.internal", " "))
        .validate()
        .unwrap_err();
    assert_eq!(e.field, "fluvio.tls.domain");
    let e = format!(
        "{GOOD}\n[fluvio]\nendpoint = \"fluvio-sc:9003\"\n\n[fluvio.tls]\n{}policy = \"anonymous\"\n",
        files("ca.pem")
    )
    .parse::<Config>()
    .unwrap_err();
    assert!(e.to_string().contains("policy"), "{e}");
    // Without the section, plaintext.
    let c: Config = format!("{GOOD}\n[fluvio]\nendpoint = \"fluvio-sc:9003\"\n")
        .parse()
        .unwrap();
    assert!(c.fluvio.unwrap().tls.is_none());
    let _ = std::fs::remove_dir_all(&dir);
}
