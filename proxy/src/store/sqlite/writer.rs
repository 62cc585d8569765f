//! The one writer of a SQLite file in this process: group commit for every write.
//!
//! SQLite takes one writer at a time, and with `synchronous=FULL` each commit costs an
//! fsync. So every write of the embedded backend (history batches, claims, jobs queued by
//! `Process`, acks, binding changes) is a [`Writer::write`] op sent to one task that owns
//! the write connection. The task takes whatever ops have queued up, runs them in one
//! `BEGIN IMMEDIATE` transaction and commits once: concurrent callers share the commit and
//! its fsync, and each gets its answer only after the commit. An op's own error (a unique
//! name taken) is its alone; an error that dooms the transaction (a full disk) fails the
//! ops of that batch, and nothing they wrote stays.
//!
//! `BEGIN IMMEDIATE` takes the write lock before anything is read, so a transaction never
//! has to upgrade a read lock (which fails at once with `SQLITE_BUSY` when another
//! connection writes). Another process holding the lock is waited for in short polls
//! ([`LOCK_POLL`]) for up to `BUSY_TIMEOUT`, and past that the batch is retried with
//! backoff, its reason logged: never dropped.

use std::{
    sync::LazyLock,
    time::{Duration, Instant},
};

use futures_util::future::BoxFuture;
use sqlx::{Connection as _, SqliteConnection, error::ErrorKind};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::{
    BUSY_TIMEOUT,
    rows::{self, Rows},
};
use crate::store::{StoreError, StoreResult};

/// How long SQLite's own busy handler waits for another process's write lock on the
/// writer's connection (its `busy_timeout`) before the writer tries again itself. SQLite's
/// handler sleeps 1, 2, 5, 10, 15, 20 and 25 ms between its tries, then 50 and 100: a
/// lock that another process takes back again and again (`serve` and `worker` on one file)
/// would be missed for tens of milliseconds at a time, which made the p99 of `Process`
/// 160 to 350 ms with both processes under load. So SQLite tries for 2 ms (its 1 ms
/// steps), and the writer begins again at once until `BUSY_TIMEOUT` has passed.
pub(super) const LOCK_POLL: Duration = Duration::from_millis(2);

/// Ops waiting for the writer before callers wait to send more.
const QUEUE: usize = 10_000;
/// Most ops in one transaction.
const MAX_BATCH: usize = 1_000;

/// Handle to the writer task; cheap to clone. The task ends when every handle is dropped
/// and the ops sent so far are committed.
#[derive(Clone)]
pub struct Writer {
    ops: mpsc::Sender<Message>,
}

/// What callers send the writer.
enum Message {
    /// A write of its own statements.
    Op(Box<dyn Op>),
    /// Rows of the hot statements, merged with every other caller's.
    Rows(Rows, oneshot::Sender<StoreResult<()>>),
}

impl Writer {
    /// Starts the writer over `connection`, on a thread of its own: a batch makes a round
    /// trip to SQLite's connection thread per statement, and on the shared runtime each
    /// would wait behind the request handlers for a turn.
    pub fn start(connection: SqliteConnection) -> std::io::Result<(Self, WriterTask)> {
        let (ops, receiver) = mpsc::channel(QUEUE);
        let stop = CancellationToken::new();
        let (done, finished) = oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()?;
        let writing = write_batches(connection, receiver, stop.clone());
        std::thread::Builder::new()
            .name("postsub-sqlite-writer".into())
            .spawn(move || {
                runtime.block_on(writing);
                let _ = done.send(());
            })?;
        Ok((Self { ops }, WriterTask { finished, stop }))
    }

    /// Runs `write` in the next transaction and returns its result once that transaction
    /// has committed. `write` must be one statement, or several that cannot fail halfway
    /// on a constraint: a constraint error keeps the transaction going without the
    /// failing statement.
    pub async fn write<T, F>(&self, write: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, sqlx::Result<T>>
            + Send
            + 'static,
    {
        let (reply, answer) = oneshot::channel();
        self.ops
            .send(Message::Op(Box::new(WriteOp { write, reply })))
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Writes `rows` in the next transaction, with every other caller's rows of that
    /// transaction in one round trip (see [`super::rows`]); returns once it has committed.
    pub async fn write_rows(&self, rows: Rows) -> StoreResult<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let (reply, answer) = oneshot::channel();
        self.ops
            .send(Message::Rows(rows, reply))
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }
}

/// The writer's thread, to stop it.
pub struct WriterTask {
    finished: oneshot::Receiver<()>,
    stop: CancellationToken,
}

impl WriterTask {
    /// Commits the ops sent so far (later ones fail with [`StoreError::Closed`]), closes the
    /// connection (which checkpoints the WAL) and waits for the thread to end.
    pub async fn finish(self) {
        self.stop.cancel();
        let _ = self.finished.await;
    }
}

/// A write waiting for its transaction.
trait Op: Send {
    /// Runs the write; what it returns delivers the answer once the commit is decided.
    fn run<'c>(self: Box<Self>, connection: &'c mut SqliteConnection) -> BoxFuture<'c, Ran>;
    /// Answers without running (the transaction could not start).
    fn fail(self: Box<Self>, error: StoreError);
}

