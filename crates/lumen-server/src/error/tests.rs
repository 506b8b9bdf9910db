//! Pieces of the single HTTP mapping that are easiest to check directly.

use super::*;
#[test]
fn rate_limit_values_are_plain_decimals() {
    assert_eq!(decimal(0, ""), "0");
    assert_eq!(decimal(60, "s"), "60s");
    assert_eq!(decimal(u64::MAX, ""), "18446744073709551615");
    assert_eq!(decimal(u64::MAX, "s"), "18446744073709551615s");
}
