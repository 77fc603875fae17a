//! The CSV reader on RFC 4180 edge cases, encodings, types and bad records.

use super::*;

fn opts(extra: serde_json::Value) -> CsvOptions {
    let mut m = serde_json::json!({});
    m.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    serde_json::from_value(m).unwrap()
}

fn read(
    bytes: &[u8],
    o: CsvOptions,
    cols: &[(&str, ColType)],
    label: &str,
) -> Result<Vec<Vec<(String, Value)>>, PluginError> {
    let cols: BTreeMap<String, ColType> = cols.iter().map(|(a, b)| (a.to_string(), *b)).collect();
    let f = CsvFormat::new(&o, &cols)?;
    let mut out = Vec::new();
    f.read(
        super::super::decompressed(Box::new(std::io::Cursor::new(bytes.to_vec())), label)?,
        label,
        "t",
        2,
        &mut Rejects::failing("t"),
        &mut |b: Batch| {
            out.extend(b.records());
            true
        },
    )?;
    Ok(out)
}

fn s(v: &str) -> Value {
    Value::String(v.into())
}

#[test]
fn rfc4180_quotes_newlines_and_bom() {
    let data = "\u{feff}id,note\n1,\"a, b\"\n2,\"say \"\"hi\"\"\"\n3,\"multi\nline\"\n";
    let rows = read(data.as_bytes(), opts(serde_json::json!({})), &[], "f.csv").unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0][0], ("id".into(), s("1")));
    assert_eq!(rows[0][1].1, s("a, b"));
    assert_eq!(rows[1][1].1, s("say \"hi\""));
    assert_eq!(rows[2][1].1, s("multi\nline"));
}

#[test]
fn utf16_files_are_recognised_by_their_bom_and_tiny_files_read() {
    let mut le = vec![0xFF, 0xFE];
    for u in "id,name\n1,Zoë\n".encode_utf16() {
        le.extend_from_slice(&u.to_le_bytes());
    }
    let rows = read(&le, opts(serde_json::json!({})), &[], "f.csv").unwrap();
    assert_eq!(rows[0][1], ("name".into(), s("Zoë")));
    // Fewer bytes than a BOM, with and without a header.
    assert!(
        read(b"a", opts(serde_json::json!({})), &[], "f.csv")
            .unwrap()
            .is_empty()
    );
    let rows = read(
        b"a",
        opts(serde_json::json!({"header": false})),
        &[],
        "f.csv",
    )
    .unwrap();
    assert_eq!(rows[0][0].1, s("a"));
    let rows = read(b"\xEF\xBB\xBF", opts(serde_json::json!({})), &[], "f.csv").unwrap();
    assert!(rows.is_empty());
}

#[test]
fn tsv_with_readme_delimiter_and_types() {
    let data = b"order_num\tamount\tat\n7\t12.50\t2024-01-02 03:04:05\n";
    let rows = read(
        data,
        opts(serde_json::json!({"delimiter": "/t"})),
        &[
            ("order_num", ColType::Int),
            ("amount", ColType::Decimal),
            ("at", ColType::DateTime),
        ],
        "s.tsv",
    )
    .unwrap();
    assert_eq!(rows[0][0].1, Value::Int(7));
    assert_eq!(rows[0][1].1, Value::Decimal("12.50".into()));
    assert!(matches!(rows[0][2].1, Value::DateTime(_)));
}

#[test]
fn ragged_rows_and_bad_values_name_file_and_line() {
    let e = read(b"a,b\n1,2\n3\n", opts(serde_json::json!({})), &[], "r.csv").unwrap_err();
    assert_eq!(
        e.to_string(),
        "r.csv:3: the row has 1 fields but the header has 2 (a ragged row or an unbalanced quote)"
    );
    let e = read(
        b"a,b\n1,2\nx,3\n",
        opts(serde_json::json!({})),
        &[("a", ColType::Int)],
        "r.csv",
    )
    .unwrap_err();
    assert_eq!(e.to_string(), "r.csv:3: column `a`: `x` is not a valid int");
    let e = read(b"a,a\n1,2\n", opts(serde_json::json!({})), &[], "d.csv").unwrap_err();
    assert!(e.to_string().contains("column `a` twice"), "{e}");
}

