//! The membership core: SWIM gossip (the `foca` crate) behind a pure `handle(input, now)`
//! interface, with every datagram authenticated.
//!
//! # Identity
//! A member's identity is small: its gossip (UDP) address and a `bump` counter. A restarted
//! node comes back with a higher bump and replaces its old self everywhere (`Identity::renew`
//! also lets a node wrongly declared down rejoin at once). Roles, services and status travel
//! separately, not in the identity.
//!
//! # Datagrams
//! Each datagram is foca's packet followed by a 16-byte tag: HMAC-SHA256 of the packet keyed
//! by the cluster secret, truncated. A datagram whose tag does not verify is dropped and
//! counted ([`Membership::rejected`]); foca never sees it.
//!
//! # Driving it
//! The caller owns the socket and the clock: it feeds [`Input`]s with the current time and
//! carries out the [`Effect`]s in order: send these bytes there, call back after that delay
//! with this timer, tell the world this member came up or went down.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use foca::{Config, Foca, NoCustomBroadcast, Notification, PostcardCodec, Runtime, Timer};
use hmac::Mac;
use rand::rngs::SmallRng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::wire::Secret;

/// Bytes of HMAC tag after each datagram.
pub const TAG_LEN: usize = 16;

/// The first join retry comes this long after the first announce; each later one waits twice
/// as long as the one before, up to [`JOIN_RETRY_MAX`], each ±25 % at random.
pub const JOIN_RETRY_MIN: Duration = Duration::from_millis(100);

/// The longest wait between two join retries.
pub const JOIN_RETRY_MAX: Duration = Duration::from_secs(5);

/// A member of the cluster, as the gossip knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MemberId {
    /// Where its gossip listens (UDP).
    pub addr: SocketAddr,
    /// Bumped on every restart or rejoin; the higher bump wins (compared with wrapping, so
    /// it may start anywhere: a node starts it at its start time in 100 ms steps, see
    /// [`initial_bump`]).
    pub bump: u32,
}

impl foca::Identity for MemberId {
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        Some(MemberId {
            addr: self.addr,
            bump: self.bump.wrapping_add(1),
        })
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        // Wrapping comparison: a bump just past u32::MAX still wins.
        self.bump.wrapping_sub(adversary.bump) < u32::MAX / 2
    }
}

/// A first bump for a node starting at `since_epoch`: the start time in 100 ms steps, so that
/// a node restarted (as a new process) comes back with a higher bump than it had, and peers
/// replace its old identity instead of refusing the new one as a duplicate.
pub fn initial_bump(since_epoch: Duration) -> u32 {
    (since_epoch.as_millis() / 100) as u32
}

/// Named timing profiles.
///
/// | setting | `lan` | `local_test` |
/// |---|---|---|
/// | probe period (each member probes one random member) | 400 ms | 100 ms |
/// | probe round trip before indirect probes | 200 ms | 50 ms |
/// | suspicion before down | 1 s | 300 ms |
/// | gossip to 3 random members | every 200 ms | every 200 ms |
/// | announce to a random member | every 30 s | every 500 ms |
/// | announce to members seen down (partition healing) | every 5 s | every 1 s |
///
/// `lan` sees a crash everywhere in under 3 s at 50 members (measured in
/// `lan_profile_detects_a_crash_at_50_nodes`); the price of the short suspicion is that a
/// member stalled for over about a second (a paused VM, a stop-the-world pause) is declared
/// down, and rejoins with a renewed identity as soon as it runs again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Profile {
    /// For a LAN or one data centre.
    Lan,
    /// Fast timers for tests on one machine.
    LocalTest,
}

