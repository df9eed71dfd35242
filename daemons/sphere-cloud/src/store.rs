//! Storage: SQLite (default, embedded, zero setup) or PostgreSQL (for scale), with the **same
//! SQL text** for both.
//!
//! Queries are written once with `$1, $2, …` placeholders (PostgreSQL's syntax); for SQLite
//! they are rewritten to `?1, ?2, …`, which SQLite binds by number, so a statement means the
//! same thing on both. Only the schema differs, in two type names (`BLOB`/`BYTEA` and the
//! auto-increment key), substituted in [`SCHEMA`]. Both engines support `RETURNING`, which the
//! single-use nonce relies on: `DELETE … RETURNING` consumes a nonce atomically, so two
//! concurrent submissions of the same nonce cannot both succeed.
//!
//! SQLite runs in WAL mode with `synchronous = NORMAL` (durable across process crashes; the
//! last transactions may be lost on power loss, which costs at most a device re-attesting).
//! Its connection is used from a blocking thread so the async server never stalls on disk.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("postgresql: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("storage: {0}")]
    Other(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A bound parameter or a column value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Int(Option<i64>),
    Text(Option<String>),
    Blob(Option<Vec<u8>>),
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(Some(v))
    }
}
impl From<Option<i64>> for Value {
    fn from(v: Option<i64>) -> Self {
        Value::Int(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(Some(v.to_owned()))
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(Some(v))
    }
}
impl From<Option<String>> for Value {
    fn from(v: Option<String>) -> Self {
        Value::Text(v)
    }
}
impl From<Option<&str>> for Value {
    fn from(v: Option<&str>) -> Self {
        Value::Text(v.map(str::to_owned))
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Int(Some(i64::from(v)))
    }
}

/// One result row.
#[derive(Clone, Debug)]
pub struct Row(pub Vec<Value>);

impl Row {
    pub fn int(&self, i: usize) -> Option<i64> {
        match self.0.get(i) {
            Some(Value::Int(v)) => *v,
            _ => None,
        }
    }
    pub fn text(&self, i: usize) -> Option<String> {
        match self.0.get(i) {
            Some(Value::Text(v)) => v.clone(),
            _ => None,
        }
    }
    pub fn text_or_empty(&self, i: usize) -> String {
        self.text(i).unwrap_or_default()
    }
}

/// The schema. `{BLOB}` and `{ID}` are the only per-engine differences.
pub const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS device_groups (
        name TEXT PRIMARY KEY,
        description TEXT NOT NULL,
        release_version TEXT,
        created_at BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS devices (
        id TEXT PRIMARY KEY,
        public_key_pem TEXT NOT NULL,
        algorithm TEXT NOT NULL,
        group_name TEXT REFERENCES device_groups(name),
        description TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        revoked_at BIGINT,
        last_attestation_id BIGINT,
        last_attestation_passed BIGINT,
        last_attestation_at BIGINT,
        os_version TEXT,
        last_telemetry TEXT,
        last_telemetry_at BIGINT)",
    "CREATE TABLE IF NOT EXISTS nonces (
        nonce TEXT PRIMARY KEY,
        device_id TEXT NOT NULL,
        expires_at BIGINT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS nonces_expiry ON nonces (expires_at)",
    "CREATE TABLE IF NOT EXISTS attestations (
        id {ID},
        device_id TEXT NOT NULL,
        at BIGINT NOT NULL,
        passed BIGINT NOT NULL,
        reasons TEXT NOT NULL,
        os_version TEXT,
        claims TEXT)",
    "CREATE INDEX IF NOT EXISTS attestations_device ON attestations (device_id, id)",
    "CREATE TABLE IF NOT EXISTS certificates (
        serial TEXT PRIMARY KEY,
        device_id TEXT NOT NULL,
        attestation_id BIGINT,
        not_before BIGINT NOT NULL,
        not_after BIGINT NOT NULL,
        revoked_at BIGINT,
        certificate_pem TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS certificates_device ON certificates (device_id, not_after)",
    "CREATE TABLE IF NOT EXISTS error_reports (
        id {ID},
        device_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        app_id TEXT,
        count BIGINT NOT NULL,
        detail TEXT NOT NULL,
        occurred_at BIGINT NOT NULL,
        received_at BIGINT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS error_reports_device ON error_reports (device_id, id)",
    "CREATE TABLE IF NOT EXISTS blobs (name TEXT PRIMARY KEY, content {BLOB} NOT NULL)",
];

