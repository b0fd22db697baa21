//! Auto-pipelining on a single server: the commands that concurrent requests issue in the
//! same turn of the scheduler reach Redis together, as one pipeline.
//!
//! The first command queued spawns a flush task, which yields once (so every other task
//! that is ready to run gets to queue its command first), then sends everything queued as
//! one pipeline and hands each caller its own reply. Under load a batch carries many
//! requests' commands, so the application server and Redis make one write and one read
//! for all of them instead of one each: most of a round trip's CPU on both sides is those
//! system calls. An idle server sends batches of one, at the cost of one task spawn and one
//! yield. Batches are independent: several can be in flight on the multiplexed connection.
//!
//! Each caller gets exactly the reply to its own command, server errors included (a
//! pipeline that ignores errors answers each command on its own); a connection failure
//! fails every command of the batch. A caller that gave up before its batch left (a
//! request timed out or was dropped) is not sent.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::{Cmd, ErrorKind, RedisError, RedisResult, Value};
use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// A command waiting for its batch, with where its reply goes.
struct Queued {
    cmd: Cmd,
    reply: oneshot::Sender<RedisResult<Value>>,
}

/// The commands waiting for a flush. Whenever it is not empty, exactly one flush task is
/// pending for it: the one the first command queued started.
type Queue = Arc<Mutex<Vec<Queued>>>;

fn lock(queue: &Queue) -> std::sync::MutexGuard<'_, Vec<Queued>> {
    queue.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A connection manager whose commands are batched as described in the module docs.
#[derive(Clone)]
pub(super) struct Batched {
    manager: ConnectionManager,
    queue: Queue,
}

impl Batched {
    pub(super) fn new(manager: ConnectionManager) -> Self {
        Self {
            manager,
            queue: Arc::default(),
        }
    }

    /// The connection itself, for calls that must not wait for a batch.
    pub(super) fn manager(&self) -> &ConnectionManager {
        &self.manager
    }

    /// Sends `cmd` with the next batch and returns its reply; a server error reply is an
    /// `Err`, as from [`Cmd::query_async`].
    pub(super) async fn send(&self, cmd: Cmd) -> RedisResult<Value> {
        let Ok(runtime) = Handle::try_current() else {
            // Another executor polls this call. redis-rs needs Tokio's timers as much as
            // the flush task does: refuse, rather than panic inside either.
            return Err(RedisError::from((
                ErrorKind::Client,
                "RedisStore must be called from within a Tokio runtime",
            )));
        };
        let (reply, answer) = oneshot::channel();
        let first = {
            let mut queue = lock(&self.queue);
            queue.push(Queued { cmd, reply });
            queue.len() == 1
        };
        if first {
            spawn_flush(&runtime, self.manager.clone(), Arc::clone(&self.queue));
        }
        answer.await.unwrap_or_else(|_| {
            Err(RedisError::from((
                ErrorKind::Io,
                "the Redis batch was dropped before it was sent (runtime shutting down)",
            )))
        })
    }
}

/// The most commands one pipeline carries, so that a burst of requests cannot build a
/// pipeline whose replies Redis and the client must buffer all at once.
const MAX_BATCH: usize = 1024;

/// Takes the next batch off the queue: at most [`MAX_BATCH`] commands, oldest first.
/// Returns whether commands remain, which then need a flush of their own.
fn take_batch(queue: &mut Vec<Queued>) -> (Vec<Queued>, bool) {
    if queue.len() > MAX_BATCH {
        let rest = queue.split_off(MAX_BATCH);
        (std::mem::replace(queue, rest), true)
    } else {
        (std::mem::take(queue), false)
    }
}

/// The duty of a flush task that has not yet taken its batch. Dropped with the task
/// before that (its runtime shut down, or refused to spawn it), it fails everything
/// queued: those callers get an error instead of waiting for a flush that will never
/// run, and the next command queued starts a fresh flush.
struct PendingFlush {
    queue: Queue,
    armed: bool,
}

impl PendingFlush {
    /// Takes the batch, which discharges the duty.
    fn take(&mut self) -> (Vec<Queued>, bool) {
        let mut queue = lock(&self.queue);
        self.armed = false;
        take_batch(&mut queue)
    }
}

impl Drop for PendingFlush {
    fn drop(&mut self) {
        if self.armed {
            // Dropping the queued commands drops their reply senders: each caller wakes
            // with an error.
            drop(std::mem::take(&mut *lock(&self.queue)));
        }
    }
}

