use super::percent_decode;

#[test]
fn only_two_hex_digits_make_an_escape() {
    assert_eq!(percent_decode("org%2Fname"), "org/name");
    assert_eq!(percent_decode("a%2f"), "a/");
    assert_eq!(percent_decode("%+1x"), "%+1x");
    assert_eq!(percent_decode("%-1"), "%-1");
    assert_eq!(percent_decode("50%"), "50%");
    assert_eq!(percent_decode("%4"), "%4");
}
