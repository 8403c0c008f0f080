//! Fuzzes the topology loader: any text must give a topology or located errors, never a panic; a topology
//! that loads must print back to text that loads to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match anylb_conf::load_str(text, "fuzz.toml") {
        Ok(t) => {
            let printed = t.to_toml().expect("a loaded topology prints");
            let back = anylb_conf::load_str(&printed, "printed.toml").expect("printed topology loads");
            assert_eq!(t, back);
            for n in &t.nodes {
                let _ = t.resolve(&n.name);
                let _ = anylb_conf::diff(&t, &back, &n.name);
            }
        }
        Err(errors) => assert!(!errors.0.is_empty()),
    }
});
