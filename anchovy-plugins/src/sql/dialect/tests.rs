//! Identifiers, names, widening and the merge statements.

use super::*;
use anchovy_core::tbl::SortedColSelect;

#[test]
fn identifiers_are_quoted_and_cannot_break_out() {
    assert_eq!(Dialect::Postgres.ident("order"), "\"order\"");
    assert_eq!(
        Dialect::Postgres.ident("a\"; DROP TABLE x; --"),
        "\"a\"\"; DROP TABLE x; --\""
    );
    assert_eq!(Dialect::MySql.ident("we`ird"), "`we``ird`");
    let t = TableRef {
        schema: "s".into(),
        name: "my table".into(),
    };
    assert_eq!(Dialect::Sqlite.table(&t), "\"s__my table\"");
    assert_eq!(Dialect::Postgres.table(&t), "\"s\".\"my table\"");
}

#[test]
fn long_names_are_cut_with_a_hash_of_the_whole_name() {
    let a = format!("{}_alpha", "x".repeat(60));
    let b = format!("{}_beta", "x".repeat(60));
    let (fa, fb) = (Dialect::Postgres.fit(&a), Dialect::Postgres.fit(&b));
    assert_eq!(fa.len(), 63);
    assert_ne!(fa, fb);
    assert_eq!(fa, format!("{}_{:08x}", "x".repeat(54), name_hash(&a)));
    assert_eq!(Dialect::Postgres.fit("short"), "short");
    assert_eq!(Dialect::Sqlite.fit(&a), a);
    // Multi-byte characters: PostgreSQL counts bytes and never cuts a character.
    let e = "é".repeat(40);
    let fe = Dialect::Postgres.fit(&e);
    assert!(fe.len() <= 63, "{fe}");
    assert_eq!(Dialect::MySql.fit(&e), e, "MySQL counts characters");
    // Pinned: the rule must never change for existing tables.
    assert_eq!(name_hash("orders"), 0x325e_96ec);
}

#[test]
fn widening_follows_int_decimal_text_and_date_datetime() {
    use ColType::*;
    assert_eq!(widen(Int, Decimal), Some(Decimal));
    assert_eq!(widen(Int, Float), Some(Decimal));
    assert_eq!(widen(Decimal, Str), Some(Str));
    assert_eq!(widen(Date, DateTime), Some(DateTime));
    assert_eq!(widen(DateTime, Date), None);
    assert_eq!(widen(Decimal, Int), None);
    assert_eq!(widen(Str, Int), None);
    assert_eq!(widen(Bool, Int), Some(Str));
}

#[test]
fn sort_guard_and_dedup() {
    let m = MergeSpec {
        keys: vec!["id".into()],
        sets: vec![],
        sort: SortedColSelect::parse("-updated_at").0,
        sort_types: vec![ColType::DateTime],
    };
    let sql = Dialect::Postgres.merge(
        &TableRef {
            schema: "s".into(),
            name: "t".into(),
        },
        "stage",
        &["id".into(), "updated_at".into()],
        &m,
        false,
    );
    assert_eq!(sql.len(), 1);
    assert!(
        sql[0].contains(
            "ON CONFLICT (\"id\") DO UPDATE SET \"updated_at\" = excluded.\"updated_at\" WHERE"
        ),
        "{}",
        sql[0]
    );
    assert!(
        sql[0].contains("excluded.\"updated_at\" > _t.\"updated_at\""),
        "{}",
        sql[0]
    );
    assert!(
        sql[0].contains("PARTITION BY \"id\" ORDER BY CASE WHEN \"updated_at\" IS NULL"),
        "{}",
        sql[0]
    );
    let my = Dialect::MySql.merge(
        &TableRef {
            schema: "s".into(),
            name: "t".into(),
        },
        "stage",
        &["id".into(), "updated_at".into()],
        &m,
        false,
    );
    assert!(
        my.iter()
            .any(|s| s.starts_with("DELETE _n FROM `stage_win`")),
        "{my:?}"
    );
}

/// The original tool's SQLAlchemy URLs name their driver after a `+`: the same
/// database, connected to without it.
#[test]
fn sqlalchemy_driver_suffixes_name_the_same_database() {
    for (url, d) in [
        ("postgresql+psycopg2://u@h/db", Dialect::Postgres),
        ("mysql+pymysql://u@h/db", Dialect::MySql),
        ("sqlite+pysqlite:////tmp/x.db", Dialect::Sqlite),
    ] {
        assert_eq!(Dialect::from_url(url), Some(d), "{url}");
    }
    assert_eq!(
        crate::sql::db::without_driver("postgresql+psycopg2://u:p@h:5432/db"),
        "postgresql://u:p@h:5432/db"
    );
    assert_eq!(
        crate::sql::db::without_driver("postgres://u@h/a+b"),
        "postgres://u@h/a+b"
    );
    assert_eq!(Dialect::from_url("oracle+cx://h"), None);
}
