//! The member table: what a node shows of each member, and the state transitions behind it.
//!
//! ```text
//! gossip Up ──▶ joining ──(its description arrives)──▶ up ◀──▶ suspect
//!                                                      │         │
//!                        (it announces it leaves) ──▶ leaving    │
//!                                                      │         │
//!                               gossip Down ──▶ left (after leaving) / down (otherwise)
//! ```
//!
//! Pure: the node's view feeds it gossip events, descriptions learnt over the transport and
//! leave announcements, and carries out the [`Change`]s it returns.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::membership::MemberEvent;

/// A member's state as this node sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberState {
    /// Seen by the gossip; its description is being fetched.
    Joining,
    /// Active.
    Up,
    /// Not answering probes; declared down unless it refutes the suspicion in time.
    Suspect,
    /// Announced it is leaving.
    Leaving,
    /// Left gracefully.
    Left,
    /// Declared down by the failure detector.
    Down,
}

/// One member as shown by `cadre members`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRow {
    /// Its id (its address while its description is unknown).
    pub id: String,
    /// Its address.
    pub addr: SocketAddr,
    /// Its roles.
    pub roles: Vec<String>,
    /// Its version, if known.
    pub version: Option<String>,
    /// When it started (ms since the epoch), if known.
    pub started_ms: Option<u64>,
    /// Its state.
    pub state: MemberState,
}

/// What a member says of itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Description {
    /// Its id.
    pub name: String,
    /// Its roles.
    pub roles: Vec<String>,
    /// Its version.
    pub version: String,
    /// When it started (ms since the epoch).
    pub started_ms: u64,
}

/// What the view must do after an input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Learn what the member at this address says of itself (then feed
    /// [`MemberTable::described`]).
    Describe(SocketAddr),
    /// A member is up (described, or back from suspicion).
    Up {
        /// Its id.
        name: String,
        /// Its address.
        addr: SocketAddr,
        /// Its roles.
        roles: Vec<String>,
    },
    /// A member is suspected.
    Suspect {
        /// Its id.
        name: String,
        /// Its address.
        addr: SocketAddr,
    },
    /// A member went down without leaving; its records should go.
    Down {
        /// Its id.
        name: String,
        /// Its address.
        addr: SocketAddr,
    },
    /// A member left gracefully; its records should go.
    Left {
        /// Its id.
        name: String,
        /// Its address.
        addr: SocketAddr,
    },
}

/// The members this node knows, by address.
#[derive(Clone, Debug, Default)]
pub struct MemberTable {
    rows: BTreeMap<SocketAddr, MemberRow>,
}

impl MemberTable {
    /// Applies a gossip event.
    pub fn gossip(&mut self, event: &MemberEvent) -> Vec<Change> {
        match event {
            MemberEvent::Up(id) | MemberEvent::Renamed { new: id, .. } => {
                let row = self.rows.entry(id.addr).or_insert(MemberRow {
                    id: id.addr.to_string(),
                    addr: id.addr,
                    roles: Vec::new(),
                    version: None,
                    started_ms: None,
                    state: MemberState::Joining,
                });
                row.state = MemberState::Joining;
                vec![Change::Describe(id.addr)]
            }
            MemberEvent::Suspect(id) => match self.rows.get_mut(&id.addr) {
                Some(row) if row.state == MemberState::Up => {
                    row.state = MemberState::Suspect;
                    vec![Change::Suspect {
                        name: row.id.clone(),
                        addr: id.addr,
                    }]
                }
                _ => vec![],
            },
            MemberEvent::Alive(id) => match self.rows.get_mut(&id.addr) {
                Some(row) if row.state == MemberState::Suspect => {
                    row.state = MemberState::Up;
                    vec![Change::Up {
                        name: row.id.clone(),
                        addr: id.addr,
                        roles: row.roles.clone(),
                    }]
                }
                _ => vec![],
            },
            MemberEvent::Down(id) => match self.rows.get_mut(&id.addr) {
                Some(row) if !matches!(row.state, MemberState::Left | MemberState::Down) => {
                    let (name, addr) = (row.id.clone(), id.addr);
                    if row.state == MemberState::Leaving {
                        row.state = MemberState::Left;
                        vec![Change::Left { name, addr }]
                    } else {
                        row.state = MemberState::Down;
                        vec![Change::Down { name, addr }]
                    }
                }
                _ => vec![],
            },
            MemberEvent::Active | MemberEvent::Idle | MemberEvent::Defunct => vec![],
            MemberEvent::Rejoined(_) => vec![],
        }
    }

