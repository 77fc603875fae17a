//! The row model and codec against chrono, serde_json and their own round trips.

use super::ndjson::{write_json_str, write_json_value};

#[test]
fn fast_date_time_text_matches_chrono() {
    let days = [
        (0, 1, 1),
        (1970, 1, 1),
        (2024, 2, 29),
        (9999, 12, 31),
        (33, 7, 4),
    ];
    let nanos = [
        0,
        1,
        999,
        1_000,
        120_000,
        5_000_000,
        500_000_000,
        999_999_999,
        123_456_789,
    ];
    for (y, m, d) in days {
        let date = NaiveDate::from_ymd_opt(y, m, d).unwrap();
        for ns in nanos {
            let dt = date.and_hms_nano_opt(23, 5, 9, ns).unwrap();
            use chrono::TimeZone as _;
            let offsets = [0, 3600, -5 * 3600 - 30 * 60, 14 * 3600, 45, -1];
            let tz = offsets.map(|o| {
                Value::DateTimeTz(FixedOffset::east_opt(o).unwrap().from_utc_datetime(&dt))
            });
            for v in [Value::Date(date), Value::DateTime(dt)].iter().chain(&tz) {
                let mut fast = String::new();
                write_json_value(&mut fast, v);
                let mut slow = String::new();
                write_json_str(&mut slow, &v.text());
                assert_eq!(fast, slow, "{v:?}");
                let mut text = String::new();
                v.write_text(&mut text);
                assert_eq!(text, v.text(), "{v:?}");
            }
        }
    }
}

#[test]
fn json_strings_escape_like_serde_json() {
    for t in [
        "plain",
        "a\"b",
        "back\\slash",
        "nl\n cr\r tab\t",
        "\u{1}\u{1f}x",
        "é ü 😀",
        "",
    ] {
        let mut s = String::new();
        write_json_str(&mut s, t);
        assert_eq!(s, serde_json::to_string(t).unwrap());
    }
    // Seeded strings mixing plain runs with every byte that needs an escape.
    let mut rng = crate::testutil::Rng(0x75);
    let pieces = [
        "ab", "\"", "\\", "\n", "\u{7}", "\u{1f}", "é", " ", "\u{7f}", "xyz0",
    ];
    for _ in 0..20_000 {
        let t: String = (0..rng.below(12))
            .map(|_| pieces[rng.below(pieces.len() as u64) as usize])
            .collect();
        let mut s = String::new();
        write_json_str(&mut s, &t);
        assert_eq!(s, serde_json::to_string(&t).unwrap());
    }
}

use super::*;
use proptest::prelude::*;

fn roundtrip(schema: &Schema, row: &[Value]) -> (Vec<String>, Vec<Value>) {
    let mut buf = Vec::new();
    encode_row(schema, row, &mut buf);
    let line = std::str::from_utf8(&buf).unwrap().trim_end();
    let mut b = BatchBuilder::new("t");
    decode_row(line, &mut b, &|| "test".into()).unwrap();
    let batch = b.take();
    let names = batch.schema.names().iter().map(|n| n.to_string()).collect();
    let mut r = batch.rows[0].clone();
    r.resize(batch.schema.len(), Value::Null);
    (names, r)
}

