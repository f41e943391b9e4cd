//! Request decoding: golden vectors, hostile headers, properties.

use proptest::collection::vec;
use proptest::prelude::*;

use crate::tyrant::client::{Reply, cmd, decode_reply, encode};
use crate::tyrant::request::{Request, decode};
use crate::tyrant::testing::{dec, enc, golden, golden_reply, hex, is_malformed};
use crate::tyrant::wire::{FrameError, Limits, MAGIC, double_from_wire, wire_len};

// --- golden vectors (copied from vectors.jsonl) ------------------------

#[test]
fn vector_put_new() {
    assert_eq!(
        golden("c81000000004000000066b65793176616c756531"),
        Request::Put {
            key: b"key1".to_vec(),
            value: b"value1".to_vec()
        }
    );
}

#[test]
fn vector_put_binary_and_empty() {
    assert_eq!(
        golden("c8100000000300000001006bff76"),
        Request::Put {
            key: vec![0x00, 0x6b, 0xff],
            value: b"v".to_vec()
        }
    );
    assert_eq!(
        golden("c8100000000000000000"),
        Request::Put {
            key: vec![],
            value: vec![]
        }
    );
}

#[test]
fn vector_mget_some_missing() {
    assert_eq!(
        golden("c831000000040000000161000000016200000001630000000164"),
        Request::Mget {
            keys: vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec(), b"d".to_vec()]
        }
    );
    assert_eq!(
        golden_reply(
            cmd::MGET,
            "00000000020000000100000001613100000001000000016333"
        ),
        Reply::KvList(vec![
            (b"a".to_vec(), b"1".to_vec()),
            (b"c".to_vec(), b"3".to_vec())
        ])
    );
    assert_eq!(golden("c83100000000"), Request::Mget { keys: vec![] });
}

#[test]
fn vector_misc_getlist() {
    assert_eq!(
        golden("c8900000000700000000000000026765746c697374000000026b31000000026b32"),
        Request::Misc {
            name: b"getlist".to_vec(),
            opts: 0,
            args: vec![b"k1".to_vec(), b"k2".to_vec()]
        }
    );
    assert_eq!(
        golden_reply(
            cmd::MISC,
            "0000000004000000026b31000000027631000000026b32000000027632"
        ),
        Reply::List(vec![
            b"k1".to_vec(),
            b"v1".to_vec(),
            b"k2".to_vec(),
            b"v2".to_vec()
        ])
    );
    assert_eq!(golden_reply(cmd::MISC, "0100000000"), Reply::Status(1));
}

#[test]
fn vector_misc_putlist_noulog_and_no_args() {
    assert_eq!(
        golden(
            "c8900000000700000001000000047075746c697374000000026b31000000027631000000026b32000000027632"
        ),
        Request::Misc {
            name: b"putlist".to_vec(),
            opts: 1,
            args: vec![
                b"k1".to_vec(),
                b"v1".to_vec(),
                b"k2".to_vec(),
                b"v2".to_vec()
            ]
        }
    );
    assert_eq!(
        golden("c890000000080000000000000000697465726e657874"),
        Request::Misc {
            name: b"iternext".to_vec(),
            opts: 0,
            args: vec![]
        }
    );
}

#[test]
fn vector_adddouble() {
    assert_eq!(
        golden("c861000000010000000000000003000000746a52880064"),
        Request::AddDouble {
            key: b"d".to_vec(),
            integ: 3,
            fract: 500_000_000_000
        }
    );
    assert_eq!(double_from_wire(3, 500_000_000_000), 3.5);
    // adddouble_mixed_sign_parts: 5 + (-0.5) = 4.5.
    let Request::AddDouble { integ, fract, .. } =
        golden("c861000000010000000000000005ffffff8b95ad780064")
    else {
        panic!("not adddouble");
    };
    assert_eq!(double_from_wire(integ, fract), 4.5);
    // adddouble_nan_reports_failure: both parts INT64_MIN.
    let Request::AddDouble { integ, fract, .. } =
        golden("c861000000018000000000000000800000000000000064")
    else {
        panic!("not adddouble");
    };
    assert!(double_from_wire(integ, fract).is_nan());
    assert_eq!(golden_reply(cmd::ADDDOUBLE, "01"), Reply::Status(1));
}

