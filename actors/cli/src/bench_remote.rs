//! `cadre bench remote`: one-way tell throughput and ask round trip between two OS processes
//! on 127.0.0.1, each beside raw tokio TCP with the same length-prefixed framing and write
//! batching, measured in the same run, in alternating rounds.
//!
//! The parent starts `cadre bench remote-serve` as a child process, which runs a cadre node
//! (with a counting actor exposed) and a raw TCP server, and prints both addresses. The secret
//! travels in the child's environment, never on its command line.

use std::borrow::Cow;
use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use actix::prelude::*;
use anyhow::{anyhow, bail, Context as _};
use bytes::{Buf, BufMut, BytesMut};
use cadre_actors::{Node, RemoteMessage, TransportConfig};
use cadre_cluster::wire::{FrameCodec, Secret};
use cadre_runtime::{ChildSpec, Runtime, SupervisorSpec};

use crate::child::ChildGuard;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::Decoder;

const SECRET_ENV: &str = "CADRE_BENCH_SECRET";

/// Round trips per side in each alternating block. Short, so that a stall of the machine (this
/// VM pauses for milliseconds at times) falls on both sides alike: with blocks of 250 (~10 ms)
/// a stall took a whole block of one side, and the p99 ratio of one run swung between 0.3x and
/// 1.8x while the p50 ratio stayed within 1.17–1.21x.
const ASK_BLOCK: usize = 10;

/// Options of `cadre bench remote`.
#[derive(clap::Args, Debug)]
pub(crate) struct Options {
    /// Messages per throughput round.
    #[arg(long, default_value_t = 1_000_000)]
    messages: u64,
    /// Payload bytes per message (at most 100 for the published target).
    #[arg(long, default_value_t = 100)]
    payload: usize,
    /// Asks per side for the round trip (one in flight), alternating with raw in short blocks.
    #[arg(long, default_value_t = 40_000)]
    asks: usize,
    /// Throughput rounds (alternating cadre and raw); medians are reported.
    #[arg(long, default_value_t = 9)]
    rounds: usize,
    /// Profiling aid: run only one side's round trips (`cadre`, `raw`) or throughput
    /// (`cadre-tell`, `raw-tell`) and exit.
    #[arg(long, hide = true)]
    only: Option<String>,
}

/// A payload for the sink. The sender holds its bytes as a slice of one static buffer, as the
/// raw side writes every frame from one slice; the receiver decodes each into a fresh `Vec` of
/// its own (an allocation and a copy per message, which the raw side does not pay). The figure
/// is the transport's cost (encoding, framing, writing; decoding and handling on the other
/// side), not an allocation and copy per message in the sending loop.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "()")]
struct Blob(
    #[serde(
        serialize_with = "serde_bytes::serialize",
        deserialize_with = "owned_bytes"
    )]
    Cow<'static, [u8]>,
);

/// A MessagePack `bin` decoded into a buffer of its own.
fn owned_bytes<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Cow<'static, [u8]>, D::Error> {
    serde_bytes::ByteBuf::deserialize(d).map(|b| Cow::Owned(b.into_vec()))
}
impl RemoteMessage for Blob {
    const TAG: &'static str = "bench.blob";
}

/// How many blobs the sink has seen.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "u64")]
struct Count;
impl RemoteMessage for Count {
    const TAG: &'static str = "bench.count";
}

