//! The database: one enum over the two typed pools, embedded migrations, readiness, and the
//! registry that maps constraint names (declared by the slices) to domain errors.
//!
//! Queries are written once, with `$1` placeholders, and run on either backend through
//! [`on_db!`](crate::on_db) / [`on_tx!`](crate::on_tx), which expand the same code for each
//! typed pool so both are checked by the compiler.

use std::future::Future;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, Postgres, Sqlite, SqlitePool, Transaction};

use crate::config::{DatabaseUrl, Settings};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }
}

/// A connection pool on either backend. Cheap to clone.
#[derive(Debug, Clone)]
pub enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// A transaction on either backend.
pub struct Tx {
    conn: TxConn,
    /// Begun with [`Db::begin`]: its commit is the request's write (see [`CommitMark`]).
    writes: bool,
}

/// The typed transaction inside a [`Tx`]; reached through [`on_tx!`](crate::on_tx).
pub enum TxConn {
    Sqlite(Transaction<'static, Sqlite>),
    Postgres(Transaction<'static, Postgres>),
}

/// Runs the same expression against whichever pool `db` holds:
/// `on_db!(db, pool => sqlx::query("…").bind(x).execute(pool).await)`.
#[macro_export]
macro_rules! on_db {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            $crate::db::Db::Sqlite($pool) => $body,
            $crate::db::Db::Postgres($pool) => $body,
        }
    };
}

/// Like [`on_db!`] for a transaction: `on_tx!(tx, conn => query.execute(&mut **conn).await)`.
#[macro_export]
macro_rules! on_tx {
    ($tx:expr, $conn:ident => $body:expr) => {
        match $crate::db::Tx::conn_mut($tx) {
            $crate::db::TxConn::Sqlite($conn) => $body,
            $crate::db::TxConn::Postgres($conn) => $body,
        }
    };
}

/// A pooled connection idle for longer than this is pinged before it is handed out.
const PING_AFTER_IDLE: Duration = Duration::from_secs(10);

/// The pool's liveness check, for connections that sat idle only. sqlx's own check pings on
/// every acquire: one more round trip per statement for connections that were busy a moment
/// ago. A connection that broke while idle (a database restart) fails its ping and is
/// replaced, as before; one that breaks mid-use fails that statement either way.
async fn ping_if_idle<C: sqlx::Connection>(
    conn: &mut C,
    meta: sqlx::pool::PoolConnectionMetadata,
) -> Result<bool, sqlx::Error> {
    if meta.idle_for > PING_AFTER_IDLE {
        conn.ping().await?;
    }
    Ok(true)
}

/// `BEGIN` on a pooled PostgreSQL connection, carried through even if the request is
/// dropped half-way (its client hung up). sqlx counts a transaction only once `BEGIN` has
/// answered: cancelled in between, the connection went back to the pool inside a transaction
/// nobody knew of, where the next borrower's single statements would wait uncommitted for
/// someone's `COMMIT` (or vanish with a `ROLLBACK`). Run to the end on its own task, an
/// abandoned transaction is dropped like any other: rolled back before the connection is
/// reused.
async fn begin_to_the_end(pool: &PgPool) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    let pool = pool.clone();
    tokio::spawn(async move { pool.begin().await }).await.map_err(|e| sqlx::Error::Io(std::io::Error::other(e)))?
}

