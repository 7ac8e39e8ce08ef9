//! The local registry: actors by name.

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use actix::Actor;
use parking_lot::RwLock;

use crate::actor_ref::ActorRef;

/// A name is taken by another live actor.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the name `{0}` is already registered to another live actor")]
pub struct NameTaken(pub Arc<str>);

/// A registered handle, type-erased.
trait Named: Send + Sync {
    fn is_dead(&self) -> bool;
    fn slot_id(&self) -> usize;
    fn as_any(&self) -> &dyn Any;
}

impl<A: Actor> Named for ActorRef<A> {
    fn is_dead(&self) -> bool {
        self.slot().is_dead()
    }
    fn slot_id(&self) -> usize {
        Arc::as_ptr(self.slot()) as usize
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

struct RegistryInner {
    names: RwLock<HashMap<Arc<str>, Box<dyn Named>>>,
}

/// Actors by name, on one node.
///
/// A registered name follows the actor across restarts (it names the [`ActorRef`], which
/// always reaches the current instance) and goes away when the actor ends for good: from then
/// on it is neither found nor listed, and another actor may take it. Names are
/// registered by [`ChildSpec::register`](crate::ChildSpec::register) when the child first
/// starts, or by hand with [`Registry::register`].
#[derive(Clone)]
pub struct Registry {
    inner: Arc<RegistryInner>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            inner: Arc::new(RegistryInner {
                names: RwLock::new(HashMap::new()),
            }),
        }
    }
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = self.inner.names.read();
        f.debug_struct("Registry")
            .field("names", &names.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Registry {
    /// Registers `actor` under `name` until it ends for good.
    ///
    /// # Errors
    /// [`NameTaken`] if another live actor holds the name. Registering the same actor again
    /// under the same name succeeds.
    pub fn register<A: Actor>(&self, name: &str, actor: &ActorRef<A>) -> Result<(), NameTaken> {
        if actor.slot().is_dead() {
            return Ok(()); // it would be gone at once
        }
        self.register_slot(name, actor)
    }

    /// Registers without looking at whether the actor is alive: for a supervisor about to
    /// (re)start the child.
    pub(crate) fn register_slot<A: Actor>(
        &self,
        name: &str,
        actor: &ActorRef<A>,
    ) -> Result<(), NameTaken> {
        let mut names = self.inner.names.write();
        if let Some(existing) = names.get(name) {
            if existing.slot_id() == actor.slot_id() {
                return Ok(());
            }
            if !existing.is_dead() {
                return Err(NameTaken(name.into()));
            }
        }
        names.insert(name.into(), Box::new(actor.clone()));
        Ok(())
    }

    /// The actor registered under `name`, if it is of type `A` and has not ended for good.
    pub fn lookup<A: Actor>(&self, name: &str) -> Option<ActorRef<A>> {
        let found = {
            let names = self.inner.names.read();
            let entry = names.get(name)?;
            if entry.is_dead() {
                None
            } else {
                Some(entry.as_any().downcast_ref::<ActorRef<A>>().cloned())
            }
        };
        match found {
            Some(handle) => handle,
            None => {
                self.prune(name);
                None
            }
        }
    }

    fn prune(&self, name: &str) {
        let mut names = self.inner.names.write();
        if names.get(name).is_some_and(|e| e.is_dead()) {
            names.remove(name);
        }
    }

    /// True if some actor is registered under `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.inner
            .names
            .read()
            .get(name)
            .is_some_and(|e| !e.is_dead())
    }

    /// The registered names, sorted.
    pub fn names(&self) -> Vec<Arc<str>> {
        let mut names = self.inner.names.write();
        names.retain(|_, e| !e.is_dead());
        let mut v: Vec<_> = names.keys().cloned().collect();
        v.sort();
        v
    }
}
