//! The Odoo-shaped fixture database: deterministic seed, and business actions that write the
//! tables, states, sequences and quant arithmetic Odoo writes — checked in the tables and in the
//! change stream (a test_decoding slot shows which tables each action's transaction touched).

use std::collections::BTreeMap;

use fixtures::odoo::actions::{account, sales, stock};
use fixtures::odoo::{self, OdooClient, OdooError, SeedConfig, SeedInfo};
use odoo_cdc_tests::Db;
use rust_decimal::Decimal;
use tokio_postgres::Client;

fn dec(s: &str) -> Decimal {
    s.parse().unwrap()
}

fn small() -> SeedConfig {
    SeedConfig {
        seed: 7,
        warehouses: 2,
        products: 40,
        customers: 10,
        max_opening_qty: 50,
    }
}

async fn scalar_dec(c: &Client, sql: &str) -> Decimal {
    c.query_one(sql, &[]).await.unwrap().get(0)
}

async fn on_hand(c: &Client, product: i32, location: i32) -> (Decimal, Decimal) {
    let r = c
        .query_one(
            "SELECT coalesce(sum(quantity), 0), coalesce(sum(reserved_quantity), 0) FROM stock_quant \
             WHERE product_id = $1 AND location_id = $2",
            &[&product, &location],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1))
}

/// Tables (and row-change counts) of the transactions decoded since the last call.
async fn changes(c: &Client) -> BTreeMap<String, usize> {
    let rows = c
        .query(
            "SELECT data FROM pg_logical_slot_get_changes('td', NULL, NULL)",
            &[],
        )
        .await
        .unwrap();
    let mut out = BTreeMap::new();
    for r in rows {
        let data: String = r.get(0);
        if let Some(rest) = data.strip_prefix("table public.") {
            let table = rest.split(':').next().unwrap().to_string();
            *out.entry(table).or_default() += 1;
        }
    }
    out
}

fn line(info: &SeedInfo, idx: usize, qty: &str) -> sales::LineInput {
    let p = &info.products[idx];
    sales::LineInput {
        product_id: p.id,
        name: p.sku.clone(),
        qty: dec(qty),
        price_unit: p.list_price,
        discount: Decimal::ZERO,
        taxed: true,
        taxes: Vec::new(),
    }
}

async fn product_with_stock(c: &Client, info: &SeedInfo, min: i64) -> usize {
    let wh = &info.warehouses[0];
    for (i, p) in info.products.iter().enumerate() {
        let (q, r) = on_hand(c, p.id, wh.stock_location_id).await;
        if q - r >= Decimal::from(min) {
            return i;
        }
    }
    panic!("no product with {min} units");
}

