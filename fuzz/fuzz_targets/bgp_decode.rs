//! Fuzzes the BGP message decoder with hostile bytes: any input must decode or give an error (the NOTIFICATION
//! a session would send), never panic; and whatever decodes cleanly must encode to bytes that decode to the same
//! message. The first input byte picks 2- or 4-octet AS numbers; the rest is one message, header included.
#![no_main]

use anylb_routing::packet::{message::frame_len, Codec, Message};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&flag, msg)) = data.split_first() else {
        return;
    };
    let codec = Codec {
        four_octet_as: flag & 1 == 1,
    };
    // The framing as the session reads it, then the decoder.
    let _ = frame_len(msg);
    // An UPDATE with a malformed attribute decodes as treat-as-withdraw (RFC 7606): a verdict about the bytes
    // received, never encoded again, so only clean messages must survive the round trip.
    let clean = |m: &Message| !matches!(m, Message::Update(u) if u.treat_as_withdraw.is_some());
    if let Some(m) = codec.decode(msg).ok().filter(clean) {
        let mut again = Vec::new();
        codec.encode(&m, &mut again);
        let back = codec.decode(&again).expect("an encoded message decodes");
        let mut want = m;
        if let Message::Update(u) = &mut want {
            // Path attributes without routes mean nothing; the encoder leaves them out.
            if u.nlri.is_empty() && u.mp_reach.is_none() {
                u.attrs = Default::default();
            }
        }
        assert_eq!(back, want, "decode(encode(m)) == m");
    }
});
