use rust_decimal::Decimal;

use super::*;
use crate::events::{EntryKind, PickLine};

fn row(cols: &[(&str, &str)]) -> Row {
    cols.iter()
        .map(|(k, v)| {
            (
                (*k).into(),
                if *v == "NULL" {
                    None
                } else {
                    Some(v.to_string())
                },
            )
        })
        .collect()
}

fn ch(table: &str, op: Op, cols: &[(&str, &str)]) -> RowChange {
    let r = row(cols);
    match op {
        Op::Delete => RowChange {
            table: table.into(),
            op,
            new: None,
            old: Some(r),
        },
        _ => RowChange {
            table: table.into(),
            op,
            new: Some(r),
            old: None,
        },
    }
}

fn txn(lsn: u64, changes: Vec<RowChange>) -> Transaction {
    Transaction {
        committed_us: 0,
        commit_lsn: lsn,
        changes,
    }
}

fn dec(s: &str) -> Decimal {
    s.parse().unwrap()
}

fn base() -> Vec<RowChange> {
    vec![
        ch(
            "stock_warehouse",
            Op::Snapshot,
            &[("id", "1"), ("code", "WH")],
        ),
        ch(
            "stock_location",
            Op::Snapshot,
            &[("id", "8"), ("usage", "internal"), ("warehouse_id", "1")],
        ),
        ch(
            "stock_location",
            Op::Snapshot,
            &[("id", "9"), ("usage", "internal"), ("warehouse_id", "1")],
        ),
        ch(
            "stock_location",
            Op::Snapshot,
            &[("id", "5"), ("usage", "customer"), ("warehouse_id", "NULL")],
        ),
        ch(
            "product_product",
            Op::Snapshot,
            &[("id", "3"), ("default_code", "SKU-1")],
        ),
        ch(
            "stock_picking_type",
            Op::Snapshot,
            &[("id", "2"), ("code", "outgoing"), ("warehouse_id", "1")],
        ),
        ch(
            "res_partner",
            Op::Snapshot,
            &[
                ("id", "10"),
                ("name", "Ada"),
                ("email", "ada@example.com"),
                ("street", "1 Main St"),
                ("city", "London"),
                ("zip", "N1"),
            ],
        ),
    ]
}

