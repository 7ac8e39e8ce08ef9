//! A node program of your own: the same node as `cadre node`, with a supervised actor of the
//! program under the node's `app` supervisor (reachable cluster-wide by name), and a handler in
//! the node agent's event chain that takes a command of the program's own (`greet NAME`) and
//! counts the members it sees come up.
//!
//! Alone, it starts a one-node cluster (with the store) on 127.0.0.1, gives itself the command
//! through the store, asks its own actor, and leaves:
//!
//! ```sh
//! cargo run --release -p cadre-examples --example custom_node
//! ```
//!
//! Beside a `cadre node` cluster, it joins through a seed and stays until `cadre cmd NODE stop`
//! or Ctrl-C (the secret comes from where `cadre node` takes it: `CADRE_SECRET`, else the
//! per-user file):
//!
//! ```sh
//! ./target/release/cadre node --listen 127.0.0.1:7390 --name s0 --roles store --bootstrap-expect 1 --data-dir /tmp/cadre-s0 &
//! cargo run --release -p cadre-examples --example custom_node -- 127.0.0.1:7390
//! ./target/release/cadre cmd --node 127.0.0.1:7390 greeter-node greet world   # prints: ok hello, world
//! ./target/release/cadre cmd --node 127.0.0.1:7390 greeter-node stop
//! ```

use std::time::Duration;

use actix::prelude::*;
use anyhow::Context as _;
use cadre_actors::agent::{self, Target};
use cadre_actors::prelude::*;
use cadre_cluster::agent::CommandKind;
use serde::{Deserialize, Serialize};

/// Greets whoever asks.
#[derive(Default)]
struct Greeter {
    greeted: u64,
}

impl Actor for Greeter {
    type Context = Context<Self>;
}

/// Asks the greeter for a greeting (a remote message: any node can send it).
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "String")]
struct Greet(String);

impl RemoteMessage for Greet {
    const TAG: &'static str = "example.greet";
}

impl Handler<Greet> for Greeter {
    type Result = String;
    fn handle(&mut self, Greet(name): Greet, _: &mut Context<Self>) -> String {
        self.greeted += 1;
        format!("hello, {name} (greeting number {})", self.greeted)
    }
}

/// The program's own handler in the agent's chain: answers `greet NAME`, counts members up.
#[derive(Default)]
struct GreetCommand {
    members_up: usize,
}

impl ChainHandler for GreetCommand {
    fn name(&self) -> &str {
        "greet"
    }

    fn handle(&mut self, event: &AgentEvent, cx: &mut ChainCx) -> Flow {
        match event {
            AgentEvent::Command(c) => match &c.kind {
                CommandKind::Custom { name, args } if name == "greet" => {
                    let who = args.first().map_or("stranger", String::as_str);
                    cx.reply(Ok(format!("hello, {who}")));
                    Flow::Stop // taken: the executor after this handler never sees it
                }
                _ => Flow::Pass,
            },
            AgentEvent::Cluster(cadre_actors::node::view::ClusterEvent::MemberUp {
                name, ..
            }) => {
                self.members_up += 1;
                println!("member up: {name} ({} so far)", self.members_up);
                Flow::Pass
            }
            _ => Flow::Pass,
        }
    }
}

fn main() -> anyhow::Result<()> {
    let seed: Option<std::net::SocketAddr> = std::env::args()
        .nth(1)
        .map(|s| {
            s.parse()
                .context("the argument is a seed address, as 127.0.0.1:7390")
        })
        .transpose()?;
    let env = |k: &str| std::env::var(k).ok();
    let (secret, _) = cadre_actors::node::secret::resolve(None, env)?;
    let mut config = NodeConfig::local("greeter-node");
    match seed {
        Some(seed) => config.seeds = vec![seed],
        // Alone: this node holds the store itself.
        None => config.roles = vec!["store".into()],
    }
    System::new().block_on(async move {
        let runtime = Runtime::new("greeter-node");
        let greeter = ChildSpec::new("greeter", Greeter::default);
        let greeter_ref = greeter.actor_ref();
        let node = NodeBuilder::new(config, secret)
            .actor(greeter)
            .handler(GreetCommand::default)
            .start(&runtime)
            .await?;
        node.register_actor("greeter", greeter_ref)
            .await
            .accept::<Greet>();
        println!("node {} listening on {}", node.name(), node.addr());
        node.store_ready(Duration::from_secs(30)).await?;

        // The program's actor, by its cluster-wide name (any node can do the same).
        let greeter = node
            .lookup_actor("greeter")
            .await
            .context("greeter registered")?;
        println!(
            "{}",
            greeter
                .ask(Greet("cadre".into()), Duration::from_secs(5))
                .await?
        );

        // A command through the store, for this node, answered by the chain handler above.
        let kv = node.kv();
        let me = Target::Node(node.name().into());
        let greet = CommandKind::parse("greet", &["world".into()])?;
        let command = agent::issue(&kv, &me, greet, Duration::from_secs(30), "example").await?;
        let result =
            agent::wait_result(&kv, node.name(), &command.id, Duration::from_secs(30)).await?;
        println!(
            "command `greet world`: {} {}",
            result.state.as_str(),
            result.message
        );

        if let Some(seed) = seed {
            println!(
                "joined; stop me with `cadre cmd --node {seed} {} stop` or Ctrl-C",
                node.name()
            );
            tokio::select! {
                () = node.stop_requested() => println!("asked to stop"),
                _ = tokio::signal::ctrl_c() => println!("interrupted"),
            }
        }
        node.leave(Duration::from_secs(5)).await;
        Ok(())
    })
}
