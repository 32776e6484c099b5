//! The reader never loses a committed change: across SIGKILLs of odoo-cdc under load, across a
//! PostgreSQL restart mid-stream; and it never makes the slot hold WAL while the published
//! tables are idle.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use odoo_cdc_tests::{read_lines, scratch_dir, spawn_odoo_cdc, wait_until, Db, Load, TailProcess};

fn setup(db: &Db) {
    db.sql(
        "CREATE TABLE orders (id serial PRIMARY KEY, v int); \
         CREATE TABLE noise (id serial PRIMARY KEY, body text); \
         GRANT SELECT ON orders, noise TO odoo_cdc; \
         CREATE PUBLICATION odoo_cdc FOR TABLE orders;",
    );
    db.sql("SELECT pg_create_logical_replication_slot('odoo_cdc', 'pgoutput')");
}

fn ids_of(lines: &[serde_json::Value]) -> Vec<i64> {
    lines
        .iter()
        .filter(|l| l["table"] == "orders" && l["op"] == "insert")
        .map(|l| l["new"]["id"].as_str().unwrap().parse().unwrap())
        .collect()
}

fn commits_of(lines: &[serde_json::Value]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for l in lines {
        let c = l["commit_lsn"].as_str().unwrap().to_string();
        if out.last() != Some(&c) {
            out.push(c);
        }
    }
    out
}

#[test]
fn sigkill_under_load_loses_nothing_and_repeats_only_the_unconfirmed_tail() {
    let db = Db::start();
    setup(&db);
    let dir = scratch_dir();
    let url = db.url();
    let load = Load::start(&db, "orders", 5);
    let mut runs = Vec::new();
    for i in 0..4 {
        let path = dir.join(format!("run{i}.jsonl"));
        let mut child = spawn_odoo_cdc(
            &["tail", "--source", &url, "--status-interval-ms", "200"],
            &path,
        );
        std::thread::sleep(Duration::from_millis(700 + 300 * i));
        child.kill().expect("SIGKILL odoo-cdc");
        let _ = child.wait();
        runs.push(path);
    }
    let committed = load.finish();
    assert!(
        committed.len() > 200,
        "load committed only {} rows",
        committed.len()
    );
    let endpos = db.current_lsn();
    let last = dir.join("final.jsonl");
    let mut child = spawn_odoo_cdc(&["tail", "--source", &url, "--endpos", &endpos], &last);
    let status = child.wait().expect("final tail");
    assert!(status.success(), "final tail failed");
    runs.push(last);

    let outputs: Vec<Vec<serde_json::Value>> = runs.iter().map(|p| read_lines(p)).collect();
    let mut seen: BTreeMap<i64, usize> = BTreeMap::new();
    for out in &outputs {
        for id in ids_of(out) {
            *seen.entry(id).or_default() += 1;
        }
    }
    let missing: Vec<i64> = committed
        .iter()
        .filter(|id| !seen.contains_key(id))
        .copied()
        .collect();
    assert!(
        missing.is_empty(),
        "committed rows missing from the output: {missing:?}"
    );
    let committed_set: HashSet<i64> = committed.iter().copied().collect();
    assert!(
        seen.keys().all(|id| committed_set.contains(id)),
        "a row that never committed was printed"
    );

    // Every repeated transaction of a killed run belongs to the tail of that run after its last
    // confirmed commit: once a transaction repeats later, all after it do too.
    let mut repeated_total = 0;
    for (k, out) in outputs.iter().enumerate().take(outputs.len() - 1) {
        let later: HashSet<String> = outputs[k + 1..]
            .iter()
            .flat_map(|o| commits_of(o))
            .collect();
        let commits = commits_of(out);
        let flags: Vec<bool> = commits.iter().map(|c| later.contains(c)).collect();
        if let Some(first) = flags.iter().position(|&r| r) {
            assert!(
                flags[first..].iter().all(|&r| r),
                "run {k}: a confirmed transaction was printed again"
            );
            repeated_total += flags.len() - first;
        }
    }
    let total_commits: usize = outputs.iter().map(|o| commits_of(o).len()).sum();
    assert!(
        repeated_total < total_commits / 2,
        "{repeated_total} of {total_commits} transactions repeated"
    );
}

