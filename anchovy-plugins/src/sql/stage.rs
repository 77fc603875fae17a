//! The bulk path: streaming a load's batches into a staging table (or the target):
//! PostgreSQL gets one `COPY ... FROM STDIN` per load (binary where every column's type
//! allows it, see [`super::copy_binary`], else CSV), MySQL and SQLite multi-row
//! `INSERT`s with bind parameters (as many rows per statement as their parameter limits
//! allow). No statement ever runs per row.

use anchovy_core::{Batch, ColType, Value};
use sqlx::QueryBuilder;

use super::copy_binary::{self, PgType};
use super::db::{Tx, db_err};
use super::dialect::{Dialect, ORD, VER};
use crate::error::PluginError;

/// What [`Tx::stage_binary`] did.
#[derive(Debug)]
pub enum Staged {
    /// The rows written.
    Rows(i64),
    /// A value of this column has no exact binary form: the COPY was abandoned, the
    /// transaction is in error until it rolls back to a savepoint taken before it, and
    /// the load goes again as CSV.
    NotBinary {
        /// The column.
        column: String,
    },
}

impl Tx {
    /// The binary COPY types of `into`'s columns `names` (in that order), or `None`
    /// when one of them has a type sent as CSV, or off PostgreSQL.
    ///
    /// # Errors
    /// [`PluginError::Db`] when the catalog cannot be read.
    pub async fn copy_types(
        &mut self,
        into: &str,
        names: &[&str],
    ) -> Result<Option<Vec<PgType>>, PluginError> {
        let Tx::Pg(t) = self else {
            return Ok(None);
        };
        let found: Vec<(String, i64)> = sqlx::query_as(
            "SELECT attname::text, atttypid::int8 FROM pg_attribute \
             WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped",
        )
        .bind(into)
        .fetch_all(&mut **t)
        .await
        .map_err(|e| db_err(format!("read the column types of {into}"), e))?;
        Ok(names
            .iter()
            .map(|n| {
                found
                    .iter()
                    .find(|(c, _)| c == n)
                    .and_then(|(_, oid)| PgType::of_oid(*oid))
            })
            .collect())
    }

    /// [`Tx::stage`] on PostgreSQL in binary COPY format, each column (then the
    /// order and version columns when `with_ord`) sent as `types` says
    /// ([`super::copy_binary`]). Off PostgreSQL it stages as [`Tx::stage`] does.
    ///
    /// # Errors
    /// As [`Tx::stage`].
    pub async fn stage_binary(
        &mut self,
        into: &str,
        cols: &[(String, ColType)],
        with_ord: bool,
        rx: &mut anchovy_core::destination::UnitBatches,
        types: &[PgType],
    ) -> Result<Staged, PluginError> {
        let Tx::Pg(t) = self else {
            return self.stage(into, cols, with_ord, rx).await.map(Staged::Rows);
        };
        let d = Dialect::Postgres;
        let ctx = || format!("write rows into {into}");
        let mut names: Vec<String> = cols.iter().map(|(c, _)| d.ident(c)).collect();
        if with_ord {
            names.push(d.ident(ORD));
            names.push(d.ident(VER));
        }
        let mut ord = 0i64;
        let sql = format!(
            "COPY {into} ({}) FROM STDIN WITH (FORMAT binary)",
            names.join(", ")
        );
        let mut copy = t.copy_in_raw(&sql).await.map_err(|e| db_err(ctx(), e))?;
        let fields = (cols.len() + if with_ord { 2 } else { 0 }) as u16;
        let mut buf: Vec<u8> = copy_binary::HEADER.to_vec();
        while let Some(batch) = rx.recv().await {
            let (ver, batch) = match batch {
                Ok(b) => b,
                Err(e) => {
                    let _ = copy.abort("anchovies: reading the data failed").await;
                    return Err(e.into());
                }
            };
            let idx = column_index(cols, &batch);
            for row in &batch.rows {
                copy_binary::tuple(&mut buf, fields);
                for (i, ty) in types.iter().take(cols.len()).enumerate() {
                    if !copy_binary::field(&mut buf, cell(&idx, row, i), *ty) {
                        let _ = copy.abort("anchovies: loading as CSV instead").await;
                        return Ok(Staged::NotBinary {
                            column: cols[i].0.clone(),
                        });
                    }
                }
                if with_ord {
                    copy_binary::int8(&mut buf, ord);
                    copy_binary::int8(&mut buf, ver as i64);
                }
                ord += 1;
            }
            if let Err(e) = copy.send(buf.as_slice()).await {
                let _ = copy.abort("anchovies: staging failed").await;
                return Err(db_err(ctx(), e));
            }
            buf.clear();
        }
        if let Err(e) = copy.send(copy_binary::TRAILER).await {
            let _ = copy.abort("anchovies: staging failed").await;
            return Err(db_err(ctx(), e));
        }
        copy.finish().await.map_err(|e| db_err(ctx(), e))?;
        Ok(Staged::Rows(ord))
    }