enum Backend {
    Sqlite(Arc<Mutex<rusqlite::Connection>>),
    Postgres { clients: Vec<tokio_postgres::Client>, next: AtomicUsize },
}

/// A handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Store(Arc<Backend>);

impl Store {
    /// Open `url`: `postgres://…` / `postgresql://…` (a libpq-style URL or key=value string),
    /// `sqlite:PATH`, or a plain file path (SQLite). Creates the schema if missing.
    pub async fn open(url: &str) -> Result<Store> {
        let store = if url.starts_with("postgres://") || url.starts_with("postgresql://") || url.contains("host=") {
            // A few connections: tokio-postgres pipelines concurrent queries on each.
            let mut clients = Vec::new();
            for _ in 0..4 {
                let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
                tokio::spawn(async move {
                    if let Err(error) = connection.await {
                        eprintln!("sphere-cloud: postgresql connection ended: {error}");
                    }
                });
                clients.push(client);
            }
            Store(Arc::new(Backend::Postgres { clients, next: AtomicUsize::new(0) }))
        } else {
            let path = url.strip_prefix("sqlite:").unwrap_or(url).to_owned();
            let connection = tokio::task::spawn_blocking(move || -> Result<_> {
                let connection = rusqlite::Connection::open(&path)?;
                connection.pragma_update(None, "journal_mode", "WAL")?;
                connection.pragma_update(None, "synchronous", "NORMAL")?;
                connection.pragma_update(None, "foreign_keys", "ON")?;
                connection.busy_timeout(std::time::Duration::from_secs(5))?;
                Ok(connection)
            })
            .await
            .map_err(|e| StoreError::Other(e.to_string()))??;
            Store(Arc::new(Backend::Sqlite(Arc::new(Mutex::new(connection)))))
        };
        for statement in SCHEMA {
            let sql = match &*store.0 {
                Backend::Sqlite(_) => {
                    statement.replace("{BLOB}", "BLOB").replace("{ID}", "INTEGER PRIMARY KEY AUTOINCREMENT")
                }
                Backend::Postgres { .. } => {
                    statement.replace("{BLOB}", "BYTEA").replace("{ID}", "BIGSERIAL PRIMARY KEY")
                }
            };
            store.execute(&sql, vec![]).await?;
        }
        Ok(store)
    }