/// Server-side results from the adddouble vectors, re-encoded.

#[test]
fn vector_other_commands() {
    assert_eq!(
        golden("c85800000002ffffffff6170"),
        Request::Fwmkeys {
            prefix: b"ap".to_vec(),
            max: -1
        }
    );
    assert_eq!(
        golden("c86000000003fffffff9636e74"),
        Request::AddInt {
            key: b"cnt".to_vec(),
            num: -7
        }
    );
    assert_eq!(
        golden("c8130000000100000002000000046b5859"),
        Request::PutShl {
            key: b"k".to_vec(),
            value: b"XY".to_vec(),
            width: 4
        }
    );
    assert_eq!(
        golden("c868000000040000000100000003000000056563686f6b657976616c7565"),
        Request::Ext {
            name: b"echo".to_vec(),
            opts: 1,
            key: b"key".to_vec(),
            value: b"value".to_vec()
        }
    );
    assert_eq!(
        golden("c874000000010000000000000000000000002f"),
        Request::Restore {
            path: b"/".to_vec(),
            timestamp: 0,
            opts: 0
        }
    );
    assert_eq!(
        golden("c8780000000000000000000000000000000000000000"),
        Request::SetMst {
            host: vec![],
            port: 0,
            timestamp: 0,
            opts: 0
        }
    );
    assert_eq!(
        golden("c87100000009626e756d3d31303234"),
        Request::Optimize {
            params: b"bnum=1024".to_vec()
        }
    );
    assert_eq!(
        golden("c8a0000000000000000100000005"),
        Request::Repl {
            timestamp: 1,
            server_id: 5
        }
    );
    for (bytes, req) in [
        ("c850", Request::IterInit),
        ("c851", Request::IterNext),
        ("c870", Request::Sync),
        ("c872", Request::Vanish),
        ("c880", Request::Rnum),
        ("c881", Request::Size),
        ("c888", Request::Stat),
    ] {
        assert_eq!(golden(bytes), req);
    }
}

#[test]
fn vector_pipelined_putnr_and_get() {
    let buf = hex("c81800000001000000016b76c830000000016b");
    let (first, used) = dec(&buf).unwrap().unwrap();
    assert_eq!(
        first,
        Request::PutNr {
            key: b"k".to_vec(),
            value: b"v".to_vec()
        }
    );
    let (second, rest) = dec(&buf[used..]).unwrap().unwrap();
    assert_eq!(second, Request::Get { key: b"k".to_vec() });
    assert_eq!(used + rest, buf.len());
}

#[test]
fn vector_bad_input() {
    // Each of these made ttserver close the connection, or wait.
    assert!(is_malformed(dec(&hex("c810ffffffff00000001"))));
    assert!(is_malformed(decode(
        &hex("c83010000001"),
        &Limits::REFERENCE
    )));
    assert!(is_malformed(decode(
        &hex("c83100100001"),
        &Limits::REFERENCE
    )));
    assert!(is_malformed(dec(&hex("c8a0000000000000000000000005"))));
    assert_eq!(dec(&hex("c8ff")), Err(FrameError::UnknownCommand(0xff)));
    assert_eq!(
        dec(&hex("c930000000016b0a")),
        Err(FrameError::NotBinary(0xc9))
    );
    assert_eq!(dec(&hex("c8100000000a00000001616263")), Ok(None));
}

// --- hostile headers ---------------------------------------------------

#[test]
fn huge_length_rejected_as_soon_as_header_arrives() {
    // 2 GiB key claimed: rejected from the 10 header bytes alone.
    assert!(is_malformed(dec(&hex("c8107fffffff00000001"))));
    // And the key field is judged as soon as it is buffered.
    assert!(is_malformed(dec(&hex("c8107fffffff"))));
    // Value over the cap, with no value bytes present.
    assert!(is_malformed(dec(&hex("c810000000017fffffff"))));
    assert!(is_malformed(dec(&hex("c81000000001 00100001"))));
    // Even with ttserver's own caps, 256 MiB + 1 is too long.
    assert!(is_malformed(decode(
        &hex("c810 00000001 10000001"),
        &Limits::REFERENCE
    )));
    assert!(is_malformed(dec(&hex(
        "c868 00000000 00000000 00000000 7fffffff"
    ))));
    assert!(is_malformed(dec(&hex("c858 7fffffff"))));
    assert!(is_malformed(dec(&hex("c873 7fffffff"))));
    assert!(is_malformed(dec(&hex("c874 7fffffff"))));
    assert!(is_malformed(dec(&hex("c871 7fffffff"))));
    assert!(is_malformed(dec(&hex("c878 7fffffff"))));
}

