//! The config loader on arbitrary text: a document or an error, never a panic, and
//! alias bombs stay within their budget.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = anchovy_core::ConfigDoc::parse(text, "fuzz.yaml");
});