#[test]
fn sellable_follows_quants_without_old_rows() {
    let mut t = Transformer::new(OdooVersion::V18);
    let mut snap = base();
    snap.push(ch(
        "stock_quant",
        Op::Snapshot,
        &[
            ("id", "100"),
            ("product_id", "3"),
            ("location_id", "8"),
            ("quantity", "10.000"),
            ("reserved_quantity", "0"),
        ],
    ));
    snap.push(ch(
        "stock_quant",
        Op::Snapshot,
        &[
            ("id", "101"),
            ("product_id", "3"),
            ("location_id", "9"),
            ("quantity", "2"),
            ("reserved_quantity", "0"),
        ],
    ));
    snap.push(ch(
        "stock_quant",
        Op::Snapshot,
        &[
            ("id", "102"),
            ("product_id", "3"),
            ("location_id", "5"),
            ("quantity", "-40"),
            ("reserved_quantity", "0"),
        ],
    ));
    let ev = t.apply(&txn(1, snap));
    assert_eq!(
        ev,
        vec![Sourced {
            event: RetailEvent::SellableChanged {
                sku: "SKU-1".into(),
                warehouse: "WH".into(),
                qty: dec("12")
            },
            source_commit_lsn: 1,
            committed_us: 0,
        }]
    );

    // A reservation: the UPDATE carries the new row only.
    let ev = t.apply(&txn(
        2,
        vec![ch(
            "stock_quant",
            Op::Update,
            &[
                ("id", "100"),
                ("product_id", "3"),
                ("location_id", "8"),
                ("quantity", "10"),
                ("reserved_quantity", "3"),
            ],
        )],
    ));
    assert_eq!(
        ev[0].event,
        RetailEvent::SellableChanged {
            sku: "SKU-1".into(),
            warehouse: "WH".into(),
            qty: dec("9")
        }
    );

    // Delivery: on hand and reservation fall together, the customer location grows: no change.
    let ev = t.apply(&txn(
        3,
        vec![
            ch(
                "stock_quant",
                Op::Update,
                &[
                    ("id", "100"),
                    ("product_id", "3"),
                    ("location_id", "8"),
                    ("quantity", "7"),
                    ("reserved_quantity", "0"),
                ],
            ),
            ch(
                "stock_quant",
                Op::Update,
                &[
                    ("id", "102"),
                    ("product_id", "3"),
                    ("location_id", "5"),
                    ("quantity", "-37"),
                    ("reserved_quantity", "0"),
                ],
            ),
        ],
    ));
    assert!(ev.is_empty(), "{ev:?}");

    // The same row written twice in one transaction: one event with the final quantity.
    let ev = t.apply(&txn(
        4,
        vec![
            ch(
                "stock_quant",
                Op::Update,
                &[
                    ("id", "101"),
                    ("product_id", "3"),
                    ("location_id", "9"),
                    ("quantity", "5"),
                    ("reserved_quantity", "0"),
                ],
            ),
            ch(
                "stock_quant",
                Op::Update,
                &[
                    ("id", "101"),
                    ("product_id", "3"),
                    ("location_id", "9"),
                    ("quantity", "6"),
                    ("reserved_quantity", "1"),
                ],
            ),
        ],
    ));
    assert_eq!(ev.len(), 1);
    assert_eq!(
        ev[0].event,
        RetailEvent::SellableChanged {
            sku: "SKU-1".into(),
            warehouse: "WH".into(),
            qty: dec("12")
        }
    );

    // A delete carries only the key.
    let ev = t.apply(&txn(
        5,
        vec![ch("stock_quant", Op::Delete, &[("id", "100")])],
    ));
    assert_eq!(
        ev[0].event,
        RetailEvent::SellableChanged {
            sku: "SKU-1".into(),
            warehouse: "WH".into(),
            qty: dec("5")
        }
    );
    assert_eq!(t.inventory.sellable("SKU-1", "WH"), Some(dec("5")));
}

