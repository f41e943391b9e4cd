//! Feeds arbitrary bytes to the request decoder as a connection would:
//! consume frames until the decoder errors or wants more bytes. Every frame
//! it accepts must be canonical (re-encodes to the same bytes) and must
//! decode again to the same request.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tidemark::tyrant::client::{Limits, encode};
use tidemark::tyrant::request::decode;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    let mut rest = data;
    while let Ok(Some((req, used))) = decode(rest, &limits) {
        assert!(used > 0 && used <= rest.len(), "bad consumed count {used}");
        let mut wire = Vec::new();
        encode(&req, &mut wire);
        assert_eq!(
            wire.as_slice(),
            &rest[..used],
            "non-canonical frame for {req:?}"
        );
        assert_eq!(decode(&wire, &limits), Ok(Some((req, used))));
        rest = &rest[used..];
    }
});
