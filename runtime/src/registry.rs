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

struct Entry {
    /// The address of the actor's slot: an identity, only ever compared.
    slot_id: usize,
    handle: Box<dyn Any + Send + Sync>,
}

pub(crate) struct RegistryInner {
    names: RwLock<HashMap<Arc<str>, Entry>>,
}

impl RegistryInner {
    pub(crate) fn remove_slot(&self, name: &str, slot_id: usize) {
        let mut names = self.names.write();
        if names.get(name).is_some_and(|e| e.slot_id == slot_id) {
            names.remove(name);
        }
    }
}

/// Actors by name, on one node.
///
/// A registered name follows the actor across restarts (it names the [`ActorRef`], which
/// always reaches the current instance) and goes away when the actor ends for good. Names are
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
            return Ok(());
        }
        self.register_slot(name, actor)?;
        // The actor may have died while it was being registered.
        if actor.slot().is_dead() {
            self.inner
                .remove_slot(name, Arc::as_ptr(actor.slot()) as usize);
        }
        Ok(())
    }

    /// Registers without looking at whether the actor is alive: for a supervisor about to
    /// (re)start the child.
    pub(crate) fn register_slot<A: Actor>(
        &self,
        name: &str,
        actor: &ActorRef<A>,
    ) -> Result<(), NameTaken> {
        let slot = actor.slot();
        let slot_id = Arc::as_ptr(slot) as usize;
        let name: Arc<str> = name.into();
        {
            let mut names = self.inner.names.write();
            if let Some(existing) = names.get(&name) {
                return if existing.slot_id == slot_id {
                    Ok(())
                } else {
                    Err(NameTaken(name))
                };
            }
            names.insert(
                name.clone(),
                Entry {
                    slot_id,
                    handle: Box::new(actor.clone()),
                },
            );
        }
        slot.add_name(Arc::downgrade(&self.inner), name);
        Ok(())
    }

    /// The actor registered under `name`, if it is of type `A`.
    pub fn lookup<A: Actor>(&self, name: &str) -> Option<ActorRef<A>> {
        self.inner
            .names
            .read()
            .get(name)
            .and_then(|e| e.handle.downcast_ref::<ActorRef<A>>())
            .cloned()
    }

    /// True if some actor is registered under `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.inner.names.read().contains_key(name)
    }

    /// The registered names, sorted.
    pub fn names(&self) -> Vec<Arc<str>> {
        let mut v: Vec<_> = self.inner.names.read().keys().cloned().collect();
        v.sort();
        v
    }
}
