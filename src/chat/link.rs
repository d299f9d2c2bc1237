//! `chat serve --redis URL`: one chat spread over several servers, with
//! Redis (an existing engine, not a link protocol of our own) between
//! them.
//!
//! Each room is a Redis stream, `sockit:room:{key}` (the room's name as
//! names are compared). A server writes each batch of lines its members
//! say there once (`XADD … MAXLEN ~ history`), with its own id beside
//! it, and reads once each room it has members in (`XREAD BLOCK`, every
//! such room in one call), skipping its own entries; what it reads goes
//! into the local room like a local sender's relay, so the room's own
//! fan-out (one shared log, see `super::room`) carries it to every member.
//! The cost in Redis therefore grows with servers and lines, never with
//! members.
//!
//! When Redis goes away each server goes on serving its own members (the
//! local relay does not wait for Redis), tells them once `* link to other
//! servers lost`, retries with a backoff, and on reconnecting says `* link
//! restored`, sends what its members said meanwhile (kept in order, up to
//! [`QUEUE`] batches) and reads every room on from the last entry it had
//! seen: nothing twice and, as far as the stream still holds it, nothing
//! missed.
//!
//! Members and nicks: each server keeps its members in a hash of its own
//! (`sockit:srv:{id}`: nick -> room), says it is alive every [`HEARTBEAT`]
//! in a sorted set (`sockit:servers`), and says every join, move, rename
//! and leave in one presence stream (`sockit:events`, read in the same
//! `XREAD` as the rooms), from which the others keep their view
//! (`super::cluster`). A nick is claimed by a script that refuses it if
//! any live server's hash holds it, so Redis decides every collision;
//! a server not heard of for [`ALIVE`] is dead, and its nicks are free.
//! `sockit:epoch` is set once per Redis lifetime: finding it changed or
//! gone means Redis lost everything, which is said, and every server then
//! claims its nicks again (as it does after any reconnect, since its hash
//! may have expired meanwhile). `/msg` to another server's member is a
//! presence event for the server that holds the nick.
//!
//! Two tasks, each with its own connection: a blocking `XREAD` would hold
//! up every other command on a shared one. The writer also beats the
//! heartbeat; the reader rebuilds the view when told to.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::cluster::Event;
use super::hub::Hub;
use super::protocol::{Notice, nick_key};
use crate::error::{Error, Result};

/// Batches of lines waiting for Redis while it is away; beyond this the
/// oldest are the ones kept and newer ones are only delivered locally
/// (logged), so memory stays bounded however long the outage.
pub const QUEUE: usize = 8192;

/// How long one `XREAD` blocks: also how soon a room made on this
/// server starts being read.
const BLOCK: Duration = Duration::from_millis(200);

/// Entries read from one room in one call.
const READ_COUNT: usize = 1024;

/// Backoff between reconnection attempts.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// A command (other than the blocking read) that takes longer than this
/// means Redis is gone.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// The same for the blocking read: a Redis that hangs (stopped, not
/// dead) is noticed by the reader too.
const READ_TIMEOUT: Duration = BLOCK.saturating_add(RESPONSE_TIMEOUT);

/// The key of a room's stream.
fn stream_key(room_key: &str) -> String {
    format!("sockit:room:{room_key}")
}

/// What the hub hands the link, in order.
pub enum Op {
    /// Lines said in the room with this key.
    Lines {
        room: String,
        lines: Vec<u8>,
    },
    /// Member `id` took `nick` in `room` (a name): claimed in Redis,
    /// which may say another server holds it (then the hub takes it
    /// back, see [`Hub::revoke`]). `old`: the nick it had (a rename);
    /// `quiet`: a nick claimed again after a reconnect.
    Claim {
        id: u64,
        nick: Arc<str>,
        room: Arc<str>,
        old: Option<Arc<str>>,
        quiet: bool,
    },
    Moved {
        nick: Arc<str>,
        to: Arc<str>,
    },
    Left {
        nick: Arc<str>,
        cut: bool,
    },
    /// Drops a nick from this server's members without telling anyone:
    /// one that was claimed, then lost to another server.
    Forget {
        nick: Arc<str>,
    },
    /// `/msg` to a member of another server.
    Private {
        to: Arc<str>,
        line: Vec<u8>,
    },
    /// The hub wants another block of guest numbers.
    Guests,
}

