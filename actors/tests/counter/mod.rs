//! A remotely callable counter shared by the actor integration tests.
#![allow(dead_code, unreachable_pub)]

use actix::prelude::*;
use cadre_actors::RemoteMessage;
use serde::{Deserialize, Serialize};

/// Counts the [`Incr`] messages it has handled.
#[derive(Default)]
pub struct Counter(pub u64);

impl Actor for Counter {
    type Context = Context<Self>;
}

/// Adds one and answers the new count.
#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "u64")]
pub struct Incr;

impl RemoteMessage for Incr {
    const TAG: &'static str = "counter.incr";
}

impl Handler<Incr> for Counter {
    type Result = u64;
    fn handle(&mut self, _: Incr, _: &mut Context<Self>) -> u64 {
        self.0 += 1;
        self.0
    }
}
