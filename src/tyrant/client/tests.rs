//! Replies: writers, the client decoder, adddouble's number form.

use proptest::collection::vec;
use proptest::prelude::*;

use crate::tyrant::client::{Reply, cmd, decode_reply};
use crate::tyrant::reply;
use crate::tyrant::testing::{golden_reply, hex};
use crate::tyrant::wire::{FrameError, double_from_wire, double_to_wire};

#[test]
fn vector_adddouble_replies() {
    let cases: [(f64, &str); 7] = [
        (3.5, "000000000000000003000000746a528800"),
        (1.25 + 2.5, "000000000000000003000000ae9f7bcc00"),
        (0.1 + 0.2, "00000000000000000000000045d964b800"),
        (-1.25, "00ffffffffffffffffffffffc5cad6bc00"),
        (-2.5 + 1e-12, "00fffffffffffffffeffffff8b95ad7802"),
        (f64::INFINITY, "007fffffffffffffff0000000000000000"),
        (1e19, "0080000000000000000000000000000000"),
    ];
    for (x, wire) in cases {
        let mut out = Vec::new();
        reply::double_ok(&mut out, x);
        assert_eq!(out, hex(wire), "{x}");
        let (integ, fract) = double_to_wire(x);
        assert_eq!(
            golden_reply(cmd::ADDDOUBLE, wire),
            Reply::Double { integ, fract }
        );
    }
}

#[test]
fn vector_replies() {
    assert_eq!(golden_reply(cmd::PUT, "00"), Reply::Status(0));
    assert_eq!(golden_reply(cmd::PUTKEEP, "01"), Reply::Status(1));
    assert_eq!(
        golden_reply(cmd::GET, "000000000568656c6c6f"),
        Reply::Blob(b"hello".to_vec())
    );
    assert_eq!(golden_reply(cmd::GET, "01"), Reply::Status(1));
    assert_eq!(golden_reply(cmd::VSIZ, "0000019000"), Reply::U32(0x19000));
    assert_eq!(golden_reply(cmd::ADDINT, "00fffffffe"), Reply::I32(-2));
    assert_eq!(golden_reply(cmd::RNUM, "000000000000000003"), Reply::U64(3));
    assert_eq!(golden_reply(cmd::MGET, "0000000000"), Reply::KvList(vec![]));
    assert_eq!(
        golden_reply(
            cmd::FWMKEYS,
            "0000000002000000056170706c650000000761707269636f74"
        ),
        Reply::List(vec![b"apple".to_vec(), b"apricot".to_vec()])
    );
    assert_eq!(golden_reply(cmd::REPL, "00000000"), Reply::U32(0));
    assert_eq!(decode_reply(cmd::PUTNR, &[]), Ok(Some((Reply::Silent, 0))));
    assert_eq!(decode_reply(cmd::GET, &hex("0000000005686565")), Ok(None));
    assert_eq!(decode_reply(cmd::MISC, &hex("0100")), Ok(None));
    assert!(matches!(
        decode_reply(cmd::GET, &hex("00ffffffff")),
        Err(FrameError::Malformed(_))
    ));
    assert_eq!(
        decode_reply(0x42, &[]),
        Err(FrameError::UnknownCommand(0x42))
    );
}

// --- numbers -----------------------------------------------------------

#[test]
fn double_wire_examples_from_protocol_table() {
    assert_eq!(double_to_wire(3.5), (3, 500_000_000_000));
    assert_eq!(double_to_wire(-1.25), (-1, -250_000_000_000));
    assert_eq!(double_to_wire(0.1 + 0.2), (0, 300_000_000_000));
    assert_eq!(double_to_wire(-2.5 + 1e-12), (-2, -499_999_999_998));

    assert_eq!(double_to_wire(f64::INFINITY), (i64::MAX, 0));
    assert_eq!(double_to_wire(f64::NEG_INFINITY), (i64::MIN, 0));
    assert_eq!(double_to_wire(f64::NAN), (i64::MIN, i64::MIN));
    assert_eq!(double_to_wire(1e19), (i64::MIN, 0));
    assert_eq!(double_to_wire(-1e19), (i64::MIN, 0));
    assert_eq!(double_to_wire(9_223_372_036_854_775_808.0), (i64::MIN, 0));
    assert_eq!(double_to_wire(-9_223_372_036_854_775_808.0), (i64::MIN, 0));
    assert_eq!(double_to_wire(-0.0), (0, 0));

    assert_eq!(double_from_wire(3, 500_000_000_000), 3.5);
    assert_eq!(double_from_wire(-1, -250_000_000_000), -1.25);
    assert_eq!(double_from_wire(0, 300_000_000_000), 0.3);
    assert_eq!(double_from_wire(5, -500_000_000_000), 4.5);
    assert!(double_from_wire(i64::MIN, i64::MIN).is_nan());
    assert_eq!(double_from_wire(i64::MAX, 0), f64::INFINITY);
    assert_eq!(double_from_wire(i64::MAX, 12345), f64::INFINITY);
    assert_eq!(double_from_wire(i64::MIN, 0), f64::NEG_INFINITY);
    assert_eq!(double_from_wire(i64::MIN, -7), f64::NEG_INFINITY);
}