/// The sending half: what the connections use.
pub struct Link {
    queue: mpsc::Sender<Op>,
    /// The queue was found full and that was logged: once per outage,
    /// not once per line.
    full: AtomicBool,
}

/// Connected to Redis, not yet serving a hub.
pub struct Connected {
    client: Client,
    writer: MultiplexedConnection,
    reader: MultiplexedConnection,
    history: usize,
    origin: String,
    epoch: String,
    guests: (u64, u64),
}

impl Connected {
    /// Connects to Redis at `url`: a server that cannot reach it does not
    /// start (a chat that silently splits in two is worse than one that
    /// says why it did not come up). `history` caps each room's stream.
    /// The server is one of the link's from here on (its first heartbeat is sent here).
    pub async fn connect(url: &str, history: usize) -> Result<Connected> {
        let client = Client::open(url).map_err(|e| Error::Input {
            what: format!("invalid redis URL '{url}'"),
            why: e.to_string(),
        })?;
        let addr = client.get_connection_info().addr().to_string();
        let unreachable = |e: redis::RedisError| Error::Input {
            what: format!("cannot reach redis at {addr}"),
            why: redis_cause(&e),
        };
        let mut writer = connect(&client, RESPONSE_TIMEOUT)
            .await
            .map_err(unreachable)?;
        let reader = connect(&client, READ_TIMEOUT).await.map_err(unreachable)?;
        let origin = format!("{:016x}", rand::random::<u64>());
        let (epoch, _) = heartbeat(&mut writer, &origin).await.map_err(unreachable)?;
        let guests = guest_block(&mut writer).await.map_err(unreachable)?;
        Ok(Connected {
            client,
            writer,
            reader,
            history,
            origin,
            epoch,
            guests,
        })
    }

    /// The first block of guest numbers this server hands out.
    pub fn guests(&self) -> (u64, u64) {
        self.guests
    }

    /// Starts the writer and the reader, which deliver into `hub`'s rooms
    /// until `shutdown`.
    pub fn start(self, hub: Arc<Hub>, shutdown: CancellationToken) -> Link {
        let Connected {
            client,
            writer,
            reader,
            history,
            origin,
            epoch,
            guests: _,
        } = self;
        let (queue, rx) = mpsc::channel(QUEUE);
        let shared = Arc::new(State {
            client,
            origin,
            hub,
            lost: AtomicBool::new(false),
            resync: AtomicBool::new(true),
            history: history.max(1),
            epoch: Mutex::new(epoch),
        });
        tokio::spawn(write_loop(
            shared.clone(),
            writer,
            rx,
            history.max(1),
            shutdown.clone(),
        ));
        tokio::spawn(read_loop(shared, reader, shutdown));
        Link {
            queue,
            full: AtomicBool::new(false),
        }
    }
}

impl Link {
    /// Hands lines said in the room `room_key` to the other servers.
    /// Never waits: see [`QUEUE`].
    pub fn publish(&self, room_key: &str, lines: &[u8]) {
        self.send(Op::Lines {
            room: room_key.to_string(),
            lines: lines.to_vec(),
        });
    }

    /// Hands anything else to the other servers, in order with the lines.
    pub fn send(&self, op: Op) {
        match self.queue.try_send(op) {
            Ok(()) => {
                if self.full.load(Ordering::Relaxed) {
                    self.full.store(false, Ordering::Relaxed);
                }
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                if !self.full.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "redis queue full ({QUEUE} batches): new lines stay on this server"
                    );
                }
            }
            // The writer stopped: the server is shutting down.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

/// What both tasks share.
struct State {
    client: Client,
    /// This server's id in the streams, so it skips its own entries.
    origin: String,
    hub: Arc<Hub>,
    /// The members were told the link is lost (and not yet that it is
    /// back): each is said once, whichever task notices first.
    lost: AtomicBool,
    /// The reader should read the other servers' members afresh (at
    /// start, after a reconnect, after Redis lost its state).
    resync: AtomicBool,
    /// Lines of history per room (`--history`).
    history: usize,
    /// The value of [`EPOCH`] this server knows: another one means Redis
    /// lost everything (restarted without persistence, `FLUSHALL`).
    epoch: Mutex<String>,
}

impl State {
    fn set_lost(&self, lost: bool) {
        if self.lost.swap(lost, Ordering::AcqRel) != lost {
            let notice = if lost {
                tracing::warn!("link to redis lost; retrying");
                Notice::LinkLost
            } else {
                tracing::info!("link to redis restored");
                Notice::LinkRestored
            };
            self.hub.broadcast_all(&notice.to_bytes());
        }
    }

