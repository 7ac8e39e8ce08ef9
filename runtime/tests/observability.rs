//! What a supervision tree tells the outside: tracing events with reasons inside per-actor
//! spans, and where tokio's virtual time applies under actix.

mod common;

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use cadre_runtime::testkit::{run, run_paused, EventProbe};
use cadre_runtime::{EventKind, Runtime};
use common::*;
use parking_lot::Mutex;

/// A `MakeWriter` that appends to a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

#[test]
fn restarts_are_logged_with_reason_inside_the_actor_span() {
    let out = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(out.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::DEBUG)
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        run(async {
            let log = Log::default();
            let rt = Runtime::new("node-7");
            let mut events = EventProbe::new(&rt);
            let a = worker("a", &log);
            let ha = a.actor_ref();
            let _root = start_root(&rt, a).await;
            ha.tell(Fail("disk full")).unwrap();
            events
                .expect("a restarted", T, |e| {
                    e.kind == EventKind::Started { generation: 2 }
                })
                .await;
        })
    });
    let text = String::from_utf8(out.0.lock().clone()).unwrap();
    let exited = text
        .lines()
        .find(|l| l.contains("child exited"))
        .unwrap_or_else(|| panic!("no exit event in:\n{text}"));
    assert!(exited.contains("WARN"), "{exited}");
    assert!(exited.contains("child=root/a"), "{exited}");
    assert!(exited.contains("reason=error: disk full"), "{exited}");
    // The supervisor logs from inside its own span: actor{name, node, generation}.
    assert!(
        exited.contains("actor{name=root node=node-7 generation=1}"),
        "{exited}"
    );
    assert!(text.contains("restarting child"), "{text}");
}

#[test]
fn virtual_time_does_not_reach_other_arbiters() {
    run_paused(async {
        let other = actix::Arbiter::new();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
        other.spawn(async move {
            let t0 = tokio::time::Instant::now();
            let _ = go_rx.await;
            let _ = tx.send(t0.elapsed());
        });
        // An hour passes on this arbiter's paused clock, at once...
        let t0 = tokio::time::Instant::now();
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert!(t0.elapsed() >= Duration::from_secs(3600));
        go_tx.send(()).unwrap();
        // ...while the other arbiter's clock is real: only the wall time went by.
        let elapsed_there = rx.await.unwrap();
        assert!(elapsed_there < Duration::from_secs(60), "{elapsed_there:?}");
        other.stop();
        other.join().unwrap();
    });
}
