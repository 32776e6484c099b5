//! `odoo-cdc fixtures seed --db URL`: the Odoo-shaped database loaded into a PostgreSQL of
//! one's own, in one transaction; a database that has Odoo's tables already is refused.

use odoo_cdc_tests::{odoo_cdc, Db};

#[test]
fn seed_loads_an_empty_database_once_and_refuses_a_used_one() {
    let db = Db::start();
    db.sql("CREATE DATABASE shop");
    let url = db.cluster.superuser_url("shop");
    let out = odoo_cdc(&[
        "fixtures",
        "seed",
        "--db",
        &url,
        "--products",
        "25",
        "--customers",
        "4",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        text.contains("25 products, 4 customers, 2 warehouses"),
        "{text}"
    );
    let count = || {
        db.cluster
            .psql("shop", "SELECT count(*) FROM product_product")
            .unwrap()
            .trim()
            .to_string()
    };
    // The 25 storable products, and the shipping service.
    let seeded = count();
    assert_eq!(seeded, "26");
    let again = odoo_cdc(&["fixtures", "seed", "--db", &url, "--products", "5"]);
    assert!(!again.status.success());
    let err = String::from_utf8_lossy(&again.stderr).to_string();
    assert!(
        err.contains("already has a sale_order table") && err.contains("nothing was written"),
        "{err}"
    );
    assert_eq!(count(), seeded);
}