#[test]
fn typed_values_round_trip_with_annotations() {
    let schema = Schema::new([
        "n", "b", "i", "f", "big", "s", "d", "dt", "dtz", "t", "bin", "j", "nan",
    ]);
    let row = vec![
        Value::Null,
        Value::Bool(true),
        Value::Int(-42),
        Value::Float(2.0),
        Value::decimal("123456789012345678901234567890.000000001").unwrap(),
        Value::String("naïve \"quoted\"\n日本語 \u{1}".into()),
        Value::Date(NaiveDate::from_ymd_opt(2024, 2, 29).unwrap()),
        parse_datetime("2024-01-31T23:59:59.123456").unwrap(),
        parse_datetime("2024-01-31T23:59:59+02:00").unwrap(),
        Value::Time(NaiveTime::from_hms_milli_opt(13, 45, 0, 500).unwrap()),
        Value::Bytes(vec![0, 1, 254, 255]),
        Value::Json(serde_json::json!({"a": [1, {"b": null}]}).into()),
        Value::Float(f64::NAN),
    ];
    let mut buf = Vec::new();
    encode_row(&schema, &row, &mut buf);
    let text = String::from_utf8(buf.clone()).unwrap();
    assert!(
        text.contains(r#""_types":["big@N","d@D","dt@DT","dtz@DT","t@T","bin@B","nan@F"]"#),
        "{text}"
    );
    assert!(
        text.contains(r#""big":"123456789012345678901234567890.000000001""#),
        "{text}"
    );
    let (names, back) = roundtrip(&schema, &row);
    assert_eq!(
        names,
        schema
            .names()
            .iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
    );
    for (i, (a, b)) in row.iter().zip(&back).enumerate() {
        match (a, b) {
            (Value::Float(x), Value::Float(y)) if x.is_nan() => assert!(y.is_nan()),
            _ => assert_eq!(a, b, "column {}", names[i]),
        }
    }
}

#[test]
fn big_integers_read_back_as_decimals() {
    let mut b = BatchBuilder::new("t");
    decode_row(
        r#"{"x":123456789012345678901234567890,"y":-5}"#,
        &mut b,
        &|| "l".into(),
    )
    .unwrap();
    let batch = b.take();
    assert_eq!(
        batch.rows[0][0],
        Value::Decimal("123456789012345678901234567890".into())
    );
    assert_eq!(batch.rows[0][1], Value::Int(-5));
}

/// The original tool's files: `_types` as one space-separated string on every row
/// (`""` when empty), floats for decimals, naive and offset datetimes; an entry that
/// does not split at `@` into two parts is ignored, as the original ignores it. The
/// one-pass path is taken for such lines too, and gives the general path's rows.
#[test]
fn the_original_tools_text_form_of_types_is_read() {
    let lines = [
        r#"{"id":1,"amount":3.01,"note":"a, \"q\" \n 🐟","empty":"","born":"2020-01-01","local_ts":"2024-05-01T10:00:01","event_ts":"2024-05-01T10:00:01+02:00","_types":"born@D local_ts@DT event_ts@DT"}"#,
        r#"{"id":2,"amount":6.02,"note":"b","empty":null,"born":"2020-01-02","local_ts":"2024-05-01T10:00:02.5","event_ts":"2024-05-01T10:00:02-05:30","_types":"born@D local_ts@DT event_ts@DT"}"#,
        r#"{"id":3,"amount":1.5,"note":"c","empty":"","born":null,"local_ts":null,"event_ts":null,"_types":""}"#,
        r#"{"id":4,"raw":"00ff","odd":"2020-01-01","_types":"raw@B a@b@D odd@D@x"}"#,
    ];
    let mut fast = BatchBuilder::new("t");
    let mut dec = RowDecoder::default();
    let mut slow = BatchBuilder::new("t");
    for (n, l) in lines.iter().enumerate() {
        dec.decode(l, &mut fast, &|| format!("line {n}")).unwrap();
        decode_row(l, &mut slow, &|| format!("line {n}")).unwrap();
    }
    dec.decode(lines[1], &mut fast, &|| "again".into()).unwrap();
    decode_row(lines[1], &mut slow, &|| "again".into()).unwrap();
    assert!(dec.fast_lines >= 1, "the one-pass path was not taken");
    let (f, s) = (fast.take(), slow.take());
    assert_eq!(f.rows, s.rows);
    let col = |name: &str| f.schema.index_of(name).unwrap();
    let r0 = &f.rows[0];
    assert_eq!(
        r0[col("born")],
        Value::Date(NaiveDate::from_ymd_opt(2020, 1, 1).unwrap())
    );
    assert!(
        matches!(r0[col("local_ts")], Value::DateTime(_)),
        "{:?}",
        r0[col("local_ts")]
    );
    assert!(
        matches!(r0[col("event_ts")], Value::DateTimeTz(_)),
        "{:?}",
        r0[col("event_ts")]
    );
    assert_eq!(r0[col("note")], Value::String("a, \"q\" \n 🐟".into()));
    assert_eq!(r0[col("empty")], Value::String(String::new()));
    assert_eq!(f.rows[2][col("born")], Value::Null);
    let r3 = &f.rows[3];
    assert_eq!(r3[col("raw")], Value::Bytes(vec![0, 255]));
    assert_eq!(r3[col("odd")], Value::String("2020-01-01".into()));
    // Neither a number nor an array nor a string: refused by name.
    let e = decode_row(r#"{"a":1,"_types":5}"#, &mut slow, &|| "x".into()).unwrap_err();
    assert!(e.to_string().contains("space-separated"), "{e}");
}

#[test]
fn bad_lines_name_their_location() {
    let mut b = BatchBuilder::new("t");
    let e = decode_row(r#"{"d":"2024-13-01","_types":["d@D"]}"#, &mut b, &|| {
        "f.ndjson:7".into()
    })
    .unwrap_err();
    assert!(
        e.to_string()
            .starts_with("f.ndjson:7: column `d`: not a valid @D value"),
        "{e}"
    );
    let e = decode_row("[1,2]", &mut b, &|| "f.ndjson:8".into()).unwrap_err();
    assert!(
        e.to_string().contains("f.ndjson:8: not a JSON object"),
        "{e}"
    );
}

#[test]
fn decimals_are_canonical() {
    assert_eq!(canonical_decimal("007.50").unwrap(), "7.50");
    assert_eq!(canonical_decimal("-0.0").unwrap(), "0.0");
    assert_eq!(canonical_decimal("1.5e3").unwrap(), "1500");
    assert_eq!(canonical_decimal("12e-3").unwrap(), "0.012");
    assert_eq!(canonical_decimal(".5").unwrap(), "0.5");
    assert!(canonical_decimal("1.2.3").is_none());
    assert!(canonical_decimal("abc").is_none());
    assert!(canonical_decimal("").is_none());
}

/// The one-scan path for text already canonical agrees with the general one on every
/// short string over the characters decimals are made of.
#[test]
fn canonical_decimal_fast_path_agrees_with_the_general_one() {
    let alphabet = b"0012.-+e9 ";
    let mut rng = crate::testutil::Rng(0xdec);
    for _ in 0..200_000 {
        let len = rng.below(8) as usize;
        let s: String = (0..len)
            .map(|_| alphabet[rng.below(alphabet.len() as u64) as usize] as char)
            .collect();
        assert_eq!(
            canonical_decimal(&s),
            super::canonical_decimal_general(&s),
            "{s:?}"
        );
    }
}

fn value_strategy() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Int),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::Float),
        "-?[1-9][0-9]{0,40}\\.[0-9]{1,20}".prop_map(|s| Value::decimal(&s).unwrap()),
        any::<String>().prop_map(Value::String),
        (0i32..3_000_000)
            .prop_map(|d| Value::Date(NaiveDate::from_num_days_from_ce_opt(d).unwrap())),
        (0i64..4_000_000_000_000, 0u32..1_000_000).prop_map(|(s, us)| Value::DateTime(
            DateTime::from_timestamp(s, us * 1000).unwrap().naive_utc()
        )),
        prop::collection::vec(any::<u8>(), 0..64).prop_map(Value::Bytes),
        prop::collection::vec(any::<i32>(), 1..5)
            .prop_map(|v| Value::Json(serde_json::json!(v).into())),
    ]
}

