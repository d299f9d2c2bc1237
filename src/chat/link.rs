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
//! Two tasks, each with its own connection: a blocking `XREAD` would hold
//! up every other command on a shared one.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::hub::Hub;
use super::protocol::Notice;
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

/// The sending half: what the connections use.
pub struct Link {
    queue: mpsc::Sender<(String, Vec<u8>)>,
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
}

impl Connected {
    /// Connects to Redis at `url`: a server that cannot reach it does not
    /// start (a chat that silently splits in two is worse than one that
    /// says why it did not come up). `history` caps each room's stream.
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
        let writer = connect(&client, RESPONSE_TIMEOUT)
            .await
            .map_err(unreachable)?;
        let reader = connect(&client, READ_TIMEOUT).await.map_err(unreachable)?;
        Ok(Connected {
            client,
            writer,
            reader,
            history,
        })
    }

    /// Starts the writer and the reader, which deliver into `hub`'s rooms
    /// until `shutdown`.
    pub fn start(self, hub: Arc<Hub>, shutdown: CancellationToken) -> Link {
        let Connected {
            client,
            writer,
            reader,
            history,
        } = self;
        let origin = format!("{:016x}", rand::random::<u64>());
        let (queue, rx) = mpsc::channel(QUEUE);
        let shared = Arc::new(State {
            client,
            origin,
            hub,
            lost: AtomicBool::new(false),
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
        match self.queue.try_send((room_key.to_string(), lines.to_vec())) {
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
            let bytes = notice.to_bytes();
            for room in self.hub.all_rooms() {
                room.broadcast(&bytes);
            }
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

/// Sends queued lines in order, a pipeline of `XADD`s at a time; a batch
/// that fails is sent again after reconnecting.
async fn write_loop(
    state: Arc<State>,
    mut connection: MultiplexedConnection,
    mut rx: mpsc::Receiver<(String, Vec<u8>)>,
    history: usize,
    shutdown: CancellationToken,
) {
    let mut batch: Vec<(String, Vec<u8>)> = Vec::new();
    loop {
        if batch.is_empty() {
            tokio::select! {
                next = rx.recv() => match next {
                    Some(item) => batch.push(item),
                    None => return,
                },
                _ = shutdown.cancelled() => return,
            }
            while batch.len() < 256
                && let Ok(item) = rx.try_recv()
            {
                batch.push(item);
            }
        }
        let mut pipe = redis::pipe();
        for (room, lines) in &batch {
            pipe.cmd("XADD")
                .arg(stream_key(room))
                .arg("MAXLEN")
                .arg("~")
                .arg(history)
                .arg("*")
                .arg("o")
                .arg(&state.origin)
                .arg("b")
                .arg(lines)
                .ignore();
        }
        match pipe.query_async::<()>(&mut connection).await {
            Ok(()) => batch.clear(),
            Err(e) if !is_link_failure(&e) => {
                // Redis is there but refused the lines (out of memory, a
                // key of another type): sending them again would fail
                // again and hold up everything after them.
                tracing::warn!("redis refused {} batches of lines: {e}", batch.len());
                batch.clear();
            }
            Err(e) => {
                tracing::debug!("redis write: {e}");
                state.set_lost(true);
                match state.reconnect(RESPONSE_TIMEOUT, &shutdown).await {
                    Some(c) => connection = c,
                    None => return,
                }
            }
        }
    }
}

/// Reads every room this server has members in, from where it left off,
/// and relays what other servers wrote into the local room.
async fn read_loop(
    state: Arc<State>,
    mut connection: MultiplexedConnection,
    shutdown: CancellationToken,
) {
    // The last entry seen, per room key.
    let mut last: HashMap<String, String> = HashMap::new();
    loop {
        let rooms: Vec<(String, u64)> = state
            .hub
            .all_rooms()
            .iter()
            .map(|room| (room.key().to_string(), room.made()))
            .collect();
        last.retain(|key, _| rooms.iter().any(|(k, _)| k == key));
        let result = read_once(&state, &mut connection, &rooms, &mut last, &shutdown).await;
        match result {
            Ok(true) => state.set_lost(false),
            Ok(false) => return,
            Err(e) => {
                tracing::debug!("redis read: {e}");
                state.set_lost(true);
                match state.reconnect(READ_TIMEOUT, &shutdown).await {
                    Some(c) => connection = c,
                    None => return,
                }
            }
        }
    }
}

/// One `XREAD` over `rooms`; `Ok(false)` on shutdown.
async fn read_once(
    state: &State,
    connection: &mut MultiplexedConnection,
    rooms: &[(String, u64)],
    last: &mut HashMap<String, String>,
    shutdown: &CancellationToken,
) -> redis::RedisResult<bool> {
    // A room read for the first time is read from the moment it was made
    // here (stream ids are Redis's clock in ms): what was said there
    // before is history, not news, and what was said since its first
    // member came is not lost to the wait for this loop to see it.
    for (key, made) in rooms {
        last.entry(key.clone())
            .or_insert_with(|| format!("{}-0", made.saturating_sub(1)));
    }
    let mut cmd = redis::cmd("XREAD");
    cmd.arg("COUNT")
        .arg(READ_COUNT)
        .arg("BLOCK")
        .arg(BLOCK.as_millis() as u64)
        .arg("STREAMS");
    for (key, _) in rooms {
        cmd.arg(stream_key(key));
    }
    for (key, _) in rooms {
        cmd.arg(&last[key]);
    }
    let reply: Value = tokio::select! {
        reply = cmd.query_async(connection) => reply?,
        _ = shutdown.cancelled() => return Ok(false),
    };
    // The connection answered: it is up, whatever the rooms hold.
    state.set_lost(false);
    for (stream, items) in streams(&reply) {
        let Some(key) = stream.strip_prefix("sockit:room:") else {
            continue;
        };
        let room = state
            .hub
            .all_rooms()
            .into_iter()
            .find(|room| room.key() == key);
        for (id, origin, lines) in items {
            if let Some(room) = &room
                && origin != state.origin
            {
                if whole_lines(&lines) {
                    room.relay(0, &lines);
                } else {
                    tracing::warn!("skipping stream entry {id} in {key}: not whole lines");
                }
            }
            last.insert(key.to_string(), id);
        }
    }
    Ok(true)
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

/// One stream entry: its id, the server that wrote it, its lines.
type Entry = (String, String, Vec<u8>);

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
    let [id, Value::Array(fields)] = parts.as_slice() else {
        return None;
    };
    let id = text(id)?;
    let (mut origin, mut lines) = (String::new(), Vec::new());
    for pair in fields.chunks(2) {
        if let [name, value] = pair {
            match text(name).as_deref() {
                Some("o") => origin = text(value).unwrap_or_default(),
                Some("b") => lines = bytes(value).unwrap_or_default(),
                _ => {}
            }
        }
    }
    Some((id, origin, lines))
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
