use super::settlement::charge;
use super::*;

#[test]
fn a_request_is_charged_its_usage_else_at_least_its_reservation_and_what_it_used() {
    // The engine's usage, whatever the reservation.
    assert_eq!(charge(Some(70), Some(5_000), 1_054), Some(70));
    // No usage: a stream that relayed more than it reserved pays for what it relayed...
    assert_eq!(charge(None, Some(2_464), 1_046), Some(2_464));
    // ...and one that relayed less keeps its reservation (`None`: nothing to correct).
    assert_eq!(charge(None, Some(300), 1_046), None);
    assert_eq!(charge(None, None, 1_046), None);
    assert_eq!(prompt_estimate(0), 1);
    assert_eq!(prompt_estimate(90), 22);
    assert_eq!(
        estimate_tokens(90, None, 1, 1_024),
        prompt_estimate(90) + 1_024
    );
}