proptest! {
    #[test]
    fn any_row_round_trips(
        cols in prop::collection::vec("[a-z_@ \"\\\\é]{1,8}", 1..8),
        vals in prop::collection::vec(value_strategy(), 8),
    ) {
        let schema = Schema::new(&cols);
        prop_assume!(schema.index_of(TYPES_FIELD).is_none());
        let row: Vec<Value> = vals.into_iter().take(schema.len()).collect();
        let (names, back) = roundtrip(&schema, &row);
        prop_assert_eq!(names.len(), schema.len());
        // Column names that contain '@' confuse the annotation split only if they
        // look like `x@CODE`; our annotations use rsplit so the last '@' wins.
        for (a, b) in row.iter().zip(&back) {
            prop_assert_eq!(a, b);
        }
    }
}

/// The fast datetime, date and time paths give exactly chrono's value for everything
/// they take, and leave the rest to it: 200,000 seeded strings near the ISO shapes
/// (valid and out-of-range fields, every separator and suffix, fraction lengths 0-12,
/// single-byte mutations), each parsed both ways and compared by Debug form (which
/// shows the offset, not only the instant).
#[test]
fn fast_datetime_paths_agree_with_chrono() {
    use super::text::fast;
    let mut rng = crate::testutil::Rng(0x5eed);
    let mut next = move |n: u64| rng.below(n);
    let (mut fast_taken, mut cases) = (0, 0);
    for _ in 0..200_000 {
        let pick = |n: &mut dyn FnMut(u64) -> u64, items: &[&str]| {
            items[n(items.len() as u64) as usize].to_string()
        };
        let year = format!("{:04}", [0, 1, 1969, 1970, 2024, 9999][next(6) as usize]);
        let month = format!("{:02}", next(14));
        let day = format!("{:02}", next(33));
        let hour = format!("{:02}", next(26));
        let minute = format!("{:02}", next(62));
        let second = format!("{:02}", next(62));
        let sep = pick(&mut next, &["T", "T", " ", "t", "_"]);
        let frac = match next(4) {
            0 => String::new(),
            _ => {
                let n = next(13) as usize;
                format!(
                    ".{}",
                    (0..n)
                        .map(|_| char::from(b'0' + next(10) as u8))
                        .collect::<String>()
                )
            }
        };
        let suffix = match next(8) {
            0 | 1 => String::new(),
            2 => "Z".into(),
            3 => "z".into(),
            4 => format!("+{:02}:{:02}", next(26), next(62)),
            5 => format!("-{:02}:{:02}", next(26), next(62)),
            6 => format!("+{:02}{:02}", next(24), next(60)),
            _ => format!("-{:02}", next(24)),
        };
        let mut text = format!("{year}-{month}-{day}{sep}{hour}:{minute}:{second}{frac}{suffix}");
        if next(10) == 0 {
            // A single-byte mutation anywhere.
            let mut bytes = text.into_bytes();
            let i = next(bytes.len() as u64) as usize;
            bytes[i] = b"0123456789-:.TZ +x"[next(18) as usize];
            text = String::from_utf8(bytes).unwrap();
        }
        cases += 1;
        let got = super::parse_datetime(&text);
        let want = super::text::general_datetime(text.trim());
        assert_eq!(format!("{got:?}"), format!("{want:?}"), "datetime `{text}`");
        if fast::datetime(text.as_bytes()).is_some() {
            fast_taken += 1;
        }
        let date = &text[..10.min(text.len())];
        assert_eq!(
            format!("{:?}", super::parse_typed_text(date, "D")),
            format!(
                "{:?}",
                chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d")
                    .ok()
                    .map(super::Value::Date)
            ),
            "date `{date}`"
        );
        if let Some(t) = text.get(11..) {
            assert_eq!(
                format!("{:?}", super::parse_typed_text(t, "T")),
                format!(
                    "{:?}",
                    chrono::NaiveTime::parse_from_str(t, "%H:%M:%S%.f")
                        .ok()
                        .map(super::Value::Time)
                ),
                "time `{t}`"
            );
        }
    }
    // Not vacuous: the fast path took a good share, and chrono the rest.
    assert!(
        fast_taken > cases / 10 && fast_taken < cases,
        "{fast_taken} of {cases}"
    );
}

