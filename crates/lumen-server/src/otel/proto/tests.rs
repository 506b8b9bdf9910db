use super::*;

#[test]
fn varints_match_the_protobuf_encoding() {
    let enc = |v| {
        let mut b = Vec::new();
        varint(&mut b, v);
        b
    };
    assert_eq!(enc(0), [0]);
    assert_eq!(enc(1), [1]);
    assert_eq!(enc(300), [0xac, 0x02]);
    assert_eq!(enc(u64::MAX).len(), 10);
    // A negative int64 is ten bytes of two's complement.
    let mut b = Vec::new();
    varint_field_always(&mut b, 3, (-1i64) as u64);
    assert_eq!(b.len(), 11);
}

#[test]
fn a_zero_int_attribute_keeps_its_type() {
    let mut b = Vec::new();
    key_value(&mut b, "n", &Value::Int(0));
    // key "n", then AnyValue { int_value = 0 } written explicitly.
    assert_eq!(b, [0x0a, 1, b'n', 0x12, 2, 0x18, 0]);
}

#[test]
fn long_sub_messages_get_their_whole_length() {
    // 0x80 and 300 bytes need a two-byte length; 0x7f fits the byte kept in advance.
    for n in [0usize, 1, 0x7f, 0x80, 300, 20_000] {
        let body = vec![b'x'; n];
        let mut b = Vec::new();
        message(&mut b, 2, |m| m.extend_from_slice(&body));
        let mut expected = Vec::new();
        bytes(&mut expected, 2, &body);
        assert_eq!(b, expected, "length {n}");
    }
}
