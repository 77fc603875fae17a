//! The typed NDJSON codec: any line decodes or errors (never panics); whatever decodes
//! re-encodes and decodes to the same values.
#![no_main]
use anchovy_core::row::{BatchBuilder, RowEncoder, decode_row};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(line) = std::str::from_utf8(data) else { return };
    let mut b = BatchBuilder::new("t");
    if decode_row(line, &mut b, &|| "fuzz".into()).is_err() {
        return;
    }
    let batch = b.take();
    let mut text = String::new();
    let mut enc = RowEncoder::default();
    for row in &batch.rows {
        enc.encode(&batch.schema, row, &mut text);
    }
    let mut again = BatchBuilder::new("t");
    for l in text.lines() {
        decode_row(l, &mut again, &|| "again".into()).expect("our own encoding decodes");
    }
    let again = again.take();
    assert_eq!(batch.records(), again.records(), "round trip changed values");
});