    /// Connects again, with a growing pause, until it works or shutdown.
    async fn reconnect(
        &self,
        timeout: Duration,
        shutdown: &CancellationToken,
    ) -> Option<MultiplexedConnection> {
        let mut pause = BACKOFF_MIN;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = shutdown.cancelled() => return None,
            }
            match connect(&self.client, timeout).await {
                Ok(connection) => return Some(connection),
                Err(e) => tracing::debug!("redis: {e}"),
            }
            pause = (pause * 2).min(BACKOFF_MAX);
        }
    }
}

async fn connect(
    client: &Client,
    response_timeout: Duration,
) -> redis::RedisResult<MultiplexedConnection> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(RESPONSE_TIMEOUT))
        .set_response_timeout(Some(response_timeout));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

/// Whether `e` means the connection is gone (rather than a refused
/// command): worth reconnecting for.
fn is_link_failure(e: &redis::RedisError) -> bool {
    e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal()
}

/// A Redis error as the short phrase after a `(`.
fn redis_cause(e: &redis::RedisError) -> String {
    let text = e.to_string().to_lowercase();
    if text.contains("connection refused") {
        "connection refused".into()
    } else if text.contains("no such file") {
        "no such socket".into()
    } else if text.contains("timed out") || text.contains("timeout") {
        "timed out".into()
    } else {
        text
    }
}

// The keys besides the rooms' streams. Scripts reach other servers' hashes
// by name, which a single Redis (or a replicated one) allows and Redis
// Cluster would not: a chat's link does not need sharding.

/// Sorted set: server id -> when it was last heard of (Redis's clock, ms).
const SERVERS: &str = "sockit:servers";
/// Stream of presence events (joins, moves, renames, leaves, `/msg`).
const EVENTS: &str = "sockit:events";
/// A random value set when the link's state is made: another one (or
/// none) means Redis lost it.
const EPOCH: &str = "sockit:epoch";
/// Counter the servers take blocks of guest numbers from.
const GUESTS: &str = "sockit:guests";

/// A server's members: case-folded nick -> `ROOM NICK`.
fn members_key(origin: &str) -> String {
    format!("sockit:srv:{origin}")
}

/// How often a server says it is alive.
const HEARTBEAT: Duration = Duration::from_secs(5);

/// A server not heard of for this long is gone, and so are its members'
/// nicks (a `kill -9`'d server's are free again within this plus one
/// heartbeat: 25 s).
const ALIVE: Duration = Duration::from_secs(20);

/// Presence events kept (they are read as they come; this only bounds
/// the stream).
const EVENTS_KEPT: usize = 10_000;

/// Guest numbers taken at once.
pub const GUEST_BLOCK: u64 = 1000;

/// Redis's clock in ms, in a script.
const NOW: &str = "local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
";

/// KEYS: servers, own members, epoch. ARGV: id, alive ms, epoch to set
/// if there is none. Says this server is alive, forgets dead ones;
/// returns the epoch and the live servers.
const HEARTBEAT_SCRIPT: &str = "
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
redis.call('SET', KEYS[3], ARGV[3], 'NX')
return {redis.call('GET', KEYS[3]), redis.call('ZRANGE', KEYS[1], 0, -1)}
";

/// KEYS: servers, own members, events. ARGV: id, alive ms, nick key,
/// room, nick, old nick's key or '', old nick or '', kind (j, s, n),
/// events kept. Takes the nick unless a live server holds it (returns
/// that server's id; 0 when taken), and says so in the events.
const CLAIM_SCRIPT: &str = "
for _, o in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], now - tonumber(ARGV[2]), '+inf')) do
  if o ~= ARGV[1] and redis.call('HEXISTS', 'sockit:srv:' .. o, ARGV[3]) == 1 then
    return o
  end