#[test]
fn negative_lengths_rejected() {
    for frame in [
        "c810 80000000",
        "c810 00000000 ffffffff",
        "c813 00000000 fffffffe",
        "c820 ffffffff",
        "c830 80000001",
        "c831 ffffffff",
        "c831 00000002 00000000 ffffffff",
        "c838 ffffffff",
        "c858 ffffffff",
        "c860 ffffffff",
        "c861 ffffffff",
        "c868 ffffffff",
        "c868 00000000 00000000 ffffffff",
        "c871 ffffffff",
        "c873 ffffffff",
        "c874 ffffffff",
        "c878 ffffffff",
        "c890 ffffffff",
        "c890 00000000 00000000 ffffffff",
        "c890 00000001 00000000 00000001 61 ffffffff",
    ] {
        assert!(is_malformed(dec(&hex(frame))), "{frame}");
    }
}

#[test]
fn counts_and_names_over_cap_rejected() {
    let l = Limits::default();
    let mut frame = vec![MAGIC, cmd::MGET];
    frame.extend_from_slice(&wire_len(l.max_count + 1));
    assert!(is_malformed(dec(&frame)));
    // A count exactly at the cap is fine; it just needs the keys.
    let mut frame = vec![MAGIC, cmd::MGET];
    frame.extend_from_slice(&wire_len(l.max_count));
    assert_eq!(dec(&frame), Ok(None));

    assert!(is_malformed(dec(&hex("c890 00000000 00000000 00010001"))));
    assert!(is_malformed(dec(&hex("c890 00000400"))));
    assert!(is_malformed(dec(&hex("c868 00000400"))));
    // 1023 is the protocol's ceiling even when the configured cap is higher.
    let loose = Limits {
        max_name_bytes: usize::MAX,
        ..Limits::default()
    };
    assert!(is_malformed(decode(&hex("c890 00000400"), &loose)));
    assert_eq!(decode(&hex("c890 000003ff"), &loose), Ok(None));
}

#[test]
fn mget_key_lengths_checked_as_reached() {
    // Second key's length is bad while the first key is complete and the
    // rest of the frame is missing: reject, don't wait.
    assert!(is_malformed(dec(&hex(
        "c831 00000003 00000001 61 00002000"
    ))));
    // Same for misc arguments.
    assert!(is_malformed(dec(&hex(
        "c890 00000001 00000000 00000003 61 00000001 62 00100001"
    ))));
    // A good key followed by a missing one is merely incomplete.
    assert_eq!(dec(&hex("c831 00000002 00000001 61 000000")), Ok(None));
}

#[test]
fn bad_scalar_fields_rejected() {
    assert!(is_malformed(dec(&hex("c813 00000001 00000001 ffffffff"))));
    assert!(is_malformed(dec(&hex("c878 00000000 80000000"))));
    assert!(is_malformed(dec(&hex("c8a0 0000000000000000"))));
    assert!(is_malformed(dec(&hex("c8a0 8000000000000000"))));
    assert!(is_malformed(dec(&hex("c8a0 0000000000000001 00000000"))));
    assert!(is_malformed(dec(&hex("c8a0 0000000000000001 80000000"))));
    assert_eq!(
        dec(&hex("c8a0 7fffffffffffffff 7fffffff")),
        Ok(Some((
            Request::Repl {
                timestamp: i64::MAX as u64,
                server_id: i32::MAX as u32
            },
            14
        )))
    );
    // Width 0 and port 0 are valid.
    assert!(
        dec(&hex("c813 00000000 00000000 00000000"))
            .unwrap()
            .is_some()
    );
}

#[test]
fn command_bytes_and_magic() {
    assert_eq!(dec(&[]), Ok(None));
    assert_eq!(dec(&[MAGIC]), Ok(None));
    for b in 0..=u8::MAX {
        if b != MAGIC {
            assert_eq!(dec(&[b]), Err(FrameError::NotBinary(b)));
        }
        let result = dec(&[MAGIC, b]);
        if cmd::ALL.contains(&b) {
            assert!(result.is_ok(), "{b:#04x}");
        } else {
            assert_eq!(result, Err(FrameError::UnknownCommand(b)));
        }
    }
}