/// The remembering decoder gives exactly the general decoder's rows, schema and errors
/// over seeded streams: typed rows as the encoder writes them, with nulls, columns that
/// come and go, annotations that change between lines (a decimal column that turns
/// into a string, a datetime with and without offset), values that do not fit the
/// annotation the previous line had, duplicate members, other writers' spacing,
/// numbers too long for i64 and lines that are not JSON objects.
#[test]
fn remembering_decoder_agrees_with_the_general_one() {
    let mut rng = crate::testutil::Rng(0xdec0de);
    let (mut fast_lines, mut all_lines) = (0, 0);
    for stream in 0..400 {
        let mut lines: Vec<String> = Vec::new();
        let schema = Schema::new(["id", "price", "at", "note", "d", "extra"]);
        for _ in 0..rng.below(60) {
            let mut row: Vec<Value> = vec![
                Value::Int(rng.below(1000) as i64),
                match rng.below(30) {
                    0 => Value::Null,
                    1 => Value::String("12.5".into()),
                    _ => Value::Decimal(format!("{}.{:02}", rng.below(500), rng.below(100))),
                },
                match rng.below(30) {
                    0 => Value::Null,
                    1..=9 => Value::DateTime(
                        NaiveDate::from_ymd_opt(2024, 5, 11)
                            .unwrap()
                            .and_hms_opt(9, 38, 53)
                            .unwrap(),
                    ),
                    _ => Value::DateTimeTz(
                        DateTime::parse_from_rfc3339("2024-05-11T09:38:53.5+02:00").unwrap(),
                    ),
                },
                Value::String(["a", "b \"q\"", "é\n", ""][rng.below(4) as usize].into()),
                if rng.below(30) == 0 {
                    Value::Bytes(vec![1, 2, 255])
                } else {
                    Value::Date(NaiveDate::from_ymd_opt(2024, 2, 29).unwrap())
                },
            ];
            if stream % 4 == 0 {
                // An untyped stream (an annotated value only now and then).
                for v in &mut row[1..] {
                    if v.annotation().is_some() && rng.below(50) != 0 {
                        *v = Value::String("text".into());
                    }
                }
            }
            if rng.below(30) == 0 {
                row.push(Value::Float(if rng.below(2) == 0 { f64::NAN } else { 1.5 }));
            }
            let mut buf = Vec::new();
            encode_row(&schema, &row, &mut buf);
            let mut line = String::from_utf8(buf).unwrap().trim_end().to_string();
            match rng.below(60) {
                // The previous line's annotations with a value that does not fit them.
                0 => line = line.replacen("\"price\":\"", "\"price\":\"x", 1),
                1 => line = line.replacen("{", "{\"id\":7,", 1),
                2 => line = line.replace(',', ", "),
                3 => line = line.replacen("{", "{\"big\":12345678901234567890123,", 1),
                4 => line = "[1,2]".into(),
                5 => line = line.replacen("\"at\":", "\"at\":{\"x\":1},\"at2\":", 1),
                6 => line = line.replacen("\"price\":", "\"price\":true,\"p2\":", 1),
                7 => line = line.replacen("{", "{\"new_col\":1,", 1),
                _ => {}
            }
            lines.push(line);
        }
        let (mut fast, mut general) = (BatchBuilder::new("t"), BatchBuilder::new("t"));
        let mut decoder = RowDecoder::default();
        for (n, line) in lines.iter().enumerate() {
            all_lines += 1;
            let loc = || format!("s{stream}:{n}");
            let a = decoder
                .decode(line, &mut fast, &loc)
                .map_err(|e| e.to_string());
            let b = decode_row(line, &mut general, &loc).map_err(|e| e.to_string());
            assert_eq!(a, b, "stream {stream} line {n}: {line}");
            if a.is_err() {
                break; // a data file with a bad line is not read further
            }
            assert_eq!(
                fast.schema, general.schema,
                "stream {stream} line {n}: {line}"
            );
            let (x, y) = (fast.rows.last().unwrap(), general.rows.last().unwrap());
            // NaN != NaN: compare Debug forms.
            assert_eq!(
                format!("{x:?}"),
                format!("{y:?}"),
                "stream {stream} line {n}: {line}"
            );
        }
        fast_lines += decoder.fast_lines;
    }
    assert!(
        fast_lines > all_lines / 3,
        "{fast_lines} of {all_lines} lines the fast way"
    );
    eprintln!("{fast_lines} of {all_lines} lines the fast way");
}

