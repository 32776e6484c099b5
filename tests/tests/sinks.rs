//! The WMS and accounting sinks against the emulators: idempotent effects, error classes,
//! token refresh with a rolling refresh token.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use fixtures::emulator::accounting::{AccountingConfig as EmuCfg, AccountingEmulator};
use fixtures::emulator::wms::{WmsConfig as WmsEmuCfg, WmsEmulator};
use fixtures::emulator::Faults;
use rust_decimal::Decimal;
use sinks::accounting::{AccountingClient, AccountingConfig, AccountingSink, MemoryTokens, Mode};
use sinks::wms::{WmsClient, WmsConfig, WmsSink};
use transforms::events::{EntryKind, JournalEntry, JournalLine, PickLine, ShipTo};
use transforms::RetailEvent;

fn request() -> RetailEvent {
    RetailEvent::FulfillmentRequested {
        reference: "WH/OUT/00017".into(),
        warehouse: "WH".into(),
        lines: vec![PickLine {
            sku: "SKU-1".into(),
            quantity: Decimal::from(2),
        }],
        ship_to: ShipTo {
            name: "Ada".into(),
            street: Some("1 Main St".into()),
            city: Some("London".into()),
            zip: None,
            state: None,
            country: Some("GB".into()),
        },
        carrier: None,
        backorder_of: None,
    }
}

#[tokio::test]
async fn wms_sink_is_idempotent_by_reference_and_classifies_errors() {
    let emu = WmsEmulator::start(WmsEmuCfg::default(), 0).await.unwrap();
    let sink = WmsSink::new(
        WmsClient::new(WmsConfig {
            base_url: emu.url(),
            api_key: "wms-key".into(),
            timeout: Duration::from_secs(5),
        })
        .unwrap(),
    );
    assert!(
        !sink.deliver(&request()).await.unwrap(),
        "first delivery creates"
    );
    assert!(
        sink.deliver(&request()).await.unwrap(),
        "a redelivery is success (409)"
    );
    assert_eq!(emu.orders().len(), 1);
    assert_eq!(emu.orders()["WH/OUT/00017"].lines[0].quantity, 2);

    emu.core().set_faults(Faults {
        fail_next: 1,
        ..Faults::default()
    });
    let err = sink
        .deliver(&RetailEvent::FulfillmentCancelled {
            reference: "WH/OUT/00017".into(),
            backorder_of: None,
        })
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err}");
    emu.core().set_faults(Faults {
        throttle_rate: 1.0,
        retry_after_secs: 3,
        ..Faults::default()
    });
    let err = sink.deliver(&request()).await.unwrap_err();
    assert!(err.is_transient());
    assert_eq!(err.retry_after, Some(Duration::from_secs(3)));
    emu.core().set_faults(Faults::default());
    sink.deliver(&RetailEvent::FulfillmentCancelled {
        reference: "WH/OUT/00017".into(),
        backorder_of: None,
    })
    .await
    .unwrap();
    assert_eq!(emu.orders()["WH/OUT/00017"].status, "cancelled");

    let bad = WmsSink::new(
        WmsClient::new(WmsConfig {
            base_url: emu.url(),
            api_key: "wrong".into(),
            timeout: Duration::from_secs(5),
        })
        .unwrap(),
    );
    assert!(
        !bad.deliver(&request()).await.unwrap_err().is_transient(),
        "401 is permanent"
    );
}

fn entry(move_id: i64, code: &str) -> JournalEntry {
    JournalEntry {
        move_id,
        posting: 1,
        name: format!("INV/2026/{move_id:05}"),
        kind: EntryKind::Invoice,
        date: Some("2026-11-29".into()),
        currency: Some("USD".into()),
        customer: Some((7, "Ada".into())),
        lines: vec![
            JournalLine {
                account_code: "121000".into(),
                account_type: "asset_receivable".into(),
                debit: "115.00".parse().unwrap(),
                credit: Decimal::ZERO,
                description: String::new(),
            },
            JournalLine {
                account_code: code.into(),
                account_type: "income".into(),
                debit: Decimal::ZERO,
                credit: "100.00".parse().unwrap(),
                description: "Desk".into(),
            },
            JournalLine {
                account_code: "251000".into(),
                account_type: "liability_current".into(),
                debit: Decimal::ZERO,
                credit: "15.00".parse().unwrap(),
                description: "15%".into(),
            },
        ],
    }
}

