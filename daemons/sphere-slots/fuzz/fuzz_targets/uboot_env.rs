//! The U-Boot environment parser and the boot-state record on untrusted bytes (a bootenv
//! partition anyone with the disk in hand can write): decoding must never panic, and whatever
//! decodes must re-encode to a copy that decodes to the same thing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sphere_slots::BootState;
use sphere_slots::env::{decode_copy, encode_copy};

fuzz_target!(|data: &[u8]| {
    for redundant in [false, true] {
        let Ok(copy) = decode_copy(data, redundant) else { continue };
        let again = encode_copy(&copy.env, data.len(), copy.flags).expect("a decoded environment re-encodes");
        let back = decode_copy(&again, redundant).expect("a re-encoded environment decodes");
        assert_eq!(back, copy);
        if let Ok(state) = BootState::from_env(&copy.env) {
            // The boot loader's step and a commit on any valid record: no panics, and the
            // decision names a slot the record knows.
            let (decision, next) = state.next_boot();
            let _ = decision.slot();
            if let Some(next) = next {
                let mut env = copy.env.clone();
                next.to_env(&mut env).expect("record variables are valid names and values");
            }
            let _ = state.commit(decision.slot());
        }
    }
});
