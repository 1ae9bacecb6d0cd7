//! The body of fablab's frame-parser fuzz target (`dataplane/fuzz`), kept here so the
//! property tests run the very same checks on stable Rust.

use super::frame::FrameRepr;
use super::int::IntStack;
use super::{ack::AckExtRepr, aeth, bth};

/// Feeds untrusted bytes to every parser. Panics only if an invariant breaks: a
/// frame that parses must emit again and parse back to the same value.
pub fn check_frame(data: &[u8]) {
    if let Ok(frame) = FrameRepr::parse(data) {
        let mut buf = [0u8; 9216];
        let len = frame.buffer_len();
        assert!(len <= buf.len(), "a parsed frame is longer than its input");
        let written = frame.emit(&mut buf).expect("a parsed frame must emit");
        assert_eq!(written, len);
        let again = FrameRepr::parse(&buf[..len]).expect("an emitted frame must parse");
        assert_eq!(again, frame, "emit then parse must round-trip");
    }
    // Each header parser on its own, from the first byte.
    if let Ok(p) = bth::Packet::new_checked(data) {
        let _ = bth::BthRepr::parse(&p);
    }
    if let Ok(p) = aeth::Packet::new_checked(data) {
        let _ = aeth::AethRepr::parse(&p);
    }
    if let Ok((stack, used)) = IntStack::parse(data) {
        assert!(used <= data.len());
        assert_eq!(stack.buffer_len(), used);
    }
    let _ = AckExtRepr::parse(data);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::frame::tests::arb_frame;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn random_bytes(data in proptest::collection::vec(any::<u8>(), 0..400)) {
            check_frame(&data);
        }

        #[test]
        fn truncated_and_mutated_valid_frames(
            parts in arb_frame(),
            cut in any::<prop::sample::Index>(),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        ) {
            let f = parts.repr();
            let mut buf = vec![0u8; f.buffer_len()];
            f.emit(&mut buf).unwrap();
            for (at, v) in flips {
                let i = at.index(buf.len());
                buf[i] ^= v;
            }
            let end = cut.index(buf.len() + 1);
            check_frame(&buf[..end]);
            check_frame(&buf);
        }
    }
}
