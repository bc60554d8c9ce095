//! Loading jobs into a PostgreSQL table: each job's payload is one row (its keys name the
//! columns), a batch in one transaction; with `key`, an upsert (`ON CONFLICT (key) DO
//! UPDATE`), so a job loaded again after a crash or a retry does not duplicate its row.
//!
//! A batch that fails for its data (a constraint, a wrong type, an unknown column) is loaded
//! again one job at a time, so only the jobs at fault are discarded; connection failures and
//! the like are retried.

use std::time::{Duration, Instant};

use tb_connectors::core::error_chain;
use tb_store::Claimed;

use crate::config::DestinationConfig;
use crate::http::LoadResult;
use crate::retry::Verdict;

/// Sends jobs to one PostgreSQL table.
pub struct PgLoader {
    pool: deadpool_postgres::Pool,
    /// The quoted, schema-qualified table.
    table: String,
    /// The quoted key columns; empty for plain inserts.
    key: Vec<String>,
    /// The key columns as named in payloads.
    key_names: Vec<String>,
    timeout: Duration,
}

impl PgLoader {
    /// Checks the URL, table and key; connects only when the first batch is loaded.
    ///
    /// # Errors
    ///
    /// The key that is wrong, and why (never with the password).
    pub fn new(config: &DestinationConfig) -> Result<Self, (String, String)> {
        if !(config.url.starts_with("postgres://") || config.url.starts_with("postgresql://")) {
            return Err((
                "url".to_owned(),
                "a postgres destination's url is postgres://user@host:port/database".to_owned(),
            ));
        }
        let connection =
            tb_store::PgConnect::parse(&config.url).map_err(|reason| ("url".to_owned(), reason))?;
        let Some(table) = config.table.as_deref() else {
            return Err((
                "table".to_owned(),
                "a postgres destination needs `table`, such as \"public.users\"".to_owned(),
            ));
        };
        let table = quote_path(table).map_err(|message| ("table".to_owned(), message))?;
        let key = config
            .key
            .iter()
            .map(|column| quote(column))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|message| ("key".to_owned(), message))?;
        let manager = deadpool_postgres::Manager::from_config(
            connection.config,
            connection.tls,
            deadpool_postgres::ManagerConfig {
                recycling_method: deadpool_postgres::RecyclingMethod::Fast,
            },
        );
        let pool = deadpool_postgres::Pool::builder(manager)
            .max_size(config.concurrency.max(1) as usize)
            .build()
            .map_err(|error| {
                (
                    "url".to_owned(),
                    format!("cannot make a connection pool: {error}"),
                )
            })?;
        Ok(Self {
            pool,
            table,
            key,
            key_names: config.key.clone(),
            timeout: config.timeout,
        })
    }

    /// Checks at start that the table can be reached with these credentials: a role or
    /// database that does not exist, a refused login, a missing table or a missing
    /// privilege is an error naming the table. A server that cannot be reached now is only
    /// warned of: jobs wait (and retry) until it is back.
    ///
    /// # Errors
    ///
    /// The database refused the settings, with its message.
    pub async fn check(&self) -> Result<(), String> {
        let probe = format!("SELECT * FROM {} LIMIT 0", self.table);
        let checking = async {
            let client = match self.pool.get().await {
                Ok(client) => client,
                Err(deadpool_postgres::PoolError::Backend(error)) => return Err(error),
                Err(error) => {
                    tracing::warn!(table = %self.table, error = %error_chain(&error), "Cannot reach the database now; jobs wait until it is back.");
                    return Ok(());
                }
            };
            client.execute(&probe, &[]).await.map(drop)
        };
        let failed = match tokio::time::timeout(self.timeout, checking).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(error)) => error,
            Err(_elapsed) => {
                tracing::warn!(table = %self.table, "The database did not answer in time; jobs wait until it does.");
                return Ok(());
            }
        };
        // The server answered with a refusal (a SQLSTATE): the settings are wrong.
        if failed.code().is_none() {
            tracing::warn!(table = %self.table, error = %error_chain(&failed), "Cannot reach the database now; jobs wait until it is back.");
            return Ok(());
        }
        Err(format!(
            "cannot load into {}: {}",
            self.table,
            error_chain(&failed)
        ))
    }

    /// Loads `jobs`: one result per job, in order.
    pub async fn load(&self, jobs: &[Claimed]) -> Vec<LoadResult> {
        let started = Instant::now();
        let whole = self.load_batch(jobs).await;
        match whole {
            Err(Failure::Data(error)) if jobs.len() > 1 => {
                // Find the jobs at fault: each alone, in its own transaction.
                let mut results = Vec::with_capacity(jobs.len());
                for job in jobs {
                    let started = Instant::now();
                    let alone = self.load_batch(std::slice::from_ref(job)).await;
                    results.push(result(alone, started));
                }
                tracing::debug!(%error, "A batch failed for its data; its jobs were loaded one by one.");
                results
            }
            outcome => {
                let result = result(outcome, started);
                vec![result; jobs.len()]
            }
        }
    }

    async fn load_batch(&self, jobs: &[Claimed]) -> Result<(), Failure> {
        let rows = self.rows(jobs)?;
        let Some(first) = rows.first() else {
            return Ok(());
        };
        let mut columns: Vec<&String> = first.keys().collect();
        for row in &rows[1..] {
            for column in row.keys() {
                if !columns.contains(&column) {
                    columns.push(column);
                }
            }
        }
        let quoted = columns
            .iter()
            .map(|column| quote(column))
            .collect::<Result<Vec<_>, _>>()
            .map_err(Failure::Data)?
            .join(", ");
        let mut statement = format!(
            "INSERT INTO {table} ({quoted}) SELECT {quoted} FROM jsonb_populate_recordset(NULL::{table}, $1::text::jsonb)",
            table = self.table
        );
        if !self.key.is_empty() {
            let updates: Vec<String> = columns
                .iter()
                .filter_map(|column| quote(column).ok())
                .filter(|column| !self.key.contains(column))
                .map(|column| format!("{column} = EXCLUDED.{column}"))
                .collect();
            let action = if updates.is_empty() {
                "NOTHING".to_owned()
            } else {
                format!("UPDATE SET {}", updates.join(", "))
            };
            statement.push_str(&format!(
                " ON CONFLICT ({}) DO {action}",
                self.key.join(", ")
            ));
        }
        let body =
            serde_json::Value::Array(rows.into_iter().map(serde_json::Value::Object).collect())
                .to_string();
        let loading = async {
            let mut client = self
                .pool
                .get()
                .await
                .map_err(|error| Failure::Transient(error_chain(&error)))?;
            let transaction = client.transaction().await.map_err(classify)?;
            transaction
                .execute(&statement, &[&body])
                .await
                .map_err(classify)?;
            transaction.commit().await.map_err(classify)
        };
        tokio::time::timeout(self.timeout, loading)
            .await
            .map_err(|_| Failure::Transient(format!("timed out after {:?}", self.timeout)))?
    }

    /// The rows of a batch, one object per job; with a key, later jobs replace earlier ones
    /// of the same key (PostgreSQL refuses to upsert one row twice in a statement).
    fn rows(
        &self,
        jobs: &[Claimed],
    ) -> Result<Vec<serde_json::Map<String, serde_json::Value>>, Failure> {
        let mut rows: Vec<serde_json::Map<String, serde_json::Value>> =
            Vec::with_capacity(jobs.len());
        for job in jobs {
            let Ok(serde_json::Value::Object(row)) = serde_json::from_str(job.payload.as_str())
            else {
                return Err(Failure::Data(format!(
                    "job {} is not an object of column values; marshal it into one",
                    job.id
                )));
            };
            if !self.key.is_empty() {
                let key_of = |row: &serde_json::Map<String, serde_json::Value>| {
                    self.key_names
                        .iter()
                        .map(|column| row.get(column).cloned())
                        .collect::<Vec<_>>()
                };
                let key = key_of(&row);
                rows.retain(|earlier| key_of(earlier) != key);
            }
            rows.push(row);
        }
        Ok(rows)
    }
}