end
if ARGV[6] ~= '' and ARGV[6] ~= ARGV[3] then
  redis.call('HDEL', KEYS[2], ARGV[6])
end
redis.call('HSET', KEYS[2], ARGV[3], ARGV[4] .. ' ' .. ARGV[5])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
if ARGV[8] == 'n' then
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[9], '*', 'o', ARGV[1], 'k', 'n', 'p', ARGV[7], 'n', ARGV[5])
else
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[9], '*', 'o', ARGV[1], 'k', ARGV[8], 'n', ARGV[5], 'r', ARGV[4])
end
return 0
";

/// KEYS: servers, events. ARGV: id, alive ms. Every other live server's
/// members, and where the events stand, read at once: `[last event id,
/// server, [nick key, ROOM NICK, ...], server, ...]`.
const SNAPSHOT_SCRIPT: &str = "
local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
local out = {'0-0'}
if #last > 0 then out[1] = last[1][1] end
for _, o in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], now - tonumber(ARGV[2]), '+inf')) do
  if o ~= ARGV[1] then
    table.insert(out, o)
    table.insert(out, redis.call('HGETALL', 'sockit:srv:' .. o))
  end
end
return out
";

/// A script call, Redis's clock first.
fn script(body: &str, keys: &[&str]) -> redis::Cmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(format!("{NOW}{body}")).arg(keys.len()).arg(keys);
    cmd
}

fn alive_ms() -> u64 {
    ALIVE.as_millis() as u64
}

/// Says this server is alive: returns the link's epoch (set to a new one
/// if there is none) and the live servers.
async fn heartbeat(
    connection: &mut MultiplexedConnection,
    origin: &str,
) -> redis::RedisResult<(String, Vec<String>)> {
    let candidate = format!("{:016x}", rand::random::<u64>());
    script(HEARTBEAT_SCRIPT, &[SERVERS, &members_key(origin), EPOCH])
        .arg(origin)
        .arg(alive_ms())
        .arg(candidate)
        .query_async(connection)
        .await
}

/// A block of guest numbers no other server hands out.
async fn guest_block(connection: &mut MultiplexedConnection) -> redis::RedisResult<(u64, u64)> {
    let end: u64 = redis::cmd("INCRBY")
        .arg(GUESTS)
        .arg(GUEST_BLOCK)
        .query_async(connection)
        .await?;
    Ok((end.saturating_sub(GUEST_BLOCK - 1).max(1), end))
}

/// The heartbeat's findings: servers gone, and whether Redis lost its
/// state (said once; the caller claims every nick again).
async fn beat(state: &State, connection: &mut MultiplexedConnection) -> redis::RedisResult<bool> {
    let (epoch, live) = heartbeat(connection, &state.origin).await?;
    let reset = {
        let mut known = lock(&state.epoch);
        let reset = *known != epoch;
        *known = epoch;
        reset
    };
    if reset {
        tracing::warn!("redis lost the link's state: claiming nicks again");
        state.hub.broadcast_all(&Notice::LinkReset.to_bytes());
        state.resync.store(true, Ordering::Release);
    }
    state.hub.keep_servers(&live);
    Ok(reset)
}

/// Says again who this server's members are (after a reconnect or a
/// reset: its members' hash may have expired, been wiped, or be missing
/// what changed meanwhile): the hash is made afresh from the nick table
/// and the other servers are told to forget what they knew and take
/// this instead. Changes of presence still waiting in `batch` and
/// `queue` are older than the table, so they are dropped (lines and
/// `/msg` are kept). A nick another server took meanwhile is lost here
/// (see [`Hub::revoke`]).
async fn reclaim(
    state: &State,
    connection: &mut MultiplexedConnection,
    batch: &mut Vec<Op>,
    queue: &mut mpsc::Receiver<Op>,
) -> redis::RedisResult<()> {
    let current = |op: &Op| matches!(op, Op::Lines { .. } | Op::Private { .. } | Op::Guests);
    batch.retain(current);
    while let Ok(op) = queue.try_recv() {
        if current(&op) {
            batch.push(op);
        }
    }
    let mut pipe = redis::pipe();
    pipe.del(members_key(&state.origin)).ignore();
    event(&mut pipe, &state.origin, &Event::Reset);
    pipe.query_async::<()>(connection).await?;
    let ops: Vec<Op> = state
        .hub
        .holders()
        .into_iter()
        .map(|(id, nick, room)| Op::Claim {
            id,
            nick,
            room,
            old: None,
            quiet: true,
        })
        .collect();
    for chunk in ops.chunks(256) {
        send(state, connection, chunk, 1).await?;
    }
    Ok(())
}