// --- reply writers -----------------------------------------------------

#[test]
fn reply_writers_match_vectors() {
    let mut out = Vec::new();
    reply::status(&mut out, true);
    reply::status(&mut out, false);
    assert_eq!(out, hex("0001"));

    out.clear();
    reply::blob(&mut out, b"hello");
    assert_eq!(out, hex("000000000568656c6c6f"));

    out.clear();
    reply::u32_ok(&mut out, 5);
    reply::i32_ok(&mut out, -2);
    reply::u64_ok(&mut out, 3);
    assert_eq!(out, hex("0000000005 00fffffffe 000000000000000003"));

    out.clear();
    let records: [(&[u8], &[u8]); 2] = [(b"a", b"1"), (b"c", b"3")];
    reply::kv_list(&mut out, records);
    assert_eq!(
        out,
        hex("00000000020000000100000001613100000001000000016333")
    );

    out.clear();
    reply::list(&mut out, [b"k1", b"v1", b"k2", b"v2"]);
    assert_eq!(
        out,
        hex("0000000004000000026b31000000027631000000026b32000000027632")
    );

    out.clear();
    reply::list(&mut out, std::iter::empty::<&[u8]>());
    reply::misc_failure(&mut out);
    assert_eq!(out, hex("0000000000 0100000000"));
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..=max)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn double_round_trip_within_precision(x in -1e15f64..1e15) {
        let (integ, fract) = double_to_wire(x);
        let back = double_from_wire(integ, fract);
        prop_assert!((back - x).abs() < 2e-12 * x.abs().max(1.0), "{} -> {}", x, back);
    }

    #[test]
    fn list_replies_round_trip(items in vec(bytes(20), 0..6)) {
        let mut out = Vec::new();
        reply::list(&mut out, &items);
        prop_assert_eq!(decode_reply(cmd::MISC, &out), Ok(Some((Reply::List(items.clone()), out.len()))));
        for cut in 0..out.len() {
            prop_assert_eq!(decode_reply(cmd::FWMKEYS, &out[..cut]), Ok(None));
        }
        let pairs: Vec<_> = items.iter().map(|k| (k.clone(), k.repeat(2))).collect();
        out.clear();
        reply::kv_list(&mut out, pairs.iter().map(|(k, v)| (k, v)));
        prop_assert_eq!(decode_reply(cmd::MGET, &out), Ok(Some((Reply::KvList(pairs), out.len()))));
    }
}

#[test]
fn repl_feed_items_decode_in_pieces() {
    use crate::tyrant::client::{LogItem, LogRecord, decode_log_item};
    // PROTOCOL.md §7's example body: a successful put k=v.
    let record = LogRecord {
        timestamp: 1_767_225_600_000_001,
        origin_sid: 1,
        body: hex("c81000000001000000016b7600"),
    };
    let mut wire = vec![0xCA];
    record.encode(&mut wire);
    assert_eq!(decode_log_item(&wire), Ok(Some((LogItem::KeepAlive, 1))));
    let rest = &wire[1..];
    for cut in 0..rest.len() {
        assert_eq!(decode_log_item(&rest[..cut]), Ok(None), "{cut}");
    }
    assert_eq!(
        decode_log_item(rest),
        Ok(Some((LogItem::Update(record.clone()), rest.len())))
    );
    assert_eq!(
        record.request(),
        Ok((
            crate::tyrant::request::Request::Put {
                key: b"k".to_vec(),
                value: b"v".to_vec()
            },
            0
        ))
    );
    assert!(decode_log_item(&[0xC8]).is_err());
    let no_status = LogRecord {
        body: hex("c81000000001000000016b76"),
        ..record
    };
    assert!(no_status.request().is_err());
}