impl Profile {
    /// foca's configuration for this profile and an expected cluster size.
    pub fn config(self, cluster_size: u32) -> Config {
        let size = NonZeroU32::new(cluster_size.max(1)).expect("at least 1");
        let every = |ms: u64, n: usize| {
            Some(foca::PeriodicParams {
                frequency: Duration::from_millis(ms),
                num_members: std::num::NonZeroUsize::new(n).expect("non-zero"),
            })
        };
        let mut c = Config::new_lan(size);
        c.notify_down_members = true;
        c.periodic_gossip = every(200, 3);
        match self {
            Profile::Lan => {
                c.probe_period = Duration::from_millis(400);
                c.probe_rtt = Duration::from_millis(200);
                c.suspect_to_down_after = Duration::from_secs(1);
                c.periodic_announce = every(30_000, 1);
                c.periodic_announce_to_down_members = every(5_000, 2);
            }
            Profile::LocalTest => {
                c.probe_period = Duration::from_millis(100);
                c.probe_rtt = Duration::from_millis(50);
                c.suspect_to_down_after = Duration::from_millis(300);
                c.periodic_announce = every(500, 2);
                c.periodic_announce_to_down_members = every(1_000, 2);
            }
        }
        c
    }
}

/// What happened.
#[derive(Debug)]
pub enum Input {
    /// Start joining through these addresses: they are announced to now and again, with
    /// [`Effect::RetryJoin`], until this node knows an active member.
    Join(Vec<SocketAddr>),
    /// The delay asked for in [`Effect::RetryJoin`] has passed.
    RetryJoin,
    /// A datagram arrived.
    Datagram {
        /// The sender's address (informational; the packet says who sent it).
        from: SocketAddr,
        /// Its bytes, tag included.
        bytes: Vec<u8>,
    },
    /// A timer asked for in [`Effect::Schedule`] is due.
    Timer(Timer<MemberId>),
    /// Leave the cluster gracefully (peers learn it at once).
    Leave,
}

/// A change in the membership.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemberEvent {
    /// A member is up.
    Up(MemberId),
    /// A member is suspected: it did not answer probes; it is declared down unless it refutes
    /// the suspicion in time.
    Suspect(MemberId),
    /// A suspected member refuted the suspicion: it is up.
    Alive(MemberId),
    /// A member is down (crashed, or left).
    Down(MemberId),
    /// A member came back with a new identity (same address, higher bump).
    Renamed {
        /// The identity it had.
        old: MemberId,
        /// The identity it has now.
        new: MemberId,
    },
    /// This node learnt it had been declared down and came back under a renewed identity.
    Rejoined(MemberId),
    /// This node is part of a cluster (at least one member knows it).
    Active,
    /// This node knows no active member.
    Idle,
    /// This node was declared down and could not rejoin.
    Defunct,
}

/// What to do.
#[derive(Debug, PartialEq, Eq)]
pub enum Effect {
    /// Send these bytes to this address.
    Send {
        /// Destination.
        to: SocketAddr,
        /// The datagram, tag included.
        bytes: Vec<u8>,
    },
    /// Feed back `Input::Timer(timer)` after `after`.
    Schedule {
        /// The delay.
        after: Duration,
        /// The timer.
        timer: Timer<MemberId>,
    },
    /// Feed back `Input::RetryJoin` after `after`.
    RetryJoin {
        /// The delay.
        after: Duration,
    },
    /// Tell subscribers.
    Event(MemberEvent),
}

/// Collects foca's effects for one call.
struct Collect<'a> {
    out: &'a mut Vec<Effect>,
    key: &'a Secret,
    /// This node renewed its identity during the call.
    rejoined: bool,
}

impl Runtime<MemberId> for Collect<'_> {
    fn notify(&mut self, n: Notification<'_, MemberId>) {
        let event = match n {
            Notification::MemberUp(id) => MemberEvent::Up(*id),
            Notification::MemberDown(id) => MemberEvent::Down(*id),
            Notification::Rename(old, new) => MemberEvent::Renamed {
                old: *old,
                new: *new,
            },
            Notification::Rejoin(id) => {
                self.rejoined = true;
                MemberEvent::Rejoined(*id)
            }
            Notification::Active => MemberEvent::Active,
            Notification::Idle => MemberEvent::Idle,
            Notification::Defunct => MemberEvent::Defunct,
        };
        self.out.push(Effect::Event(event));
    }

    fn send_to(&mut self, to: MemberId, data: &[u8]) {
        let mut bytes = Vec::with_capacity(data.len() + TAG_LEN);
        bytes.extend_from_slice(data);
        bytes.extend_from_slice(&tag(self.key, data));
        self.out.push(Effect::Send { to: to.addr, bytes });
    }

    fn submit_after(&mut self, timer: Timer<MemberId>, after: Duration) {
        self.out.push(Effect::Schedule { after, timer });
    }
}

