//! The supervisor actor: a thin actix driver around [`Core`]. It feeds the core what its
//! children report and carries out what the core decides: spawn, stop (by shutdown policy),
//! arm timers, publish events, exit.

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::sync::Arc;

use actix::{
    Actor, ActorContext, AsyncContext, Context, Handler, Message, MessageResult, SpawnHandle,
};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::events::SupervisionEvent;
use crate::exit::ExitReason;
use crate::instance::{defer_start, record_exit, InstanceEvent, Reporter, Spawned, StartGate};
use crate::runtime::Runtime;
use crate::supervisor::core::{Action, ChildInfo, ChildKey, Core, Input, Kind, Phase};
use crate::supervisor::keyed::KeyedVec;
use crate::supervisor::spec::{Child, ErasedChild, Intensity, Shutdown, StartCx};

/// A running supervisor. Built fresh from its spec on every start.
pub(crate) struct SupervisorActor {
    path: Arc<str>,
    runtime: Runtime,
    core: Core,
    children: KeyedVec<Entry>,
    gate: Option<StartGate>,
    /// Where all children report: the supervisor's own address, wrapped once.
    reporter: Option<Reporter>,
    adds: HashMap<ChildKey, oneshot::Sender<Result<(), ExitReason>>>,
    removes: HashMap<ChildKey, Vec<oneshot::Sender<()>>>,
    next_key: ChildKey,
    exited: bool,
    /// The core's output buffer, kept between inputs.
    actions: Vec<Action>,
}

/// A child: its spec, and its running instance if any.
struct Entry {
    child: Arc<dyn ErasedChild>,
    live: Option<Live>,
}

struct Live {
    generation: u64,
    spawned: Spawned,
    /// The shutdown timer armed when the child was asked to stop; cancelled when it exits, so
    /// timers never pile up in the supervisor's context.
    kill_timer: Option<SpawnHandle>,
}

impl Entry {
    fn live(&self, generation: u64) -> Option<&Live> {
        self.live.as_ref().filter(|l| l.generation == generation)
    }
}

impl SupervisorActor {
    pub(crate) fn new(
        path: Arc<str>,
        runtime: Runtime,
        kind: Kind,
        intensity: Intensity,
        children: &[Child],
    ) -> Self {
        let mut core = Core::new(kind, intensity, fastrand::u64(..));
        core.reserve(children.len());
        let mut map = KeyedVec::with_capacity(children.len());
        for (key, child) in children.iter().enumerate() {
            let key = key as ChildKey;
            core.add_initial(key, child.0.meta().clone(), child.0.last_generation());
            map.insert(
                key,
                Entry {
                    child: child.0.clone(),
                    live: None,
                },
            );
        }
        SupervisorActor {
            path,
            runtime,
            core,
            next_key: map.len() as ChildKey,
            children: map,
            gate: None,
            reporter: None,
            adds: HashMap::new(),
            removes: HashMap::new(),
            exited: false,
            actions: Vec::new(),
        }
    }

    fn feed(&mut self, input: Input, ctx: &mut Context<Self>) {
        let mut queue = VecDeque::new();
        let mut next = Some(input);
        let mut actions = std::mem::take(&mut self.actions);
        while let Some(input) = next.take().or_else(|| queue.pop_front()) {
            self.core.handle_into(input, Instant::now(), &mut actions);
            for action in actions.drain(..) {
                self.apply(action, ctx, &mut queue);
            }
        }
        self.actions = actions;
    }

