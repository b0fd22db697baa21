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
use tokio::sync::oneshot;

/// A command waiting for its batch, with where its reply goes.
struct Queued {
    cmd: Cmd,
    reply: oneshot::Sender<RedisResult<Value>>,
}

/// A connection manager whose commands are batched as described in the module docs.
#[derive(Clone)]
pub(super) struct Batched {
    manager: ConnectionManager,
    queue: Arc<Mutex<Vec<Queued>>>,
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
        let (reply, answer) = oneshot::channel();
        let first = {
            let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
            queue.push(Queued { cmd, reply });
            queue.len() == 1
        };
        if first {
            spawn_flush(self.manager.clone(), Arc::clone(&self.queue));
        }
        answer.await.unwrap_or_else(|_| {
            Err(RedisError::from((
                ErrorKind::Io,
                "the Redis batch was dropped before it was answered",
            )))
        })
    }
}

/// The most commands one pipeline carries, so that a burst of requests cannot build a
/// pipeline whose replies Redis and the client must buffer all at once.
const MAX_BATCH: usize = 1024;

/// Starts a task that flushes the queue (a boxed future, as `flush` may start another).
fn spawn_flush(manager: ConnectionManager, queue: Arc<Mutex<Vec<Queued>>>) {
    let flushing: Pin<Box<dyn Future<Output = ()> + Send>> = Box::pin(flush(manager, queue));
    tokio::spawn(flushing);
}

/// Sends what is queued once every ready task had its turn to add to it.
async fn flush(mut manager: ConnectionManager, queue: Arc<Mutex<Vec<Queued>>>) {
    tokio::task::yield_now().await;
    let mut batch = {
        let mut queued = queue.lock().unwrap_or_else(PoisonError::into_inner);
        if queued.len() > MAX_BATCH {
            // The rest leaves in a batch of its own: nobody else will start one while the
            // queue is not empty.
            let rest = queued.split_off(MAX_BATCH);
            let batch = std::mem::replace(&mut *queued, rest);
            spawn_flush(manager.clone(), Arc::clone(&queue));
            batch
        } else {
            std::mem::take(&mut *queued)
        }
    };
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
    use std::time::Duration;

    use super::*;

    /// The test server `scripts/test.sh` starts (or `SESSIONWARE_REDIS_URL`).
    async fn test_server() -> ConnectionManager {
        let url = std::env::var("SESSIONWARE_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6380/".into());
        let client = redis::Client::open(url.as_str()).expect("a valid Redis URL");
        ConnectionManager::new(client).await.unwrap_or_else(|err| {
            panic!("cannot reach the test Redis at {url}: {err}; run scripts/test.sh")
        })
    }

    #[tokio::test]
    async fn a_queue_longer_than_one_pipeline_leaves_in_several() {
        let batched = Batched::new(test_server().await);
        // As if two and a half pipelines' worth of callers had queued in one turn.
        let mut answers = Vec::new();
        {
            let mut queue = batched.queue.lock().unwrap();
            for n in 0..MAX_BATCH * 5 / 2 {
                let (reply, answer) = oneshot::channel();
                let mut cmd = redis::cmd("ECHO");
                cmd.arg(n);
                queue.push(Queued { cmd, reply });
                answers.push(answer);
            }
        }
        spawn_flush(batched.manager.clone(), Arc::clone(&batched.queue));
        for (n, answer) in answers.into_iter().enumerate() {
            let value = tokio::time::timeout(Duration::from_secs(10), answer)
                .await
                .unwrap_or_else(|_| panic!("command {n} was never sent"))
                .expect("a reply")
                .expect("ECHO succeeds");
            assert_eq!(value, Value::BulkString(n.to_string().into_bytes()));
        }
        assert!(batched.queue.lock().unwrap().is_empty());
    }
}