#[tokio::test]
async fn seed_is_deterministic_and_shaped_like_odoo() {
    let db = Db::start();
    db.sql("CREATE DATABASE odoo2");
    db.sql("CREATE DATABASE odoo3");
    let a = db.cluster.superuser_client("odoo").await.unwrap();
    let b = db.cluster.superuser_client("odoo2").await.unwrap();
    let c = db.cluster.superuser_client("odoo3").await.unwrap();
    odoo::create(&a, &small()).await.unwrap();
    odoo::create(&b, &small()).await.unwrap();
    odoo::create(&c, &SeedConfig { seed: 8, ..small() })
        .await
        .unwrap();
    let digest = "SELECT md5(string_agg(concat_ws('|', p.default_code, p.barcode, t.name::text, t.list_price, \
                  (SELECT string_agg(q.quantity::text, ',' ORDER BY q.id) FROM stock_quant q WHERE q.product_id = p.id)), ';' ORDER BY p.id)) \
                  FROM product_product p JOIN product_template t ON t.id = p.product_tmpl_id";
    let da: String = a.query_one(digest, &[]).await.unwrap().get(0);
    let db_: String = b.query_one(digest, &[]).await.unwrap().get(0);
    let dc: String = c.query_one(digest, &[]).await.unwrap().get(0);
    assert_eq!(da, db_, "the same seed writes the same data");
    assert_ne!(da, dc, "another seed writes other data");

    let tree: Vec<(String, String, String)> = a
        .query(
            "SELECT complete_name, usage, parent_path FROM stock_location ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let find = |n: &str| {
        tree.iter()
            .find(|t| t.0 == n)
            .unwrap_or_else(|| panic!("{n} missing"))
    };
    assert_eq!(find("WH/Stock").1, "internal");
    assert_eq!(find("WH2/Stock").1, "internal");
    assert_eq!(find("Partners/Customers").1, "customer");
    assert_eq!(find("Partners/Vendors").1, "supplier");
    assert_eq!(
        find("Virtual Locations/Inventory adjustment").1,
        "inventory"
    );
    assert!(
        find("WH/Stock").2.starts_with(&find("WH").2),
        "parent_path nests"
    );
    let name: serde_json::Value = a
        .query_one("SELECT name FROM product_template ORDER BY id LIMIT 1", &[])
        .await
        .unwrap()
        .get(0);
    assert!(
        name["en_US"].is_string() && name["fr_FR"].is_string(),
        "{name}"
    );
    let ri: String = a
        .query_one(
            "SELECT relreplident::text FROM pg_class WHERE relname = 'stock_quant'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(ri, "d", "default REPLICA IDENTITY, as Odoo ships");
}

#[tokio::test]
async fn sale_delivery_and_invoicing_write_what_odoo_writes() {
    let db = Db::start();
    let mut c = OdooClient::new(db.cluster.superuser_client("odoo").await.unwrap());
    let info = odoo::create(&c, &small()).await.unwrap();
    c.batch_execute("SELECT pg_create_logical_replication_slot('td', 'test_decoding')")
        .await
        .unwrap();
    let wh = info.warehouses[0].clone();
    let i = product_with_stock(&c, &info, 5).await;
    let product = info.products[i].id;
    let (q0, r0) = on_hand(&c, product, wh.stock_location_id).await;

    // Quotation with one line.
    let order = sales::create_quotation(
        &mut c,
        &info,
        &sales::Quotation {
            partner_id: info.customers[0],
            warehouse_id: wh.id,
            lines: vec![line(&info, i, "3")],
            client_order_ref: Some("shopify:1001".into()),
        },
    )
    .await
    .unwrap();
    let row = c
        .query_one("SELECT name, state, amount_untaxed, amount_tax, amount_total FROM sale_order WHERE id = $1", &[&order])
        .await
        .unwrap();
    let untaxed = sales::line_amounts(&line(&info, i, "3"), info.sale_tax_rate).0;
    assert_eq!(row.get::<_, String>(0), "S00001");
    assert_eq!(row.get::<_, String>(1), "draft");
    assert_eq!(row.get::<_, Decimal>(2), untaxed);
    assert_eq!(
        row.get::<_, Decimal>(4),
        row.get::<_, Decimal>(2) + row.get::<_, Decimal>(3)
    );
    let ch = changes(&c).await;
    assert_eq!(
        ch.get("sale_order"),
        Some(&2),
        "created, then written again: {ch:?}"
    );
    assert_eq!(ch.get("sale_order_line"), Some(&2), "{ch:?}");
    assert!(ch.contains_key("mail_message"));

    // Confirm: picking, move, reservation; on hand unchanged.
    let picking = sales::confirm(&mut c, &info, order).await.unwrap();
    let p = c
        .query_one(
            "SELECT name, state, origin FROM stock_picking WHERE id = $1",
            &[&picking],
        )
        .await
        .unwrap();
    assert_eq!(p.get::<_, String>(0), "WH/OUT/00001");
    assert_eq!(p.get::<_, String>(1), "assigned");
    // As a real Odoo 18 names it: the order, then the customer's reference.
    assert_eq!(p.get::<_, String>(2), "S00001 - shopify:1001");
    let (q1, r1) = on_hand(&c, product, wh.stock_location_id).await;
    assert_eq!(q1, q0, "reserving never changes on hand");
    assert_eq!(r1, r0 + dec("3"));
    let ch = changes(&c).await;
    for t in [
        "sale_order",
        "sale_order_line",
        "stock_picking",
        "stock_move",
        "stock_move_line",
        "stock_quant",
        "mail_message",
    ] {
        assert!(ch.contains_key(t), "confirm did not write {t}: {ch:?}");
    }
    assert!(ch.values().sum::<usize>() >= 12, "{ch:?}");
    assert!(matches!(
        sales::confirm(&mut c, &info, order).await,
        Err(OdooError::User(m)) if m.contains("not allowed to confirm")
    ));

    // Validate the delivery: done moves, quants decrease at stock and increase at customers.
    let (cust0, _) = on_hand(&c, product, info.customer_location_id).await;
    stock::validate_picking(&mut c, picking).await.unwrap();
    let (q2, r2) = on_hand(&c, product, wh.stock_location_id).await;
    let (cust2, _) = on_hand(&c, product, info.customer_location_id).await;
    assert_eq!(q2, q0 - dec("3"));
    assert_eq!(r2, r0);
    assert_eq!(cust2, cust0 + dec("3"));
    let st: String = c
        .query_one(
            "SELECT state FROM stock_move WHERE picking_id = $1",
            &[&picking],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(st, "done");
    let delivered: Decimal = c
        .query_one(
            "SELECT qty_delivered FROM sale_order_line WHERE order_id = $1",
            &[&order],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(delivered, dec("3"));
    let ch = changes(&c).await;
    assert_eq!(
        ch.get("stock_quant"),
        Some(&2),
        "one quant out, one in: {ch:?}"
    );

    // Invoice, post, pay.
    let inv = account::create_invoice(&mut c, &info, order).await.unwrap();
    let name = account::post(&mut c, inv).await.unwrap();
    assert!(
        name.starts_with("INV/20") && name.ends_with("/00001"),
        "{name}"
    );
    let bal = scalar_dec(
        &c,
        &format!("SELECT sum(debit) - sum(credit) FROM account_move_line WHERE move_id = {inv}"),
    )
    .await;
    assert!(bal.is_zero());
    let states: Vec<String> = c
        .query(
            "SELECT DISTINCT parent_state FROM account_move_line WHERE move_id = $1",
            &[&inv],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(states, vec!["posted".to_string()]);
    assert!(
        matches!(account::post(&mut c, inv).await, Err(OdooError::User(_))),
        "posting twice is refused"
    );
    let total = scalar_dec(
        &c,
        &format!("SELECT amount_total FROM account_move WHERE id = {inv}"),
    )
    .await;
    account::register_payment(&mut c, &info, inv, total)
        .await
        .unwrap();
    let ps: String = c
        .query_one(
            "SELECT payment_state FROM account_move WHERE id = $1",
            &[&inv],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(ps, "paid");

    // A refund of the paid invoice, and the goods come back.
    let refund = account::credit_note(&mut c, &info, inv).await.unwrap();
    let r = c
        .query_one("SELECT name, move_type, reversed_entry_id, amount_total, state FROM account_move WHERE id = $1", &[&refund])
        .await
        .unwrap();
    assert!(r.get::<_, String>(0).starts_with("RINV/"));
    assert_eq!(r.get::<_, String>(1), "out_refund");
    assert_eq!(r.get::<_, Option<i32>>(2), Some(inv));
    assert_eq!(r.get::<_, Decimal>(3), total);
    assert_eq!(r.get::<_, String>(4), "posted");
    stock::return_from_customer(
        &mut c,
        &info,
        &wh,
        "S00001",
        &[stock::StockLine {
            product_id: product,
            qty: dec("3"),
        }],
    )
    .await
    .unwrap();
    assert_eq!(on_hand(&c, product, wh.stock_location_id).await.0, q0);
    assert_eq!(
        on_hand(&c, product, info.customer_location_id).await.0,
        cust0
    );
}

#[tokio::test]
async fn cancel_receipt_and_inventory_adjustment() {
    let db = Db::start();
    let mut c = OdooClient::new(db.cluster.superuser_client("odoo").await.unwrap());
    let info = odoo::create(&c, &small()).await.unwrap();
    let wh = info.warehouses[1].clone();
    let product = info.products[3].id;

    // A receipt raises on hand at stock and lowers the vendor location (virtual, may go negative).
    let (q0, _) = on_hand(&c, product, wh.stock_location_id).await;
    let (v0, _) = on_hand(&c, product, info.supplier_location_id).await;
    let receipt = stock::receive(
        &mut c,
        &info,
        &wh,
        "P00001",
        &[stock::StockLine {
            product_id: product,
            qty: dec("20"),
        }],
    )
    .await
    .unwrap();
    let name: String = c
        .query_one("SELECT name FROM stock_picking WHERE id = $1", &[&receipt])
        .await
        .unwrap()
        .get(0);
    assert_eq!(name, "WH2/IN/00001");
    assert_eq!(
        on_hand(&c, product, wh.stock_location_id).await.0,
        q0 + dec("20")
    );
    assert_eq!(
        on_hand(&c, product, info.supplier_location_id).await.0,
        v0 - dec("20")
    );

    // An order larger than the stock is partially reserved; cancelling releases everything.
    let (q1, r1) = on_hand(&c, product, wh.stock_location_id).await;
    let want = q1 - r1 + dec("5");
    let order = sales::create_quotation(
        &mut c,
        &info,
        &sales::Quotation {
            partner_id: info.customers[1],
            warehouse_id: wh.id,
            lines: vec![sales::LineInput {
                qty: want,
                ..line(&info, 3, "1")
            }],
            client_order_ref: None,
        },
    )
    .await
    .unwrap();
    let picking = sales::confirm(&mut c, &info, order).await.unwrap();
    let mv: (String, Decimal) = {
        let r = c
            .query_one(
                "SELECT state, quantity FROM stock_move WHERE picking_id = $1",
                &[&picking],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(mv, ("partially_available".to_string(), q1 - r1));
    assert_eq!(on_hand(&c, product, wh.stock_location_id).await.1, q1);
    sales::cancel(&mut c, order).await.unwrap();
    assert_eq!(on_hand(&c, product, wh.stock_location_id).await, (q1, r1));
    let states: (String, String) = {
        let r = c
            .query_one("SELECT so.state, p.state FROM sale_order so JOIN stock_picking p ON p.sale_id = so.id WHERE so.id = $1", &[&order])
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(states, ("cancel".to_string(), "cancel".to_string()));
    assert!(matches!(
        sales::confirm(&mut c, &info, order).await,
        Err(OdooError::User(_))
    ));

    // Inventory adjustment sets the counted quantity; the difference goes to the inventory location.
    let (inv0, _) = on_hand(&c, product, info.inventory_location_id).await;
    let diff = stock::inventory_adjustment(&mut c, &info, product, wh.stock_location_id, dec("7"))
        .await
        .unwrap();
    assert_eq!(diff, dec("7") - q1);
    assert_eq!(on_hand(&c, product, wh.stock_location_id).await.0, dec("7"));
    assert_eq!(
        on_hand(&c, product, info.inventory_location_id).await.0,
        inv0 - diff
    );
    let is_inventory: bool = c
        .query_one(
            "SELECT is_inventory FROM stock_move WHERE product_id = $1 ORDER BY id DESC LIMIT 1",
            &[&product],
        )
        .await
        .unwrap()
        .get(0);
    assert!(is_inventory);
}

#[tokio::test]
async fn credit_note_settles_an_unpaid_invoice() {
    let db = Db::start();
    let mut c = OdooClient::new(db.cluster.superuser_client("odoo").await.unwrap());
    let info = odoo::create(&c, &small()).await.unwrap();
    let i = product_with_stock(&c, &info, 1).await;
    let order = sales::create_quotation(
        &mut c,
        &info,
        &sales::Quotation {
            partner_id: info.customers[2],
            warehouse_id: info.warehouses[0].id,
            lines: vec![sales::LineInput {
                discount: dec("10"),
                ..line(&info, i, "1")
            }],
            client_order_ref: None,
        },
    )
    .await
    .unwrap();
    sales::confirm(&mut c, &info, order).await.unwrap();
    let inv = account::create_invoice(&mut c, &info, order).await.unwrap();
    account::post(&mut c, inv).await.unwrap();
    account::credit_note(&mut c, &info, inv).await.unwrap();
    let r = c
        .query_one(
            "SELECT payment_state, amount_residual FROM account_move WHERE id = $1",
            &[&inv],
        )
        .await
        .unwrap();
    assert_eq!(r.get::<_, String>(0), "reversed");
    assert_eq!(r.get::<_, Decimal>(1), Decimal::ZERO);
    let price = info.products[i].list_price;
    let untaxed = scalar_dec(
        &c,
        &format!("SELECT amount_untaxed FROM account_move WHERE id = {inv}"),
    )
    .await;
    assert_eq!(
        untaxed,
        fixtures::odoo::actions::round_money(price * dec("0.9"))
    );
}