fn account_map() -> BTreeMap<String, String> {
    [("121000", "84"), ("400000", "79"), ("251000", "89")]
        .into_iter()
        .map(|(a, b)| (a.into(), b.into()))
        .collect()
}

/// The accounting client's settings for the emulator (real-time mode).
fn client_config(emu: &AccountingEmulator, emu_cfg: &EmuCfg) -> AccountingConfig {
    AccountingConfig {
        base_url: emu.url(),
        realm_id: emu_cfg.realm_id.clone(),
        client_id: emu_cfg.client_id.clone(),
        client_secret: emu_cfg.client_secret.clone(),
        account_map: account_map(),
        mode: Mode::RealTime,
        timeout: Duration::from_secs(5),
    }
}

/// A token store whose first read is from before another process rotated the token (as when
/// two workers refresh at once); later reads are the shared store's.
struct ReadBeforeRotation {
    stale: std::sync::Mutex<Option<String>>,
    shared: Arc<MemoryTokens>,
}

impl sinks::accounting::TokenStore for ReadBeforeRotation {
    fn load(&self) -> futures_util::future::BoxFuture<'_, Result<Option<String>, String>> {
        let stale = self.stale.lock().unwrap().take();
        Box::pin(async move {
            match stale {
                Some(t) => Ok(Some(t)),
                None => self.shared.load().await,
            }
        })
    }

    fn save<'a>(
        &'a self,
        token: &'a str,
    ) -> futures_util::future::BoxFuture<'a, Result<(), String>> {
        self.shared.save(token)
    }
}

/// Two odoo-cdc processes share the rolling refresh token: the one that read it just before
/// the other rotated it is refused (`invalid_grant`), reads the store again and refreshes with
/// the newest; nothing is dead-lettered for it. A grant that is really gone still fails, once.
#[tokio::test]
async fn a_refresh_token_rotated_by_another_process_is_read_again_not_dead_lettered() {
    use sinks::accounting::TokenStore;
    let emu_cfg = EmuCfg::default();
    let emu = AccountingEmulator::start(emu_cfg.clone(), 0).await.unwrap();
    let shared = Arc::new(MemoryTokens::with(&emu_cfg.refresh_token));
    let cfg = client_config(&emu, &emu_cfg);
    let sink = |store: Box<dyn TokenStore>| {
        AccountingSink::new(
            AccountingClient::new(cfg.clone(), store).unwrap(),
            account_map(),
            Mode::RealTime,
        )
    };
    // Worker B reads the token; worker A refreshes first and rotates it.
    let mut b = sink(Box::new(ReadBeforeRotation {
        stale: std::sync::Mutex::new(Some(emu_cfg.refresh_token.clone())),
        shared: shared.clone(),
    }));
    let mut a = sink(Box::new(shared.clone()));
    a.deliver(&entry(1, "400000")).await.unwrap();
    assert_ne!(shared.current().unwrap(), emu_cfg.refresh_token, "rotated");
    b.deliver(&entry(2, "400000")).await.unwrap();
    assert_eq!(emu.entries().len(), 2);
    assert_eq!(
        shared.current().unwrap(),
        emu.refresh_token(),
        "the newest is kept"
    );
    // A keeps its access token: it books without refreshing again.
    a.deliver(&entry(3, "400000")).await.unwrap();
    assert_eq!(emu.entries().len(), 3);

    // Revoked: the store holds nothing newer, and the refusal is permanent.
    let revoked = Arc::new(MemoryTokens::with("revoked-by-the-user"));
    let mut c = sink(Box::new(revoked));
    let err = c.deliver(&entry(4, "400000")).await.unwrap_err();
    assert!(
        !err.is_transient() && err.message.contains("invalid_grant"),
        "{err}"
    );
    assert_eq!(emu.entries().len(), 3);
}