    /// `"sqlite"` or `"postgresql"`.
    pub fn engine(&self) -> &'static str {
        match &*self.0 {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres { .. } => "postgresql",
        }
    }

    /// Run a statement; returns the number of rows changed.
    pub async fn execute(&self, sql: &str, params: Vec<Value>) -> Result<u64> {
        match &*self.0 {
            Backend::Sqlite(connection) => {
                let connection = connection.clone();
                let sql = sqlite_sql(sql);
                blocking(move || {
                    let connection = lock(&connection)?;
                    let mut statement = connection.prepare_cached(&sql)?;
                    let changed = statement.execute(rusqlite::params_from_iter(params.iter().map(SqliteParam)))?;
                    Ok(changed as u64)
                })
                .await
            }
            Backend::Postgres { clients, next } => {
                let client = &clients[next.fetch_add(1, Ordering::Relaxed) % clients.len()];
                let boxed = pg_params(&params);
                let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                    boxed.iter().map(|b| b.as_ref() as _).collect();
                Ok(client.execute(sql, &refs).await?)
            }
        }
    }

    /// Run a query and return every row.
    pub async fn query(&self, sql: &str, params: Vec<Value>) -> Result<Vec<Row>> {
        match &*self.0 {
            Backend::Sqlite(connection) => {
                let connection = connection.clone();
                let sql = sqlite_sql(sql);
                blocking(move || {
                    let connection = lock(&connection)?;
                    let mut statement = connection.prepare_cached(&sql)?;
                    let columns = statement.column_count();
                    let mut rows = statement.query(rusqlite::params_from_iter(params.iter().map(SqliteParam)))?;
                    let mut out = Vec::new();
                    while let Some(row) = rows.next()? {
                        let mut values = Vec::with_capacity(columns);
                        for i in 0..columns {
                            values.push(match row.get_ref(i)? {
                                rusqlite::types::ValueRef::Null => Value::Int(None),
                                rusqlite::types::ValueRef::Integer(v) => Value::Int(Some(v)),
                                rusqlite::types::ValueRef::Real(v) => Value::Int(Some(v as i64)),
                                rusqlite::types::ValueRef::Text(t) => {
                                    Value::Text(Some(String::from_utf8_lossy(t).into_owned()))
                                }
                                rusqlite::types::ValueRef::Blob(b) => Value::Blob(Some(b.to_vec())),
                            });
                        }
                        out.push(Row(values));
                    }
                    Ok(out)
                })
                .await
            }
            Backend::Postgres { clients, next } => {
                use tokio_postgres::types::Type;
                let client = &clients[next.fetch_add(1, Ordering::Relaxed) % clients.len()];
                let boxed = pg_params(&params);
                let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                    boxed.iter().map(|b| b.as_ref() as _).collect();
                let rows = client.query(sql, &refs).await?;
                let mut out = Vec::with_capacity(rows.len());
                for row in rows {
                    let mut values = Vec::with_capacity(row.len());
                    for (i, column) in row.columns().iter().enumerate() {
                        let ty = column.type_();
                        values.push(if *ty == Type::INT8 {
                            Value::Int(row.try_get::<_, Option<i64>>(i)?)
                        } else if *ty == Type::INT4 {
                            Value::Int(row.try_get::<_, Option<i32>>(i)?.map(i64::from))
                        } else if *ty == Type::BYTEA {
                            Value::Blob(row.try_get::<_, Option<Vec<u8>>>(i)?)
                        } else if *ty == Type::BOOL {
                            Value::Int(row.try_get::<_, Option<bool>>(i)?.map(i64::from))
                        } else {
                            Value::Text(row.try_get::<_, Option<String>>(i)?)
                        });
                    }
                    out.push(Row(values));
                }
                Ok(out)
            }
        }
    }

    /// The first row of a query, if any.
    pub async fn query_one(&self, sql: &str, params: Vec<Value>) -> Result<Option<Row>> {
        Ok(self.query(sql, params).await?.into_iter().next())
    }
}

/// `$N` → `?N`, outside string literals (our SQL has no `$` inside literals, but be exact).
fn sqlite_sql(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut in_literal = false;
    for c in sql.chars() {
        if c == '\'' {
            in_literal = !in_literal;
        }
        out.push(if c == '$' && !in_literal { '?' } else { c });
    }
    out
}

fn lock(connection: &Mutex<rusqlite::Connection>) -> Result<std::sync::MutexGuard<'_, rusqlite::Connection>> {
    connection.lock().map_err(|_| StoreError::Other("sqlite connection lock poisoned".into()))
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| StoreError::Other(format!("storage task failed: {e}")))?
}

struct SqliteParam<'a>(&'a Value);

impl rusqlite::ToSql for SqliteParam<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        match self.0 {
            Value::Int(v) => v.to_sql(),
            Value::Text(v) => v.to_sql(),
            Value::Blob(v) => v.to_sql(),
        }
    }
}

fn pg_params(params: &[Value]) -> Vec<Box<dyn tokio_postgres::types::ToSql + Sync + Send>> {
    params
        .iter()
        .map(|value| -> Box<dyn tokio_postgres::types::ToSql + Sync + Send> {
            match value {
                Value::Int(v) => Box::new(*v),
                Value::Text(v) => Box::new(v.clone()),
                Value::Blob(v) => Box::new(v.clone()),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_sqlite_numbered() {
        assert_eq!(
            sqlite_sql("SELECT a FROM t WHERE b = $2 AND c = '$1' AND d = $1"),
            "SELECT a FROM t WHERE b = ?2 AND c = '$1' AND d = ?1"
        );
    }
}
