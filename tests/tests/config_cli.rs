//! `odoo-cdc check-config` validates a file and names the bad field.

use odoo_cdc_tests::{odoo_cdc_env, scratch_dir};

#[test]
fn check_config_accepts_the_example_and_names_bad_fields() {
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../pipeline/odoo-cdc.example.toml"
    );
    let secrets = [
        ("ODOO_CDC_SHOPIFY_ACCESS_TOKEN", "shpat_x"),
        ("ODOO_CDC_WMS_API_KEY", "k"),
        ("ODOO_CDC_ODOO_API_KEY", "odoo-key"),
        ("ODOO_CDC_SHOPIFY_WEBHOOK_SECRET", "hush"),
        ("ODOO_CDC_ACCOUNTING_CLIENT_SECRET", "s"),
        ("ODOO_CDC_WMS_WEBHOOK_SECRET", "wms-hush"),
    ];
    let ok = odoo_cdc_env(&["check-config", "--config", example], &secrets);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout)
        .contains("sinks: shopify, wms, accounting, shopify_fulfillment"));
    assert!(String::from_utf8_lossy(&ok.stdout).contains("(Shopify's and the warehouse's)"));
    assert!(String::from_utf8_lossy(&ok.stdout)
        .contains("webhooks on 0.0.0.0:8443 written back to https://erp.example.com over jsonrpc"));
    // The systemd unit's config: the same sinks, every listener on loopback.
    let deploy = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../pipeline/deploy/odoo-cdc.toml"
    );
    let mut deploy_secrets = secrets.to_vec();
    deploy_secrets.push(("ODOO_CDC_UI_TOKEN", "an-operator-token-from-secrets-env"));
    let ok = odoo_cdc_env(&["check-config", "--config", deploy], &deploy_secrets);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let text = String::from_utf8_lossy(&ok.stdout);
    assert!(
        text.contains("sinks: shopify, wms, accounting, shopify_fulfillment"),
        "{text}"
    );
    assert!(
        text.contains("webhooks on 127.0.0.1:8443 written back"),
        "{text}"
    );
    assert!(
        text.contains("workbench on 127.0.0.1:8088 (0 users, the operator token)"),
        "{text}"
    );
    // Without the token nobody could log in to the workbench: refused, and said why.
    let no_token = odoo_cdc_env(&["check-config", "--config", deploy], &secrets);
    assert_eq!(no_token.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&no_token.stderr).contains("ODOO_CDC_UI_TOKEN"));
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../pipeline/deploy/odoo-cdc.service"
    ))
    .unwrap();
    assert!(
        unit.contains("ExecStart=/usr/local/bin/odoo-cdc run --config /etc/odoo-cdc/odoo-cdc.toml")
    );
    assert!(unit.contains("EnvironmentFile=/etc/odoo-cdc/secrets.env"));

    let no_hook_secret: Vec<_> = secrets
        .iter()
        .copied()
        .filter(|(k, _)| *k != "ODOO_CDC_SHOPIFY_WEBHOOK_SECRET")
        .collect();
    let missing = odoo_cdc_env(&["check-config", "--config", example], &no_hook_secret);
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("webhooks.secret"));

    let without = |name: &str| -> Vec<(&str, &str)> {
        secrets
            .iter()
            .copied()
            .filter(|(k, _)| *k != name)
            .collect()
    };
    let missing = odoo_cdc_env(
        &["check-config", "--config", example],
        &without("ODOO_CDC_ACCOUNTING_CLIENT_SECRET"),
    );
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("sinks.accounting.client_secret"));
    let missing = odoo_cdc_env(
        &["check-config", "--config", example],
        &without("ODOO_CDC_WMS_WEBHOOK_SECRET"),
    );
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("wms.secret"));

    let dir = scratch_dir();
    let bad = dir.join("bad.toml");
    let text = std::fs::read_to_string(example)
        .unwrap()
        .replace("queue_capacity", "queue_capacty");
    std::fs::write(&bad, text).unwrap();
    let out = odoo_cdc_env(
        &["check-config", "--config", bad.to_str().unwrap()],
        &secrets,
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("queue_capacty") && err.contains("line"),
        "{err}"
    );
}