fn tag(key: &Secret, data: &[u8]) -> [u8; TAG_LEN] {
    let mut mac = key.mac();
    mac.update(b"cadre-gossip-v1");
    mac.update(data);
    let full = mac.finalize().into_bytes();
    let mut t = [0u8; TAG_LEN];
    t.copy_from_slice(&full[..TAG_LEN]);
    t
}

fn verify(key: &Secret, data: &[u8], tag: &[u8]) -> bool {
    let mut mac = key.mac();
    mac.update(b"cadre-gossip-v1");
    mac.update(data);
    mac.verify_truncated_left(tag).is_ok()
}

/// Why an input was refused (the state is unchanged).
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    /// The datagram's tag did not verify (wrong secret, corruption, or not cadre at all).
    #[error("datagram from {from} failed authentication")]
    Unauthenticated {
        /// Its sender.
        from: SocketAddr,
    },
    /// foca refused the input.
    #[error("gossip: {0}")]
    Gossip(String),
}

/// One node's view of the membership.
pub struct Membership {
    foca: Foca<MemberId, PostcardCodec, SmallRng, NoCustomBroadcast>,
    key: Secret,
    rejected: u64,
    /// Members suspected after the last input (foca reports suspicion only in its state).
    suspects: std::collections::BTreeSet<MemberId>,
    join: Joining,
}

/// The seeds a node announces itself to until it knows an active member.
#[derive(Debug)]
struct Joining {
    /// The addresses announced to (empty once joined, or when not joining).
    seeds: Vec<SocketAddr>,
    /// Announces so far.
    attempt: u32,
    /// Jitter for the retries.
    jitter: fastrand::Rng,
}

impl Joining {
    /// Announces the node to every seed and asks for the next retry, with exponential backoff.
    fn announce(
        &mut self,
        foca: &mut Foca<MemberId, PostcardCodec, SmallRng, NoCustomBroadcast>,
        rt: &mut Collect<'_>,
    ) -> Result<(), foca::Error> {
        if self.seeds.is_empty() {
            return Ok(());
        }
        for &addr in &self.seeds {
            foca.announce(MemberId { addr, bump: 0 }, &mut *rt)?;
        }
        self.attempt = self.attempt.saturating_add(1);
        let base = JOIN_RETRY_MIN
            .saturating_mul(1 << (self.attempt - 1).min(16))
            .min(JOIN_RETRY_MAX);
        let factor = 0.75 + 0.5 * self.jitter.f64();
        rt.out.push(Effect::RetryJoin {
            after: base.mul_f64(factor).clamp(JOIN_RETRY_MIN, JOIN_RETRY_MAX),
        });
        Ok(())
    }
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Membership")
            .field("identity", self.foca.identity())
            .field("members", &self.foca.num_members())
            .finish()
    }
}

impl Membership {
    /// A node with identity `id`, the cluster secret, a timing `config` and an RNG seed.
    pub fn new(id: MemberId, key: Secret, config: Config, seed: u64) -> Self {
        Membership {
            foca: Foca::new(id, config, SmallRng::seed_from_u64(seed), PostcardCodec),
            key,
            rejected: 0,
            suspects: std::collections::BTreeSet::new(),
            join: Joining {
                seeds: Vec::new(),
                attempt: 0,
                jitter: fastrand::Rng::with_seed(seed),
            },
        }
    }

    /// This node's identity (it changes when it renews itself).
    pub fn identity(&self) -> MemberId {
        *self.foca.identity()
    }

    /// The active members other than this node.
    pub fn members(&self) -> Vec<MemberId> {
        let mut v: Vec<_> = self.foca.iter_members().map(|m| *m.id()).collect();
        v.sort();
        v
    }

