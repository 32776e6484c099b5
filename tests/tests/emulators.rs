//! The accounting and WMS emulators behave like the real services on every point odoo-cdc
//! relies on (external-apis.md), and the shared fault injection and inspection API work.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fixtures::emulator::accounting::{AccountingConfig, AccountingEmulator};
use fixtures::emulator::signing;
use fixtures::emulator::wms::{WmsConfig, WmsEmulator};
use fixtures::emulator::{Faults, Outage};
use serde_json::{json, Value};

fn basic(cfg: &AccountingConfig) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", cfg.client_id, cfg.client_secret))
    )
}

async fn token(
    http: &reqwest::Client,
    emu: &AccountingEmulator,
    cfg: &AccountingConfig,
    refresh: &str,
) -> reqwest::Response {
    http.post(format!("{}/oauth2/v1/tokens/bearer", emu.url()))
        .header("authorization", basic(cfg))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("grant_type=refresh_token&refresh_token={refresh}"))
        .send()
        .await
        .unwrap()
}

fn entry(debit: &str, credit: &str, with_entity: bool) -> Value {
    let mut ar = json!({"PostingType": "Debit", "AccountRef": {"value": "84"}});
    if with_entity {
        ar["Entity"] = json!({"Type": "Customer", "EntityRef": {"value": "7"}});
    }
    json!({"DocNumber": "INV/2026/00001", "Line": [
        {"Amount": debit.parse::<f64>().unwrap(), "DetailType": "JournalEntryLineDetail", "JournalEntryLineDetail": ar},
        {"Amount": credit.parse::<f64>().unwrap(), "DetailType": "JournalEntryLineDetail",
         "JournalEntryLineDetail": {"PostingType": "Credit", "AccountRef": {"value": "79"}}}
    ]})
}