#[test]
fn ready_outgoing_pickings_are_requested_once_and_cancellations_follow() {
    let mut t = Transformer::new(OdooVersion::V18);
    t.apply(&txn(1, base()));
    let confirm = vec![
        ch(
            "stock_picking",
            Op::Insert,
            &[
                ("id", "21"),
                ("name", "WH/OUT/00017"),
                ("state", "draft"),
                ("picking_type_id", "2"),
                ("partner_id", "10"),
            ],
        ),
        ch(
            "stock_move",
            Op::Insert,
            &[
                ("id", "43"),
                ("picking_id", "21"),
                ("product_id", "3"),
                ("product_uom_qty", "2.00"),
                ("state", "confirmed"),
            ],
        ),
        ch(
            "stock_move",
            Op::Insert,
            &[
                ("id", "44"),
                ("picking_id", "21"),
                ("product_id", "3"),
                ("product_uom_qty", "1.00"),
                ("state", "confirmed"),
            ],
        ),
        ch(
            "stock_move",
            Op::Update,
            &[
                ("id", "43"),
                ("picking_id", "21"),
                ("product_id", "3"),
                ("product_uom_qty", "2.00"),
                ("quantity", "2.00"),
                ("state", "assigned"),
            ],
        ),
        ch(
            "stock_picking",
            Op::Update,
            &[
                ("id", "21"),
                ("name", "WH/OUT/00017"),
                ("state", "assigned"),
                ("picking_type_id", "2"),
                ("partner_id", "10"),
            ],
        ),
    ];
    let ev = t.apply(&txn(2, confirm));
    assert_eq!(ev.len(), 1);
    let RetailEvent::FulfillmentRequested {
        reference,
        warehouse,
        lines,
        ship_to,
        ..
    } = &ev[0].event
    else {
        panic!("{ev:?}")
    };
    assert_eq!(reference, "WH/OUT/00017");
    assert_eq!(warehouse, "WH");
    // What is reserved (move 43's 2 units), not the demand (3, with move 44's unreserved one).
    assert_eq!(
        lines,
        &vec![PickLine {
            sku: "SKU-1".into(),
            quantity: dec("2")
        }]
    );
    assert_eq!(ship_to.city.as_deref(), Some("London"));
    let json = serde_json::to_string(&ev[0].event).unwrap();
    assert!(
        !json.contains("ada@example.com") && !json.contains("price"),
        "the WMS gets no email or prices: {json}"
    );

    // Written again while ready: no second request.
    let ev = t.apply(&txn(
        3,
        vec![ch(
            "stock_picking",
            Op::Update,
            &[
                ("id", "21"),
                ("name", "WH/OUT/00017"),
                ("state", "assigned"),
                ("picking_type_id", "2"),
                ("partner_id", "10"),
            ],
        )],
    ));
    assert!(ev.is_empty());
    // Stock arrives and the last unit is reserved before it ships: the request goes out again
    // with what is reserved now (the WMS order is amended, not duplicated).
    let ev = t.apply(&txn(
        4,
        vec![ch(
            "stock_move",
            Op::Update,
            &[
                ("id", "44"),
                ("picking_id", "21"),
                ("product_id", "3"),
                ("product_uom_qty", "1.00"),
                ("quantity", "1.00"),
                ("state", "assigned"),
            ],
        )],
    ));
    assert!(
        matches!(&ev[..], [e] if matches!(&e.event, RetailEvent::FulfillmentRequested { reference, lines, .. }
            if reference == "WH/OUT/00017" && lines[0].quantity == dec("3"))),
        "{ev:?}"
    );
    // Unreserved (back to confirmed): the warehouse is told not to ship it.
    let unreserve = |qty: &'static str, state: &'static str| {
        vec![
            ch(
                "stock_move",
                Op::Update,
                &[
                    ("id", "43"),
                    ("picking_id", "21"),
                    ("product_id", "3"),
                    ("product_uom_qty", "2.00"),
                    ("quantity", qty),
                    ("state", state),
                ],
            ),
            ch(
                "stock_move",
                Op::Update,
                &[
                    ("id", "44"),
                    ("picking_id", "21"),
                    ("product_id", "3"),
                    ("product_uom_qty", "1.00"),
                    ("quantity", qty),
                    ("state", state),
                ],
            ),
            ch(
                "stock_picking",
                Op::Update,
                &[
                    ("id", "21"),
                    ("name", "WH/OUT/00017"),
                    (
                        "state",
                        if state == "confirmed" {
                            "confirmed"
                        } else {
                            "assigned"
                        },
                    ),
                    ("picking_type_id", "2"),
                    ("partner_id", "10"),
                ],
            ),
        ]
    };
    let ev = t.apply(&txn(5, unreserve("0", "confirmed")));
    assert_eq!(
        ev.iter().map(|e| e.event.clone()).collect::<Vec<_>>(),
        vec![RetailEvent::FulfillmentCancelled {
            reference: "WH/OUT/00017".into(),
            backorder_of: None,
        }]
    );
    // Reserved again: requested again (the WMS reopens the order with that reference).
    let ev = t.apply(&txn(6, unreserve("1.00", "assigned")));
    assert!(
        matches!(&ev[..], [e] if matches!(&e.event, RetailEvent::FulfillmentRequested { lines, .. } if lines[0].quantity == dec("2"))),
        "{ev:?}"
    );
    let ev = t.apply(&txn(
        7,
        vec![ch(
            "stock_picking",
            Op::Update,
            &[
                ("id", "21"),
                ("name", "WH/OUT/00017"),
                ("state", "cancel"),
                ("picking_type_id", "2"),
                ("partner_id", "10"),
            ],
        )],
    ));
    assert_eq!(
        ev[0].event,
        RetailEvent::FulfillmentCancelled {
            reference: "WH/OUT/00017".into(),
            backorder_of: None,
        }
    );
}

