//! The Odoo RPC emulator behaves as a real Odoo 18.0 Community server was measured to behave
//! (`tests/real_odoo.rs` runs the same flows against the real server), so CI catches what a
//! lenient emulator would hide:
//! - `sale.order.action_cancel` on a confirmed order answers the `sale.order.cancel` wizard and
//!   cancels nothing; with `disable_cancel_warning` in the context, or through the wizard, it
//!   cancels, delivery included;
//! - discounts and unit prices are stored with 2 decimals (8.3375 % is kept as 8.34 %);
//! - a partly available delivery is `assigned` with less reserved than the demand;
//!   `button_validate` answers the backorder wizard without a record (`res_id` null), which the
//!   client creates from the action's context; `process` makes a backorder for the rest;
//! - the return wizard proposes one line per delivered move (quantity 0); its receipt is
//!   linked to the delivery and waits to be received; lines given without `move_id` are not
//!   linked;
//! - taxes of any rate and price-included taxes; a pricelist sets the order's currency;
//! - a method that returns None is a fault over XML-RPC and has no `result` over JSON-RPC.

use std::time::Duration;

use fixtures::emulator::odoo_rpc::{OdooRpcConfig as EmuCfg, OdooRpcEmulator};
use fixtures::odoo::{self, SeedConfig};
use odoo_cdc_tests::Db;
use rust_decimal::Decimal;
use serde_json::{json, Map, Value};
use sinks::odoo::{Call, OdooRpc, OdooRpcConfig, Protocol};

fn client(url: &str, protocol: Protocol) -> OdooRpc {
    OdooRpc::new(OdooRpcConfig {
        url: url.to_string(),
        database: "odoo".into(),
        login: "admin".into(),
        api_key: "odoo-api-key".into(),
        protocol,
        timeout: Duration::from_secs(10),
    })
    .unwrap()
}

async fn method(
    rpc: &OdooRpc,
    model: &'static str,
    m: &'static str,
    id: i64,
    context: Value,
) -> Value {
    let mut kwargs = Map::new();
    if !context.is_null() {
        kwargs.insert("context".into(), context);
    }
    rpc.call(&Call::Method {
        model,
        method: m,
        ids: vec![id],
        kwargs,
    })
    .await
    .unwrap_or_else(|e| panic!("{model}.{m}: {e}"))
}

async fn read(
    rpc: &OdooRpc,
    model: &'static str,
    domain: Value,
    fields: Vec<&'static str>,
) -> Vec<Value> {
    rpc.call(&Call::SearchRead {
        model,
        domain,
        fields,
        limit: None,
    })
    .await
    .unwrap()
    .as_array()
    .cloned()
    .unwrap()
}

async fn create(rpc: &OdooRpc, model: &'static str, vals: Value, context: Value) -> i64 {
    rpc.call(&Call::CreateWith {
        model,
        vals,
        context,
    })
    .await
    .unwrap_or_else(|e| panic!("{model}.create: {e}"))
    .as_i64()
    .unwrap()
}

