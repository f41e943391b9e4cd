//! Feeds arbitrary server bytes to the client-side reply decoder; the first
//! input byte picks the command the reply is for. It must never panic and
//! never claim more bytes than it was given.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tidemark::tyrant::client::decode_reply;

fuzz_target!(|data: &[u8]| {
    let Some((&command, mut rest)) = data.split_first() else {
        return;
    };
    while let Ok(Some((_, used))) = decode_reply(command, rest) {
        assert!(used <= rest.len(), "bad consumed count {used}");
        if used == 0 {
            break;
        }
        rest = &rest[used..];
    }
});