/// Echoed back.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "serde_bytes::ByteBuf")]
struct Ping(#[serde(with = "serde_bytes")] Vec<u8>);
impl RemoteMessage for Ping {
    const TAG: &'static str = "bench.ping";
}

#[derive(Default)]
struct Sink {
    count: u64,
}
impl Actor for Sink {
    type Context = Context<Self>;
}
impl Handler<Blob> for Sink {
    type Result = ();
    fn handle(&mut self, _: Blob, _: &mut Context<Self>) {
        self.count += 1;
    }
}
impl Handler<Count> for Sink {
    type Result = u64;
    fn handle(&mut self, _: Count, _: &mut Context<Self>) -> u64 {
        self.count
    }
}
impl Handler<Ping> for Sink {
    type Result = MessageResult<Ping>;
    fn handle(&mut self, m: Ping, _: &mut Context<Self>) -> Self::Result {
        MessageResult(serde_bytes::ByteBuf::from(m.0))
    }
}

// Raw protocol: a frame's first byte says what it is.
const RAW_DATA: u8 = 0;
const RAW_SYNC: u8 = 1;
const RAW_PING: u8 = 2;

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// Starts a transport node named `name` in the bench cluster, on a loopback port.
async fn bench_node(name: &str, secret: String, rt: &Runtime) -> anyhow::Result<Node> {
    let secret = Secret::new(secret.into_bytes())?;
    let config = TransportConfig::new("bench", name, loopback(), secret);
    Ok(Node::start(config, rt).await?)
}

/// The child process: a cadre node and a raw server; runs until its stdin closes.
pub(crate) fn serve() -> anyhow::Result<()> {
    let secret = std::env::var(SECRET_ENV).context("the bench secret is missing")?;
    System::new().block_on(async move {
        let rt = Runtime::new("bench-server");
        let node = bench_node("server", secret, &rt).await?;
        let spec = ChildSpec::new("sink", Sink::default).mailbox(65_536);
        let sink = spec.actor_ref();
        SupervisorSpec::new("bench")
            .child(spec)
            .start(&rt)
            .await
            .map_err(|e| anyhow!("{e}"))?;
        node.expose("sink", sink)
            .accept::<Blob>()
            .accept::<Count>()
            .accept::<Ping>();
        let raw = TcpListener::bind(loopback()).await?;
        let raw_addr = raw.local_addr()?;
        actix::spawn(async move {
            while let Ok((stream, _)) = raw.accept().await {
                actix::spawn(raw_serve(stream));
            }
        });
        println!("READY {} {}", node.local_addr(), raw_addr);
        std::io::stdout().flush()?;
        // Stop when the parent closes our stdin (or dies).
        crate::child::until_stdin_closes().await?;
        Ok(())
    })
}

/// The raw server: counts data frames, answers a sync with the count and a ping with itself.
async fn raw_serve(mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut codec = FrameCodec::default();
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut out = BytesMut::new();
    let mut count: u64 = 0;
    loop {
        while let Ok(Some(frame)) = codec.decode(&mut buf) {
            match frame.first() {
                Some(&RAW_DATA) => count += 1,
                Some(&RAW_SYNC) => {
                    out.put_u32(9);
                    out.put_u8(RAW_SYNC);
                    out.put_u64(count);
                    count = 0;
                }
                Some(&RAW_PING) => {
                    out.put_u32(frame.len() as u32);
                    out.put_slice(&frame);
                }
                _ => return,
            }
        }
        if !out.is_empty() {
            if stream.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
        match stream.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

fn spawn_server(secret: &str) -> anyhow::Result<(ChildGuard, SocketAddr, SocketAddr)> {
    let exe = std::env::current_exe()?;
    let mut child = ChildGuard(
        Command::new(exe)
            .args(["bench", "remote-serve"])
            .env(SECRET_ENV, secret)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("could not start the serving process")?,
    );
    let line = child.ready_line(Duration::from_secs(20), "the serving process")?;
    let mut parts = line.split_whitespace().skip(1);
    let node: SocketAddr = parts.next().context("no node address")?.parse()?;
    let raw: SocketAddr = parts.next().context("no raw address")?.parse()?;
    Ok((child, node, raw))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn sorted(mut v: Vec<Duration>) -> Vec<Duration> {
    v.sort();
    v
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Runs `cadre bench remote`.
pub(crate) fn run(opts: Options) -> anyhow::Result<()> {
    if opts.rounds == 0 || opts.messages == 0 || opts.asks == 0 {
        bail!("--rounds, --messages and --asks must be at least 1");
    }
    let mut nonce = [0u8; 16];
    getrandom::fill(&mut nonce).map_err(|e| anyhow!("no randomness: {e}"))?;
    let secret: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
    let (mut child, node_addr, raw_addr) = spawn_server(&secret)?;
    let ran = System::new().block_on(async move {
        let rt = Runtime::new("bench-client");
        let node = bench_node("client", secret, &rt).await?;
        node.connect(node_addr, Duration::from_secs(10)).await?;
        let sink = node.actor("server", "sink");
        let mut raw = TcpStream::connect(raw_addr).await?;
        raw.set_nodelay(true)?;
        // The raw round trips have a connection of their own, moved into their task.
        let raw_rt = TcpStream::connect(raw_addr).await?;
        raw_rt.set_nodelay(true)?;
        let mut raw_rt = Some(raw_rt);
        let payload = vec![0x5Au8; opts.payload];
        // Static for the run: each message borrows it (a pointer copied, nothing counted), as
        // the raw side writes every frame from one slice.
        let shared: &'static [u8] = Box::leak(payload.clone().into_boxed_slice());

        println!(
            "cadre bench remote: {} messages of {} B per round, {} asks, {} rounds; two processes on 127.0.0.1",
            opts.messages, opts.payload, opts.asks, opts.rounds
        );
        match opts.only.as_deref() {
            Some("cadre") => {
                let v = cadre_round_trips(&sink, &payload, opts.asks).await?;
                println!("cadre p50 {:?}", percentile(&sorted(v), 0.5));
                return Ok(());
            }
            Some("raw") => {
                let v = raw_round_trips(&mut raw_rt, &payload, opts.asks).await?;
                println!("raw p50 {:?}", percentile(&sorted(v), 0.5));
                return Ok(());
            }
            Some("cadre-tell") => {
                let tps = cadre_throughput(&sink, shared, opts.messages).await?;
                println!("cadre tell {:.2} M msg/s", tps / 1e6);
                return Ok(());
            }
            Some("raw-tell") => {
                let tps = raw_throughput(&mut raw, &payload, opts.messages).await?;
                println!("raw tell {:.2} M frames/s", tps / 1e6);
                return Ok(());
            }
            Some(other) => bail!("--only takes cadre, raw, cadre-tell or raw-tell, not {other}"),
            None => {}
        }
        let (mut cadre_tps, mut raw_tps, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..opts.rounds {
            let c = cadre_throughput(&sink, shared, opts.messages).await?;
            let r = raw_throughput(&mut raw, &payload, opts.messages).await?;
            println!("  round {}: tell cadre {:.2} M msg/s, raw {:.2} M frames/s", round + 1, c / 1e6, r / 1e6);
            ratios.push(c / r);
            cadre_tps.push(c);
            raw_tps.push(r);
        }
        // Short alternating blocks, so that the machine's drift hits both sides alike.
        let (mut c_lat, mut r_lat) = (Vec::new(), Vec::new());
        let mut left = opts.asks;
        while left > 0 {
            let block = left.min(ASK_BLOCK);
            c_lat.extend(cadre_round_trips(&sink, &payload, block).await?);
            r_lat.extend(raw_round_trips(&mut raw_rt, &payload, block).await?);
            left -= block;
        }
        c_lat.sort();
        r_lat.sort();
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        let (c50, c99, r50, r99) = (
            percentile(&c_lat, 0.5),
            percentile(&c_lat, 0.99),
            percentile(&r_lat, 0.5),
            percentile(&r_lat, 0.99),
        );
        println!("\n== cadre remote vs raw TCP (same run; medians of {} rounds) ==", opts.rounds);
        println!(
            "tell throughput ({} B): cadre {:.2} M msg/s | raw {:.2} M frames/s | cadre/raw {:.2} (targets >= 1.5 M msg/s and >= 0.5)",
            opts.payload,
            median(cadre_tps) / 1e6,
            median(raw_tps) / 1e6,
            median(ratios)
        );
        println!(
            "ask round trip: cadre p50 {:.1} µs, p99 {:.1} µs | raw p50 {:.1} µs, p99 {:.1} µs | cadre/raw p50 {:.2}x, p99 {:.2}x (target <= 1.2x)",
            us(c50), us(c99), us(r50), us(r99),
            us(c50) / us(r50), us(c99) / us(r99)
        );
        node.shutdown(Duration::from_secs(5)).await.ok();
        Ok(())
    });
    child.close_and_wait(Duration::from_secs(10));
    ran
}

async fn cadre_throughput(
    sink: &cadre_actors::RemoteRef,
    payload: &'static [u8],
    n: u64,
) -> anyhow::Result<f64> {
    let before = sink.ask(Count, Duration::from_secs(30)).await?;
    let t0 = Instant::now();
    for _ in 0..n {
        sink.tell_wait(Blob(Cow::Borrowed(payload)))
            .await
            .map_err(|e| anyhow!("tell failed: {e}"))?;
    }
    // Asks follow tells on the same connection and mailbox: its answer means all arrived.
    let after = sink.ask(Count, Duration::from_secs(120)).await?;
    let elapsed = t0.elapsed();
    if after - before != n {
        bail!("the sink counted {} messages, not {n}", after - before);
    }
    Ok(n as f64 / elapsed.as_secs_f64())
}

async fn raw_throughput(raw: &mut TcpStream, payload: &[u8], n: u64) -> anyhow::Result<f64> {
    let t0 = Instant::now();
    let mut buf = BytesMut::with_capacity(256 * 1024);
    let mut sent = 0;
    while sent < n {
        while sent < n && buf.len() < 256 * 1024 {
            buf.put_u32(1 + payload.len() as u32);
            buf.put_u8(RAW_DATA);
            buf.put_slice(payload);
            sent += 1;
        }
        raw.write_all(&buf).await?;
        buf.clear();
    }
    raw.write_all(&[0, 0, 0, 1, RAW_SYNC]).await?;
    let mut reply = [0u8; 13];
    raw.read_exact(&mut reply).await?;
    let mut r = &reply[5..];
    let counted = r.get_u64();
    let elapsed = t0.elapsed();
    if counted != n {
        bail!("the raw server counted {counted} frames, not {n}");
    }
    Ok(n as f64 / elapsed.as_secs_f64())
}

/// `n` round trips to the sink, timed one by one, from a task of their own: where an actor or
/// a task of the application asks from (the reply wakes it in the same scheduler pass), not
/// from the runtime's main future (which the runtime polls again only after checking for I/O).
async fn cadre_round_trips(
    sink: &cadre_actors::RemoteRef,
    payload: &[u8],
    n: usize,
) -> anyhow::Result<Vec<Duration>> {
    let (sink, payload) = (sink.clone(), payload.to_vec());
    actix::spawn(async move {
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            // The message is built before the clock starts, as the raw side's frame is.
            let ping = Ping(payload.clone());
            let t0 = Instant::now();
            sink.ask(ping, Duration::from_secs(10)).await?;
            v.push(t0.elapsed());
        }
        Ok(v)
    })
    .await?
}

/// `n` raw round trips, timed one by one, from a task of their own (as the cadre side).
async fn raw_round_trips(
    raw: &mut Option<TcpStream>,
    payload: &[u8],
    n: usize,
) -> anyhow::Result<Vec<Duration>> {
    let mut stream = raw.take().context("the raw connection was lost")?;
    let mut frame = BytesMut::new();
    frame.put_u32(1 + payload.len() as u32);
    frame.put_u8(RAW_PING);
    frame.put_slice(payload);
    let (v, stream) = actix::spawn(async move {
        let mut v = Vec::with_capacity(n);
        let mut back = vec![0u8; frame.len()];
        for _ in 0..n {
            let t0 = Instant::now();
            stream.write_all(&frame).await?;
            stream.read_exact(&mut back).await?;
            v.push(t0.elapsed());
        }
        anyhow::Ok((v, stream))
    })
    .await??;
    *raw = Some(stream);
    Ok(v)
}