    /// Streams batches from `rx` into `into` (a quoted table name: the staging table,
    /// or the target itself): one CSV `COPY` for the whole load on PostgreSQL,
    /// multi-row `INSERT`s elsewhere. `cols` are the columns; `with_ord`
    /// adds the row-order and version columns of staging tables (each batch comes
    /// with the upstream commit it belongs to).
    ///
    /// # Errors
    /// [`PluginError::Db`] (a value that does not fit its column is reported here), or
    /// the first error the producer sent.
    pub async fn stage(
        &mut self,
        into: &str,
        cols: &[(String, ColType)],
        with_ord: bool,
        rx: &mut anchovy_core::destination::UnitBatches,
    ) -> Result<i64, PluginError> {
        let d = self.dialect();
        let mut ord = 0i64;
        let ctx = || format!("write rows into {into}");
        let mut names: Vec<String> = cols.iter().map(|(c, _)| d.ident(c)).collect();
        if with_ord {
            names.push(d.ident(ORD));
            names.push(d.ident(VER));
        }
        let head = format!("INSERT INTO {into} ({}) ", names.join(", "));
        // One body for both bind-parameter backends (their query builders are typed).
        macro_rules! insert_batches {
            ($t:ident, $max_params:expr) => {{
                let per = ($max_params / (cols.len() + 2)).max(1);
                while let Some(batch) = rx.recv().await {
                    let (ver, batch) = batch?;
                    let ver = ver as i64;
                    let idx = column_index(cols, &batch);
                    for chunk in batch.rows.chunks(per) {
                        let mut qb = QueryBuilder::new(head.clone());
                        qb.push_values(chunk.iter(), |mut b, row| {
                            for i in 0..cols.len() {
                                match text_or_native(cell(&idx, row, i), d) {
                                    Bind::Null => b.push_bind(None::<String>),
                                    Bind::Bool(x) => b.push_bind(x),
                                    Bind::Int(x) => b.push_bind(x),
                                    Bind::Float(x) => b.push_bind(x),
                                    Bind::Bytes(x) => b.push_bind(x),
                                    Bind::Text(x) => b.push_bind(x),
                                };
                            }
                            if with_ord {
                                b.push_bind(ord);
                                b.push_bind(ver);
                            }
                            ord += 1;
                        });
                        qb.build()
                            .execute(&mut **$t)
                            .await
                            .map_err(|e| db_err(ctx(), e))?;
                    }
                }
            }};
        }
        match self {
            Tx::Pg(t) => {
                let sql = format!(
                    "COPY {into} ({}) FROM STDIN WITH (FORMAT csv)",
                    names.join(", ")
                );
                let mut copy = t.copy_in_raw(&sql).await.map_err(|e| db_err(ctx(), e))?;
                let mut buf = String::new();
                while let Some(batch) = rx.recv().await {
                    let (ver, batch) = match batch {
                        Ok(b) => b,
                        Err(e) => {
                            let _ = copy.abort("anchovies: reading the data failed").await;
                            return Err(e.into());
                        }
                    };
                    let idx = column_index(cols, &batch);
                    buf.clear();
                    for row in &batch.rows {
                        for (i, (_, ty)) in cols.iter().enumerate() {
                            if i > 0 {
                                buf.push(',');
                            }
                            csv_field(&mut buf, cell(&idx, row, i), *ty);
                        }
                        if with_ord {
                            use std::fmt::Write as _;
                            let _ = write!(buf, ",{ord},{ver}");
                        }
                        buf.push('\n');
                        ord += 1;
                    }
                    if let Err(e) = copy.send(buf.as_bytes()).await {
                        let _ = copy.abort("anchovies: staging failed").await;
                        return Err(db_err(ctx(), e));
                    }
                }
                copy.finish().await.map_err(|e| db_err(ctx(), e))?;
            }
            // MySQL and SQLite: multi-row INSERTs, as many rows as their parameter limits allow.
            Tx::My(t) => insert_batches!(t, 60_000),
            Tx::Lite(t) => insert_batches!(t, 30_000),
        }
        Ok(ord)
    }
}