fn dec(v: &Value) -> Decimal {
    v.to_string().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_emulator_answers_as_a_real_odoo_18_does() {
    let db = Db::start();
    let c = db.cluster.superuser_client("odoo").await.unwrap();
    let info = odoo::create(
        &c,
        &SeedConfig {
            products: 4,
            customers: 1,
            ..SeedConfig::default()
        },
    )
    .await
    .unwrap();
    let stock = info.warehouses[0].stock_location_id;
    // Product 0: plenty; product 1: 2 units (partial availability).
    c.batch_execute(&format!(
        "UPDATE stock_quant SET quantity = 50, reserved_quantity = 0 WHERE product_id = {p0} AND location_id = {stock}; \
         UPDATE stock_quant SET quantity = 2, reserved_quantity = 0 WHERE product_id = {p1} AND location_id = {stock}; \
         DELETE FROM stock_quant WHERE product_id = {p1} AND location_id <> {stock} AND location_id IN \
           (SELECT id FROM stock_location WHERE usage = 'internal'); \
         INSERT INTO account_tax (company_id, sequence, tax_group_id, country_id, type_tax_use, amount_type, price_include_override, \
           name, amount, active) VALUES (1, 2, 1, 233, 'sale', 'percent', 'tax_included', '{{\"en_US\": \"VAT 20% incl.\"}}', 20, true), \
           (1, 3, 1, 233, 'sale', 'percent', NULL, '{{\"en_US\": \"GST 5%\"}}', 5, true), \
           (1, 4, 1, 233, 'sale', 'percent', NULL, '{{\"en_US\": \"PST 7%\"}}', 7, true); \
         UPDATE res_currency SET active = true WHERE name = 'HKD'; \
         INSERT INTO product_pricelist (currency_id, company_id, name, active) SELECT id, 1, '{{\"en_US\": \"HKD\"}}', true \
           FROM res_currency WHERE name = 'HKD';",
        p0 = info.products[0].id,
        p1 = info.products[1].id,
    ))
    .await
    .unwrap();
    let emu = OdooRpcEmulator::start(EmuCfg::new(&db.cluster.superuser_url("odoo")), 0)
        .await
        .unwrap();
    let rpc = client(&emu.url(), Protocol::JsonRpc);
    let xml = client(&emu.url(), Protocol::XmlRpc);
    let partner = info.customers[0] as i64;
    let (p0, p1) = (info.products[0].id as i64, info.products[1].id as i64);

    // Discounts and prices keep 2 decimals.
    let order = |lines: Value, extra: Value| {
        let mut v = json!({"partner_id": partner, "order_line": lines});
        if let (Some(v), Some(extra)) = (v.as_object_mut(), extra.as_object()) {
            v.extend(extra.clone());
        }
        v
    };
    let so = create(
        &rpc,
        "sale.order",
        order(json!([[0, 0, {"product_id": p0, "product_uom_qty": 3, "price_unit": "85.004", "discount": "8.3375", "tax_id": [[6, 0, []]]}]]), json!({})),
        Value::Null,
    )
    .await;
    let line = &read(
        &rpc,
        "sale.order.line",
        json!([["order_id", "=", so]]),
        vec!["discount", "price_unit", "price_subtotal"],
    )
    .await[0];
    assert_eq!(
        (dec(&line["discount"]), dec(&line["price_unit"])),
        (Decimal::new(834, 2), Decimal::new(8500, 2)),
        "{line}"
    );
    assert_eq!(
        dec(&line["price_subtotal"]),
        Decimal::new(23373, 2),
        "{line}"
    );

    // Cancel: the wizard answers and nothing is cancelled; the context cancels for real.
    method(&rpc, "sale.order", "action_confirm", so, Value::Null).await;
    let answer = method(&rpc, "sale.order", "action_cancel", so, Value::Null).await;
    assert_eq!(answer["res_model"], "sale.order.cancel", "{answer}");
    assert_eq!(answer["context"]["default_order_id"], so);
    let state = |id| {
        let rpc = &rpc;
        async move {
            read(rpc, "sale.order", json!([["id", "=", id]]), vec!["state"]).await[0]["state"]
                .clone()
        }
    };
    assert_eq!(
        state(so).await,
        "sale",
        "a plain action_cancel cancelled a confirmed order"
    );
    let answer = method(
        &rpc,
        "sale.order",
        "action_cancel",
        so,
        json!({"disable_cancel_warning": true}),
    )
    .await;
    assert_eq!(answer, json!(true));
    assert_eq!(state(so).await, "cancel");
    let pickings = read(
        &rpc,
        "stock.picking",
        json!([["sale_id", "=", so]]),
        vec!["state"],
    )
    .await;
    assert!(
        pickings.iter().all(|p| p["state"] == "cancel"),
        "{pickings:?}"
    );
    // Through the wizard, as a person would.
    let so2 = create(
        &rpc,
        "sale.order",
        order(
            json!([[0, 0, {"product_id": p0, "product_uom_qty": 1}]]),
            json!({}),
        ),
        Value::Null,
    )
    .await;
    method(&rpc, "sale.order", "action_confirm", so2, Value::Null).await;
    let wizard = create(
        &rpc,
        "sale.order.cancel",
        json!({"order_id": so2}),
        Value::Null,
    )
    .await;
    method(
        &rpc,
        "sale.order.cancel",
        "action_cancel",
        wizard,
        Value::Null,
    )
    .await;
    assert_eq!(state(so2).await, "cancel");

    // Partial availability: 3 ordered, 2 reserved; validating answers the backorder wizard.
    let so3 = create(
        &rpc,
        "sale.order",
        order(
            json!([[0, 0, {"product_id": p1, "product_uom_qty": 3}]]),
            json!({}),
        ),
        Value::Null,
    )
    .await;
    method(&rpc, "sale.order", "action_confirm", so3, Value::Null).await;
    let pick = &read(
        &rpc,
        "stock.picking",
        json!([["sale_id", "=", so3]]),
        vec!["id", "state"],
    )
    .await[0];
    let pick_id = pick["id"].as_i64().unwrap();
    assert_eq!(pick["state"], "assigned");
    let mv = &read(
        &rpc,
        "stock.move",
        json!([["picking_id", "=", pick_id]]),
        vec!["product_uom_qty", "quantity", "state"],
    )
    .await[0];
    assert_eq!(
        (dec(&mv["product_uom_qty"]), dec(&mv["quantity"])),
        (Decimal::from(3), Decimal::from(2))
    );
    assert_eq!(mv["state"], "partially_available");
    let answer = method(
        &rpc,
        "stock.picking",
        "button_validate",
        pick_id,
        Value::Null,
    )
    .await;
    assert_eq!(
        answer["res_model"], "stock.backorder.confirmation",
        "{answer}"
    );
    assert!(
        answer["res_id"].is_null(),
        "Odoo 18 answers the backorder wizard without a record: {answer}"
    );
    assert_eq!(
        read(
            &rpc,
            "stock.picking",
            json!([["id", "=", pick_id]]),
            vec!["state"]
        )
        .await[0]["state"],
        "assigned"
    );
    let bo_wizard = create(
        &rpc,
        "stock.backorder.confirmation",
        json!({}),
        answer["context"].clone(),
    )
    .await;
    method(
        &rpc,
        "stock.backorder.confirmation",
        "process",
        bo_wizard,
        answer["context"].clone(),
    )
    .await;
    let picks = read(
        &rpc,
        "stock.picking",
        json!([["sale_id", "=", so3]]),
        vec!["id", "state", "backorder_id"],
    )
    .await;
    assert_eq!(picks.len(), 2, "{picks:?}");
    let back = picks
        .iter()
        .find(|p| p["backorder_id"].is_array())
        .expect("a backorder");
    assert_eq!(back["backorder_id"][0], pick_id);
    let back_moves = read(
        &rpc,
        "stock.move",
        json!([["picking_id", "=", back["id"]]]),
        vec!["product_uom_qty", "quantity"],
    )
    .await;
    assert_eq!(
        dec(&back_moves[0]["product_uom_qty"]),
        Decimal::ONE,
        "{back_moves:?}"
    );
    assert_eq!(
        read(
            &rpc,
            "stock.picking",
            json!([["id", "=", pick_id]]),
            vec!["state"]
        )
        .await[0]["state"],
        "done"
    );

    // Returns: the wizard proposes the delivered move; its receipt is linked and waits.
    let ctx =
        json!({"active_id": pick_id, "active_ids": [pick_id], "active_model": "stock.picking"});
    let w = create(&rpc, "stock.return.picking", json!({}), ctx).await;
    let lines = read(
        &rpc,
        "stock.return.picking.line",
        json!([["wizard_id", "=", w]]),
        vec!["id", "product_id", "move_id", "quantity", "move_quantity"],
    )
    .await;
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(
        (dec(&lines[0]["quantity"]), dec(&lines[0]["move_quantity"])),
        (Decimal::ZERO, Decimal::from(2))
    );
    assert!(lines[0]["move_id"].is_array());
    rpc.call(&Call::Write {
        model: "stock.return.picking",
        ids: vec![w],
        vals: json!({"product_return_moves": [[1, lines[0]["id"], {"quantity": 1}]]}),
    })
    .await
    .unwrap();
    let action = method(
        &rpc,
        "stock.return.picking",
        "action_create_returns",
        w,
        Value::Null,
    )
    .await;
    let receipt = action["res_id"].as_i64().unwrap();
    let r = &read(
        &rpc,
        "stock.picking",
        json!([["id", "=", receipt]]),
        vec!["state", "return_id", "origin"],
    )
    .await[0];
    assert_eq!(
        (r["state"].as_str(), r["return_id"][0].as_i64()),
        (Some("assigned"), Some(pick_id)),
        "{r}"
    );
    let rm = &read(
        &rpc,
        "stock.move",
        json!([["picking_id", "=", receipt]]),
        vec!["origin_returned_move_id", "to_refund"],
    )
    .await[0];
    assert!(
        rm["origin_returned_move_id"].is_array() && rm["to_refund"] == true,
        "{rm}"
    );
    // Lines given without their move: a return Odoo does not link to the delivery.
    let w = create(&rpc, "stock.return.picking", json!({"picking_id": pick_id, "product_return_moves": [[0, 0, {"product_id": p1, "quantity": 1}]]}), Value::Null).await;
    let action = method(
        &rpc,
        "stock.return.picking",
        "action_create_returns",
        w,
        Value::Null,
    )
    .await;
    let rm = &read(
        &rpc,
        "stock.move",
        json!([["picking_id", "=", action["res_id"]]]),
        vec!["origin_returned_move_id"],
    )
    .await[0];
    assert_eq!(rm["origin_returned_move_id"], false, "{rm}");

    // Taxes: two on one line, a price-included one; a pricelist in another currency.
    let taxes = read(
        &rpc,
        "account.tax",
        json!([["type_tax_use", "=", "sale"]]),
        vec!["id", "amount", "price_include"],
    )
    .await;
    let tax = |amount: i64, inc: bool| {
        taxes
            .iter()
            .find(|t| dec(&t["amount"]) == Decimal::from(amount) && t["price_include"] == inc)
            .unwrap()["id"]
            .clone()
    };
    let so4 = create(&rpc, "sale.order", order(json!([
        [0, 0, {"product_id": p0, "product_uom_qty": 2, "price_unit": "10.00", "tax_id": [[6, 0, [tax(5, false), tax(7, false)]]]}],
        [0, 0, {"product_id": p0, "product_uom_qty": 1, "price_unit": "24.00", "tax_id": [[6, 0, [tax(20, true)]]]}]]), json!({})), Value::Null).await;
    let o = &read(
        &rpc,
        "sale.order",
        json!([["id", "=", so4]]),
        vec!["amount_untaxed", "amount_tax", "amount_total"],
    )
    .await[0];
    assert_eq!(
        (
            dec(&o["amount_untaxed"]),
            dec(&o["amount_tax"]),
            dec(&o["amount_total"])
        ),
        (
            Decimal::new(4000, 2),
            Decimal::new(640, 2),
            Decimal::new(4640, 2)
        ),
        "20.00 + 1.00 + 1.40, and 24.00 with 4.00 included: {o}"
    );
    let hkd = read(
        &rpc,
        "product.pricelist",
        json!([]),
        vec!["id", "currency_id"],
    )
    .await;
    let so5 = create(
        &rpc,
        "sale.order",
        order(
            json!([[0, 0, {"product_id": p0, "product_uom_qty": 1, "price_unit": "78"}]]),
            json!({"pricelist_id": hkd[0]["id"]}),
        ),
        Value::Null,
    )
    .await;
    let o = &read(
        &rpc,
        "sale.order",
        json!([["id", "=", so5]]),
        vec!["currency_id"],
    )
    .await[0];
    assert_eq!(o["currency_id"][1], "HKD");
    let us = read(
        &rpc,
        "res.country",
        json!([["code", "=", "US"]]),
        vec!["id", "name"],
    )
    .await;
    let ca = read(
        &rpc,
        "res.country.state",
        json!([["country_id", "=", us[0]["id"]], ["code", "=", "CA"]]),
        vec!["name"],
    )
    .await;
    assert_eq!(
        (us[0]["name"].as_str(), ca[0]["name"].as_str()),
        (Some("United States"), Some("California"))
    );

    // A method that returns None: JSON-RPC leaves `result` out, XML-RPC answers a fault
    // (which the client reads as a None answer); the effect is there either way.
    let raw: Value = reqwest::Client::new()
        .post(format!("{}/jsonrpc", emu.url()))
        .json(&json!({"jsonrpc": "2.0", "method": "call", "id": 1, "params": {"service": "object", "method": "execute_kw",
            "args": ["odoo", 2, "odoo-api-key", "sale.order", "action_unlock", [[so5]], {}]}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        raw.get("result").is_none() && raw.get("error").is_none(),
        "{raw}"
    );
    let body = reqwest::Client::new()
        .post(format!("{}/xmlrpc/2/object", emu.url()))
        .header("content-type", "text/xml")
        .body(format!(
            "<?xml version=\"1.0\"?><methodCall><methodName>execute_kw</methodName><params><param><value><string>odoo</string></value></param>\
             <param><value><int>2</int></value></param><param><value><string>odoo-api-key</string></value></param>\
             <param><value><string>sale.order</string></value></param><param><value><string>action_unlock</string></value></param>\
             <param><value><array><data><value><array><data><value><int>{so5}</int></value></data></array></value></data></array></value></param>\
             </params></methodCall>"
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        body.contains("<fault>") && body.contains("cannot marshal None"),
        "{body}"
    );
    assert_eq!(
        method(&xml, "sale.order", "action_unlock", so5, Value::Null).await,
        Value::Null
    );
}

/// What a warehouse shipment does through the API, as measured on the real server (the
/// probes behind `pipeline/docs/odoo-18-real-behaviour.md`):
/// - `stock.picking.carrier_tracking_ref` exists only with the stock_delivery module: without
///   it a write is `ValueError: Invalid field 'carrier_tracking_ref' on model 'stock.picking'`,
///   and `fields_get` does not list it;
/// - writing `stock.move.quantity` below the reservation (with `picked`) makes the move
///   `partially_available` and leaves the picking `assigned`; `button_validate` answers the
///   backorder wizard, and `process` validates what was picked and backorders the rest;
/// - `process_cancel_backorder` does not split the move: it is `done` with its demand kept and
///   its quantity what was done; the sale line delivered that much;
/// - a quantity above the demand is validated as it is (over-delivery);
/// - `button_validate` on a done picking answers `true` and changes nothing;
/// - `stock.quant.write({"inventory_quantity"})` + `action_apply_inventory` (None) sets the
///   quantity on hand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipments_and_counts_through_the_api_behave_as_on_a_real_odoo_18() {
    let db = Db::start();
    let c = db.cluster.superuser_client("odoo").await.unwrap();
    let info = odoo::create(
        &c,
        &SeedConfig {
            products: 2,
            customers: 1,
            ..SeedConfig::default()
        },
    )
    .await
    .unwrap();
    let stock = info.warehouses[0].stock_location_id;
    let p0 = info.products[0].id as i64;
    c.batch_execute(&format!(
        "UPDATE stock_quant SET quantity = 50, reserved_quantity = 0 WHERE product_id = {p0} AND location_id = {stock}"
    ))
    .await
    .unwrap();
    let emu = OdooRpcEmulator::start(EmuCfg::new(&db.cluster.superuser_url("odoo")), 0)
        .await
        .unwrap();
    let rpc = client(&emu.url(), Protocol::JsonRpc);
    let partner = info.customers[0] as i64;
    let order = |qty: i64| {
        let rpc = &rpc;
        async move {
            let so = create(
                rpc,
                "sale.order",
                json!({"partner_id": partner, "order_line": [[0, 0, {"product_id": p0, "product_uom_qty": qty, "tax_id": [[6, 0, []]]}]]}),
                Value::Null,
            )
            .await;
            method(rpc, "sale.order", "action_confirm", so, Value::Null).await;
            let p = read(
                rpc,
                "stock.picking",
                json!([["sale_id", "=", so]]),
                vec!["id"],
            )
            .await[0]["id"]
                .as_i64()
                .unwrap();
            let m = read(
                rpc,
                "stock.move",
                json!([["picking_id", "=", p]]),
                vec!["id"],
            )
            .await[0]["id"]
                .as_i64()
                .unwrap();
            (so, p, m)
        }
    };
    let write = |model: &'static str, id: i64, vals: Value| {
        let rpc = &rpc;
        async move {
            rpc.call(&Call::Write {
                model,
                ids: vec![id],
                vals,
            })
            .await
        }
    };
    let one = |model: &'static str, id: i64, fields: Vec<&'static str>| {
        let rpc = &rpc;
        async move { read(rpc, model, json!([["id", "=", id]]), fields).await[0].clone() }
    };

    // No tracking field without stock_delivery.
    let (_, p, m) = order(3).await;
    let e = write("stock.picking", p, json!({"carrier_tracking_ref": "1ZA"}))
        .await
        .unwrap_err();
    assert!(
        e.message
            .contains("Invalid field 'carrier_tracking_ref' on model 'stock.picking'"),
        "{e}"
    );
    let fields = rpc
        .call(&Call::Method {
            model: "stock.picking",
            method: "fields_get",
            ids: Vec::new(),
            kwargs: Map::new(),
        })
        .await
        .unwrap();
    assert!(fields.get("carrier_tracking_ref").is_none() && fields.get("state").is_some());

    // 2 of 3 picked: partially available, the picking still ready; the wizard, then process.
    write("stock.move", m, json!({"quantity": "2", "picked": true}))
        .await
        .unwrap();
    let mv = one("stock.move", m, vec!["quantity", "state", "picked"]).await;
    assert_eq!(
        (dec(&mv["quantity"]), mv["state"].clone()),
        (Decimal::from(2), json!("partially_available"))
    );
    assert_eq!(
        one("stock.picking", p, vec!["state"]).await["state"],
        "assigned"
    );
    let answer = method(&rpc, "stock.picking", "button_validate", p, Value::Null).await;
    assert_eq!(
        answer["res_model"], "stock.backorder.confirmation",
        "{answer}"
    );
    assert!(answer["res_id"].is_null());
    let w = create(
        &rpc,
        "stock.backorder.confirmation",
        json!({}),
        answer["context"].clone(),
    )
    .await;
    method(
        &rpc,
        "stock.backorder.confirmation",
        "process",
        w,
        answer["context"].clone(),
    )
    .await;
    let mv = one(
        "stock.move",
        m,
        vec!["quantity", "product_uom_qty", "state"],
    )
    .await;
    assert_eq!(
        (
            dec(&mv["quantity"]),
            dec(&mv["product_uom_qty"]),
            mv["state"].clone()
        ),
        (Decimal::from(2), Decimal::from(2), json!("done"))
    );
    let back = read(
        &rpc,
        "stock.picking",
        json!([["backorder_id", "=", p]]),
        vec!["id", "state"],
    )
    .await;
    assert_eq!(back.len(), 1);
    assert_eq!(back[0]["state"], "assigned");
    // Validating the done picking again: true, nothing changes.
    assert_eq!(
        method(&rpc, "stock.picking", "button_validate", p, Value::Null).await,
        json!(true)
    );
    assert_eq!(
        read(
            &rpc,
            "stock.picking",
            json!([["backorder_id", "=", p]]),
            vec!["id"]
        )
        .await
        .len(),
        1
    );

    // No backorder: 1 of 2 done, the move kept whole with its demand, 1 delivered.
    let (so, p, m) = order(2).await;
    write("stock.move", m, json!({"quantity": "1", "picked": true}))
        .await
        .unwrap();
    let answer = method(&rpc, "stock.picking", "button_validate", p, Value::Null).await;
    let w = create(
        &rpc,
        "stock.backorder.confirmation",
        json!({}),
        answer["context"].clone(),
    )
    .await;
    method(
        &rpc,
        "stock.backorder.confirmation",
        "process_cancel_backorder",
        w,
        answer["context"].clone(),
    )
    .await;
    let moves = read(
        &rpc,
        "stock.move",
        json!([["picking_id", "=", p]]),
        vec!["quantity", "product_uom_qty", "state"],
    )
    .await;
    assert_eq!(moves.len(), 1, "{moves:?}");
    assert_eq!(
        (
            dec(&moves[0]["quantity"]),
            dec(&moves[0]["product_uom_qty"]),
            moves[0]["state"].clone()
        ),
        (Decimal::from(1), Decimal::from(2), json!("done"))
    );
    assert_eq!(
        one("stock.picking", p, vec!["state"]).await["state"],
        "done"
    );
    let line = read(
        &rpc,
        "sale.order.line",
        json!([["order_id", "=", so]]),
        vec!["qty_delivered"],
    )
    .await;
    assert_eq!(dec(&line[0]["qty_delivered"]), Decimal::from(1));

    // Over-delivery: 2 done on a demand of 1, validated as it is.
    let (_, p, m) = order(1).await;
    write("stock.move", m, json!({"quantity": "2", "picked": true}))
        .await
        .unwrap();
    assert_eq!(
        method(&rpc, "stock.picking", "button_validate", p, Value::Null).await,
        json!(true)
    );
    let mv = one(
        "stock.move",
        m,
        vec!["quantity", "product_uom_qty", "state"],
    )
    .await;
    assert_eq!(
        (
            dec(&mv["quantity"]),
            dec(&mv["product_uom_qty"]),
            mv["state"].clone()
        ),
        (Decimal::from(2), Decimal::from(1), json!("done"))
    );

    // A count: the quant's inventory quantity, applied (None), is the quantity on hand.
    let q = read(
        &rpc,
        "stock.quant",
        json!([["product_id", "=", p0], ["location_id", "=", stock]]),
        vec!["id", "quantity"],
    )
    .await;
    let q = q[0]["id"].as_i64().unwrap();
    write("stock.quant", q, json!({"inventory_quantity": "10"}))
        .await
        .unwrap();
    let applied = rpc
        .call(&Call::Method {
            model: "stock.quant",
            method: "action_apply_inventory",
            ids: vec![q],
            kwargs: Map::new(),
        })
        .await
        .unwrap();
    assert!(applied.is_null());
    let after = one("stock.quant", q, vec!["quantity", "inventory_quantity_set"]).await;
    assert_eq!(dec(&after["quantity"]), Decimal::from(10), "{after}");
    assert_eq!(after["inventory_quantity_set"], false);
}