/// Delivers a write's answer once its transaction's fate is known: `None` when it
/// committed, else why not.
type Deliver = Box<dyn FnOnce(Option<&str>) + Send>;

/// A write that ran and waits for the commit.
struct Ran {
    /// Why the whole transaction cannot commit, when this write's error says so.
    dooms: Option<String>,
    /// Delivers the answer: the write's result when the commit succeeded, else why not.
    deliver: Deliver,
}

struct WriteOp<T, F> {
    write: F,
    reply: oneshot::Sender<StoreResult<T>>,
}

impl<T, F> Op for WriteOp<T, F>
where
    T: Send + 'static,
    F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, sqlx::Result<T>> + Send + 'static,
{
    fn run<'c>(self: Box<Self>, connection: &'c mut SqliteConnection) -> BoxFuture<'c, Ran> {
        let WriteOp { write, reply } = *self;
        Box::pin(async move {
            let result = write(connection).await;
            let dooms = match &result {
                Err(err) if !is_statement_error(err) => Some(err.to_string()),
                _ => None,
            };
            Ran {
                dooms,
                deliver: Box::new(move |not_committed: Option<&str>| {
                    let answer = match (result, not_committed) {
                        (Ok(_), Some(reason)) => Err(StoreError::NotCommitted(reason.to_owned())),
                        (result, _) => result.map_err(StoreError::from),
                    };
                    let _ = reply.send(answer);
                }),
            }
        })
    }

    fn fail(self: Box<Self>, error: StoreError) {
        let _ = self.reply.send(Err(error));
    }
}

/// Errors SQLite undoes for the one statement, leaving the transaction open.
fn is_statement_error(err: &sqlx::Error) -> bool {
    err.as_database_error().is_some_and(|db| {
        matches!(
            db.kind(),
            ErrorKind::UniqueViolation
                | ErrorKind::ForeignKeyViolation
                | ErrorKind::NotNullViolation
                | ErrorKind::CheckViolation
        )
    })
}

/// `SQLITE_BUSY` (and its extended codes): another connection holds the lock.
pub(crate) fn is_busy(err: &sqlx::Error) -> bool {
    err.as_database_error()
        .and_then(|db| db.code())
        .and_then(|code| code.parse::<i32>().ok())
        .is_some_and(|code| code & 0xff == 5)
}

async fn write_batches(
    mut connection: SqliteConnection,
    mut ops: mpsc::Receiver<Message>,
    stop: CancellationToken,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        let received = tokio::select! {
            biased;
            received = ops.recv_many(&mut batch, MAX_BATCH) => received,
            () = stop.cancelled() => {
                // Take what was sent before the stop, then nothing more.
                ops.close();
                ops.recv_many(&mut batch, MAX_BATCH).await
            }
        };
        if received == 0 {
            break;
        }
        let size = batch.len();
        let started = Instant::now();
        commit_batch(&mut connection, batch.drain(..)).await;
        tracing::trace!(ops = size, took = ?started.elapsed(), "SQLite batch committed");
    }
    let _ = connection.close().await;
}

async fn commit_batch(
    connection: &mut SqliteConnection,
    batch: impl ExactSizeIterator<Item = Message>,
) {
    let mut ops = Vec::new();
    let mut rows = Rows::default();
    let mut waiting = Vec::new();
    for message in batch {
        match message {
            Message::Op(op) => ops.push(op),
            Message::Rows(more, reply) => {
                rows.merge(more);
                waiting.push(reply);
            }
        }
    }
    let outcome = if ops.is_empty() {
        write_rows_alone(connection, &rows).await
    } else {
        write_with_ops(connection, ops, &rows).await
    };
    if let Err(reason) = &outcome {
        tracing::error!(error = %reason, "a SQLite write transaction failed");
    }
    for reply in waiting {
        let _ = reply.send(outcome.clone().map_err(StoreError::NotCommitted));
    }
}