impl Db {
    /// Opens the pool (creating the SQLite file and its directory if needed).
    pub async fn connect(settings: &Settings) -> anyhow::Result<Self> {
        match &settings.database_url {
            DatabaseUrl::Sqlite(path) => {
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent)
                        .with_context(|| format!("creating database directory {}", parent.display()))?;
                }
                let options = SqliteConnectOptions::new()
                    .filename(path)
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .foreign_keys(true)
                    .busy_timeout(Duration::from_secs(10));
                let pool = SqlitePoolOptions::new()
                    .max_connections(settings.db_max_connections)
                    .acquire_timeout(Duration::from_secs(10))
                    .test_before_acquire(false)
                    .before_acquire(|conn, meta| Box::pin(ping_if_idle(conn, meta)))
                    .connect_with(options)
                    .await
                    .with_context(|| format!("opening SQLite database {}", path.display()))?;
                Ok(Self::Sqlite(pool))
            }
            DatabaseUrl::Postgres(url) => {
                let options =
                    PgConnectOptions::from_str(url).context("parsing DATABASE_URL")?.application_name("cedar");
                let pool = PgPoolOptions::new()
                    .max_connections(settings.db_max_connections)
                    .acquire_timeout(Duration::from_secs(5))
                    .test_before_acquire(false)
                    .before_acquire(|conn, meta| Box::pin(ping_if_idle(conn, meta)))
                    .connect_with(options)
                    .await
                    .with_context(|| format!("connecting to {}", settings.database_url.redacted()))?;
                Ok(Self::Postgres(pool))
            }
        }
    }

    pub fn backend(&self) -> Backend {
        match self {
            Self::Sqlite(_) => Backend::Sqlite,
            Self::Postgres(_) => Backend::Postgres,
        }
    }

    fn migrator(&self) -> &'static Migrator {
        match self {
            Self::Sqlite(_) => &SQLITE_MIGRATIONS,
            Self::Postgres(_) => &POSTGRES_MIGRATIONS,
        }
    }

    /// Applies pending migrations; returns how many were applied now. Safe to run repeatedly
    /// and from several processes at once (PostgreSQL takes an advisory lock).
    pub async fn migrate(&self) -> anyhow::Result<usize> {
        let before = self.applied_migrations().await.unwrap_or(0);
        on_db!(self, pool => self.migrator().run(pool).await).context("applying database migrations")?;
        let after = self.applied_migrations().await?;
        Ok(after.saturating_sub(before))
    }

    /// Supabase exposes the tables of its API schemas through its Data API (PostgREST) to
    /// anyone holding the project's anon key. Cedar's tables get row-level security with no
    /// policy, so that API sees no row of them; Cedar connects as their owner, which RLS does
    /// not restrict. Idempotent; returns how many tables were switched on now (0 on SQLite).
    pub async fn enable_row_level_security(&self) -> anyhow::Result<usize> {
        let Self::Postgres(pool) = self else { return Ok(0) };
        const TABLES: &str = "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
            WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') AND NOT c.relrowsecurity ORDER BY c.relname";
        let tables: Vec<String> = sqlx::query_scalar(TABLES).fetch_all(pool).await?;
        for table in &tables {
            let quoted = format!("\"{}\"", table.replace('"', "\"\""));
            sqlx::query(sqlx::AssertSqlSafe(format!("ALTER TABLE {quoted} ENABLE ROW LEVEL SECURITY")))
                .execute(pool)
                .await
                .with_context(|| format!("enabling row-level security on {table}"))?;
        }
        Ok(tables.len())
    }

    /// Whether this is a Supabase database (its `auth.users` table is there).
    pub async fn is_supabase(&self) -> bool {
        let Self::Postgres(pool) = self else { return false };
        sqlx::query_scalar::<_, bool>("SELECT to_regclass('auth.users') IS NOT NULL")
            .fetch_one(pool)
            .await
            .unwrap_or(false)
    }

    /// Migrates, then, on Supabase (configured, or detected by its `auth` schema), locks the
    /// tables away from its Data API. Returns the migrations applied now.
    pub async fn prepare(&self, supabase_mode: bool) -> anyhow::Result<usize> {
        let applied = self.migrate().await?;
        if supabase_mode || self.is_supabase().await {
            let secured = self.enable_row_level_security().await?;
            if secured > 0 {
                tracing::info!(tables = secured, "row-level security enabled (Supabase Data API sees no Cedar rows)");
            }
        }
        Ok(applied)
    }

    /// Number of migrations embedded in this binary for this backend.
    pub fn known_migrations(&self) -> usize {
        self.migrator().iter().filter(|m| m.migration_type.is_up_migration()).count()
    }

    /// Number of successfully applied migrations recorded in the database.
    pub async fn applied_migrations(&self) -> anyhow::Result<usize> {
        const SQL: &str = "SELECT COUNT(*) FROM _sqlx_migrations WHERE success";
        let count: i64 = on_db!(self, pool => sqlx::query_scalar(SQL).fetch_one(pool).await)?;
        Ok(count as usize)
    }

    /// `Ok` when the database answers and every embedded migration has been applied.
    pub async fn check_ready(&self) -> Result<usize, String> {
        let ping = on_db!(self, pool => sqlx::query("SELECT 1").execute(pool).await.map(|_| ()));
        // The driver's text (addresses, database names) goes to the log, not to the caller.
        ping.map_err(|e| {
            tracing::warn!(error = %e, "readiness: the database does not answer");
            "the database is unreachable".to_owned()
        })?;
        let applied = self.applied_migrations().await.map_err(|_| "database has not been migrated".to_owned())?;
        let known = self.known_migrations();
        if applied < known {
            return Err(format!("database is migrated to {applied} of {known} migrations"));
        }
        Ok(applied)
    }

    /// Starts a transaction. On SQLite it takes the write lock up front (`BEGIN IMMEDIATE`),
    /// so two writers queue on the busy timeout instead of failing on lock upgrade.
    pub async fn begin(&self) -> Result<Tx, sqlx::Error> {
        let conn = match self {
            Self::Sqlite(pool) => TxConn::Sqlite(pool.begin_with("BEGIN IMMEDIATE").await?),
            Self::Postgres(pool) => TxConn::Postgres(begin_to_the_end(pool).await?),
        };
        Ok(Tx { conn, writes: true })
    }

    /// Starts a transaction that will only read: on SQLite a deferred one, which takes no
    /// write lock, so searches and views never queue writers behind them.
    pub async fn begin_read(&self) -> Result<Tx, sqlx::Error> {
        let conn = match self {
            Self::Sqlite(pool) => TxConn::Sqlite(pool.begin().await?),
            Self::Postgres(pool) => TxConn::Postgres(begin_to_the_end(pool).await?),
        };
        Ok(Tx { conn, writes: false })
    }

    /// (connections in use, idle connections).
    pub fn pool_usage(&self) -> (u32, u32) {
        let (size, idle) = on_db!(self, pool => (pool.size(), pool.num_idle() as u32));
        (size.saturating_sub(idle), idle)
    }

    pub async fn close(&self) {
        on_db!(self, pool => pool.close().await);
    }
}

