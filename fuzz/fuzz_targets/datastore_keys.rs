//! Datastore key encoding: whatever a table name is, its keys are exactly the expected
//! number of path segments under their folder, none of them `.` or `..`.
#![no_main]
use anchovy_core::datastore::layout;
use libfuzzer_sys::fuzz_target;
use object_store::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(name) = std::str::from_utf8(data) else { return };
    for (key, parts) in [
        (layout::table_key(name), 2),
        (layout::data_key(name, "f.ndjson.gz"), 3),
        (layout::checkpoint_key(name), 2),
    ] {
        let p = Path::parse(&key).unwrap_or_else(|e| panic!("{key:?} does not parse: {e}"));
        let segs: Vec<String> = p.parts().map(|s| s.as_ref().to_string()).collect();
        assert_eq!(segs.len(), parts, "{name:?} -> {key:?}");
        assert!(segs.iter().all(|s| s != "." && s != ".." && !s.is_empty()), "{key:?}");
    }
});
