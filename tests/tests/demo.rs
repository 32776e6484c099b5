//! `odoo-cdc demo` runs the whole product on the embedded default and reports its invariants.

use odoo_cdc_tests::odoo_cdc;

#[test]
fn demo_runs_a_retail_day_and_everything_matches() {
    let out = odoo_cdc(&["demo", "--duration", "20s"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout
            .contains("result: Shopify matches Odoo, every posted move booked once, nothing lost"),
        "{stdout}"
    );
    assert!(
        stdout.contains("| shopify |")
            && stdout.contains("| wms |")
            && stdout.contains("| accounting |")
    );
    assert!(
        stdout.contains("LOCAL-ONLY@WH") && stdout.contains("is not in Shopify"),
        "the DLQ shows its reason: {stdout}"
    );
    // Every ready delivery reached the WMS once.
    let line = stdout
        .lines()
        .find(|l| l.starts_with("warehouse: "))
        .unwrap();
    let nums: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    assert_eq!(nums[0], nums[1], "{line}");
}
