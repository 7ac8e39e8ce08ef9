//! What masters and worker nodes say to each other over the transport.

use actix::Message;
use cadre_cluster::tasks::{Assignment, Report, TaskId};
use serde::{Deserialize, Serialize};

use crate::RemoteMessage;

/// The name a worker node's task actor is exposed under.
pub(crate) const TASKS_ACTOR: &str = "cadre.tasks";

/// Who sent a batch: where its reports go.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) struct MasterAddr {
    /// The master's node.
    pub(crate) node: String,
    /// The master's actor name on it.
    pub(crate) name: String,
}

/// Master → worker node: run these attempts.
#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "()")]
pub(crate) struct RunBatch {
    pub(crate) master: MasterAddr,
    /// The batch's number, per master and node.
    pub(crate) seq: u64,
    pub(crate) assignments: Vec<Assignment>,
}
impl RemoteMessage for RunBatch {
    const TAG: &'static str = "tasks.run";
}

/// Master → worker node: drop these tasks if they have not started.
#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "()")]
pub(crate) struct CancelTasks {
    pub(crate) master: MasterAddr,
    pub(crate) ids: Vec<TaskId>,
}
impl RemoteMessage for CancelTasks {
    const TAG: &'static str = "tasks.cancel";
}

/// Worker node → master: outcomes, and how much the node holds at most from now on.
#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "()")]
pub(crate) struct TaskReports {
    pub(crate) node: String,
    pub(crate) capacity: u32,
    pub(crate) reports: Vec<Report>,
}
impl RemoteMessage for TaskReports {
    const TAG: &'static str = "tasks.reports";
}

/// Worker node → master: the attempts it holds for that master (renewing their leases).
#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "()")]
pub(crate) struct TaskHeartbeat {
    pub(crate) node: String,
    pub(crate) capacity: u32,
    /// Changes when the node's task actor restarts (and forgets what it held).
    pub(crate) incarnation: u64,
    /// The last batch it received from this master.
    pub(crate) seen_seq: u64,
    pub(crate) holds: Vec<(TaskId, u32)>,
}
impl RemoteMessage for TaskHeartbeat {
    const TAG: &'static str = "tasks.heartbeat";
}
