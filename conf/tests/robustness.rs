//! Hostile input never panics the loader: random edits of the examples load or fail with located errors, and
//! a file that loads prints back to itself.

#![allow(clippy::unwrap_used)]

use anylb_conf::{load_str, Duration};
use proptest::prelude::*;

const EXAMPLES: [&str; 4] = [
    include_str!("../../examples/ecmp-cluster.toml"),
    include_str!("../../examples/ipv6-fullnat.toml"),
    include_str!("../../examples/nat64.toml"),
    include_str!("../../examples/snat-gateway.toml"),
];

/// Replaces `len` bytes at `pos` with `with`, staying on character boundaries.
fn splice(src: &str, pos: usize, len: usize, with: &str) -> String {
    let mut start = pos.min(src.len());
    while !src.is_char_boundary(start) {
        start -= 1;
    }
    let mut end = (start + len).min(src.len());
    while !src.is_char_boundary(end) {
        end += 1;
    }
    format!("{}{}{}", &src[..start], with, &src[end..])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn edited_examples_never_panic(
        which in 0usize..4,
        pos in 0usize..6000,
        len in 0usize..8,
        with in prop::sample::select(vec!["", "\"", "[", "]]", "=", "0", "-1", "\n", "x", "99999999999999999999",
            "\"::\"", "{", "}", ",", "\"all\"", "[[services]]\n", "1.5", "true", "#", "'"]),
    ) {
        let text = splice(EXAMPLES[which], pos, len, with);
        match load_str(&text, "edited.toml") {
            Ok(t) => {
                let back = load_str(&t.to_toml().unwrap(), "printed.toml").unwrap();
                prop_assert_eq!(t, back);
            }
            Err(e) => {
                prop_assert!(!e.0.is_empty());
                let lines = text.lines().count().max(1);
                for d in &e.0 {
                    prop_assert!(d.line >= 1 && d.line <= lines + 1, "{} outside {} lines", d, lines);
                }
            }
        }
    }

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,300}") {
        let _ = load_str(&text, "any.toml");
    }

    #[test]
    fn durations_print_back(ms in 0u64..10_000_000_000) {
        let d = Duration::from_millis(ms);
        prop_assert_eq!(d.to_string().parse::<Duration>().unwrap(), d);
    }
}
