//! A slot invalidated by `max_slot_wal_keep_size` (`wal_status lost`): `slot status` says so
//! with its exit code, `run` refuses to start over silently, and `run --resync` recreates the
//! slot and books the invoice posted inside the gap, once.

use std::process::{Command, Stdio};
use std::time::Duration;

use fixtures::emulator::accounting::{AccountingConfig as AcctCfg, AccountingEmulator};
use fixtures::odoo::actions::account;
use odoo_cdc_tests::{
    odoo_cdc, odoo_cdc_bin, scratch_dir, seeded_and_published, sell_one, stop_term, wait_until, Db,
    Running,
};

fn spawn(config: &std::path::Path, extra: &[&str], log: &std::path::Path) -> Running {
    Running(
        Command::new(odoo_cdc_bin())
            .args(["run", "--config", config.to_str().unwrap()])
            .args(extra)
            .env("ODOO_CDC_ACCOUNTING_CLIENT_SECRET", "emulator-secret")
            .stdin(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap(),
    )
}

async fn post_invoice(
    c: &mut fixtures::odoo::OdooClient,
    info: &fixtures::odoo::SeedInfo,
    i: usize,
) {
    let (order, _, _) = sell_one(c, info, i).await;
    let inv = account::create_invoice(c, info, order).await.unwrap();
    account::post(c, inv).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_slot_is_recovered_with_the_gap_delivered_once() {
    let db = Db::start_with(fixtures::ClusterOptions {
        extra_conf: vec!["max_slot_wal_keep_size = '1MB'".into()],
        ..Default::default()
    });
    let (mut c, info) = seeded_and_published(&db, 3).await;
    let acct_cfg = AcctCfg::default();
    let acct = AccountingEmulator::start(acct_cfg.clone(), 0)
        .await
        .unwrap();
    let dir = scratch_dir();
    let config = dir.join("odoo-cdc.toml");
    std::fs::write(
        &config,
        format!(
            "[source]\nurl = \"{}\"\n\n{}",
            db.url(),
            odoo_cdc_tests::accounting_section(&acct.url(), &acct_cfg, "79")
        ),
    )
    .unwrap();
    let log = dir.join("run1.log");
    let mut child = spawn(&config, &[], &log);
    assert!(odoo_cdc_tests::wait_bootstrapped(&db).await);
    post_invoice(&mut c, &info, 0).await;
    assert!(
        wait_until(Duration::from_secs(30), || acct.entries().len() == 1),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    // The newest confirmed commit is recorded every 5 s.
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert!(stop_term(&mut child));

    // Inside the gap: an invoice posted while odoo-cdc is down, then WAL enough to lose the slot.
    post_invoice(&mut c, &info, 1).await;
    db.sql("CREATE TABLE filler (id int PRIMARY KEY, pad text)");
    let lost = wait_until(Duration::from_secs(60), || {
        db.sql(
            "INSERT INTO filler SELECT g, repeat('x', 200) FROM generate_series(1, 100000) g ON CONFLICT (id) DO UPDATE SET pad = EXCLUDED.pad; \
             SELECT pg_switch_wal(); CHECKPOINT;",
        );
        db.sql("SELECT wal_status FROM pg_replication_slots WHERE slot_name = 'odoo_cdc'")
            .trim()
            == "lost"
    });
    assert!(
        lost,
        "{}",
        db.sql("SELECT wal_status, safe_wal_size FROM pg_replication_slots")
    );

    let st = odoo_cdc(&["slot", "status", "--source", &db.url()]);
    assert_eq!(
        st.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&st.stdout)
    );
    assert!(String::from_utf8_lossy(&st.stderr).contains("--resync"));

    // A plain start refuses to start over silently.
    let log2 = dir.join("run2.log");
    let mut refused = spawn(&config, &[], &log2);
    let status = refused.0.wait().unwrap();
    let text = std::fs::read_to_string(&log2).unwrap_or_default();
    assert!(!status.success(), "{text}");
    assert!(
        text.contains("is lost") && text.contains("--resync"),
        "{text}"
    );
    assert_eq!(acct.entries().len(), 1);

    // The documented recovery.
    let log3 = dir.join("run3.log");
    let mut child = spawn(&config, &["--resync"], &log3);
    let booked = wait_until(Duration::from_secs(60), || acct.entries().len() >= 2);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let text = std::fs::read_to_string(&log3).unwrap_or_default();
    assert!(booked, "{text}");
    assert!(text.contains("resync after a lost slot"), "{text}");
    assert!(stop_term(&mut child), "{text}");
    // Booked once each: the one before the gap was sent again under its requestid (a no-op).
    let entries = acct.entries();
    assert_eq!(entries.len(), 2, "{entries:?}");
    let covered = db.sql("SELECT value FROM odoo_cdc.kv WHERE key = 'resync.last'");
    assert!(covered.contains("posted moves written since"), "{covered}");
    assert_eq!(
        db.sql("SELECT wal_status FROM pg_replication_slots WHERE slot_name = 'odoo_cdc'")
            .trim(),
        "reserved"
    );
}
