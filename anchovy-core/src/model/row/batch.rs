//! Batches: rows of values under a shared schema of column names.

use std::collections::HashMap;
use std::sync::Arc;

use super::Value;
use super::ndjson::write_json_str;

/// Column names of a batch, shared between batches of a stream.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Schema {
    names: Vec<Arc<str>>,
    index: HashMap<Arc<str>, usize>,
    /// `"name":` per column, escaped once for the encoder.
    pub(super) json_keys: Vec<Box<str>>,
}

impl Schema {
    /// A schema with these column names, in order. Duplicate names keep the first.
    pub fn new<S: AsRef<str>>(names: impl IntoIterator<Item = S>) -> Self {
        let mut s = Schema::default();
        for n in names {
            s.index_or_insert(n.as_ref());
        }
        s
    }

    /// The column names in order.
    pub fn names(&self) -> &[Arc<str>] {
        &self.names
    }

    /// The number of columns.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// True when there are no columns.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The position of a column.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    /// Drops the columns from position `len` on: the ones added while reading a row
    /// that was not kept (no kept row has a value there).
    pub fn truncate(&mut self, len: usize) {
        if len >= self.names.len() {
            return;
        }
        for n in self.names.drain(len..) {
            self.index.remove(&n);
        }
        self.json_keys.truncate(len);
    }

    /// The position of a column, appending it when new.
    pub fn index_or_insert(&mut self, name: &str) -> usize {
        if let Some(i) = self.index.get(name) {
            return *i;
        }
        let n: Arc<str> = Arc::from(name);
        let i = self.names.len();
        self.names.push(n.clone());
        self.index.insert(n, i);
        let mut key = String::with_capacity(name.len() + 3);
        write_json_str(&mut key, name);
        key.push(':');
        self.json_keys.push(key.into_boxed_str());
        i
    }
}

/// One row: values indexed by the batch schema; missing trailing values are null.
pub type Row = Vec<Value>;

/// Sets column `i` of `row`, the columns before it null when the row is shorter.
#[inline]
pub fn put(row: &mut Row, i: usize, v: Value) {
    if i == row.len() {
        row.push(v);
    } else {
        if row.len() <= i {
            row.resize(i + 1, Value::Null);
        }
        row[i] = v;
    }
}

/// A batch of rows for one table.
#[derive(Debug, Clone)]
pub struct Batch {
    /// The table the rows belong to.
    pub table: Arc<str>,
    /// The column names.
    pub schema: Arc<Schema>,
    /// The rows.
    pub rows: Vec<Row>,
}

impl Batch {
    /// The value of `column` in row `i` (null when missing).
    pub fn get(&self, i: usize, column: &str) -> &Value {
        const NULL: Value = Value::Null;
        self.schema
            .index_of(column)
            .and_then(|c| self.rows.get(i)?.get(c))
            .unwrap_or(&NULL)
    }

    /// The number of rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// True when the batch has no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Rows as `(column, value)` pairs, for tests and small tools.
    pub fn records(&self) -> Vec<Vec<(String, Value)>> {
        self.rows
            .iter()
            .map(|r| {
                self.schema
                    .names()
                    .iter()
                    .enumerate()
                    .map(|(i, n)| (n.to_string(), r.get(i).cloned().unwrap_or(Value::Null)))
                    .collect()
            })
            .collect()
    }
}

/// Accumulates rows of one table into batches; columns may be added as rows arrive.
#[derive(Debug)]
pub struct BatchBuilder {
    table: Arc<str>,
    pub(super) schema: Schema,
    pub(super) rows: Vec<Row>,
}

impl BatchBuilder {
    /// An empty builder for `table`.
    pub fn new(table: impl Into<Arc<str>>) -> Self {
        BatchBuilder {
            table: table.into(),
            schema: Schema::default(),
            rows: Vec::new(),
        }
    }

    /// An empty builder with a known schema (the schema may still grow).
    pub fn with_schema(table: impl Into<Arc<str>>, schema: Schema) -> Self {
        BatchBuilder {
            table: table.into(),
            schema,
            rows: Vec::new(),
        }
    }

    /// The table the rows are for.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The schema so far.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// The schema so far, to add columns.
    pub fn schema_mut(&mut self) -> &mut Schema {
        &mut self.schema
    }

    /// Appends a row whose values follow the current schema.
    pub fn push_row(&mut self, row: Row) {
        self.rows.push(row);
    }

    /// The position of column `name`, appended when new. Records of one source mostly
    /// list their fields in one order: `expect` (the position after the last column
    /// set) is compared first, the name looked up only when it is not that one.
    #[inline]
    pub fn column(&mut self, name: &str, expect: usize) -> usize {
        match self.schema.names.get(expect) {
            Some(n) if **n == *name => expect,
            _ => self.schema.index_or_insert(name),
        }
    }

    /// Appends a row given as `(column, value)` pairs.
    pub fn push_pairs<K: AsRef<str>>(&mut self, pairs: impl IntoIterator<Item = (K, Value)>) {
        let mut row: Row = Vec::with_capacity(self.schema.len());
        let mut next = 0;
        for (k, v) in pairs {
            let i = self.column(k.as_ref(), next);
            next = i + 1;
            put(&mut row, i, v);
        }
        self.rows.push(row);
    }

    /// Appends the rows of a batch of this builder's table, its columns mapped onto
    /// the builder's (added where new); rows move without copying their values.
    pub fn append(&mut self, batch: Batch) {
        let names = batch.schema.names();
        if self.schema.names.len() >= names.len() && self.schema.names[..names.len()] == *names {
            self.rows.extend(batch.rows);
            return;
        }
        let map: Vec<usize> = names
            .iter()
            .map(|n| self.schema.index_or_insert(n))
            .collect();
        if map.iter().enumerate().all(|(i, j)| i == *j) {
            self.rows.extend(batch.rows);
            return;
        }
        for row in batch.rows {
            let mut out: Row = Vec::with_capacity(self.schema.len());
            for (v, &j) in row.into_iter().zip(&map) {
                if out.len() <= j {
                    out.resize(j + 1, Value::Null);
                }
                out[j] = v;
            }
            self.rows.push(out);
        }
    }

    /// The number of buffered rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// True when no rows are buffered.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Takes the buffered rows as a batch; the schema is kept for the next rows.
    pub fn take(&mut self) -> Batch {
        Batch {
            table: self.table.clone(),
            schema: Arc::new(self.schema.clone()),
            rows: std::mem::take(&mut self.rows),
        }
    }
}