fn accounts() -> Vec<RowChange> {
    vec![
        ch(
            "account_account",
            Op::Snapshot,
            &[
                ("id", "1"),
                ("code_store", r#"{"1": "121000"}"#),
                ("account_type", "asset_receivable"),
            ],
        ),
        ch(
            "account_account",
            Op::Snapshot,
            &[
                ("id", "2"),
                ("code_store", r#"{"1": "400000"}"#),
                ("account_type", "income"),
            ],
        ),
        ch(
            "res_currency",
            Op::Snapshot,
            &[("id", "1"), ("name", "USD")],
        ),
        ch(
            "res_partner",
            Op::Snapshot,
            &[("id", "10"), ("name", "Ada"), ("email", "ada@example.com")],
        ),
    ]
}

fn mv(id: &str, name: &str, state: &str, ty: &str, reversed: &str) -> RowChange {
    ch(
        "account_move",
        Op::Update,
        &[
            ("id", id),
            ("name", name),
            ("state", state),
            ("move_type", ty),
            ("partner_id", "10"),
            ("currency_id", "1"),
            ("date", "2026-11-29"),
            ("reversed_entry_id", reversed),
        ],
    )
}

fn line(id: &str, move_id: &str, account: &str, debit: &str, credit: &str) -> RowChange {
    ch(
        "account_move_line",
        Op::Insert,
        &[
            ("id", id),
            ("move_id", move_id),
            ("account_id", account),
            ("debit", debit),
            ("credit", credit),
            ("name", "Desk"),
        ],
    )
}

#[test]
fn posted_moves_become_balanced_journal_entries_once() {
    let mut t = Transformer::new(OdooVersion::V18);
    t.apply(&txn(1, accounts()));
    let ev = t.apply(&txn(
        2,
        vec![
            mv("7", "/", "draft", "out_invoice", "NULL"),
            line("70", "7", "1", "115.00", "0"),
            line("71", "7", "2", "0", "115.00"),
        ],
    ));
    assert!(ev.is_empty(), "drafts are not booked");
    let ev = t.apply(&txn(
        3,
        vec![mv("7", "INV/2026/00001", "posted", "out_invoice", "NULL")],
    ));
    let RetailEvent::JournalEntry(e) = &ev[0].event else {
        panic!("{ev:?}")
    };
    assert_eq!(
        (e.move_id, e.posting, e.name.as_str()),
        (7, 1, "INV/2026/00001")
    );
    assert_eq!(e.kind, EntryKind::Invoice);
    assert_eq!(e.currency.as_deref(), Some("USD"));
    assert_eq!(e.customer, Some((10, "Ada".into())));
    assert_eq!(e.lines[0].account_code, "121000");
    assert_eq!(e.lines[0].debit, dec("115"));
    let json = serde_json::to_string(&ev[0].event).unwrap();
    assert!(!json.contains("ada@example.com"), "no email to accounting");
    // Another write of the posted move books nothing new.
    assert!(t
        .apply(&txn(
            4,
            vec![mv("7", "INV/2026/00001", "posted", "out_invoice", "NULL")]
        ))
        .is_empty());

    // A credit note names the invoice it reverses; an unbalanced move goes to the DLQ.
    let ev = t.apply(&txn(
        5,
        vec![
            mv("8", "RINV/2026/00001", "posted", "out_refund", "7"),
            line("80", "8", "2", "115", "0"),
            line("81", "8", "1", "0", "115"),
        ],
    ));
    let RetailEvent::JournalEntry(e) = &ev[0].event else {
        panic!("{ev:?}")
    };
    assert_eq!(
        e.kind,
        EntryKind::CreditNote {
            reverses: Some("INV/2026/00001".into())
        }
    );
    let ev = t.apply(&txn(
        6,
        vec![
            mv("9", "MISC/2026/00001", "posted", "entry", "NULL"),
            line("90", "9", "1", "10", "0"),
            line("91", "9", "2", "0", "9"),
        ],
    ));
    assert!(
        matches!(&ev[0].event, RetailEvent::Unmappable { reason, .. } if reason.contains("not balanced")),
        "{ev:?}"
    );
}

#[test]
fn restore_then_replay_holds_inventory_back_and_rebooks_idempotently() {
    let mut t = Transformer::new(OdooVersion::V18);
    let mut snap = base();
    snap.extend(accounts());
    snap.push(ch(
        "stock_quant",
        Op::Snapshot,
        &[
            ("id", "100"),
            ("product_id", "3"),
            ("location_id", "8"),
            ("quantity", "10"),
            ("reserved_quantity", "0"),
        ],
    ));
    snap.push(ch(
        "stock_picking",
        Op::Snapshot,
        &[
            ("id", "21"),
            ("name", "WH/OUT/00017"),
            ("state", "assigned"),
            ("picking_type_id", "2"),
            ("partner_id", "10"),
        ],
    ));
    snap.push(ch(
        "stock_move",
        Op::Snapshot,
        &[
            ("id", "43"),
            ("picking_id", "21"),
            ("product_id", "3"),
            ("product_uom_qty", "1"),
            ("quantity", "1"),
            ("state", "assigned"),
        ],
    ));
    snap.push(mv("7", "INV/2026/00001", "posted", "out_invoice", "NULL"));
    snap.push(line("70", "7", "1", "5", "0"));
    snap.push(line("71", "7", "2", "0", "5"));
    t.restore(&txn(0, snap), 100);

    // Replayed: an older quant value, the picking becoming ready, the invoice being posted.
    let ev = t.apply(&txn(
        50,
        vec![
            ch(
                "stock_quant",
                Op::Update,
                &[
                    ("id", "100"),
                    ("product_id", "3"),
                    ("location_id", "8"),
                    ("quantity", "4"),
                    ("reserved_quantity", "0"),
                ],
            ),
            ch(
                "stock_picking",
                Op::Update,
                &[
                    ("id", "21"),
                    ("name", "WH/OUT/00017"),
                    ("state", "assigned"),
                    ("picking_type_id", "2"),
                    ("partner_id", "10"),
                ],
            ),
            mv("7", "INV/2026/00001", "posted", "out_invoice", "NULL"),
        ],
    ));
    assert!(
        !ev.iter()
            .any(|e| matches!(e.event, RetailEvent::SellableChanged { .. })),
        "inventory held back while replaying"
    );
    assert!(ev.iter().any(|e| matches!(&e.event, RetailEvent::FulfillmentRequested { reference, .. } if reference == "WH/OUT/00017")));
    assert!(ev.iter().any(
        |e| matches!(&e.event, RetailEvent::JournalEntry(j) if j.move_id == 7 && j.posting == 1)
    ));
    let ev = t.apply(&txn(
        90,
        vec![ch(
            "stock_quant",
            Op::Update,
            &[
                ("id", "100"),
                ("product_id", "3"),
                ("location_id", "8"),
                ("quantity", "10"),
                ("reserved_quantity", "0"),
            ],
        )],
    ));
    assert!(ev.is_empty());
    // The first transaction after the snapshot brings the full resync, then its own events.
    let ev = t.apply(&txn(
        150,
        vec![ch(
            "stock_quant",
            Op::Update,
            &[
                ("id", "100"),
                ("product_id", "3"),
                ("location_id", "8"),
                ("quantity", "9"),
                ("reserved_quantity", "0"),
            ],
        )],
    ));
    let quantities: Vec<Decimal> = ev
        .iter()
        .filter_map(|e| match &e.event {
            RetailEvent::SellableChanged { qty, .. } => Some(*qty),
            _ => None,
        })
        .collect();
    assert_eq!(quantities, vec![dec("10"), dec("9")]);
}

#[test]
fn the_initial_sync_asks_for_what_is_reserved_not_the_demand() {
    let mut t = Transformer::new(OdooVersion::V18);
    let mut snap = base();
    snap.push(ch(
        "stock_picking",
        Op::Snapshot,
        &[
            ("id", "30"),
            ("name", "WH/OUT/00030"),
            ("state", "assigned"),
            ("picking_type_id", "2"),
            ("partner_id", "10"),
        ],
    ));
    snap.push(ch(
        "stock_move",
        Op::Snapshot,
        &[
            ("id", "60"),
            ("picking_id", "30"),
            ("product_id", "3"),
            ("product_uom_qty", "180"),
            ("quantity", "100"),
            ("state", "partially_available"),
        ],
    ));
    let ev = t.initial(&txn(1, snap), None);
    let asked: Vec<Decimal> = ev
        .iter()
        .filter_map(|e| match &e.event {
            RetailEvent::FulfillmentRequested { lines, .. } => Some(lines[0].quantity),
            _ => None,
        })
        .collect();
    assert_eq!(asked, vec![dec("100")], "{ev:?}");
}