#[tokio::test]
async fn accounting_sink_books_once_refreshes_tokens_and_batches() {
    let emu_cfg = EmuCfg {
        time_scale: 3600.0,
        ..EmuCfg::default()
    };
    let emu = AccountingEmulator::start(emu_cfg.clone(), 0).await.unwrap();
    let tokens = Arc::new(MemoryTokens::with(&emu_cfg.refresh_token));
    let cfg = client_config(&emu, &emu_cfg);
    let mut sink = AccountingSink::new(
        AccountingClient::new(cfg.clone(), Box::new(tokens.clone())).unwrap(),
        account_map(),
        Mode::RealTime,
    );
    sink.deliver(&entry(1, "400000")).await.unwrap();
    sink.deliver(&entry(1, "400000")).await.unwrap();
    assert_eq!(
        emu.entries().len(),
        1,
        "the requestid makes a redelivery a no-op"
    );
    let booked = &emu.entries()[0];
    assert_eq!(
        booked["Line"][0]["JournalEntryLineDetail"]["Entity"]["EntityRef"]["value"],
        "7"
    );
    assert_eq!(
        tokens.current().unwrap(),
        emu.refresh_token(),
        "the newest refresh token is persisted"
    );

    // An hour passes in a second: the access token expires and is renewed transparently.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    sink.deliver(&entry(2, "400000")).await.unwrap();
    assert_eq!(emu.entries().len(), 2);
    assert_eq!(tokens.current().unwrap(), emu.refresh_token());

    // A missing mapping is permanent and sends nothing.
    let err = sink.deliver(&entry(3, "999999")).await.unwrap_err();
    assert!(
        !err.is_transient()
            && err
                .message
                .contains("no account mapping for Odoo account 999999"),
        "{err}"
    );

    // Batch mode: the mapped entries are booked in one call, the unmapped one fails alone.
    let mut batch = AccountingSink::new(
        AccountingClient::new(cfg, Box::new(tokens.clone())).unwrap(),
        account_map(),
        Mode::Batch {
            size: 30,
            interval: Duration::from_secs(5),
            spacing: Duration::from_millis(1500),
        },
    );
    let before = emu.core().requests().len();
    let results = batch
        .deliver_all(&[entry(4, "400000"), entry(5, "999999"), entry(6, "400000")])
        .await;
    let ok: Vec<i64> = results
        .iter()
        .filter(|r| r.result.is_ok())
        .map(|r| r.move_id)
        .collect();
    assert_eq!(ok, vec![4, 6]);
    assert_eq!(emu.entries().len(), 4);
    let calls: Vec<String> = emu.core().requests()[before..]
        .iter()
        .map(|r| r.path.clone())
        .collect();
    assert_eq!(
        calls.iter().filter(|p| p.contains("/batch")).count(),
        1,
        "{calls:?}"
    );
}

#[tokio::test]
async fn wms_orders_follow_what_odoo_reserves_amended_never_duplicated() {
    let emu = WmsEmulator::start(
        WmsEmuCfg {
            ship_delay: Duration::from_secs(3600),
            ..WmsEmuCfg::default()
        },
        0,
    )
    .await
    .unwrap();
    let client = WmsClient::new(WmsConfig {
        base_url: emu.url(),
        api_key: "wms-key".into(),
        timeout: Duration::from_secs(5),
    })
    .unwrap();
    let sink = WmsSink::new(client);
    let with_qty = |q: i64| {
        let mut r = request();
        if let RetailEvent::FulfillmentRequested { lines, .. } = &mut r {
            lines[0].quantity = Decimal::from(q);
        }
        r
    };
    sink.deliver(&with_qty(2)).await.unwrap();
    // The reservation grew before it shipped: the same order, amended.
    assert!(
        !sink.deliver(&with_qty(3)).await.unwrap(),
        "an amendment is a change"
    );
    let orders = emu.orders();
    assert_eq!(orders.len(), 1);
    assert_eq!(
        (
            orders["WH/OUT/00017"].lines[0].quantity,
            orders["WH/OUT/00017"].revision
        ),
        (3, 1)
    );
    // Unreserved: cancelled; reserved again: the cancelled order reopens with the lines.
    sink.deliver(&RetailEvent::FulfillmentCancelled {
        reference: "WH/OUT/00017".into(),
        backorder_of: None,
    })
    .await
    .unwrap();
    assert_eq!(emu.orders()["WH/OUT/00017"].status, "cancelled");
    sink.deliver(&with_qty(1)).await.unwrap();
    let o = &emu.orders()["WH/OUT/00017"];
    assert_eq!(
        (o.status.as_str(), o.lines[0].quantity, emu.orders().len()),
        ("open", 1, 1)
    );
    // A repeat of what the WMS has is success, with no new revision.
    assert!(sink.deliver(&with_qty(1)).await.unwrap());
    assert_eq!(emu.orders()["WH/OUT/00017"].revision, 2);
}