/// Sends `ops` in one pipeline and acts on the answers that need it.
async fn send(
    state: &State,
    connection: &mut MultiplexedConnection,
    ops: &[Op],
    history: usize,
) -> redis::RedisResult<()> {
    let origin = state.origin.as_str();
    let own = members_key(origin);
    let mut pipe = redis::pipe();
    // The ops whose answers matter, in the order of the answers.
    let mut asked: Vec<&Op> = Vec::new();
    for op in ops {
        match op {
            Op::Lines { room, lines } => {
                pipe.cmd("XADD")
                    .arg(stream_key(room))
                    .arg("MAXLEN")
                    .arg("~")
                    .arg(history)
                    .arg("*")
                    .arg("o")
                    .arg(origin)
                    .arg("b")
                    .arg(lines)
                    .ignore();
            }
            Op::Claim {
                nick,
                room,
                old,
                quiet,
                ..
            } => {
                let kind = match (old, quiet) {
                    (Some(_), _) => "n",
                    (None, true) => "s",
                    (None, false) => "j",
                };
                let old_nick = old.as_deref().unwrap_or("");
                let old_key = old.as_deref().map(nick_key).unwrap_or_default();
                pipe.add_command(
                    script(CLAIM_SCRIPT, &[SERVERS, &own, EVENTS])
                        .arg(origin)
                        .arg(alive_ms())
                        .arg(nick_key(nick))
                        .arg(&**room)
                        .arg(&**nick)
                        .arg(old_key)
                        .arg(old_nick)
                        .arg(kind)
                        .arg(EVENTS_KEPT)
                        .clone(),
                );
                asked.push(op);
            }
            Op::Moved { nick, to } => {
                pipe.hset(&own, nick_key(nick), format!("{to} {nick}"))
                    .ignore();
                event(
                    &mut pipe,
                    origin,
                    &Event::Moved {
                        nick: nick.to_string(),
                        to: to.to_string(),
                    },
                );
            }
            Op::Left { nick, cut } => {
                pipe.hdel(&own, nick_key(nick)).ignore();
                event(
                    &mut pipe,
                    origin,
                    &Event::Left {
                        nick: nick.to_string(),
                        cut: *cut,
                    },
                );
            }
            Op::Forget { nick } => {
                pipe.hdel(&own, nick_key(nick)).ignore();
            }
            Op::Private { to, line } => event(
                &mut pipe,
                origin,
                &Event::Private {
                    to: to.to_string(),
                    line: line.clone(),
                },
            ),
            Op::Guests => {
                pipe.cmd("INCRBY").arg(GUESTS).arg(GUEST_BLOCK);
                asked.push(op);
            }
        }
    }
    let answers: Vec<Value> = pipe.query_async(connection).await?;
    for (op, answer) in asked.into_iter().zip(answers) {
        match (op, answer) {
            (Op::Claim { id, nick, old, .. }, answer) => {
                if let Some(holder) = text(&answer) {
                    tracing::info!("nick {nick} is held by server {holder}: taken back");
                    state.hub.revoke(*id, nick, old.clone());
                }
            }
            (Op::Guests, Value::Int(end)) => {
                let end = end.max(0) as u64;
                state
                    .hub
                    .add_guests(end.saturating_sub(GUEST_BLOCK - 1).max(1), end);
            }
            _ => {}
        }
    }
    Ok(())
}