/// An offset with seconds (a local mean time) survives the text form exactly: RFC 3339
/// would round it to minutes and move the instant.
#[test]
fn offsets_with_seconds_keep_their_instant() {
    use chrono::TimeZone as _;
    let utc = NaiveDate::from_ymd_opt(1900, 5, 1)
        .unwrap()
        .and_hms_micro_opt(16, 52, 19, 711_504)
        .unwrap();
    for secs in [45, -45, 19 * 60 + 32, -(3600 + 30 * 60 + 7)] {
        let v = Value::DateTimeTz(FixedOffset::east_opt(secs).unwrap().from_utc_datetime(&utc));
        let text = v.text();
        assert!(text.matches(':').count() == 4, "{text}");
        assert_eq!(parse_datetime(&text), Some(v.clone()), "{text}");
        let mut json = String::new();
        write_json_value(&mut json, &v);
        assert_eq!(json, format!("\"{text}\""));
    }
}

/// Pairs in the schema's order, in another order, with new and missing columns: each
/// value lands under its own name.
#[test]
fn pairs_land_under_their_names_in_any_order() {
    let mut b = BatchBuilder::new("t");
    b.push_pairs([("a", Value::Int(1)), ("b", Value::Int(2))]);
    b.push_pairs([("b", Value::Int(3)), ("a", Value::Int(4))]);
    b.push_pairs([
        ("a", Value::Int(5)),
        ("c", Value::Int(6)),
        ("b", Value::Int(7)),
    ]);
    b.push_pairs([("c", Value::Int(8))]);
    let got: Vec<Vec<(String, Value)>> = b.take().records();
    let want = |pairs: &[(&str, i64)]| -> Vec<(String, Value)> {
        let mut v: Vec<(String, Value)> = ["a", "b", "c"]
            .iter()
            .map(|n| (n.to_string(), Value::Null))
            .collect();
        for (n, x) in pairs {
            v.iter_mut().find(|(k, _)| k == n).unwrap().1 = Value::Int(*x);
        }
        v
    };
    let norm = |r: &Vec<(String, Value)>| {
        let mut r = r.clone();
        for n in ["a", "b", "c"] {
            if !r.iter().any(|(k, _)| k == n) {
                r.push((n.to_string(), Value::Null));
            }
        }
        r.sort_by(|x, y| x.0.cmp(&y.0));
        r
    };
    assert_eq!(norm(&got[0]), want(&[("a", 1), ("b", 2)]));
    assert_eq!(norm(&got[1]), want(&[("a", 4), ("b", 3)]));
    assert_eq!(norm(&got[2]), want(&[("a", 5), ("b", 7), ("c", 6)]));
    assert_eq!(norm(&got[3]), want(&[("c", 8)]));
}