/// Why a batch did not load.
enum Failure {
    /// The rows are wrong: loading them again would fail again.
    Data(String),
    /// The database or the connection failed: worth trying again.
    Transient(String),
}

fn result(outcome: Result<(), Failure>, started: Instant) -> LoadResult {
    let (verdict, error) = match outcome {
        Ok(()) => (Verdict::Succeeded, None),
        Err(Failure::Data(error)) => (Verdict::Discard, Some(error)),
        Err(Failure::Transient(error)) => (Verdict::Retry { after: None }, Some(error)),
    };
    LoadResult {
        verdict,
        code: None,
        error,
        body_excerpt: None,
        duration: started.elapsed(),
    }
}

/// SQLSTATE classes that mean the data is wrong: 21 cardinality, 22 data exception, 23
/// integrity constraint, 42 syntax or access rule (an unknown column or table).
fn classify(error: tokio_postgres::Error) -> Failure {
    let text = error_chain(&error);
    match error.code().map(|code| &code.code()[..2]) {
        Some("21" | "22" | "23" | "42") => Failure::Data(text),
        _ => Failure::Transient(text),
    }
}

/// An identifier, double-quoted.
fn quote(name: &str) -> Result<String, String> {
    if name.is_empty() || name.contains('\0') {
        return Err(format!("`{name}` is not a column or table name"));
    }
    Ok(format!("\"{}\"", name.replace('"', "\"\"")))
}

/// `schema.table` or `table`, each part quoted.
fn quote_path(path: &str) -> Result<String, String> {
    path.split('.')
        .map(quote)
        .collect::<Result<Vec<_>, _>>()
        .map(|parts| parts.join("."))
}
