//! The listener actor: accepts connections and hands each to a connection actor.

use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, ActorFutureExt, AsyncContext, Context, WrapFuture};
use cadre_runtime::{ChildSpec, ContextExt, Restart, Shutdown};
use parking_lot::Mutex;

use super::connection::Connection;
use super::TransportInner;

/// Accepts connections on the node's listening socket.
pub(crate) struct Listener {
    inner: Arc<TransportInner>,
    socket: Option<std::net::TcpListener>,
}

impl Listener {
    pub(crate) fn new(inner: Arc<TransportInner>, socket: std::net::TcpListener) -> Self {
        Listener {
            inner,
            socket: Some(socket),
        }
    }
}

impl Actor for Listener {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let Some(socket) = self.socket.take() else {
            return;
        };
        let inner = self.inner.clone();
        let accept = async move {
            let listener = tokio::net::TcpListener::from_std(socket)?;
            loop {
                let (stream, addr) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of descriptors and the like: back off instead of spinning.
                        tracing::warn!(reason = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let stream = Arc::new(Mutex::new(Some(stream)));
                let ci = inner.clone();
                let spec =
                    ChildSpec::new(format!("in-{addr}"), move || match stream.lock().take() {
                        Some(s) => Connection::accepted(ci.clone(), s, addr),
                        None => panic!("an accepted connection cannot be restarted"),
                    })
                    .restart(Restart::Temporary)
                    .shutdown(Shutdown::Timeout(Duration::from_secs(1)));
                if let Err(e) = inner
                    .connections
                    .add_child(spec, Duration::from_secs(5))
                    .await
                {
                    tracing::warn!(peer = %addr, reason = %e, "could not start a connection");
                }
            }
            #[allow(unreachable_code)]
            Ok::<(), std::io::Error>(())
        };
        ctx.spawn(accept.into_actor(self).map(|result, _, ctx| {
            if let Err(e) = result {
                ctx.fail(format!("listener failed: {e}"));
            }
        }));
    }
}