/// Adds a presence event to a pipeline.
fn event(pipe: &mut redis::Pipeline, origin: &str, event: &Event) {
    let cmd = pipe
        .cmd("XADD")
        .arg(EVENTS)
        .arg("MAXLEN")
        .arg("~")
        .arg(EVENTS_KEPT)
        .arg("*")
        .arg("o")
        .arg(origin);
    for (name, value) in event.fields() {
        cmd.arg(name).arg(value);
    }
    cmd.ignore();
}

/// Leaves the link on shutdown: the other servers forget this one's
/// members at once instead of after [`ALIVE`].
async fn goodbye(state: &State, connection: &mut MultiplexedConnection) {
    let mut pipe = redis::pipe();
    pipe.zrem(SERVERS, &state.origin)
        .ignore()
        .del(members_key(&state.origin))
        .ignore();
    event(&mut pipe, &state.origin, &Event::Gone);
    let _ = tokio::time::timeout(
        Duration::from_millis(500),
        pipe.query_async::<()>(connection),
    )
    .await;
}

/// Sends queued ops in order, a pipeline at a time (a batch that fails
/// is sent again after reconnecting), and beats the heartbeat.
async fn write_loop(
    state: Arc<State>,
    mut connection: MultiplexedConnection,
    mut rx: mpsc::Receiver<Op>,
    history: usize,
    shutdown: CancellationToken,
) {
    let mut batch: Vec<Op> = Vec::new();
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    heartbeat.reset();
    loop {
        let result = if batch.is_empty() {
            tokio::select! {
                next = rx.recv() => match next {
                    Some(op) => {
                        batch.push(op);
                        while batch.len() < 256
                            && let Ok(op) = rx.try_recv()
                        {
                            batch.push(op);
                        }
                        continue;
                    }
                    None => return,
                },
                _ = heartbeat.tick() => beat(&state, &mut connection).await,
                _ = shutdown.cancelled() => {
                    goodbye(&state, &mut connection).await;
                    return;
                }
            }
        } else {
            match send(&state, &mut connection, &batch, history).await {
                Ok(()) => {
                    batch.clear();
                    Ok(false)
                }
                Err(e) if !is_link_failure(&e) => {
                    // Redis is there but refused (out of memory, a key of
                    // another type): sending it again would fail again
                    // and hold up everything after it.
                    tracing::warn!("redis refused a batch of {} changes: {e}", batch.len());
                    batch.clear();
                    Ok(false)
                }
                Err(e) => Err(e),
            }
        };
        let result = match result {
            Ok(true) => reclaim(&state, &mut connection, &mut batch, &mut rx).await,
            Ok(false) => Ok(()),
            Err(e) => Err(e),
        };
        let Err(e) = result else { continue };
        if !is_link_failure(&e) {
            tracing::warn!("redis: {e}");
            continue;
        }
        tracing::debug!("redis write: {e}");
        state.set_lost(true);
        loop {
            match state.reconnect(RESPONSE_TIMEOUT, &shutdown).await {
                Some(c) => connection = c,
                None => return,
            }
            // Its members may have expired meanwhile: they are claimed
            // again before anything else is sent.
            let reclaimed = match beat(&state, &mut connection).await {
                Ok(_) => reclaim(&state, &mut connection, &mut batch, &mut rx).await,
                Err(e) => Err(e),
            };
            match reclaimed {
                Ok(()) => break,
                Err(e) => tracing::debug!("redis after reconnecting: {e}"),
            }
        }
        state.resync.store(true, Ordering::Release);
    }
}

/// Reads the presence events and every room this server has members in,
/// from where it left off, and hands them to the hub.
async fn read_loop(
    state: Arc<State>,
    mut connection: MultiplexedConnection,
    shutdown: CancellationToken,
) {
    // The last entry seen, per stream key.
    let mut last: HashMap<String, String> = HashMap::new();
    loop {
        let result = if state.resync.swap(false, Ordering::AcqRel) {
            snapshot(&state, &mut connection, &mut last)
                .await
                .map(|()| true)
        } else {
            let rooms: Vec<(String, u64)> = state
                .hub
                .all_rooms()
                .iter()
                .map(|room| (stream_key(room.key()), room.made()))
                .collect();
            last.retain(|key, _| key == EVENTS || rooms.iter().any(|(k, _)| k == key));
            read_once(&state, &mut connection, &rooms, &mut last, &shutdown).await
        };
        match result {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                tracing::debug!("redis read: {e}");
                state.set_lost(true);
                state.resync.store(true, Ordering::Release);
                match state.reconnect(READ_TIMEOUT, &shutdown).await {
                    Some(c) => connection = c,
                    None => return,
                }
            }
        }
    }
}