#[tokio::test]
async fn accounting_validates_replays_batches_throttles_and_rolls_tokens() {
    let cfg = AccountingConfig::default();
    let emu = AccountingEmulator::start(cfg.clone(), 0).await.unwrap();
    let http = reqwest::Client::new();

    // OAuth2: the refresh token rolls; the old one is refused afterwards.
    let t1: Value = token(&http, &emu, &cfg, &cfg.refresh_token)
        .await
        .json()
        .await
        .unwrap();
    let access = t1["access_token"].as_str().unwrap().to_string();
    assert_eq!(t1["expires_in"], 3600);
    assert_ne!(t1["refresh_token"], json!(cfg.refresh_token));
    let again = token(&http, &emu, &cfg, &cfg.refresh_token).await;
    assert_eq!(again.status(), 400);
    assert_eq!(
        again.json::<Value>().await.unwrap()["error"],
        "invalid_grant"
    );
    assert_eq!(emu.refresh_token(), t1["refresh_token"].as_str().unwrap());

    let url = format!("{}/v3/company/{}/journalentry", emu.url(), cfg.realm_id);
    let post = |body: Value, requestid: &str, bearer: &str| {
        http.post(format!("{url}?requestid={requestid}&minorversion=75"))
            .bearer_auth(bearer)
            .json(&body)
            .send()
    };
    // No or bad token: 401 with an AuthenticationFault.
    let r = post(entry("10", "10", true), "r0", "nope").await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.json::<Value>().await.unwrap()["Fault"]["type"],
        "AuthenticationFault"
    );

    // Unbalanced, and A/R without an entity: ValidationFault, nothing booked.
    let r = post(entry("100.00", "99.99", true), "r1", &access)
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let f: Value = r.json().await.unwrap();
    assert_eq!(f["Fault"]["type"], "ValidationFault");
    assert!(
        f["Fault"]["Error"][0]["Detail"]
            .as_str()
            .unwrap()
            .contains("must balance"),
        "{f}"
    );
    let r = post(entry("10", "10", false), "r2", &access).await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("Accounts Receivable"));
    assert!(emu.entries().is_empty());

    // Balanced: booked once; the same requestid replays the original answer.
    let first: Value = post(entry("115.00", "115.00", true), "move-42-post-1", &access)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let second: Value = post(entry("115.00", "115.00", true), "move-42-post-1", &access)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(first["JournalEntry"]["Id"], "1");
    assert_eq!(first, second);
    assert_eq!(emu.entries().len(), 1);
    let long = "x".repeat(51);
    assert_eq!(
        post(entry("1", "1", true), &long, &access)
            .await
            .unwrap()
            .status(),
        400
    );

    // Batch: at most 30 items; a bad item is a Fault inside a 200.
    let batch_url = format!("{}/v3/company/{}/batch", emu.url(), cfg.realm_id);
    let items: Vec<Value> = (0..31)
        .map(|i| json!({"bId": i.to_string(), "operation": "create", "JournalEntry": entry("1", "1", true)}))
        .collect();
    let r = http
        .post(&batch_url)
        .bearer_auth(&access)
        .json(&json!({"BatchItemRequest": items}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = http
        .post(&batch_url)
        .bearer_auth(&access)
        .json(&json!({"BatchItemRequest": [
            {"bId": "a", "operation": "create", "JournalEntry": entry("5", "5", true)},
            {"bId": "b", "operation": "create", "JournalEntry": entry("5", "4", true)}
        ]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["BatchItemResponse"][0]["bId"], "a");
    assert!(b["BatchItemResponse"][0]["JournalEntry"]["Id"].is_string());
    assert_eq!(b["BatchItemResponse"][1]["bId"], "b");
    assert_eq!(
        b["BatchItemResponse"][1]["Fault"]["type"],
        "ValidationFault"
    );

    // Throttle: more than 10 requests within a second get 429 with a ThrottleExceeded fault.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut statuses = Vec::new();
    for i in 0..12 {
        let r = post(entry("1", "1", true), &format!("t{i}"), &access)
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
        if r.status() == 429 {
            assert_eq!(
                r.json::<Value>().await.unwrap()["Fault"]["Error"][0]["code"],
                "003001"
            );
        }
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        10,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        2,
        "{statuses:?}"
    );
}

#[tokio::test]
async fn access_tokens_expire_after_an_emulated_hour() {
    let cfg = AccountingConfig {
        time_scale: 7200.0,
        ..AccountingConfig::default()
    };
    let emu = AccountingEmulator::start(cfg.clone(), 0).await.unwrap();
    let http = reqwest::Client::new();
    let t: Value = token(&http, &emu, &cfg, &cfg.refresh_token)
        .await
        .json()
        .await
        .unwrap();
    // Half a wall second is an emulated hour.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let r = http
        .post(format!(
            "{}/v3/company/{}/journalentry",
            emu.url(),
            cfg.realm_id
        ))
        .bearer_auth(t["access_token"].as_str().unwrap())
        .json(&entry("1", "1", true))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.text().await.unwrap().contains("Token expired"));
}

#[tokio::test]
async fn wms_dedupes_cancels_and_delivers_signed_shipment_webhooks_with_retries() {
    // A receiver that fails twice, then accepts, and checks every signature.
    let received: Arc<Mutex<Vec<Value>>> = Arc::default();
    let calls = Arc::new(AtomicU32::new(0));
    let secret = "whsec";
    let app = {
        let received = received.clone();
        let calls = calls.clone();
        axum::Router::new().route(
            "/hooks/wms",
            axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
                let received = received.clone();
                let calls = calls.clone();
                async move {
                    let sig = headers
                        .get("x-wms-hmac-sha256")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    assert!(
                        signing::verify(secret.as_bytes(), body.as_bytes(), sig),
                        "bad signature"
                    );
                    if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                        return axum::http::StatusCode::INTERNAL_SERVER_ERROR;
                    }
                    received
                        .lock()
                        .unwrap()
                        .push(serde_json::from_str(&body).unwrap());
                    axum::http::StatusCode::OK
                }
            }),
        )
    };
    let receiver = fixtures::emulator::Server::start(app, 0).await.unwrap();
    let cfg = WmsConfig {
        webhook_url: Some(format!("{}/hooks/wms", receiver.url())),
        webhook_secret: secret.into(),
        time_scale: 600.0,
        ..WmsConfig::default()
    };
    let emu = WmsEmulator::start(cfg.clone(), 0).await.unwrap();
    let http = reqwest::Client::new();
    let orders = format!("{}/v1/fulfillment_orders", emu.url());
    let order = json!({"reference": "WH/OUT/00017", "lines": [{"sku": "SKU-00001", "quantity": 2}],
                       "ship_to": {"name": "Ada Lovelace", "city": "London"}, "carrier": "UPS"});
    assert_eq!(
        http.post(&orders)
            .json(&order)
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let r = http
        .post(&orders)
        .bearer_auth(&cfg.api_key)
        .json(&order)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.unwrap();
    let r = http
        .post(&orders)
        .bearer_auth(&cfg.api_key)
        .json(&order)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    assert_eq!(
        r.json::<Value>().await.unwrap()["order"]["id"],
        created["id"]
    );
    let bad = json!({"reference": "WH/OUT/00018", "lines": [], "ship_to": {}});
    assert_eq!(
        http.post(&orders)
            .bearer_auth(&cfg.api_key)
            .json(&bad)
            .send()
            .await
            .unwrap()
            .status(),
        422
    );

    // A second order is cancelled before it ships; unknown references are 404.
    let other = json!({"reference": "WH/OUT/00019", "lines": [{"sku": "SKU-00002", "quantity": 1}], "ship_to": {}});
    assert_eq!(
        http.post(&orders)
            .bearer_auth(&cfg.api_key)
            .json(&other)
            .send()
            .await
            .unwrap()
            .status(),
        201
    );
    let r = http
        .post(format!("{orders}/WH%2FOUT%2F00019/cancel"))
        .bearer_auth(&cfg.api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "cancelled");
    assert_eq!(
        http.post(format!("{orders}/nope/cancel"))
            .bearer_auth(&cfg.api_key)
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    // 60 emulated seconds later the first ships; its webhook is retried until accepted.
    let mut ok = false;
    for _ in 0..100 {
        if !received.lock().unwrap().is_empty() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "no shipment webhook arrived: {:?}", emu.deliveries());
    let hook = received.lock().unwrap()[0].clone();
    assert_eq!(hook["reference"], "WH/OUT/00017");
    assert_eq!(
        hook["lines"][0],
        json!({"sku": "SKU-00001", "shipped_quantity": 2})
    );
    assert!(hook["tracking_number"].is_string());
    let attempts: Vec<u64> = emu
        .deliveries()
        .iter()
        .map(|d| d["status"].as_u64().unwrap())
        .collect();
    assert_eq!(attempts, vec![500, 500, 200]);
    assert_eq!(emu.orders()["WH/OUT/00017"].status, "shipped");
    assert_eq!(emu.orders()["WH/OUT/00019"].status, "cancelled");
    // Cancelling a shipped order is refused.
    let r = http
        .post(format!("{orders}/WH%2FOUT%2F00017/cancel"))
        .bearer_auth(&cfg.api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
}

#[tokio::test]
async fn faults_and_inspection_api() {
    let cfg = WmsConfig::default();
    let emu = WmsEmulator::start(cfg.clone(), 0).await.unwrap();
    let http = reqwest::Client::new();
    let list = format!("{}/v1/fulfillment_orders", emu.url());

    // 500 twice, then success.
    emu.core().set_faults(Faults {
        fail_next: 2,
        ..Faults::default()
    });
    let mut s = Vec::new();
    for _ in 0..3 {
        s.push(
            http.get(&list)
                .bearer_auth(&cfg.api_key)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16(),
        );
    }
    assert_eq!(s, vec![500, 500, 200]);

    // Faults set over HTTP: every request throttled with Retry-After.
    let r = http
        .post(format!("{}/_emulator/faults", emu.url()))
        .json(&json!({"throttle_rate": 1.0, "retry_after_secs": 7}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = http
        .get(&list)
        .bearer_auth(&cfg.api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "7");
    let bad = http
        .post(format!("{}/_emulator/faults", emu.url()))
        .json(&json!({"typo_rate": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 422, "unknown fault fields are refused");

    // A scheduled outage answers 503; a dropped connection is a client error.
    emu.core().set_faults(Faults {
        outages: vec![Outage {
            start_secs: 0.0,
            end_secs: 1e9,
        }],
        ..Faults::default()
    });
    assert_eq!(
        http.get(&list)
            .bearer_auth(&cfg.api_key)
            .send()
            .await
            .unwrap()
            .status(),
        503
    );
    emu.core().set_faults(Faults {
        drop_rate: 1.0,
        ..Faults::default()
    });
    let dropped = match http.get(&list).bearer_auth(&cfg.api_key).send().await {
        Ok(r) => r.text().await.is_err(),
        Err(_) => true,
    };
    assert!(dropped, "the connection was not dropped");
    emu.core().set_faults(Faults::default());

    // Every request is in the log with method, path, headers and body.
    http.post(&list)
        .bearer_auth(&cfg.api_key)
        .json(&json!({"reference": "R1", "lines": [{"sku": "A", "quantity": 1}], "ship_to": {}}))
        .send()
        .await
        .unwrap();
    let log: Vec<Value> = http
        .get(format!("{}/_emulator/requests", emu.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let last = log.last().unwrap();
    assert_eq!(last["method"], "POST");
    assert_eq!(last["path"], "/v1/fulfillment_orders");
    assert_eq!(last["headers"]["authorization"], "Bearer wms-key");
    assert!(last["body"].as_str().unwrap().contains("\"R1\""));
    assert!(log
        .iter()
        .all(|r| !r["path"].as_str().unwrap().starts_with("/_emulator")));
    let state: Value = http
        .get(format!("{}/_emulator/state", emu.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(state["orders"]["R1"]["status"], "open");
}

#[tokio::test]
async fn fixtures_serve_runs_an_emulator_standalone() {
    use std::io::BufRead;
    let mut child = std::process::Command::new(odoo_cdc_tests::odoo_cdc_bin())
        .args(["fixtures", "serve", "wms", "--port", "0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let url = tokio::task::spawn_blocking(move || {
        std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find_map(|l| l.strip_prefix("service wms ").map(str::to_string))
    })
    .await
    .unwrap()
    .expect("a `service wms <url>` line");
    let http = reqwest::Client::new();
    let state: Value = http
        .get(format!("{url}/_emulator/state"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    child.kill().ok();
    let _ = child.wait();
    assert!(state["orders"].is_object(), "{state}");
}

#[tokio::test]
async fn fixtures_serve_shopify_takes_a_catalogue() {
    use std::io::BufRead;
    let dir = odoo_cdc_tests::scratch_dir();
    let file = dir.join("catalogue.csv");
    std::fs::write(
        &file,
        "sku,available,location_id\nDESK0005,65\nE-COM07,350,2\n",
    )
    .unwrap();
    let mut child = std::process::Command::new(odoo_cdc_tests::odoo_cdc_bin())
        .args([
            "fixtures",
            "serve",
            "shopify",
            "--port",
            "0",
            "--catalogue",
            file.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let url = tokio::task::spawn_blocking(move || {
        std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find_map(|l| l.strip_prefix("service shopify ").map(str::to_string))
    })
    .await
    .unwrap()
    .expect("a `service shopify <url>` line");
    let state: Value = reqwest::get(format!("{url}/_emulator/state"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    child.kill().ok();
    let _ = child.wait();
    let mut levels: Vec<(String, u64, i64)> = state["levels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["sku"].as_str().unwrap().to_string(),
                l["location_id"].as_u64().unwrap(),
                l["quantities"]["available"].as_i64().unwrap(),
            )
        })
        .collect();
    levels.sort();
    assert_eq!(
        levels,
        vec![("DESK0005".into(), 1, 65), ("E-COM07".into(), 2, 350)],
        "{state}"
    );
    // A catalogue naming a location the emulator does not have is refused, saying so.
    std::fs::write(&file, "A,1,9\n").unwrap();
    let out = odoo_cdc_tests::odoo_cdc(&[
        "fixtures",
        "serve",
        "shopify",
        "--catalogue",
        file.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("location 9"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The WMS ships in parcels: each is a `shipment/created` with its `sequence`, `final` and
/// tracking; an order shipped in part cannot be amended (409) and cancelling it cancels only
/// the rest; a redelivery keeps the event id; receipts and counts are signed webhooks too.
#[tokio::test]
async fn wms_ships_in_parcels_and_sends_receipts_and_counts() {
    let secret = "wms-secret";
    let received = Arc::new(Mutex::new(Vec::<(String, String, Value, bool)>::new()));
    let app = {
        let received = received.clone();
        axum::Router::new().route(
            "/hooks/wms",
            axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
                let received = received.clone();
                async move {
                    let h = |n: &str| {
                        headers
                            .get(n)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_string()
                    };
                    let signed = signing::verify(
                        secret.as_bytes(),
                        body.as_bytes(),
                        &h("x-wms-hmac-sha256"),
                    );
                    received.lock().unwrap().push((
                        h("x-wms-topic"),
                        h("x-wms-event-id"),
                        serde_json::from_str(&body).unwrap_or(Value::Null),
                        signed,
                    ));
                    axum::http::StatusCode::OK
                }
            }),
        )
    };
    let receiver = fixtures::emulator::Server::start(app, 0).await.unwrap();
    let cfg = WmsConfig {
        webhook_url: Some(format!("{}/hooks/wms", receiver.url())),
        webhook_secret: secret.into(),
        ship_delay: Duration::from_secs(36_000),
        ..WmsConfig::default()
    };
    let emu = WmsEmulator::start(cfg.clone(), 0).await.unwrap();
    let http = reqwest::Client::new();
    let orders = format!("{}/v1/fulfillment_orders", emu.url());
    let r = http
        .post(&orders)
        .bearer_auth(&cfg.api_key)
        .json(&json!({"reference": "WH/OUT/00001", "lines": [{"sku": "A", "quantity": 3}], "ship_to": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let ship = |body: Value| {
        let http = http.clone();
        let url = format!(
            "{}/_emulator/fulfillment_orders/WH%2FOUT%2F00001/ship",
            emu.url()
        );
        async move { http.post(url).json(&body).send().await.unwrap() }
    };
    let first: Value =
        ship(json!({"lines": [{"sku": "A", "quantity": 2}], "tracking_number": "T1"}))
            .await
            .json()
            .await
            .unwrap();
    assert_eq!(
        (first["sequence"].as_u64(), first["final"].as_bool()),
        (Some(1), Some(false))
    );
    assert_eq!(emu.orders()["WH/OUT/00001"].status, "partially_shipped");
    assert_eq!(emu.orders()["WH/OUT/00001"].lines[0].shipped_quantity, 2);
    // More than is left: refused.
    assert_eq!(
        ship(json!({"lines": [{"sku": "A", "quantity": 2}]}))
            .await
            .status(),
        422
    );
    // Shipped in part: no amendment.
    let r = http
        .put(format!("{orders}/WH%2FOUT%2F00001"))
        .bearer_auth(&cfg.api_key)
        .json(&json!({"lines": [{"sku": "A", "quantity": 1}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    // Cancelling it cancels the rest; the shipped parcel stays.
    let r = http
        .post(format!("{orders}/WH%2FOUT%2F00001/cancel"))
        .bearer_auth(&cfg.api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(ship(json!({})).await.status(), 409);
    let o = &emu.orders()["WH/OUT/00001"];
    assert_eq!((o.status.as_str(), o.shipments.len()), ("cancelled", 1));
    // A receipt and a count.
    let r = http
        .post(format!("{}/_emulator/receipts", emu.url()))
        .json(&json!({"reference": "WH/IN/00001", "lines": [{"sku": "A", "quantity": 5}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = http
        .post(format!("{}/_emulator/inventory", emu.url()))
        .json(&json!({"topic": "inventory/snapshot", "lines": [{"sku": "A", "on_hand": 7}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let bad = http
        .post(format!("{}/_emulator/inventory", emu.url()))
        .json(&json!({"topic": "inventory/guess", "lines": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 422);
    for _ in 0..100 {
        if received.lock().unwrap().len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got = received.lock().unwrap().clone();
    assert!(
        got.iter().all(|g| g.3),
        "every webhook signed with the secret"
    );
    let topics: Vec<&str> = got.iter().map(|(t, _, _, _)| t.as_str()).collect();
    assert_eq!(
        topics,
        vec!["shipment/created", "receipt/received", "inventory/snapshot"]
    );
    let (_, event, body, _) = &got[0];
    assert_eq!(body["event_id"], event.as_str());
    assert_eq!(body["tracking_number"], "T1");
    assert_eq!(body["lines"][0], json!({"sku": "A", "shipped_quantity": 2}));
    assert_eq!(
        got[1].2["lines"][0],
        json!({"sku": "A", "received_quantity": 5})
    );
    assert_eq!(got[2].2["lines"][0], json!({"sku": "A", "on_hand": 7}));
    // A redelivery is the same event.
    let r = http
        .post(format!("{}/_emulator/events/{event}/redeliver", emu.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let again = received.lock().unwrap().last().cloned().unwrap();
    assert_eq!(
        (again.1.as_str(), again.2.clone()),
        (event.as_str(), body.clone())
    );
}

/// QuickBooks' query endpoint as far as journal entries go: pages of at most 1,000 by
/// STARTPOSITION / MAXRESULTS, `WHERE TxnDate >= ...`, an empty `QueryResponse` when nothing
/// matches, a parser Fault for what it does not read; a deleted entry is gone from the queries
/// while its requestid still replays the first answer, and ids are never reused.
#[tokio::test]
async fn accounting_queries_page_filter_and_see_deletions() {
    let cfg = AccountingConfig::default();
    let emu = AccountingEmulator::start(cfg.clone(), 0).await.unwrap();
    let http = reqwest::Client::new();
    let t: Value = token(&http, &emu, &cfg, &cfg.refresh_token)
        .await
        .json()
        .await
        .unwrap();
    let access = t["access_token"].as_str().unwrap().to_string();
    let base = format!("{}/v3/company/{}", emu.url(), cfg.realm_id);
    for (i, date) in ["2026-11-30", "2026-12-01", "2026-12-02"]
        .iter()
        .enumerate()
    {
        let mut e = entry("10", "10", true);
        e["TxnDate"] = json!(date);
        let r = http
            .post(format!("{base}/journalentry?requestid=q{i}"))
            .bearer_auth(&access)
            .json(&e)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let query = |q: &str| {
        http.get(format!("{base}/query"))
            .query(&[("query", q), ("minorversion", "75")])
            .bearer_auth(&access)
            .send()
    };
    let ids = |v: &Value| -> Vec<String> {
        v["QueryResponse"]["JournalEntry"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|e| e["Id"].as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    let all: Value = query("select * from JournalEntry")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ids(&all), ["1", "2", "3"]);
    let page: Value = query("SELECT * FROM JournalEntry STARTPOSITION 2 MAXRESULTS 1")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ids(&page), ["2"]);
    assert_eq!(page["QueryResponse"]["startPosition"], 2);
    let since: Value = query("SELECT * FROM JournalEntry WHERE TxnDate >= '2026-12-01'")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ids(&since), ["2", "3"]);
    let none: Value = query("SELECT * FROM JournalEntry STARTPOSITION 10")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(none["QueryResponse"], json!({}));
    let bad = query("DELETE FROM JournalEntry").await.unwrap();
    assert_eq!(bad.status(), 400);
    assert!(bad.text().await.unwrap().contains("QueryParserError"));
    let unauthorized = http
        .get(format!("{base}/query"))
        .query(&[("query", "SELECT * FROM JournalEntry")])
        .send()
        .await
        .unwrap();
    assert_eq!(unauthorized.status(), 401);

    // Deleted in the books: gone from queries; its requestid still answers the first reply;
    // the next entry gets a new id (after a second: 10 requests a second, queries included).
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert!(emu.delete_entry("2"));
    assert!(!emu.delete_entry("2"));
    let all: Value = query("SELECT * FROM JournalEntry")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ids(&all), ["1", "3"]);
    let replayed: Value = http
        .post(format!("{base}/journalentry?requestid=q1"))
        .bearer_auth(&access)
        .json(&entry("10", "10", true))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(replayed["JournalEntry"]["Id"], "2");
    assert_eq!(emu.entries().len(), 2);
    let fresh: Value = http
        .post(format!("{base}/journalentry?requestid=q9"))
        .bearer_auth(&access)
        .json(&entry("10", "10", true))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(fresh["JournalEntry"]["Id"], "4", "{fresh}");
}