/// Where each staging column is in a batch (`None`: the batch lacks it, so null).
fn column_index(cols: &[(String, ColType)], batch: &Batch) -> Vec<Option<usize>> {
    cols.iter().map(|(c, _)| batch.schema.index_of(c)).collect()
}

fn cell<'r>(idx: &[Option<usize>], row: &'r [Value], i: usize) -> &'r Value {
    const NULL: &Value = &Value::Null;
    idx[i].and_then(|j| row.get(j)).unwrap_or(NULL)
}

/// A value as bound to a MySQL or SQLite statement.
enum Bind {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Bytes(Vec<u8>),
    Text(String),
}

fn text_or_native(v: &Value, d: Dialect) -> Bind {
    match v {
        Value::Null => Bind::Null,
        Value::Bool(b) => Bind::Bool(*b),
        Value::Int(i) => Bind::Int(*i),
        Value::Float(f) if f.is_finite() => Bind::Float(*f),
        Value::Bytes(b) => Bind::Bytes(b.clone()),
        // MySQL DATETIME has no offset: store the UTC instant.
        Value::DateTimeTz(dt) if d == Dialect::MySql => {
            Bind::Text(dt.naive_utc().format("%Y-%m-%d %H:%M:%S%.f").to_string())
        }
        Value::DateTime(dt) if d == Dialect::MySql => {
            Bind::Text(dt.format("%Y-%m-%d %H:%M:%S%.f").to_string())
        }
        other => Bind::Text(other.text().into_owned()),
    }
}

/// One CSV field for PostgreSQL COPY (public for the differential test of the binary
/// path): nulls are empty and unquoted, text is quoted (so
/// an empty string stays an empty string), numbers are written as they are.
pub fn csv_field(buf: &mut String, v: &Value, ty: ColType) {
    match v {
        Value::Null => {}
        Value::Int(_) => v.write_text(buf),
        Value::Bool(b) if ty == ColType::Bool => buf.push(if *b { 't' } else { 'f' }),
        Value::Bytes(b) => {
            buf.push_str("\"\\x");
            buf.push_str(&hex::encode(b));
            buf.push('"');
        }
        Value::String(t) => quoted(buf, t),
        Value::Decimal(d) => buf.push_str(d),
        // Their text has no quote to double.
        Value::Date(_) | Value::DateTime(_) | Value::DateTimeTz(_) | Value::Time(_) => {
            buf.push('"');
            v.write_text(buf);
            buf.push('"');
        }
        other => quoted(buf, &other.text()),
    }
}

fn quoted(buf: &mut String, text: &str) {
    buf.push('"');
    let mut rest = text;
    while let Some(i) = rest.find('"') {
        buf.push_str(&rest[..=i]);
        buf.push('"');
        rest = &rest[i + 1..];
    }
    buf.push_str(rest);
    buf.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_fields_keep_nulls_and_empty_strings_apart() {
        let mut b = String::new();
        csv_field(&mut b, &Value::Null, ColType::Str);
        b.push(',');
        csv_field(&mut b, &Value::String(String::new()), ColType::Str);
        b.push(',');
        csv_field(
            &mut b,
            &Value::String("say \"hi\",\nbye".into()),
            ColType::Str,
        );
        b.push(',');
        csv_field(&mut b, &Value::Bytes(vec![0, 255]), ColType::Bytes);
        assert_eq!(b, ",\"\",\"say \"\"hi\"\",\nbye\",\"\\x00ff\"");
    }
}