/// Begins, writes `rows` and commits in one query; retried with backoff while another
/// process holds the write lock past `busy_timeout` (a query that failed at its `BEGIN`
/// wrote nothing, and rows can be written again).
async fn write_rows_alone(connection: &mut SqliteConnection, rows: &Rows) -> Result<(), String> {
    static ALONE: LazyLock<String> =
        LazyLock::new(|| format!("BEGIN IMMEDIATE; {} COMMIT;", &*rows::SQL));
    let mut lock = LockWait::new();
    loop {
        match write_rows(connection, &ALONE, rows).await {
            Ok(()) => return Ok(()),
            Err(err) => {
                // SQLite may have rolled back already, or not begun; then this fails harmlessly.
                let _ = execute(connection, "ROLLBACK").await;
                if !is_busy(&err) {
                    return Err(err.to_string());
                }
                lock.again(&err).await;
            }
        }
    }
}

/// The wait for another process's write lock, across the writer's tries.
struct LockWait {
    since: Instant,
    backoff: Duration,
}

impl LockWait {
    fn new() -> Self {
        Self {
            since: Instant::now(),
            backoff: Duration::from_millis(50),
        }
    }

    /// Returns when the writer may try again after `err` (`SQLITE_BUSY`): at once while
    /// `BUSY_TIMEOUT` has not passed (SQLite has just waited [`LOCK_POLL`]), then after a
    /// growing backoff, with the reason logged.
    async fn again(&mut self, err: &sqlx::Error) {
        if self.since.elapsed() < BUSY_TIMEOUT {
            return;
        }
        tracing::warn!(error = %err, retry_in = ?self.backoff,
            "the database is locked by another connection past busy_timeout; retrying");
        tokio::time::sleep(self.backoff).await;
        self.backoff = (self.backoff * 2).min(Duration::from_secs(2));
    }
}

async fn write_rows(connection: &mut SqliteConnection, sql: &str, rows: &Rows) -> sqlx::Result<()> {
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for argument in rows.arguments() {
        query = query.bind(argument);
    }
    query.execute(connection).await.map(drop)
}

/// Runs the ops in one transaction, then writes `rows` and commits in one more round trip.
/// An op's own error is its alone; one that dooms the transaction fails the rest.
async fn write_with_ops(
    connection: &mut SqliteConnection,
    ops: Vec<Box<dyn Op>>,
    rows: &Rows,
) -> Result<(), String> {
    static ROWS_AND_COMMIT: LazyLock<String> = LazyLock::new(|| format!("{} COMMIT;", &*rows::SQL));
    if let Err(err) = begin_immediate(connection).await {
        let reason = err.to_string();
        for op in ops {
            op.fail(StoreError::NotCommitted(reason.clone()));
        }
        return Err(reason);
    }
    let mut ran = Vec::with_capacity(ops.len());
    let mut doomed: Option<String> = None;
    for op in ops {
        if let Some(reason) = &doomed {
            op.fail(StoreError::NotCommitted(reason.clone()));
            continue;
        }
        let done = op.run(connection).await;
        doomed = done.dooms;
        ran.push(done.deliver);
    }
    let outcome = match doomed {
        Some(reason) => Err(reason),
        None if rows.is_empty() => execute(connection, "COMMIT")
            .await
            .map_err(|err| err.to_string()),
        None => write_rows(connection, &ROWS_AND_COMMIT, rows)
            .await
            .map_err(|err| err.to_string()),
    };
    if outcome.is_err() {
        // SQLite may have rolled back already (a full disk); then this fails harmlessly.
        let _ = execute(connection, "ROLLBACK").await;
    }
    for deliver in ran {
        deliver(outcome.as_ref().err().map(String::as_str));
    }
    outcome
}

async fn execute(connection: &mut SqliteConnection, sql: &'static str) -> sqlx::Result<()> {
    sqlx::query(sql).execute(connection).await.map(drop)
}

/// `BEGIN IMMEDIATE`, tried again while another process holds the write lock (see
/// [`LockWait`]). (Plain statements rather than sqlx's `Transaction`, which would keep the
/// connection borrowed across the retry.)
async fn begin_immediate(connection: &mut SqliteConnection) -> sqlx::Result<()> {
    let mut lock = LockWait::new();
    loop {
        match execute(connection, "BEGIN IMMEDIATE").await {
            Err(err) if is_busy(&err) => lock.again(&err).await,
            begun => return begun,
        }
    }
}