    /// The member at `addr` described itself.
    pub fn described(&mut self, addr: SocketAddr, d: Description) -> Vec<Change> {
        let Some(row) = self.rows.get_mut(&addr) else {
            return vec![];
        };
        row.id = d.name;
        row.roles = d.roles;
        row.version = Some(d.version);
        row.started_ms = Some(d.started_ms);
        if row.state == MemberState::Joining {
            row.state = MemberState::Up;
            vec![Change::Up {
                name: row.id.clone(),
                addr,
                roles: row.roles.clone(),
            }]
        } else {
            vec![]
        }
    }

    /// The member at `addr` announced it is leaving.
    pub fn leaving(&mut self, addr: SocketAddr) {
        if let Some(row) = self.rows.get_mut(&addr) {
            if matches!(
                row.state,
                MemberState::Up | MemberState::Suspect | MemberState::Joining
            ) {
                row.state = MemberState::Leaving;
            }
        }
    }

    /// Every member known, by address.
    pub fn rows(&self) -> impl Iterator<Item = &MemberRow> {
        self.rows.values()
    }

    /// The ids of the members that are up.
    pub fn up(&self) -> Vec<String> {
        self.rows
            .values()
            .filter(|r| r.state == MemberState::Up)
            .map(|r| r.id.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::membership::MemberId;

    fn id(port: u16) -> MemberId {
        MemberId {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            bump: 1,
        }
    }

    fn describe(t: &mut MemberTable, port: u16) -> Vec<Change> {
        t.described(
            id(port).addr,
            Description {
                name: format!("n{port}"),
                roles: vec!["worker".into()],
                version: "1".into(),
                started_ms: 5,
            },
        )
    }

    fn state(t: &MemberTable, port: u16) -> MemberState {
        t.rows().find(|r| r.addr == id(port).addr).unwrap().state
    }

    #[test]
    fn joining_then_up_once_described() {
        let mut t = MemberTable::default();
        assert_eq!(
            t.gossip(&MemberEvent::Up(id(1))),
            [Change::Describe(id(1).addr)]
        );
        assert_eq!(state(&t, 1), MemberState::Joining);
        let up = describe(&mut t, 1);
        assert!(matches!(&up[..], [Change::Up { name, .. }] if name == "n1"));
        assert_eq!(t.up(), ["n1"]);
    }

    #[test]
    fn suspicion_and_refutation() {
        let mut t = MemberTable::default();
        t.gossip(&MemberEvent::Up(id(1)));
        describe(&mut t, 1);
        assert!(matches!(
            &t.gossip(&MemberEvent::Suspect(id(1)))[..],
            [Change::Suspect { .. }]
        ));
        assert_eq!(state(&t, 1), MemberState::Suspect);
        assert!(matches!(
            &t.gossip(&MemberEvent::Alive(id(1)))[..],
            [Change::Up { .. }]
        ));
        assert_eq!(state(&t, 1), MemberState::Up);
    }

    #[test]
    fn a_member_that_announced_its_leave_is_left_not_down() {
        let mut t = MemberTable::default();
        for p in [1, 2] {
            t.gossip(&MemberEvent::Up(id(p)));
            describe(&mut t, p);
        }
        t.leaving(id(1).addr);
        assert_eq!(state(&t, 1), MemberState::Leaving);
        assert!(
            matches!(&t.gossip(&MemberEvent::Down(id(1)))[..], [Change::Left { name, .. }] if name == "n1")
        );
        assert!(
            matches!(&t.gossip(&MemberEvent::Down(id(2)))[..], [Change::Down { name, .. }] if name == "n2")
        );
        assert!(
            t.gossip(&MemberEvent::Down(id(2))).is_empty(),
            "reported once"
        );
        assert_eq!(
            (state(&t, 1), state(&t, 2)),
            (MemberState::Left, MemberState::Down)
        );
    }
}