    /// Whether at least one other member is known active: the state that
    /// [`MemberEvent::Active`] and [`MemberEvent::Idle`] announce the changes of.
    pub fn is_active(&self) -> bool {
        self.foca.num_members() > 0
    }

    /// Datagrams dropped because their tag did not verify.
    pub fn rejected(&self) -> u64 {
        self.rejected
    }

    /// Emits `Suspect` for members newly suspected and `Alive` for those that refuted it.
    fn track_suspicion(&mut self, out: &mut Vec<Effect>) {
        let now: std::collections::BTreeSet<MemberId> = self
            .foca
            .iter_membership_state()
            .filter(|m| m.state() == foca::State::Suspect)
            .map(|m| *m.id())
            .collect();
        if now == self.suspects {
            return;
        }
        for id in now.difference(&self.suspects) {
            out.push(Effect::Event(MemberEvent::Suspect(*id)));
        }
        let alive: Vec<MemberId> = self.foca.iter_members().map(|m| *m.id()).collect();
        for id in self.suspects.difference(&now) {
            if alive.contains(id) {
                out.push(Effect::Event(MemberEvent::Alive(*id)));
            }
        }
        self.suspects = now;
    }

    /// Feeds one input; returns the effects to carry out, in order.
    ///
    /// # Errors
    /// [`MembershipError`]; the state is unchanged and nothing is to be done.
    pub fn handle(&mut self, input: Input) -> Result<Vec<Effect>, MembershipError> {
        let mut out = Vec::new();
        let mut rt = Collect {
            out: &mut out,
            key: &self.key,
            rejoined: false,
        };
        let gossip = |e: foca::Error| MembershipError::Gossip(e.to_string());
        match input {
            Input::Join(seeds) => {
                let me = self.foca.identity().addr;
                self.join.seeds = seeds.into_iter().filter(|a| *a != me).collect();
                self.join.attempt = 0;
                self.join
                    .announce(&mut self.foca, &mut rt)
                    .map_err(gossip)?;
            }
            Input::RetryJoin => {
                if self.foca.num_members() > 0 {
                    self.join.seeds.clear();
                } else {
                    self.join
                        .announce(&mut self.foca, &mut rt)
                        .map_err(gossip)?;
                }
            }
            Input::Datagram { from, bytes } => {
                if bytes.len() < TAG_LEN {
                    self.rejected += 1;
                    return Err(MembershipError::Unauthenticated { from });
                }
                let (data, t) = bytes.split_at(bytes.len() - TAG_LEN);
                if !verify(&self.key, data, t) {
                    self.rejected += 1;
                    return Err(MembershipError::Unauthenticated { from });
                }
                self.foca.handle_data(data, &mut rt).map_err(gossip)?;
            }
            Input::Timer(timer) => self.foca.handle_timer(timer, &mut rt).map_err(gossip)?,
            Input::Leave => {
                self.join.seeds.clear();
                self.foca.leave_cluster(&mut rt).map_err(gossip)?;
            }
        }
        if rt.rejoined {
            // A renewed identity starts disconnected, with its timers reset, and peers drop
            // messages addressed to the old one: announce it to every address known (members
            // seen down too, so that two sides of a healed partition find each other).
            let known: Vec<MemberId> = self.foca.iter_membership_state().map(|m| *m.id()).collect();
            for id in known {
                if id.addr != self.foca.identity().addr {
                    self.foca.announce(id, &mut rt).map_err(gossip)?;
                }
            }
        }
        self.track_suspicion(&mut out);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cmp::Reverse;
    use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};

    enum Item {
        Input(Input),
    }

    /// Nodes on a simulated network: datagrams take 1 ms, timers fire at their deadlines.
    struct Sim {
        nodes: Vec<Membership>,
        addrs: HashMap<SocketAddr, usize>,
        queue: BinaryHeap<Reverse<(Duration, u64)>>,
        items: BTreeMap<u64, (usize, Item)>,
        seq: u64,
        now: Duration,
        crashed: HashSet<usize>,
        /// When set, datagrams between this group and the rest are lost.
        cut: Option<HashSet<usize>>,
        events: Vec<Vec<(Duration, MemberEvent)>>,
    }