/// Reads the other servers' members afresh, and where the presence
/// events stand, at once.
async fn snapshot(
    state: &State,
    connection: &mut MultiplexedConnection,
    last: &mut HashMap<String, String>,
) -> redis::RedisResult<()> {
    let reply: Value = script(SNAPSHOT_SCRIPT, &[SERVERS, EVENTS])
        .arg(&state.origin)
        .arg(alive_ms())
        .query_async(connection)
        .await?;
    let Value::Array(items) = reply else {
        return Ok(());
    };
    let mut items = items.iter();
    if let Some(id) = items.next().and_then(text) {
        last.insert(EVENTS.to_string(), id);
    }
    let mut servers = Vec::new();
    while let (Some(origin), Some(Value::Array(fields))) = (items.next(), items.next()) {
        let Some(origin) = text(origin) else { continue };
        let members = fields
            .chunks(2)
            .filter_map(|pair| {
                let value = text(pair.get(1)?)?;
                let (room, nick) = value.split_once(' ')?;
                Some((nick.to_string(), room.to_string()))
            })
            .collect();
        servers.push((origin, members));
    }
    state.hub.replace_remote(servers);
    Ok(())
}

/// One `XREAD` over the events and `rooms` (stream keys, when made
/// here); `Ok(false)` on shutdown.
async fn read_once(
    state: &State,
    connection: &mut MultiplexedConnection,
    rooms: &[(String, u64)],
    last: &mut HashMap<String, String>,
    shutdown: &CancellationToken,
) -> redis::RedisResult<bool> {
    for (key, made) in rooms {
        if !last.contains_key(key) {
            let newest = first_read(state, connection, key, *made).await?;
            last.insert(key.clone(), newest);
        }
    }
    let events = last.get(EVENTS).cloned().unwrap_or_else(|| "$".into());
    let mut cmd = redis::cmd("XREAD");
    cmd.arg("COUNT")
        .arg(READ_COUNT)
        .arg("BLOCK")
        .arg(BLOCK.as_millis() as u64)
        .arg("STREAMS")
        .arg(EVENTS);
    for (key, _) in rooms {
        cmd.arg(key);
    }
    cmd.arg(events);
    for (key, _) in rooms {
        cmd.arg(&last[key]);
    }
    let reply: Value = tokio::select! {
        reply = cmd.query_async(connection) => reply?,
        _ = shutdown.cancelled() => return Ok(false),
    };
    // The connection answered: it is up, whatever the streams hold.
    state.set_lost(false);
    for (stream, items) in streams(&reply) {
        if stream == EVENTS {
            for (id, origin, fields) in items {
                if origin != state.origin {
                    match Event::parse(|name| field(&fields, name)) {
                        Some(event) => state.hub.remote(&origin, event),
                        None => tracing::warn!("skipping presence event {id}: not one of ours"),
                    }
                }
                last.insert(stream.clone(), id);
            }
            continue;
        }
        let Some(key) = stream.strip_prefix("sockit:room:") else {
            continue;
        };
        let room = state
            .hub
            .all_rooms()
            .into_iter()
            .find(|room| room.key() == key);
        for (id, origin, fields) in items {
            if let Some(room) = &room
                && origin != state.origin
            {
                let lines = field(&fields, "b").unwrap_or_default();
                if whole_lines(&lines) {
                    room.relay(0, &lines);
                } else {
                    tracing::warn!("skipping stream entry {id} in {key}: not whole lines");
                }
            }
            last.insert(stream.clone(), id);
        }
    }
    Ok(true)
}