impl Tx {
    pub fn conn_mut(&mut self) -> &mut TxConn {
        &mut self.conn
    }

    /// Commits. Inside a request sent with an `Idempotency-Key`, a write transaction first
    /// marks the key as applied, so the mark and the write commit (or vanish) together.
    pub async fn commit(mut self) -> Result<(), sqlx::Error> {
        if self.writes
            && let Ok(mark) = COMMIT_MARK.try_with(Arc::clone)
        {
            mark.write(&mut self).await?;
        }
        match self.conn {
            TxConn::Sqlite(tx) => tx.commit().await,
            TxConn::Postgres(tx) => tx.commit().await,
        }
    }

    /// Locks one row until the transaction ends, so a check-then-write (a balance, what is
    /// left to refund) cannot interleave with another. PostgreSQL: `SELECT … FOR UPDATE`;
    /// SQLite: nothing to do, a write transaction (`begin`) already excludes other writers.
    pub async fn lock_row(&mut self, table: &'static str, id: uuid::Uuid) -> Result<(), sqlx::Error> {
        if let TxConn::Postgres(conn) = &mut self.conn {
            let sql = format!("SELECT 1 FROM {table} WHERE id = $1 FOR UPDATE");
            sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(&mut **conn).await?;
        }
        Ok(())
    }

    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        match self.conn {
            TxConn::Sqlite(tx) => tx.rollback().await,
            TxConn::Postgres(tx) => tx.rollback().await,
        }
    }
}

tokio::task_local! {
    static COMMIT_MARK: Arc<CommitMark>;
}

/// The idempotency key of the request being served, marked "applied" by every write
/// transaction the request commits — in that same transaction. After a crash between the
/// commit and the storing of the response, a retry finds the mark and rebuilds the answer
/// from [`CommitMark::answer_is`] instead of acting twice.
#[derive(Debug)]
pub struct CommitMark {
    scope: String,
    key: String,
    answer: Mutex<Option<Answer>>,
}

#[derive(Debug, Clone)]
enum Answer {
    /// The status with the body of `GET path`, read when a retry needs it.
    Read(u16, String),
    /// The whole JSON response, stored with the write.
    Json(u16, Vec<u8>),
}

impl CommitMark {
    pub fn new(scope: &str, key: &str) -> Arc<Self> {
        Arc::new(Self { scope: scope.to_owned(), key: key.to_owned(), answer: Mutex::new(None) })
    }

    /// Runs `future` (the request) with this mark in place.
    pub async fn scope<F: Future>(self: Arc<Self>, future: F) -> F::Output {
        COMMIT_MARK.scope(self, future).await
    }

    /// Declares what the request answers once its write commits: `status` with the body of
    /// `GET path` (and `Location: path` for a 201). Call it before the commit; outside a
    /// keyed request it does nothing.
    pub fn answer_is(status: u16, path: impl Into<String>) {
        Self::declare(|| Some(Answer::Read(status, path.into())));
    }

    /// Declares the whole JSON answer, stored in the same transaction as the write: for
    /// answers no `GET` reproduces (a booking's occurrences and skipped dates).
    pub fn answer_with_json(status: u16, body: &impl serde::Serialize) {
        Self::declare(|| serde_json::to_vec(body).ok().map(|body| Answer::Json(status, body)));
    }

    /// Whether a keyed request is in flight: its writes must commit with its mark.
    pub fn in_scope() -> bool {
        COMMIT_MARK.try_with(|_| ()).is_ok()
    }

    /// Records the answer of the keyed request in flight (built only if there is one).
    fn declare(answer: impl FnOnce() -> Option<Answer>) {
        let _ = COMMIT_MARK.try_with(|mark| {
            if let Some(answer) = answer() {
                *mark.answer.lock().unwrap_or_else(|e| e.into_inner()) = Some(answer);
            }
        });
    }