    fn apply(&mut self, action: Action, ctx: &mut Context<Self>, queue: &mut VecDeque<Input>) {
        match action {
            Action::Start { key, generation } => {
                let Some(child) = self.children.get(&key).map(|e| e.child.clone()) else {
                    queue.push_back(Input::Started {
                        key,
                        generation,
                        result: Err(ExitReason::error("no such child")),
                    });
                    return;
                };
                let report = self
                    .reporter
                    .clone()
                    .expect("a supervisor has its reporter once started");
                let cx = StartCx {
                    runtime: &self.runtime,
                    parent_path: &self.path,
                    key,
                    report: &report,
                    capture: true,
                };
                match child.start(&cx, generation) {
                    Ok((spawned, early)) => {
                        if let Some(entry) = self.children.get_mut(&key) {
                            entry.live = Some(Live {
                                generation,
                                spawned,
                                kill_timer: None,
                            });
                        }
                        // Its first poll already ran: its start (or failure) is known now.
                        for event in early.into_iter().flatten() {
                            let input = self.instance_event(key, generation, event, ctx);
                            queue.push_back(input);
                        }
                    }
                    Err(reason) => queue.push_back(Input::Started {
                        key,
                        generation,
                        result: Err(reason),
                    }),
                }
            }
            Action::Stop { key, generation } => {
                let Some(entry) = self.children.get_mut(&key) else {
                    return;
                };
                let shutdown = entry.child.meta().policy.shutdown;
                let Some(live) = entry.live.as_mut().filter(|l| l.generation == generation) else {
                    return; // its exit report is already on the way
                };
                match shutdown {
                    Shutdown::Kill => live.spawned.kill(),
                    Shutdown::Timeout(limit) => {
                        live.spawned.ctl.request_stop();
                        live.kill_timer = Some(ctx.run_later(limit, move |act, _| {
                            let live = act.children.get(&key).and_then(|e| e.live(generation));
                            if let Some(live) = live {
                                tracing::warn!(
                                    supervisor = %act.path, child = key, ?limit,
                                    "child overran its shutdown timeout; killing it"
                                );
                                live.spawned.kill();
                            }
                        }));
                    }
                    Shutdown::Infinity => live.spawned.ctl.request_stop(),
                }
            }
            Action::RestartAfter {
                key,
                generation,
                delay,
            } => {
                ctx.run_later(delay, move |act, ctx| {
                    act.feed(Input::RestartDue { key, generation }, ctx)
                });
            }
            Action::ResumeAfter { token, delay } => {
                ctx.run_later(delay, move |act, ctx| {
                    act.feed(Input::Resume { token }, ctx)
                });
            }
            Action::Forget { key, reason } => {
                if let Some(entry) = self.children.get(&key) {
                    entry.child.forget(reason);
                }
                if !self.core.contains(key) {
                    self.children.remove(&key);
                }
            }
            Action::StartResult { key, result } => {
                if let Some(reply) = self.adds.remove(&key) {
                    let _ = reply.send(result);
                }
            }
            Action::Removed { key } => {
                self.children.remove(&key);
                for reply in self.removes.remove(&key).unwrap_or_default() {
                    let _ = reply.send(());
                }
            }
            Action::Event { child, kind } => self.runtime.publish(SupervisionEvent {
                supervisor: self.path.clone(),
                child,
                kind,
            }),
            Action::Ready => {
                if let Some(gate) = self.gate.take() {
                    gate.ready();
                }
            }
            Action::Exit(reason) => {
                self.exited = true;
                record_exit(reason);
                ctx.stop();
            }
        }
    }
}

impl Actor for SupervisorActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let me = ctx.address();
        self.reporter = Some(Rc::new(move |key, generation, event| {
            me.do_send(ChildEvent {
                key,
                generation,
                event,
            })
        }));
        self.gate = defer_start();
        self.feed(Input::Start, ctx);
    }

    fn stopping(&mut self, ctx: &mut Context<Self>) -> actix::Running {
        if tokio::runtime::Handle::try_current().is_err() {
            // The arbiter is being torn down (its tasks are dropped): no orderly shutdown is
            // possible any more; `Drop` kills the children.
            return actix::Running::Stop;
        }
        if self.core.phase() != Phase::Done {
            self.feed(Input::Shutdown, ctx);
        }
        if self.core.phase() == Phase::Done {
            actix::Running::Stop
        } else {
            actix::Running::Continue
        }
    }
}

impl Drop for SupervisorActor {
    fn drop(&mut self) {
        if self.exited {
            return;
        }
        // The supervisor itself crashed or was killed: its children go with it (as linked
        // processes do in Erlang), and their handles say so.
        for entry in self.children.values() {
            if let Some(live) = &entry.live {
                live.spawned.kill();
            }
            entry.child.forget(ExitReason::Killed);
        }
    }
}

/// An instance of a child reports.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct ChildEvent {
    key: ChildKey,
    generation: u64,
    event: InstanceEvent,
}

impl Handler<ChildEvent> for SupervisorActor {
    type Result = ();

    fn handle(&mut self, msg: ChildEvent, ctx: &mut Context<Self>) {
        let input = self.instance_event(msg.key, msg.generation, msg.event, ctx);
        self.feed(input, ctx);
    }
}