/// A room's stream read for the first time (its first member here came
/// at `made`, ms): what was said there before is its history (for
/// `/history` and `--replay`), what was said since is news, delivered
/// like any other read, so nothing is lost to the wait for this loop to
/// see the room. Returns the id to read on from. (Redis's clock and
/// this server's are compared here: skew between them moves lines
/// between history and news, it never loses or doubles one.)
async fn first_read(
    state: &State,
    connection: &mut MultiplexedConnection,
    key: &str,
    made: u64,
) -> redis::RedisResult<String> {
    let Some(room) = state
        .hub
        .all_rooms()
        .into_iter()
        .find(|r| stream_key(r.key()) == key)
    else {
        return Ok("0-0".into());
    };
    let reply: Value = redis::cmd("XREVRANGE")
        .arg(key)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(state.history.min(READ_COUNT))
        .query_async(connection)
        .await?;
    let mut items = entries(&reply);
    let Some(newest) = items.first().map(|(id, _, _)| id.clone()) else {
        return Ok("0-0".into());
    };
    items.reverse();
    let mut earlier = Vec::new();
    for (id, origin, fields) in items {
        let time = id
            .split_once('-')
            .and_then(|(ms, _)| ms.parse::<u64>().ok())
            .unwrap_or(0);
        let lines = field(&fields, "b").unwrap_or_default();
        if !whole_lines(&lines) {
            continue;
        }
        if time < made {
            earlier.push((time, lines));
        } else if origin != state.origin {
            room.relay(0, &lines);
        }
    }
    room.remember_earlier(&earlier);
    Ok(newest)
}

/// Longest entry relayed: a server writes one read's batch (at most a
/// read chunk plus labels), so anything much larger was not written by one.
const MAX_ENTRY: usize = 1 << 20;

/// Whether an entry is what a server writes: whole lines, bounded. Anyone
/// with access to Redis can add entries; one without its newline would
/// run into the next line in every member's output.
fn whole_lines(lines: &[u8]) -> bool {
    !lines.is_empty() && lines.len() <= MAX_ENTRY && lines.ends_with(b"\n")
}

/// One stream entry: its id, the server that wrote it, its fields.
type Entry = (String, String, Vec<(String, Vec<u8>)>);

/// The value of the field `name` of an entry.
fn field(fields: &[(String, Vec<u8>)], name: &str) -> Option<Vec<u8>> {
    fields
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, value)| value.clone())
}

/// The entries of an `XRANGE`/`XREVRANGE` reply.
fn entries(value: &Value) -> Vec<Entry> {
    let Value::Array(items) = value else {
        return Vec::new();
    };
    items.iter().filter_map(entry).collect()
}

fn entry(value: &Value) -> Option<Entry> {
    let Value::Array(parts) = value else {
        return None;
    };
    let [id, Value::Array(values)] = parts.as_slice() else {
        return None;
    };
    let id = text(id)?;
    let mut origin = String::new();
    let mut fields = Vec::new();
    for pair in values.chunks(2) {
        if let [name, value] = pair
            && let (Some(name), Some(value)) = (text(name), bytes(value))
        {
            if name == "o" {
                origin = String::from_utf8(value).unwrap_or_default();
            } else {
                fields.push((name, value));
            }
        }
    }
    Some((id, origin, fields))
}

/// The streams of an `XREAD` reply (RESP2: an array of [name, entries];
/// RESP3: a map).
fn streams(value: &Value) -> Vec<(String, Vec<Entry>)> {
    match value {
        Value::Array(items) => items
            .iter()
            .filter_map(|item| match item {
                Value::Array(pair) => match pair.as_slice() {
                    [name, items] => Some((text(name)?, entries(items))),
                    _ => None,
                },
                _ => None,
            })
            .collect(),
        Value::Map(pairs) => pairs
            .iter()
            .filter_map(|(name, items)| Some((text(name)?, entries(items))))
            .collect(),
        _ => Vec::new(),
    }
}

fn bytes(value: &Value) -> Option<Vec<u8>> {
    match value {
        Value::BulkString(b) => Some(b.clone()),
        Value::SimpleString(s) => Some(s.clone().into_bytes()),
        _ => None,
    }
}

fn text(value: &Value) -> Option<String> {
    bytes(value).and_then(|b| String::from_utf8(b).ok())
}

// A panic while holding the epoch's lock leaves a string behind.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