    fn addr(i: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 20_000 + i as u16))
    }

    fn secret(s: &str) -> Secret {
        Secret::new(s.as_bytes().to_vec()).unwrap()
    }

    impl Sim {
        fn new(n: usize, profile: Profile) -> Sim {
            let nodes = (0..n)
                .map(|i| {
                    Membership::new(
                        MemberId {
                            addr: addr(i),
                            bump: 0,
                        },
                        secret("s"),
                        profile.config(n as u32),
                        i as u64,
                    )
                })
                .collect();
            Sim {
                nodes,
                addrs: (0..n).map(|i| (addr(i), i)).collect(),
                queue: BinaryHeap::new(),
                items: BTreeMap::new(),
                seq: 0,
                now: Duration::ZERO,
                crashed: HashSet::new(),
                cut: None,
                events: vec![Vec::new(); n],
            }
        }

        fn push(&mut self, at: Duration, node: usize, input: Input) {
            self.seq += 1;
            self.queue.push(Reverse((at, self.seq)));
            self.items.insert(self.seq, (node, Item::Input(input)));
        }

        fn feed(&mut self, node: usize, input: Input) {
            if self.crashed.contains(&node) {
                return;
            }
            let Ok(effects) = self.nodes[node].handle(input) else {
                return;
            };
            for e in effects {
                match e {
                    Effect::Send { to, bytes } => {
                        let across = |j: usize| {
                            self.cut
                                .as_ref()
                                .is_some_and(|g| g.contains(&node) != g.contains(&j))
                        };
                        if let Some(&j) = self.addrs.get(&to).filter(|&&j| !across(j)) {
                            let from = addr(node);
                            self.push(
                                self.now + Duration::from_millis(1),
                                j,
                                Input::Datagram { from, bytes },
                            );
                        }
                    }
                    Effect::Schedule { after, timer } => {
                        self.push(self.now + after, node, Input::Timer(timer))
                    }
                    Effect::RetryJoin { after } => {
                        self.push(self.now + after, node, Input::RetryJoin)
                    }
                    Effect::Event(ev) => self.events[node].push((self.now, ev)),
                }
            }
        }

        /// Runs until `done` holds (true) or `limit` of virtual time passes (false).
        fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&Sim) -> bool) -> bool {
            let end = self.now + limit;
            while !done(self) {
                let Some(Reverse((at, seq))) = self.queue.pop() else {
                    return false;
                };
                if at > end {
                    self.queue.push(Reverse((at, seq)));
                    self.now = end;
                    return false;
                }
                self.now = at;
                let (node, Item::Input(input)) = self.items.remove(&seq).expect("queued");
                self.feed(node, input);
            }
            true
        }

        fn join_all_through(&mut self, seed: usize) {
            for i in 0..self.nodes.len() {
                if i != seed {
                    self.feed(i, Input::Join(vec![addr(seed)]));
                }
            }
        }

        fn converged(&self) -> bool {
            let n = self.nodes.len() - self.crashed.len();
            (0..self.nodes.len())
                .filter(|i| !self.crashed.contains(i))
                .all(|i| self.nodes[i].members().len() == n - 1)
        }

        fn sees_down(&self, observer: usize, addr_of: SocketAddr) -> bool {
            self.events[observer]
                .iter()
                .any(|(_, e)| matches!(e, MemberEvent::Down(id) if id.addr == addr_of))
        }
    }

    #[test]
    fn nodes_converge_through_one_seed() {
        for n in [3, 10, 30] {
            let mut sim = Sim::new(n, Profile::LocalTest);
            sim.join_all_through(0);
            assert!(
                sim.run_until(Duration::from_secs(30), Sim::converged),
                "{n} nodes did not converge within 30 s of virtual time"
            );
            assert!(sim.events[1].iter().any(|(_, e)| *e == MemberEvent::Active));
            assert!(sim.nodes.iter().all(Membership::is_active));
        }
    }

    #[test]
    fn a_join_whose_first_announces_are_lost_is_retried_until_it_succeeds() {
        let mut sim = Sim::new(3, Profile::LocalTest);
        // Node 2 is cut off from the others while it starts joining.
        sim.cut = Some([2].into_iter().collect());
        sim.join_all_through(0);
        assert!(!sim.run_until(Duration::from_secs(3), Sim::converged));
        assert!(!sim.nodes[2].is_active());
        sim.cut = None;
        assert!(
            sim.run_until(Duration::from_secs(10), Sim::converged),
            "the retries did not bring node 2 in"
        );
        assert!(sim.nodes[2].is_active());
    }

    #[test]
    fn a_crashed_node_is_seen_down_by_every_other() {
        let mut sim = Sim::new(10, Profile::LocalTest);
        sim.join_all_through(0);
        assert!(sim.run_until(Duration::from_secs(30), Sim::converged));
        let t0 = sim.now;
        sim.crashed.insert(7);
        let all_see_it = |s: &Sim| (0..10).filter(|&i| i != 7).all(|i| s.sees_down(i, addr(7)));
        assert!(sim.run_until(Duration::from_secs(10), all_see_it));
        let took = sim.now - t0;
        assert!(took <= Duration::from_secs(3), "detection took {took:?}");
    }

    #[test]
    fn a_later_start_wins_the_address_even_across_the_wrap() {
        use foca::Identity;
        let id = |bump| MemberId {
            addr: addr(0),
            bump,
        };
        let start = initial_bump(Duration::from_secs(1_700_000_000));
        let restart = initial_bump(Duration::from_secs(1_700_000_000) + Duration::from_millis(300));
        assert!(restart > start);
        assert!(id(restart).win_addr_conflict(&id(start)));
        assert!(!id(start).win_addr_conflict(&id(restart)));
        assert!(id(3).win_addr_conflict(&id(u32::MAX - 2)), "wraps");
    }

    /// After the heal, each side tells the other's members they were declared down; they renew
    /// their identities (which resets foca's timers and connection) and announce the new ones
    /// to every address they know.
    #[test]
    fn a_partition_splits_the_view_and_healing_rejoins_it() {
        let mut sim = Sim::new(6, Profile::LocalTest);
        sim.join_all_through(0);
        assert!(sim.run_until(Duration::from_secs(30), Sim::converged));
        sim.cut = Some((0..3).collect());
        let split = |s: &Sim| {
            (0..6).all(|i| {
                let same_side = if i < 3 { 0..3 } else { 3..6 };
                s.nodes[i].members().len() == 2
                    && s.nodes[i]
                        .members()
                        .iter()
                        .all(|m| same_side.clone().any(|j| addr(j) == m.addr))
            })
        };
        assert!(
            sim.run_until(Duration::from_secs(30), split),
            "each side should see only its own"
        );
        // Heal: announces to members seen down cross the healed link; a member told it was
        // declared down renews its identity and rejoins.
        sim.cut = None;
        let healed = sim.run_until(Duration::from_secs(30), Sim::converged);
        if !healed {
            for i in 0..6 {
                eprintln!(
                    "node {i} ({:?}) sees {:?}; last events {:?}",
                    sim.nodes[i].identity(),
                    sim.nodes[i].members(),
                    sim.events[i].iter().rev().take(4).collect::<Vec<_>>()
                );
            }
        }
        assert!(healed, "the cluster should be whole again");
    }

    /// Crash detection with the `lan` profile at 50 nodes (virtual time; the bound is
    /// 3 s). Prints the figure; asserts only the profile's documented worst case.
    #[test]
    fn lan_profile_detects_a_crash_at_50_nodes() {
        let mut sim = Sim::new(50, Profile::Lan);
        sim.join_all_through(0);
        assert!(sim.run_until(Duration::from_secs(120), Sim::converged));
        let t0 = sim.now;
        sim.crashed.insert(42);
        let all = |s: &Sim| {
            (0..50)
                .filter(|&i| i != 42)
                .all(|i| s.sees_down(i, addr(42)))
        };
        assert!(sim.run_until(Duration::from_secs(60), all));
        let took = sim.now - t0;
        eprintln!("lan profile, 50 nodes: crash seen down by all in {took:?} (virtual)");
        assert!(
            took <= Duration::from_secs(3),
            "lan detection took {took:?}"
        );
    }

    #[test]
    fn a_crashed_node_is_suspected_before_it_is_declared_down() {
        let mut sim = Sim::new(5, Profile::LocalTest);
        sim.join_all_through(0);
        assert!(sim.run_until(Duration::from_secs(30), Sim::converged));
        sim.crashed.insert(4);
        let down_everywhere = |s: &Sim| (0..4).all(|i| s.sees_down(i, addr(4)));
        assert!(sim.run_until(Duration::from_secs(10), down_everywhere));
        // Someone suspected it first.
        let suspected_first = (0..4).any(|i| {
            let evs = &sim.events[i];
            let suspect = evs
                .iter()
                .position(|(_, e)| matches!(e, MemberEvent::Suspect(id) if id.addr == addr(4)));
            let down = evs
                .iter()
                .position(|(_, e)| matches!(e, MemberEvent::Down(id) if id.addr == addr(4)));
            matches!((suspect, down), (Some(s), Some(d)) if s < d)
        });
        assert!(suspected_first);
    }

    #[test]
    fn a_restarted_node_rejoins_with_a_higher_bump() {
        let mut sim = Sim::new(4, Profile::LocalTest);
        sim.join_all_through(0);
        assert!(sim.run_until(Duration::from_secs(30), Sim::converged));
        sim.crashed.insert(3);
        assert!(sim.run_until(Duration::from_secs(10), |s| s.sees_down(0, addr(3))));
        // The node restarts: same address, a new identity.
        sim.nodes[3] = Membership::new(
            MemberId {
                addr: addr(3),
                bump: 1,
            },
            secret("s"),
            Profile::LocalTest.config(4),
            99,
        );
        sim.crashed.remove(&3);
        sim.feed(3, Input::Join(vec![addr(0)]));
        let back = |s: &Sim| {
            (0..3).all(|i| {
                s.nodes[i].members().contains(&MemberId {
                    addr: addr(3),
                    bump: 1,
                })
            })
        };
        assert!(sim.run_until(Duration::from_secs(30), back));
    }

    #[test]
    fn a_leaving_node_is_seen_down_quickly() {
        let mut sim = Sim::new(5, Profile::Lan);
        sim.join_all_through(0);
        assert!(sim.run_until(Duration::from_secs(60), Sim::converged));
        let t0 = sim.now;
        sim.feed(4, Input::Leave);
        let all_see_it = |s: &Sim| (0..4).all(|i| s.sees_down(i, addr(4)));
        assert!(sim.run_until(Duration::from_secs(10), all_see_it));
        // Well under the LAN failure detector's seconds: a leave is announced, not detected.
        assert!(
            sim.now - t0 < Duration::from_millis(500),
            "took {:?}",
            sim.now - t0
        );
    }

    #[test]
    fn datagrams_with_a_wrong_secret_are_dropped_and_counted() {
        let mut sim = Sim::new(3, Profile::LocalTest);
        sim.nodes[2] = Membership::new(
            MemberId {
                addr: addr(2),
                bump: 0,
            },
            secret("intruder"),
            Profile::LocalTest.config(3),
            7,
        );
        sim.join_all_through(0);
        sim.run_until(Duration::from_secs(5), |_| false);
        assert_eq!(
            sim.nodes[0].members(),
            [MemberId {
                addr: addr(1),
                bump: 0
            }]
        );
        assert!(sim.nodes[0].rejected() > 0);
        assert!(sim.nodes[2].members().is_empty());
        // A runt datagram is refused too.
        let err = sim.nodes[0]
            .handle(Input::Datagram {
                from: addr(9),
                bytes: vec![1, 2, 3],
            })
            .unwrap_err();
        assert!(matches!(err, MembershipError::Unauthenticated { .. }));
    }
}