#[test]
fn latin1_empty_header_only_and_no_header() {
    let rows = read(
        b"name\ncaf\xe9\n",
        opts(serde_json::json!({"encoding": "latin-1"})),
        &[],
        "l.csv",
    )
    .unwrap();
    assert_eq!(rows[0][0].1, s("café"));
    let e = read(
        b"name\ncaf\xe9\n",
        opts(serde_json::json!({})),
        &[],
        "l.csv",
    )
    .unwrap_err();
    assert!(e.to_string().contains("not valid UTF-8"), "{e}");
    assert!(
        read(b"", opts(serde_json::json!({})), &[], "e.csv")
            .unwrap()
            .is_empty()
    );
    assert!(
        read(b"a,b\n", opts(serde_json::json!({})), &[], "h.csv")
            .unwrap()
            .is_empty()
    );
    let rows = read(
        b"1;2\n",
        opts(serde_json::json!({"header": false, "delimiter": ";"})),
        &[],
        "n.csv",
    )
    .unwrap();
    assert_eq!(rows[0][1], ("column_2".into(), s("2")));
}

#[test]
fn provenance_skip_lines_and_crlf() {
    let rows = read(
        b"# exported\r\nid\r\n1\r\n2\r\n",
        opts(serde_json::json!({"provenance": true, "skip_lines": 1})),
        &[],
        "p.csv",
    )
    .unwrap();
    assert_eq!(
        rows[1],
        vec![
            ("id".into(), s("2")),
            ("_file".into(), s("p.csv")),
            ("_line".into(), Value::Int(4))
        ]
    );
}

#[test]
fn compressed_inputs_stream() {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, b"a\n1\n").unwrap();
    let rows = read(
        &gz.finish().unwrap(),
        opts(serde_json::json!({})),
        &[],
        "x.csv.gz",
    )
    .unwrap();
    assert_eq!(rows[0][0].1, s("1"));
    let z = zstd::stream::encode_all(&b"a\n2\n"[..], 3).unwrap();
    let rows = read(&z, opts(serde_json::json!({})), &[], "x.csv.zst").unwrap();
    assert_eq!(rows[0][0].1, s("2"));
    assert!(read(b"not zstd", opts(serde_json::json!({})), &[], "y.csv.zst").is_err());
}

#[test]
fn delimiters() {
    assert_eq!(parse_delimiter("/t").unwrap(), b'\t');
    assert_eq!(parse_delimiter("\\t").unwrap(), b'\t');
    assert_eq!(parse_delimiter("|").unwrap(), b'|');
    assert!(parse_delimiter("ab").is_err());
}

#[test]
fn unknown_option_is_rejected_with_the_valid_ones() {
    let e = serde_json::from_value::<CsvOptions>(serde_json::json!({"delimter": ";"})).unwrap_err();
    assert!(e.to_string().contains("unknown field `delimter`"), "{e}");
}

/// `autodiscover: true` types a value only where the typed value writes back as the
/// very same text; everything else stays text, exactly as written.
#[test]
fn autodiscover_types_only_what_writes_back_the_same() {
    use anchovy_core::Value;
    let d = |t: &str| discover(t, false);
    assert_eq!(d("42"), Value::Int(42));
    assert_eq!(d("-7"), Value::Int(-7));
    assert_eq!(d("0"), Value::Int(0));
    for text in [
        "042",
        "-0",
        "+1",
        "1e5",
        " 42",
        "42 ",
        "12.",
        ".5",
        "1,5",
        "2024-1-31",
        "2024-01-31 10:00:00",
        "True",
        "N/A",
        "",
        "99999999999999999999x",
    ] {
        assert_eq!(d(text), Value::String(text.into()), "{text}");
    }
    assert_eq!(d("12.50"), Value::Decimal("12.50".into()));
    // Beyond i64 and without a point: text (as written).
    assert_eq!(
        d("99999999999999999999"),
        Value::String("99999999999999999999".into())
    );
    assert_eq!(d("2024-02-29"), Value::Date("2024-02-29".parse().unwrap()));
    assert_eq!(d("2024-02-30"), Value::String("2024-02-30".into()));
    assert!(matches!(d("2024-01-31T10:00:00"), Value::DateTime(_)));
    assert!(matches!(d("2024-01-31T10:00:00Z"), Value::DateTimeTz(_)));
    assert_eq!(d("true"), Value::Bool(true));
    assert_eq!(discover("", true), Value::Null);
    for text in [
        "42",
        "-7",
        "12.50",
        "2024-02-29",
        "2024-01-31T10:00:00.5",
        "2024-01-31T10:00:00+02:00",
        "true",
    ] {
        assert_eq!(d(text).text(), text, "{text} does not write back");
    }
}
