//! The CSV reader on arbitrary bytes, with the first byte choosing options: it may
//! return an error, never panic or hang.
#![no_main]
use std::collections::BTreeMap;

use anchovy_core::ColType;
use anchovy_plugins::formats::csv::{CsvFormat, CsvOptions};
use anchovy_plugins::formats::decompressed;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&knobs, body)) = data.split_first() else { return };
    let delimiter = [",", ";", "/t", "|"][(knobs & 3) as usize];
    let opts: CsvOptions = serde_json::from_value(serde_json::json!({
        "delimiter": delimiter,
        "header": knobs & 4 == 0,
        "quote": if knobs & 8 == 0 { "\"" } else { "none" },
        "encoding": if knobs & 16 == 0 { "utf-8" } else { "latin-1" },
        "provenance": knobs & 32 != 0,
    }))
    .unwrap();
    let mut cols = BTreeMap::new();
    if knobs & 64 != 0 {
        cols.insert("column_1".to_string(), ColType::Int);
        cols.insert("a".to_string(), ColType::DateTime);
        cols.insert("b".to_string(), ColType::Decimal);
    }
    let f = CsvFormat::new(&opts, &cols).unwrap();
    let label = if knobs & 128 != 0 { "f.csv.gz" } else { "f.csv" };
    let Ok(input) = decompressed(Box::new(std::io::Cursor::new(body.to_vec())), label) else { return };
    let _ = f.read(input, label, "t", 7, &mut anchovy_core::reject::Rejects::new("t", anchovy_core::reject::RejectPolicy { on_bad_record: anchovy_core::reject::OnBadRecord::Quarantine, max_rejects: None }), &mut |_| true);
});
