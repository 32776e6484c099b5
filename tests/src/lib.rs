//! Shared helpers of odoo-cdc's end-to-end tests: the `odoo-cdc` binary, throwaway clusters with
//! a publication and slot, and a reader of PostgreSQL's `test_decoding` output.

pub mod test_decoding;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use fixtures::TempCluster;

/// Path of the `odoo-cdc` binary, built once per test process with the same cargo.
pub fn odoo_cdc_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("test executable path");
        // target/<profile>/deps/<test> -> target/<profile>/odoo-cdc
        let profile_dir = exe
            .parent()
            .and_then(|p| p.parent())
            .expect("target profile directory")
            .to_path_buf();
        let bin = profile_dir.join("odoo-cdc");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-p", "pipeline", "--bin", "odoo-cdc"]);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let status = cmd
            .status()
            .expect("run cargo build for the odoo-cdc binary");
        assert!(status.success(), "building odoo-cdc failed");
        assert!(bin.exists(), "{} missing after build", bin.display());
        bin
    })
    .clone()
}

/// Runs `odoo-cdc` with arguments to completion.
pub fn odoo_cdc(args: &[&str]) -> Output {
    odoo_cdc_env(args, &[])
}

/// Runs `odoo-cdc` with arguments and extra environment variables to completion.
pub fn odoo_cdc_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(odoo_cdc_bin())
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run odoo-cdc")
}

/// A cluster plus the superuser's psql, with a helper to run SQL.
pub struct Db {
    /// The cluster.
    pub cluster: TempCluster,
}

impl Db {
    /// Starts a throwaway cluster.
    pub fn start() -> Self {
        Self {
            cluster: TempCluster::start().expect("start throwaway postgres"),
        }
    }

    /// Starts a throwaway cluster with options.
    pub fn start_with(opts: fixtures::ClusterOptions) -> Self {
        Self {
            cluster: TempCluster::start_with(opts).expect("start throwaway postgres"),
        }
    }

    /// Runs SQL as the superuser in the Odoo database; returns psql's unaligned output.
    pub fn sql(&self, sql: &str) -> String {
        self.cluster
            .psql(fixtures::pg::DEFAULT_DATABASE, sql)
            .unwrap_or_else(|e| panic!("sql failed: {e}\n{sql}"))
    }

    /// Current WAL insert position.
    pub fn current_lsn(&self) -> String {
        self.sql("SELECT pg_current_wal_lsn()").trim().to_string()
    }

    /// The slot's confirmed_flush_lsn.
    pub fn confirmed_flush(&self, slot: &str) -> cdc::Lsn {
        self.sql(&format!(
            "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '{slot}'"
        ))
        .trim()
        .parse()
        .expect("confirmed_flush_lsn")
    }

    /// The role's URL.
    pub fn url(&self) -> String {
        self.cluster.url()
    }
}

/// Parses `tail` output into JSON values, one per line.
pub fn parse_lines(stdout: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad json line {l:?}: {e}")))
        .collect()
}