#[test]
fn names_and_bytes_agree() {
    let names = "put putkeep putcat putshl putnr out get mget vsiz iterinit iternext fwmkeys \
                 addint adddouble ext sync optimize vanish copy restore setmst rnum size stat \
                 misc repl";
    assert_eq!(names.split_whitespace().count(), cmd::ALL.len());
    for (byte, name) in cmd::ALL.into_iter().zip(names.split_whitespace()) {
        // All-zero fields form a valid frame for every command but repl,
        // whose timestamp and server id must be at least 1.
        let mut frame = vec![MAGIC, byte];
        if byte == cmd::REPL {
            frame.extend(hex("0000000000000001 00000001"));
        } else {
            frame.extend([0; 24]);
        }
        let (req, used) = dec(&frame).unwrap().unwrap();
        assert_eq!(req.name(), name);
        assert_eq!(req.command_byte(), byte, "{name}");
        assert_eq!(enc(&req), frame[..used], "{name}");
    }
}

// --- properties --------------------------------------------------------

/// Small caps so generated requests hit the boundaries often.
const SMALL: Limits = Limits {
    max_key_bytes: 12,
    max_value_bytes: 40,
    max_count: 5,
    max_name_bytes: 9,
};

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..=max)
}

/// Requests generated with every size up to `scale` times the caps in
/// `l`: scale 1 gives only valid requests, larger scales mix in invalid
/// ones (see `within`).
fn arb_request(l: Limits, scale: usize) -> impl Strategy<Value = Request> {
    let key = move || bytes(l.max_key_bytes * scale);
    let val = move || bytes(l.max_value_bytes * scale);
    let name = move || bytes(l.max_name_bytes * scale);
    let count = l.max_count * scale;
    let repl_ts = if scale == 1 {
        1..=i64::MAX as u64
    } else {
        0..=u64::MAX
    };
    let repl_sid = if scale == 1 {
        1..=i32::MAX as u32
    } else {
        0..=u32::MAX
    };
    let non_neg = if scale == 1 {
        0..=i32::MAX
    } else {
        i32::MIN..=i32::MAX
    };
    prop_oneof![
        (key(), val()).prop_map(|(key, value)| Request::Put { key, value }),
        (key(), val()).prop_map(|(key, value)| Request::PutKeep { key, value }),
        (key(), val()).prop_map(|(key, value)| Request::PutCat { key, value }),
        (key(), val(), non_neg.clone()).prop_map(|(key, value, width)| Request::PutShl {
            key,
            value,
            width
        }),
        (key(), val()).prop_map(|(key, value)| Request::PutNr { key, value }),
        key().prop_map(|key| Request::Out { key }),
        key().prop_map(|key| Request::Get { key }),
        vec(key(), 0..=count).prop_map(|keys| Request::Mget { keys }),
        key().prop_map(|key| Request::Vsiz { key }),
        Just(Request::IterInit),
        Just(Request::IterNext),
        (val(), any::<i32>()).prop_map(|(prefix, max)| Request::Fwmkeys { prefix, max }),
        (key(), any::<i32>()).prop_map(|(key, num)| Request::AddInt { key, num }),
        (key(), any::<i64>(), any::<i64>()).prop_map(|(key, integ, fract)| Request::AddDouble {
            key,
            integ,
            fract
        }),
        (name(), any::<u32>(), key(), val()).prop_map(|(name, opts, key, value)| {
            Request::Ext {
                name,
                opts,
                key,
                value,
            }
        }),
        Just(Request::Sync),
        val().prop_map(|params| Request::Optimize { params }),
        Just(Request::Vanish),
        val().prop_map(|path| Request::Copy { path }),
        (val(), any::<u64>(), any::<u32>()).prop_map(|(path, timestamp, opts)| {
            Request::Restore {
                path,
                timestamp,
                opts,
            }
        }),
        (val(), non_neg, any::<u64>(), any::<u32>()).prop_map(|(host, port, timestamp, opts)| {
            Request::SetMst {
                host,
                port,
                timestamp,
                opts,
            }
        }),
        Just(Request::Rnum),
        Just(Request::Size),
        Just(Request::Stat),
        (name(), any::<u32>(), vec(val(), 0..=count))
            .prop_map(|(name, opts, args)| Request::Misc { name, opts, args }),
        (repl_ts, repl_sid).prop_map(|(timestamp, server_id)| Request::Repl {
            timestamp,
            server_id
        }),
    ]
}

