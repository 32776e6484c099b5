//! The transforms over what a real (fixture) Odoo writes, read through the real slot: the
//! snapshot plus the stream give Odoo's sellable quantities exactly, ready deliveries become
//! fulfillment requests, posted invoices balanced journal entries.

use std::str::FromStr;
use std::time::Duration;

use cdc::conn::{quote_ident, ReplicationConnection};
use cdc::decoder::Decoder;
use cdc::stream::ReplicationStream;
use cdc::{Lsn, SourceConfig};
use fixtures::odoo::actions::{account, sales, stock};
use fixtures::odoo::{self, OdooClient, SeedConfig};
use odoo_cdc_tests::Db;
use pipeline::runtime::capture::{self, TxnCollector};
use rust_decimal::Decimal;
use transforms::events::EntryKind;
use transforms::{OdooVersion, RetailEvent, Transformer};

#[tokio::test]
async fn fixture_odoo_through_the_slot_into_retail_events() {
    let db = Db::start();
    let mut c = OdooClient::new(db.cluster.superuser_client("odoo").await.unwrap());
    let info = odoo::create(
        &c,
        &SeedConfig {
            products: 30,
            customers: 5,
            max_opening_qty: 20,
            ..SeedConfig::default()
        },
    )
    .await
    .unwrap();
    let tables: Vec<String> = cdc::slot::ODOO_TABLES
        .iter()
        .map(|t| t.to_string())
        .collect();
    c.batch_execute(&format!(
        "CREATE PUBLICATION odoo_cdc FOR TABLE {}",
        tables.join(", ")
    ))
    .await
    .unwrap();

    let cfg = SourceConfig::from_str(&db.url()).unwrap();
    let (snap, consistent) = capture::snapshot_rows(&cfg, "odoo_cdc", "odoo_cdc")
        .await
        .unwrap();
    let mut t = Transformer::new(OdooVersion::V18);
    let mut events: Vec<RetailEvent> = t.apply(&snap).into_iter().map(|s| s.event).collect();
    assert!(
        events
            .iter()
            .filter(|e| matches!(e, RetailEvent::SellableChanged { .. }))
            .count()
            > 10
    );

    // Business: two orders confirmed, one delivered, invoiced, paid; the other cancelled; a receipt.
    let wh = info.warehouses[0].clone();
    let line = |i: usize, qty: i64| sales::LineInput {
        product_id: info.products[i].id,
        name: info.products[i].sku.clone(),
        qty: Decimal::from(qty),
        price_unit: info.products[i].list_price,
        discount: Decimal::ZERO,
        taxed: true,
        taxes: Vec::new(),
    };
    let q = |lines| sales::Quotation {
        partner_id: info.customers[0],
        warehouse_id: wh.id,
        lines,
        client_order_ref: None,
    };
    let mut stocked = Vec::new();
    for (i, p) in info.products.iter().enumerate() {
        let avail: Decimal = c
            .query_one(
                "SELECT coalesce(sum(quantity - reserved_quantity), 0) FROM stock_quant WHERE product_id = $1 AND location_id = $2",
                &[&p.id, &wh.stock_location_id],
            )
            .await
            .unwrap()
            .get(0);
        if avail >= Decimal::ONE {
            stocked.push(i);
        }
    }
    assert!(stocked.len() >= 3);
    let o1 = sales::create_quotation(
        &mut c,
        &info,
        &q(vec![line(stocked[0], 1), line(stocked[1], 1)]),
    )
    .await
    .unwrap();
    let p1 = sales::confirm(&mut c, &info, o1).await.unwrap();
    let o2 = sales::create_quotation(&mut c, &info, &q(vec![line(stocked[2], 1)]))
        .await
        .unwrap();
    let p2 = sales::confirm(&mut c, &info, o2).await.unwrap();
    stock::validate_picking(&mut c, p1).await.unwrap();
    let inv = account::create_invoice(&mut c, &info, o1).await.unwrap();
    account::post(&mut c, inv).await.unwrap();
    let total: Decimal = c
        .query_one(
            "SELECT amount_total FROM account_move WHERE id = $1",
            &[&inv],
        )
        .await
        .unwrap()
        .get(0);
    account::register_payment(&mut c, &info, inv, total)
        .await
        .unwrap();
    sales::cancel(&mut c, o2).await.unwrap();
    stock::receive(
        &mut c,
        &info,
        &wh,
        "P1",
        &[stock::StockLine {
            product_id: info.products[3].id,
            qty: Decimal::from(5),
        }],
    )
    .await
    .unwrap();
    let target: Lsn = db.current_lsn().parse().unwrap();

    // Stream from the consistent point until the slot has caught up.
    let conn = ReplicationConnection::connect(&cfg).await.unwrap();
    let options = [
        ("proto_version", "1".to_string()),
        ("publication_names", quote_ident("odoo_cdc")),
    ];
    let mut stream = ReplicationStream::start(
        conn,
        "odoo_cdc",
        consistent,
        &options,
        Duration::from_millis(100),
    )
    .await
    .unwrap();
    let mut decoder = Decoder::default();
    let mut collector = TxnCollector::default();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let batch = stream.next_batch().await.unwrap();
        for (lsn, data) in batch.iter() {
            decoder.process(lsn, data, &mut collector).unwrap();
        }
        for (txn, end) in collector.done.drain(..) {
            events.extend(t.apply(&txn).into_iter().map(|s| s.event));
            stream.ack(end);
        }
        if !stream.in_transaction() && stream.keepalive_end() >= target {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "stream did not catch up"
        );
    }
    stream.close().await.unwrap();

    // Sellable: exactly what Odoo's quants say, for every SKU and warehouse.
    let rows = c
        .query(
            "SELECT p.default_code, w.code, sum(q.quantity - q.reserved_quantity) FROM stock_quant q \
             JOIN stock_location l ON l.id = q.location_id JOIN stock_warehouse w ON w.id = l.warehouse_id \
             JOIN product_product p ON p.id = q.product_id WHERE l.usage = 'internal' GROUP BY 1, 2",
            &[],
        )
        .await
        .unwrap();
    assert!(!rows.is_empty());
    for r in rows {
        let (sku, code, qty): (String, String, Decimal) = (r.get(0), r.get(1), r.get(2));
        assert_eq!(t.inventory.sellable(&sku, &code), Some(qty), "{sku}@{code}");
    }

    // Fulfillment: both deliveries requested once ready; o2's then cancelled.
    let names: Vec<(i32, String)> = c
        .query(
            "SELECT id, name FROM stock_picking WHERE id IN ($1, $2) ORDER BY id",
            &[&p1, &p2],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let requested: Vec<&String> = events
        .iter()
        .filter_map(|e| match e {
            RetailEvent::FulfillmentRequested { reference, .. } => Some(reference),
            _ => None,
        })
        .collect();
    let cancelled: Vec<&String> = events
        .iter()
        .filter_map(|e| match e {
            RetailEvent::FulfillmentCancelled { reference, .. } => Some(reference),
            _ => None,
        })
        .collect();
    {
        assert!(requested.contains(&&names[0].1), "{requested:?}");
        let lines = events
            .iter()
            .find_map(|e| match e {
                RetailEvent::FulfillmentRequested {
                    reference, lines, ..
                } if reference == &names[0].1 => Some(lines.clone()),
                _ => None,
            })
            .unwrap();
        assert_eq!(lines.len(), 2);
    }
    assert!(requested.contains(&&names[1].1), "{requested:?}");
    assert_eq!(cancelled, vec![&names[1].1]);

    // Accounting: the invoice and the payment, each once, balanced, with Odoo's names.
    let entries: Vec<&transforms::events::JournalEntry> = events
        .iter()
        .filter_map(|e| match e {
            RetailEvent::JournalEntry(j) => Some(j),
            _ => None,
        })
        .collect();
    assert_eq!(entries.len(), 2, "{entries:#?}");
    let invoice = entries
        .iter()
        .find(|e| e.kind == EntryKind::Invoice)
        .unwrap();
    assert!(invoice.name.starts_with("INV/"));
    let debit: Decimal = invoice.lines.iter().map(|l| l.debit).sum();
    assert_eq!(debit, total);
    assert!(entries
        .iter()
        .any(|e| e.kind == EntryKind::Entry && e.name.starts_with("BNK1/")));
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, RetailEvent::Unmappable { .. })),
        "nothing unmappable"
    );
}