#[test]
fn idle_published_tables_do_not_hold_wal() {
    let db = Db::start();
    setup(&db);
    let start = db.confirmed_flush("odoo_cdc");
    let tail = TailProcess::spawn(&db, &["--heartbeat-secs", "0"]);
    // Only the unpublished table changes, for a while.
    for _ in 0..20 {
        db.sql("INSERT INTO noise (body) SELECT repeat('x', 1000) FROM generate_series(1, 200)");
    }
    let target: cdc::Lsn = db.current_lsn().parse().unwrap();
    assert!(target > start);
    let advanced = wait_until(Duration::from_secs(10), || {
        db.confirmed_flush("odoo_cdc") >= target
    });
    let reached = db.confirmed_flush("odoo_cdc");
    let (lines, _) = tail.kill();
    assert!(
        advanced,
        "confirmed_flush_lsn stayed at {reached}, WAL is at {target}"
    );
    assert!(lines.is_empty(), "unpublished changes were printed");
}

#[test]
fn heartbeat_moves_an_otherwise_silent_slot() {
    let db = Db::start();
    setup(&db);
    let before = db.confirmed_flush("odoo_cdc");
    let tail = TailProcess::spawn(&db, &["--heartbeat-secs", "1"]);
    let moved = wait_until(Duration::from_secs(10), || {
        db.confirmed_flush("odoo_cdc") > before
    });
    tail.kill();
    assert!(moved, "no heartbeat reached the slot");
}

#[test]
fn postgres_restart_mid_stream_resumes_without_loss() {
    let db = Db::start();
    setup(&db);
    let tail = TailProcess::spawn(&db, &["--max-backoff-secs", "1"]);
    let load = Load::start(&db, "orders", 3);
    std::thread::sleep(Duration::from_millis(1500));
    db.cluster.restart().expect("restart postgres");
    std::thread::sleep(Duration::from_millis(1500));
    let committed = load.finish();
    let target: cdc::Lsn = db.current_lsn().parse().unwrap();
    let caught_up = wait_until(Duration::from_secs(30), || {
        db.confirmed_flush("odoo_cdc") >= target
    });
    let (lines, stderr) = tail.kill();
    assert!(
        caught_up,
        "tail did not catch up after the restart: {stderr}"
    );
    assert!(
        stderr.contains("reconnecting"),
        "the restart was not noticed: {stderr}"
    );
    let seen: HashSet<i64> = ids_of(&lines).into_iter().collect();
    let missing: Vec<&i64> = committed.iter().filter(|id| !seen.contains(id)).collect();
    assert!(!committed.is_empty());
    assert!(
        missing.is_empty(),
        "rows lost across the restart: {missing:?}"
    );
}

#[test]
fn snapshot_then_stream_has_no_gap_and_no_overlap_under_load() {
    let db = Db::start();
    db.sql(
        "CREATE TABLE orders (id serial PRIMARY KEY, v int); GRANT SELECT ON orders TO odoo_cdc; \
         CREATE PUBLICATION odoo_cdc FOR TABLE orders;",
    );
    db.sql("INSERT INTO orders (v) SELECT g FROM generate_series(1, 20000) g");
    let before: Vec<i64> = (1..=20000).collect();
    let load = Load::start(&db, "orders", 4);
    std::thread::sleep(Duration::from_millis(300));
    let tail = TailProcess::spawn(&db, &["--snapshot"]);
    std::thread::sleep(Duration::from_millis(2000));
    let mut committed = load.finish();
    committed.extend(before);
    let target: cdc::Lsn = db.current_lsn().parse().unwrap();
    let caught_up = wait_until(Duration::from_secs(30), || {
        db.sql("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'odoo_cdc'")
            .trim()
            == "1"
            && db.confirmed_flush("odoo_cdc") >= target
    });
    let (lines, stderr) = tail.kill();
    assert!(caught_up, "{stderr}");
    let snap = lines.iter().filter(|l| l["op"] == "snapshot").count();
    assert!(snap >= 20000, "snapshot printed {snap} rows");
    let mut counts: BTreeMap<i64, usize> = BTreeMap::new();
    for l in &lines {
        let id: i64 = l["new"]["id"].as_str().unwrap().parse().unwrap();
        *counts.entry(id).or_default() += 1;
    }
    let dup: Vec<_> = counts
        .iter()
        .filter(|(_, &c)| c > 1)
        .map(|(id, _)| *id)
        .collect();
    assert!(
        dup.is_empty(),
        "rows both in the snapshot and the stream: {dup:?}"
    );
    let missing: Vec<_> = committed
        .iter()
        .filter(|id| !counts.contains_key(id))
        .collect();
    assert!(missing.is_empty(), "rows in neither: {missing:?}");
    assert!(
        lines.iter().any(|l| l["op"] == "insert"),
        "no streamed row after the snapshot"
    );
    assert!(stderr.contains("snapshot table copied"));
}
