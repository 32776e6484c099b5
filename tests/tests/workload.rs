//! The workload generator: a seeded peak-season stream of Odoo business actions.

use std::time::Duration;

use fixtures::odoo::{self, SeedConfig};
use fixtures::workload::{self, Profile, WorkloadConfig};
use odoo_cdc_tests::Db;

#[tokio::test]
async fn peak_profile_runs_every_action_and_reports_rows_per_table() {
    let db = Db::start();
    let client = db.cluster.superuser_client("odoo").await.unwrap();
    let info = odoo::create(
        &client,
        &SeedConfig {
            products: 200,
            customers: 50,
            ..SeedConfig::default()
        },
    )
    .await
    .unwrap();
    let cfg = WorkloadConfig {
        seed: 3,
        base_rate: 0.5,
        duration: Duration::from_secs(300),
        profile: Profile::Peak,
        time_scale: 0.0,
        connections: 3,
        hot_skus: 5,
    };
    let url = db.cluster.superuser_url("odoo");
    let report = workload::run(&url, &info, &cfg).await.unwrap();
    println!("{report:#?}");
    for action in [
        "create_quotation",
        "confirm",
        "validate_delivery",
        "invoice_and_post",
        "register_payment",
        "receive",
        "inventory_adjustment",
    ] {
        assert!(
            report.actions.get(action).copied().unwrap_or(0) > 0,
            "no {action}: {report:?}"
        );
    }
    let orders = report.actions["create_quotation"];
    // 300 s ramping from 0.5/s to 5/s (plus flash sales): far more than the steady 150 orders.
    assert!(orders > 600, "{orders} orders");
    let db_orders: i64 = client
        .query_one("SELECT count(*) FROM sale_order", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        db_orders as u64, orders,
        "every committed quotation is in the database"
    );
    for table in [
        "sale_order",
        "sale_order_line",
        "stock_picking",
        "stock_move",
        "stock_move_line",
        "stock_quant",
        "account_move",
        "account_move_line",
        "mail_message",
    ] {
        assert!(
            report.rows_per_table.get(table).copied().unwrap_or(0) > 0,
            "no rows for {table}: {:?}",
            report.rows_per_table
        );
    }
    // Quants never go negative in internal locations: Odoo's reservations bound deliveries.
    let negative: i64 = client
        .query_one(
            "SELECT count(*) FROM stock_quant q JOIN stock_location l ON l.id = q.location_id \
             WHERE l.usage = 'internal' AND (q.quantity < 0 OR q.reserved_quantity > q.quantity)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(negative, 0);

    // The same seed replays the same orders.
    let db2 = Db::start();
    let c2 = db2.cluster.superuser_client("odoo").await.unwrap();
    let info2 = odoo::create(
        &c2,
        &SeedConfig {
            products: 200,
            customers: 50,
            ..SeedConfig::default()
        },
    )
    .await
    .unwrap();
    let short = WorkloadConfig {
        duration: Duration::from_secs(60),
        ..cfg.clone()
    };
    let a = workload::run(&db2.cluster.superuser_url("odoo"), &info2, &short)
        .await
        .unwrap();
    let db3 = Db::start();
    let c3 = db3.cluster.superuser_client("odoo").await.unwrap();
    let info3 = odoo::create(
        &c3,
        &SeedConfig {
            products: 200,
            customers: 50,
            ..SeedConfig::default()
        },
    )
    .await
    .unwrap();
    let b = workload::run(&db3.cluster.superuser_url("odoo"), &info3, &short)
        .await
        .unwrap();
    assert_eq!(
        a.actions.get("create_quotation"),
        b.actions.get("create_quotation")
    );
}