/// Independent statement of which caps apply to which field.
fn within(req: &Request, l: &Limits) -> bool {
    let key = |k: &Vec<u8>| k.len() <= l.max_key_bytes;
    let val = |v: &Vec<u8>| v.len() <= l.max_value_bytes;
    let name = |n: &Vec<u8>| n.len() <= l.max_name_bytes.min(1023);
    match req {
        Request::Put { key: k, value: v }
        | Request::PutKeep { key: k, value: v }
        | Request::PutCat { key: k, value: v }
        | Request::PutNr { key: k, value: v } => key(k) && val(v),
        Request::PutShl {
            key: k,
            value: v,
            width,
        } => key(k) && val(v) && *width >= 0,
        Request::Out { key: k }
        | Request::Get { key: k }
        | Request::Vsiz { key: k }
        | Request::AddInt { key: k, .. }
        | Request::AddDouble { key: k, .. } => key(k),
        Request::Mget { keys } => keys.len() <= l.max_count && keys.iter().all(key),
        Request::Fwmkeys { prefix: v, .. }
        | Request::Optimize { params: v }
        | Request::Copy { path: v }
        | Request::Restore { path: v, .. } => val(v),
        Request::SetMst { host, port, .. } => val(host) && *port >= 0,
        Request::Ext {
            name: n,
            key: k,
            value: v,
            ..
        } => name(n) && key(k) && val(v),
        Request::Misc { name: n, args, .. } => {
            name(n) && args.len() <= l.max_count && args.iter().all(val)
        }
        Request::Repl {
            timestamp,
            server_id,
        } => (1..=i64::MAX as u64).contains(timestamp) && (1..=i32::MAX as u32).contains(server_id),
        Request::IterInit
        | Request::IterNext
        | Request::Sync
        | Request::Vanish
        | Request::Rnum
        | Request::Size
        | Request::Stat => true,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn round_trip_and_prefixes(req in arb_request(SMALL, 1)) {
        let wire = enc(&req);
        prop_assert_eq!(decode(&wire, &SMALL), Ok(Some((req.clone(), wire.len()))));
        // Every strict prefix is merely incomplete, never an error.
        for cut in 0..wire.len() {
            prop_assert_eq!(decode(&wire[..cut], &SMALL), Ok(None), "cut at {}", cut);
        }
        // Pipelined bytes after the frame are left for the next call.
        let mut more = wire.clone();
        encode(&Request::Stat, &mut more);
        prop_assert_eq!(decode(&more, &SMALL), Ok(Some((req, wire.len()))));
    }

    #[test]
    fn round_trip_default_limits(req in arb_request(SMALL, 1)) {
        let wire = enc(&req);
        prop_assert_eq!(dec(&wire), Ok(Some((req, wire.len()))));
    }

    #[test]
    fn caps_apply_to_the_right_fields(req in arb_request(SMALL, 2)) {
        let wire = enc(&req);
        let got = decode(&wire, &SMALL);
        if within(&req, &SMALL) {
            prop_assert_eq!(got, Ok(Some((req, wire.len()))));
        } else {
            prop_assert!(matches!(got, Err(FrameError::Malformed(_))), "{:?}", got);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_reencode(
        command in proptest::sample::select(cmd::ALL.to_vec()),
        small in vec(0u8..4, 0..48),
        raw in vec(any::<u8>(), 0..48),
    ) {
        // Bytes 0..4 make plausible big-endian lengths, so mixing them in
        // reaches the bodies instead of always tripping the caps.
        for tail in [&small, &raw] {
            let mut buf = vec![MAGIC, command];
            buf.extend_from_slice(tail);
            if let Ok(Some((req, used))) = decode(&buf, &SMALL) {
                prop_assert!(used <= buf.len());
                // The wire form is canonical: re-encoding gives the same bytes.
                prop_assert_eq!(enc(&req), &buf[..used]);
            }
            let _ = decode_reply(command, tail);
        }
    }
}
