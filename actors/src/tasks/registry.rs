//! [`TaskRegistry`]: the handlers a worker node runs, by task kind.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use cadre_cluster::tasks::Outcome;
use cadre_cluster::wire::{decode_body, encode_body};

use super::Task;

pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

type SyncFn = dyn Fn(&[u8]) -> Outcome + Send + Sync;
type AsyncFn = dyn Fn(&[u8]) -> BoxFuture<Outcome> + Send + Sync;

/// One kind's handler, from input bytes to an outcome.
#[derive(Clone)]
pub(crate) enum Handler {
    /// Runs on tokio's blocking pool.
    Sync(Arc<SyncFn>),
    /// Runs on the worker's arbiter.
    Async(Arc<AsyncFn>),
}

/// The task kinds a worker node runs, each with its handler.
#[derive(Clone, Default)]
pub struct TaskRegistry {
    handlers: BTreeMap<String, Handler>,
}

impl std::fmt::Debug for TaskRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskRegistry")
            .field("kinds", &self.kinds())
            .finish()
    }
}

fn finish<O: serde::Serialize, E: Display>(result: Result<O, E>) -> Outcome {
    match result {
        Ok(output) => match encode_body(&output) {
            Ok(bytes) => Outcome::Ok(bytes),
            Err(e) => Outcome::Failed(format!("the output does not encode: {e}")),
        },
        Err(e) => Outcome::Failed(e.to_string()),
    }
}

impl TaskRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        TaskRegistry::default()
    }

    /// Registers a synchronous handler for `T`: it runs on tokio's blocking pool, so it may
    /// compute for long without stalling the node. An `Err` is the task's error (retried if
    /// `T`'s policy says so); a panic kills the worker. A handler that never returns is run
    /// again elsewhere after its lease, but keeps its blocking thread (and its worker) until
    /// the process exits; the node's actix system waits for it when it shuts down.
    pub fn sync<T, F, E>(mut self, handler: F) -> Self
    where
        T: Task,
        F: Fn(T::Input) -> Result<T::Output, E> + Send + Sync + 'static,
        E: Display,
    {
        let run = move |bytes: &[u8]| match decode_body::<T::Input>(bytes) {
            Ok(input) => finish(handler(input)),
            Err(e) => Outcome::BadInput(e),
        };
        self.handlers
            .insert(T::NAME.to_string(), Handler::Sync(Arc::new(run)));
        self
    }

    /// Registers an asynchronous handler for `T`: it runs on the worker's arbiter, one task
    /// at a time per worker. Errors and panics as for [`TaskRegistry::sync`].
    pub fn async_handler<T, F, Fut, E>(mut self, handler: F) -> Self
    where
        T: Task,
        F: Fn(T::Input) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T::Output, E>> + Send + 'static,
        E: Display,
    {
        let handler = Arc::new(handler);
        let run = move |bytes: &[u8]| -> BoxFuture<Outcome> {
            match decode_body::<T::Input>(bytes) {
                Ok(input) => {
                    let fut = handler(input);
                    Box::pin(async move { finish(fut.await) })
                }
                Err(e) => Box::pin(std::future::ready(Outcome::BadInput(e))),
            }
        };
        self.handlers
            .insert(T::NAME.to_string(), Handler::Async(Arc::new(run)));
        self
    }

    /// The kinds registered, by name.
    pub fn kinds(&self) -> Vec<String> {
        self.handlers.keys().cloned().collect()
    }

    pub(crate) fn get(&self, kind: &str) -> Option<&Handler> {
        self.handlers.get(kind)
    }
}