/// Nested JSON values (objects, arrays, integers of every size, floats, escapes) read
/// pretty-printed become the text serde_json writes compactly, and are written so
/// (seeded).
#[test]
fn nested_json_is_kept_as_compact_text() {
    fn tree(rng: &mut crate::testutil::Rng, depth: u32) -> serde_json::Value {
        use serde_json::json;
        match rng.below(if depth > 3 { 6 } else { 8 }) {
            0 => json!(null),
            1 => json!(rng.chance(50)),
            2 => json!(rng.next() as i64),
            3 => json!(rng.next()),
            4 => json!((rng.next() as f64) / 7.0 * if rng.chance(50) { -1e-9 } else { 1e12 }),
            5 => json!(["a\"b", "\n", "é😀", "\u{1}", ""][rng.below(5) as usize]),
            6 => {
                serde_json::Value::Array((0..rng.below(4)).map(|_| tree(rng, depth + 1)).collect())
            }
            _ => serde_json::Value::Object(
                (0..rng.below(4))
                    .map(|i| (format!("k{i}\"\t"), tree(rng, depth + 1)))
                    .collect(),
            ),
        }
    }
    let mut rng = crate::testutil::Rng(0x7ee);
    for _ in 0..20_000 {
        let v = serde_json::json!([tree(&mut rng, 0)]);
        let compact = serde_json::to_string(&v).unwrap();
        let j = Json::parse(&serde_json::to_string_pretty(&v).unwrap()).unwrap();
        assert_eq!(j.as_str(), compact);
        assert_eq!(j.to_value(), v);
        let mut s = String::new();
        write_json_value(&mut s, &Value::Json(j));
        assert_eq!(s, compact);
    }
}