/// Starts a task that flushes the queue (a boxed future, as `flush` may start another).
fn spawn_flush(runtime: &Handle, manager: ConnectionManager, queue: Queue) {
    let duty = PendingFlush { queue, armed: true };
    let flushing: Pin<Box<dyn Future<Output = ()> + Send>> = Box::pin(flush(manager, duty));
    runtime.spawn(flushing);
}

/// Sends what is queued once every ready task had its turn to add to it.
async fn flush(mut manager: ConnectionManager, mut duty: PendingFlush) {
    tokio::task::yield_now().await;
    let (mut batch, more) = duty.take();
    if more {
        // Nobody else starts a flush while the queue is not empty.
        spawn_flush(&Handle::current(), manager.clone(), Arc::clone(&duty.queue));
    }
    batch.retain(|queued| !queued.reply.is_closed());
    if batch.len() <= 1 {
        if let Some(Queued { cmd, reply }) = batch.pop() {
            let result = manager.req_packed_command(&cmd).await;
            let _ = reply.send(result.and_then(Value::extract_error));
        }
        return;
    }
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    let mut replies = Vec::with_capacity(batch.len());
    for Queued { cmd, reply } in batch {
        pipe.add_command(cmd);
        replies.push(reply);
    }
    match pipe.query_async::<Vec<Value>>(&mut manager).await {
        Ok(values) if values.len() == replies.len() => {
            for (value, reply) in values.into_iter().zip(replies) {
                let _ = reply.send(value.extract_error());
            }
        }
        Ok(_) => {
            for reply in replies {
                let _ = reply.send(Err(RedisError::from((
                    ErrorKind::Parse,
                    "pipeline answered with the wrong number of replies",
                ))));
            }
        }
        Err(err) => {
            for reply in replies {
                let _ = reply.send(Err(err.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn echo(n: usize) -> Cmd {
        let mut cmd = redis::cmd("ECHO");
        cmd.arg(n);
        cmd
    }

    /// `count` queued `ECHO`s, with the receivers of their replies.
    fn queued(count: usize) -> (Queue, Vec<oneshot::Receiver<RedisResult<Value>>>) {
        let queue = Queue::default();
        let mut answers = Vec::new();
        for n in 0..count {
            let (reply, answer) = oneshot::channel();
            lock(&queue).push(Queued {
                cmd: echo(n),
                reply,
            });
            answers.push(answer);
        }
        (queue, answers)
    }

    #[test]
    fn a_batch_takes_at_most_one_pipeline_oldest_first() {
        let (queue, _answers) = queued(MAX_BATCH * 5 / 2);
        let mut sizes = Vec::new();
        loop {
            let (batch, more) = take_batch(&mut lock(&queue));
            let first = batch[0].cmd.get_packed_command();
            let position = (0..MAX_BATCH * 5 / 2).find(|&n| echo(n).get_packed_command() == first);
            sizes.push((batch.len(), position));
            if !more {
                break;
            }
        }
        let want = [
            (MAX_BATCH, Some(0)),
            (MAX_BATCH, Some(MAX_BATCH)),
            (MAX_BATCH / 2, Some(2 * MAX_BATCH)),
        ];
        assert_eq!(sizes, want);
        assert!(lock(&queue).is_empty());
    }

    #[test]
    fn a_flush_dropped_before_it_took_its_batch_fails_the_queue() {
        let (queue, answers) = queued(3);
        drop(PendingFlush {
            queue: Arc::clone(&queue),
            armed: true,
        });
        assert!(
            lock(&queue).is_empty(),
            "the queue must be free for a new flush"
        );
        for mut answer in answers {
            assert!(
                matches!(answer.try_recv(), Err(oneshot::error::TryRecvError::Closed)),
                "a caller still waits"
            );
        }
    }

    #[test]
    fn a_flush_that_took_its_batch_leaves_later_commands_queued() {
        let (queue, _answers) = queued(2);
        let mut duty = PendingFlush {
            queue: Arc::clone(&queue),
            armed: true,
        };
        let (batch, more) = duty.take();
        assert_eq!((batch.len(), more), (2, false));
        let (reply, _answer) = oneshot::channel();
        lock(&queue).push(Queued {
            cmd: echo(0),
            reply,
        });
        drop(duty);
        assert_eq!(
            lock(&queue).len(),
            1,
            "a later flush owns the later command"
        );
    }
}
