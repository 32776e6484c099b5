//! Small operator contracts: `ODOO_CDC_MANAGED` takes the usual spellings of yes and no,
//! `runtime.metrics_listen` honours its host, and logs written to a file or a pipe carry no
//! colour codes.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use odoo_cdc_tests::{odoo_cdc_bin, odoo_cdc_env};

#[test]
fn managed_mode_takes_1_true_yes_and_0_false_no() {
    let args = [
        "slot",
        "drop",
        "--source",
        "postgres://nobody@127.0.0.1:1/none",
    ];
    for yes in ["1", "true", "yes", "on", "TRUE"] {
        let out = odoo_cdc_env(&args, &[("ODOO_CDC_MANAGED", yes)]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("managed mode"),
            "ODOO_CDC_MANAGED={yes}: {err}"
        );
    }
    for no in ["0", "false", "no", "off"] {
        let out = odoo_cdc_env(&args, &[("ODOO_CDC_MANAGED", no)]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !err.contains("managed mode") && !err.contains("invalid value"),
            "ODOO_CDC_MANAGED={no}: {err}"
        );
    }
    let out = odoo_cdc_env(&args, &[("ODOO_CDC_MANAGED", "perhaps")]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("perhaps"));
}

#[tokio::test]
async fn metrics_listen_honours_its_host() {
    let shared = Arc::new(pipeline::runtime::Shared::default());
    // 127.0.0.2 is loopback too, but not 127.0.0.1: a server bound to 127.0.0.1 alone is not there.
    let server = pipeline::ops::health::serve_on(shared, "127.0.0.2:0")
        .await
        .unwrap();
    let url = server.url();
    assert!(url.contains("127.0.0.2"), "{url}");
    let body = reqwest::get(format!("{url}/healthz"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(body.contains("ok"));
}

#[test]
fn logs_to_a_file_have_no_colour_codes() {
    let dir = odoo_cdc_tests::scratch_dir();
    let log = dir.join("tail.log");
    let mut child = Command::new(odoo_cdc_bin())
        .args(["tail", "--source", "postgres://nobody@127.0.0.1:1/none"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.is_empty(), "nothing was logged");
    assert!(
        !text.contains('\u{1b}'),
        "ANSI codes in a log file: {text:?}"
    );
}