impl SupervisorActor {
    /// What an instance reported, as an input for the core; forgets an instance that ended.
    fn instance_event(
        &mut self,
        key: ChildKey,
        generation: u64,
        event: InstanceEvent,
        ctx: &mut Context<Self>,
    ) -> Input {
        match event {
            InstanceEvent::Started(result) => {
                if result.is_err() {
                    self.drop_live(key, generation, ctx);
                }
                Input::Started {
                    key,
                    generation,
                    result,
                }
            }
            InstanceEvent::Exited(reason) => {
                self.drop_live(key, generation, ctx);
                Input::Exited {
                    key,
                    generation,
                    reason,
                }
            }
        }
    }

    fn drop_live(&mut self, key: ChildKey, generation: u64, ctx: &mut Context<Self>) {
        if let Some(entry) = self.children.get_mut(&key) {
            if entry.live(generation).is_some() {
                if let Some(timer) = entry.live.take().and_then(|l| l.kill_timer) {
                    ctx.cancel_future(timer);
                }
            }
        }
    }
}

/// Adds a child (pools).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct AddChild {
    pub(crate) child: Child,
    pub(crate) reply: oneshot::Sender<Result<(), ExitReason>>,
}

impl Handler<AddChild> for SupervisorActor {
    type Result = ();

    fn handle(&mut self, msg: AddChild, ctx: &mut Context<Self>) {
        let key = self.next_key;
        self.next_key += 1;
        let meta = msg.child.0.meta().clone();
        self.children.insert(
            key,
            Entry {
                child: msg.child.0,
                live: None,
            },
        );
        self.adds.insert(key, msg.reply);
        self.feed(Input::Add { key, meta }, ctx);
    }
}

/// Stops and removes the child whose slot is `slot_id`.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct RemoveChild {
    pub(crate) slot_id: usize,
    pub(crate) reply: oneshot::Sender<()>,
}

impl Handler<RemoveChild> for SupervisorActor {
    type Result = ();

    fn handle(&mut self, msg: RemoveChild, ctx: &mut Context<Self>) {
        let key = self
            .children
            .iter()
            .find(|(_, e)| e.child.slot_id() == msg.slot_id)
            .map(|(k, _)| *k);
        match key {
            Some(key) => {
                self.removes.entry(key).or_default().push(msg.reply);
                self.feed(Input::Remove { key }, ctx);
            }
            None => {
                let _ = msg.reply.send(());
            }
        }
    }
}

/// Lists the children.
#[derive(Message)]
#[rtype(result = "Vec<ChildInfo>")]
pub(crate) struct WhichChildren;

impl Handler<WhichChildren> for SupervisorActor {
    type Result = MessageResult<WhichChildren>;

    fn handle(&mut self, _: WhichChildren, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.core.children())
    }
}

/// Kills the running instance of the child `id` (an abnormal exit: the supervisor applies its
/// policy as for a crash), or hands back the child's own supervisor handle to go further down.
#[derive(Message)]
#[rtype(result = "Killed")]
pub(crate) struct KillChild {
    pub(crate) id: String,
    /// The path goes on below this child: answer with its supervisor handle.
    pub(crate) descend: bool,
}

/// What [`KillChild`] did.
pub(crate) enum Killed {
    /// The instance of this generation was killed.
    Instance(u64),
    /// The child is a supervisor: go on below it.
    Descend(crate::SupervisorRef),
    /// No such child (or not a supervisor, when descending).
    NoSuchChild,
    /// The child has no running instance.
    NotRunning,
}

impl Handler<KillChild> for SupervisorActor {
    type Result = MessageResult<KillChild>;

    fn handle(&mut self, msg: KillChild, _: &mut Context<Self>) -> Self::Result {
        let Some(entry) = self
            .children
            .iter()
            .map(|(_, e)| e)
            .find(|e| *e.child.meta().id == *msg.id)
        else {
            return MessageResult(Killed::NoSuchChild);
        };
        if msg.descend {
            return MessageResult(match entry.child.as_supervisor() {
                Some(sup) => Killed::Descend(sup),
                None => Killed::NoSuchChild,
            });
        }
        match &entry.live {
            Some(live) => {
                tracing::info!(supervisor = %self.path, child = msg.id, generation = live.generation, "restarting a child on request");
                live.spawned.kill();
                MessageResult(Killed::Instance(live.generation))
            }
            None => MessageResult(Killed::NotRunning),
        }
    }
}

/// Stops the supervisor (and so its children, right to left).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct StopSupervisor;

impl Handler<StopSupervisor> for SupervisorActor {
    type Result = ();

    fn handle(&mut self, _: StopSupervisor, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