/// `BatchBuilder::append` against a model of rows as column maps: seeded batches with
/// random column subsets in random orders (same-schema fast path included) come out in
/// order, every value under its column, absent ones null.
#[test]
fn appended_batches_keep_every_value_under_its_column() {
    use super::{Batch, BatchBuilder, Schema, Value};
    use std::collections::BTreeMap;
    use std::sync::Arc;
    let mut x: u64 = 0xA11E_17D5;
    let mut next = |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    let cols = ["a", "b", "c", "d", "e"];
    for _ in 0..200 {
        let mut b = BatchBuilder::new("t");
        let mut model: Vec<BTreeMap<String, Value>> = Vec::new();
        let mut last: Option<Vec<&str>> = None;
        for _ in 0..(1 + next(6)) {
            // Often the schema of the batch before (the fast path), else a new one.
            let names: Vec<&str> = match &last {
                Some(l) if next(2) == 0 => l.clone(),
                _ => {
                    let mut c: Vec<&str> = cols.iter().copied().filter(|_| next(3) > 0).collect();
                    for i in (1..c.len()).rev() {
                        c.swap(i, next(i as u64 + 1) as usize);
                    }
                    c
                }
            };
            last = Some(names.clone());
            let mut rows = Vec::new();
            for _ in 0..next(4) {
                let mut row = Vec::new();
                let mut m = BTreeMap::new();
                // Rows may be shorter than the schema (trailing nulls left out).
                for n in names.iter().take(next(names.len() as u64 + 1) as usize) {
                    let v = Value::Int(next(1000) as i64);
                    m.insert(n.to_string(), v.clone());
                    row.push(v);
                }
                rows.push(row);
                model.push(m);
            }
            b.append(Batch {
                table: Arc::from("t"),
                schema: Arc::new(Schema::new(names)),
                rows,
            });
        }
        let got: Vec<BTreeMap<String, Value>> = b
            .take()
            .records()
            .into_iter()
            .map(|r| r.into_iter().filter(|(_, v)| !v.is_null()).collect())
            .collect();
        assert_eq!(got, model);
    }
}

/// What a value reads back as after the original tool's encoding
/// ([`RowEncoder::original`]): the reference model of that format.
fn as_original(v: &Value, column: &str) -> Value {
    let plain = column.contains([' ', '@']);
    match v {
        Value::Decimal(d) if !d.contains('.') => match d.parse::<i64>() {
            Ok(i) => Value::Int(i),
            Err(_) => Value::String(d.clone()),
        },
        Value::Decimal(d) => Value::Float(d.parse().unwrap()),
        Value::Time(_) => Value::String(v.text().into_owned()),
        Value::Float(f) if !f.is_finite() => Value::String(v.text().into_owned()),
        Value::Date(_) | Value::DateTime(_) | Value::DateTimeTz(_) | Value::Bytes(_) if plain => {
            Value::String(v.text().into_owned())
        }
        other => other.clone(),
    }
}

proptest! {
    /// Rows in the original's format read back as the model says, whatever the
    /// values and column names; every line carries `_types` as one string.
    #[test]
    fn original_rows_read_back_as_the_model_says(
        cols in prop::collection::vec("[a-z_@ \"\\\\é]{1,8}", 1..8),
        vals in prop::collection::vec(value_strategy(), 8),
        time_at in 0usize..8,
    ) {
        let schema = Schema::new(&cols);
        prop_assume!(schema.index_of(TYPES_FIELD).is_none());
        let mut row: Vec<Value> = vals.into_iter().take(schema.len()).collect();
        if let Some(v) = row.get_mut(time_at) {
            *v = Value::Time(NaiveTime::from_hms_micro_opt(13, 45, 0, 500).unwrap());
        }
        let mut enc = RowEncoder::original();
        let mut line = String::new();
        enc.encode(&schema, &row, &mut line);
        let parsed: serde_json::Value = serde_json::from_str(line.trim_end()).unwrap();
        prop_assert!(parsed[TYPES_FIELD].is_string(), "{}", line);
        let mut b = BatchBuilder::new("t");
        decode_row(line.trim_end(), &mut b, &|| "test".into()).unwrap();
        let batch = b.take();
        for (i, v) in row.iter().enumerate() {
            let name = &schema.names()[i];
            let j = batch.schema.index_of(name).unwrap();
            let got = batch.rows[0].get(j).cloned().unwrap_or(Value::Null);
            let want = as_original(v, name);
            match (&got, &want) {
                (Value::Float(a), Value::Float(b)) => prop_assert!((a - b).abs() <= b.abs() * 1e-15, "{a} {b}"),
                _ => prop_assert_eq!(got, want, "column {:?} of {}", name, line),
            }
        }
    }
}
