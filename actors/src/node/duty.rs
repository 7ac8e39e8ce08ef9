//! [`Duty`]: a long-running loop of a node (the store's bootstrap, the tracking of store nodes)
//! as a supervised child, so that a panic in it is a child failure its supervisor restarts
//! instead of a loop that silently ends.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use actix::prelude::*;

type Make = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = ()>>> + Send + Sync>;

/// An actor that runs one future, made afresh on every start; it stops (normally) when the
/// future completes. Give it [`Restart::Transient`](cadre_runtime::Restart::Transient) for work
/// that ends, the default (permanent) for a loop that must always run.
pub(crate) struct Duty {
    make: Make,
}

impl Duty {
    /// A duty running the futures `make` builds.
    pub(crate) fn new<F, Fut>(make: F) -> Duty
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        Duty {
            make: Arc::new(move || Box::pin(make())),
        }
    }
}

impl Actor for Duty {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let work = (self.make)();
        ctx.spawn(work.into_actor(self).map(|(), _, ctx| ctx.stop()));
    }
}