    async fn write(&self, tx: &mut Tx) -> Result<(), sqlx::Error> {
        const APPLIED: &str = "UPDATE idempotency_keys SET state = 'applied', answer_status = $3, answer_path = $4 \
            WHERE scope = $1 AND idempotency_key = $2 AND state <> 'completed'";
        const COMPLETED: &str = "UPDATE idempotency_keys SET state = 'completed', response_status = $3, \
            response_headers = $4, response_body = $5 WHERE scope = $1 AND idempotency_key = $2";
        let answer = self.answer.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match answer {
            Some(Answer::Json(status, body)) => {
                let headers = serde_json::json!([["content-type", "application/json"]]);
                on_tx!(tx, conn => sqlx::query(COMPLETED).bind(&self.scope).bind(&self.key).bind(i32::from(status))
                    .bind(sqlx::types::Json(&headers)).bind(&body).execute(&mut **conn).await.map(|_| ()))
            }
            answer => {
                let (status, path) = match answer {
                    Some(Answer::Read(status, path)) => (Some(i32::from(status)), Some(path)),
                    _ => (None, None),
                };
                on_tx!(tx, conn => sqlx::query(APPLIED).bind(&self.scope).bind(&self.key).bind(status).bind(path)
                    .execute(&mut **conn).await.map(|_| ()))
            }
        }
    }
}

/// What a violated constraint means to the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConstraintKind {
    /// → 409 Conflict.
    Unique,
    /// → 422 on `field`.
    ForeignKey,
    /// → 422 on `field`.
    Check,
}

/// A named constraint and the domain error it stands for. Slices list theirs in
/// their slice and installed with [`install_constraints`]; the names are the same on both backends (PostgreSQL reports the name,
/// SQLite the columns, given in `sqlite_columns` as in its message: `table.col, table.col`).
#[derive(Debug, Clone, Copy)]
pub struct Constraint {
    pub name: &'static str,
    pub sqlite_columns: &'static str,
    pub kind: ConstraintKind,
    pub field: &'static str,
    pub message: &'static str,
}

/// The constraints the API knows how to explain. Each slice declares its own next to its SQL;
/// the application installs them all once at start-up (`app::install_constraints`), so this
/// module never names a slice. Until then violations map to the generic 409/422.
static CONSTRAINTS: std::sync::OnceLock<&'static [&'static [Constraint]]> = std::sync::OnceLock::new();

/// Installs the constraint lists; later calls are ignored (the list is fixed per build).
pub fn install_constraints(lists: &'static [&'static [Constraint]]) {
    let _ = CONSTRAINTS.set(lists);
}

fn constraints() -> impl Iterator<Item = &'static Constraint> {
    CONSTRAINTS.get().copied().unwrap_or_default().iter().flat_map(|list| list.iter())
}

pub fn find_constraint(name: &str) -> Option<&'static Constraint> {
    constraints().find(|c| c.name == name)
}

/// SQLite: `UNIQUE constraint failed: users.email` (or `... index 'name'` for expression
/// indexes, which we name like the PostgreSQL constraint).
pub fn find_constraint_by_sqlite_message(message: &str) -> Option<&'static Constraint> {
    let detail = message.split_once("constraint failed: ")?.1.trim();
    let index_name = detail.strip_prefix("index '").and_then(|s| s.strip_suffix('\''));
    constraints().find(|c| Some(c.name) == index_name || (!c.sqlite_columns.is_empty() && c.sqlite_columns == detail))
}

/// The kind of a database error, including SQLite's RESTRICT foreign keys, which it reports as
/// trigger constraint failures (extended code 1811) rather than foreign-key ones.
pub fn violation_kind(error: &dyn sqlx::error::DatabaseError) -> sqlx::error::ErrorKind {
    match error.kind() {
        sqlx::error::ErrorKind::Other if error.message().starts_with("FOREIGN KEY constraint failed") => {
            sqlx::error::ErrorKind::ForeignKeyViolation
        }
        kind => kind,
    }
}

/// Whether `error` is a foreign-key violation (on either backend).
pub fn is_foreign_key_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(e) if violation_kind(e.as_ref()) == sqlx::error::ErrorKind::ForeignKeyViolation)
}

/// For a DELETE that a RESTRICT foreign key may refuse: maps that refusal to a 409 with
/// `message`, any other error as usual.
pub fn still_referenced(message: &'static str) -> impl FnOnce(sqlx::Error) -> crate::error::ApiError {
    move |error| {
        if is_foreign_key_violation(&error) { crate::error::ApiError::conflict(message) } else { error.into() }
    }
}
