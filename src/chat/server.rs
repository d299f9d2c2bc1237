//! `sockit chat serve`: the room's connections.
//!
//! Each connection is one task that reads, relays and writes without ever
//! blocking on another connection: lines read are appended to the room's
//! shared log at once (see `super::room` for the fan-out and the flow
//! control), and the task writes what the log holds for it whenever the
//! socket can take it. Reading and writing are interleaved in one
//! hand-written poll loop with non-blocking reads and writes.
//!
//! # When a connection stops reading its socket
//!
//! Input waits (in the kernel, so TCP slows the sender down, as a pipe
//! would; bytes already read wait in the connection's stash) while
//! - the room's window is full (`Room::admit`): the room goes at the pace
//!   of its slowest reader;
//! - the sender is over the flood rule (`--flood`, a token bucket kept as
//!   a theoretical arrival time, GCRA): `burst` lines at once, then `rate`
//!   lines a second. Beyond it a sender is throttled, never disconnected,
//!   and nothing it sent is lost;
//! - it sends a command while far behind the log ([`OWN_BACKLOG`]): a
//!   client that asks (`/who`, `/msg`) without reading is not read.
//!
//! A line ended by a pause instead of a newline (at most one per
//! `PAUSE`) is taken whatever the holds say: it is already read, and
//! pauses bound its rate.
//!
//! # When a connection is cut off
//!
//! A member whose socket is full must, within the stall timeout, read
//! everything the room had said by the moment its socket filled up (and
//! then again for the next such moment). One that does not is cut off and
//! the room is told `* NICK was cut off (not reading)`. This one rule
//! covers a reader that stopped (it takes nothing) and one that trickles
//! (it cannot catch up); a reader that keeps up with the room, however
//! slowly the room then goes, is never cut off. With the window at 1 MiB
//! and the timeout at 10 s, a member keeps its place at anything over
//! about 100 KiB/s.
//!
//! Reads go into one scratch buffer per worker thread; only the unfinished
//! tail of a line (or input held back as above) is kept per connection,
//! so an idle connection holds no read buffer at all (the room is meant
//! for ten thousand of them).

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::ops::ControlFlow;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;

use super::hub::{Hub, JoinError, NickError, Seat, Settings};
pub use super::link::Connected;
use super::protocol::{
    Command, Input, LineFramer, Notice, PAUSE, decode, name_prefix, push_action, push_message,
    push_private, room_name, valid_nick,
};
use super::room::{FLUSH_INTERVAL, FLUSH_SLOTS, Flow, LARGE_ROOM, Leave, PRESENCE_INTERVAL};
use crate::context::Context as RunContext;
use crate::error::Result;
use crate::service::{self, Listen, OnShutdown};
use crate::transport::Stream;

/// What `chat serve`'s flags decide.
#[derive(Debug, Clone)]
pub struct Config {
    /// Relay each message to its sender too (seed task 4).
    pub echo_self: bool,
    /// More connections than this are told the server is full.
    pub max_clients: usize,
    /// Longest line accepted, in bytes.
    pub max_line: usize,
    /// The flood rule; `None`: no limit but the room's window.
    pub flood: Option<Flood>,
    /// How long a member whose socket is full may take to read what the
    /// room had said (see the module doc).
    pub stall_timeout: Duration,
    /// Lines of history kept per room.
    pub history: usize,
    /// Lines of history sent to each member on entering a room.
    pub replay: usize,
}

/// The flood rule: `burst` lines at once, then `rate` lines a second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flood {
    pub rate: u32,
    pub burst: u32,
}

impl Flood {
    /// The time one line costs.
    fn interval(self) -> Duration {
        Duration::from_secs(1) / self.rate.max(1)
    }

    /// How far ahead of now a sender's allowance may be spent.
    fn tolerance(self) -> Duration {
        self.interval() * self.burst.saturating_sub(1)
    }
}

/// Default for `--flood`: generous for people and scripts alike (a
/// pasted page goes through at once), far below what a flooding loop
/// sends.
pub const DEFAULT_FLOOD: Flood = Flood {
    rate: 100,
    burst: 200,
};

/// Default for `--stall-timeout`.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(10);

/// How far behind the log a connection may be and still have its
/// commands read: one that asks (`/who`, `/msg`) without reading its
/// answers is not read any further, and its input waits until it has
/// caught up to half of this.
pub const OWN_BACKLOG: u64 = 256 * 1024;

/// Bytes read from a socket at once (into the per-thread scratch buffer),
/// and how much relayed output a sender adds between two looks at the
/// window (at most one chunk of it in its turn once the window opens).
const READ_CHUNK: usize = 16 * 1024;

/// A relay buffer grown past this is given back once relayed.
const KEEP_BUFFER: usize = 16 * 1024;

/// Rounds of take-and-write before the task lets others run, so a member
/// whose output grows as fast as it is written cannot hog a thread.
const WRITE_ROUNDS: usize = 8;

/// How often a sender held by a full window looks at it again, in case
/// the wake-up that opens it is missed.
const HELD_RETRY: Duration = Duration::from_millis(100);

/// How long a leaving client's last lines may take to go out, and how
/// long we then wait for it to close its side.
const GOODBYE: Duration = Duration::from_secs(1);

/// The same for a server shutdown, inside [`service::SHUTDOWN_GRACE`].
const SHUTDOWN_FLUSH: Duration = Duration::from_millis(200);

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; READ_CHUNK]);
}

/// Serves the chat room on `listen` until the shutdown token is cancelled.
/// With `redis` (see `super::link`), the rooms are shared with every
/// server on that Redis.
pub async fn run(
    listen: Listen,
    config: Config,
    redis: Option<Connected>,
    ctx: RunContext,
) -> Result<()> {
    let shutdown = ctx.shutdown;
    let hub = Arc::new(Hub::new(Settings {
        echo_self: config.echo_self,
        max_clients: config.max_clients,
        history: config.history,
        replay: config.replay,
    }));
    if let Some(redis) = redis {
        let (start, end) = redis.guests();
        hub.add_guests(start, end);
        hub.set_link(redis.start(hub.clone(), shutdown.clone()));
    }
    let clock = tokio::spawn(tick(hub.clone(), shutdown.clone()));
    let config = Arc::new(config);
    service::serve_tcp(listen, shutdown, OnShutdown::Finish, move |stream, _, _| {
        serve_connection(stream, hub.clone(), config.clone())
    })
    .await;
    clock.abort();
    Ok(())
}

/// The rooms' clock: flushes coalesced output every
/// `Room::flush_interval`, sums up a large room's joins and leaves
/// every [`PRESENCE_INTERVAL`], and on shutdown wakes every connection
/// through its room (so no connection waits on the token itself).
async fn tick(hub: Arc<Hub>, shutdown: CancellationToken) {
    let mut last_presence = Instant::now();
    let mut slot = 0;
    loop {
        let rooms = hub.all_rooms();
        // A small room seals as it goes: its clock only needs to notice
        // the room growing.
        let tick = rooms
            .iter()
            .map(|room| {
                if room.online() > LARGE_ROOM {
                    room.flush_interval() / FLUSH_SLOTS as u32
                } else {
                    room.flush_interval()
                }
            })
            .min()
            .unwrap_or(FLUSH_INTERVAL.0);
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = shutdown.cancelled() => {
                hub.close_all();
                return;
            }
        }
        for room in &rooms {
            room.flush(slot);
        }
        slot = (slot + 1) % FLUSH_SLOTS;
        if last_presence.elapsed() >= PRESENCE_INTERVAL {
            last_presence = Instant::now();
            for room in &rooms {
                if let Some(summary) = room.presence_summary() {
                    room.broadcast(&summary);
                }
            }
        }
    }
}

async fn serve_connection(stream: Stream, hub: Arc<Hub>, config: Arc<Config>) -> io::Result<()> {
    let Some((seat, nick)) = hub.connect() else {
        tracing::info!("refusing a connection: server full");
        // Boxed, like `finish` below: rare paths must not grow the state
        // every idle connection carries.
        return Box::pin(refuse(stream)).await;
    };
    let mut connection = Connection {
        stream,
        hub,
        seat,
        moving: None,
        nick,
        renamed: false,
        first_message: true,
        framer: LineFramer::new(config.max_line),
        config,
        blocked: false,
        relay: Vec::new(),
        quit: false,
        stash: Vec::new(),
        hold: Hold::Open,
        turn: false,
        allowance: Instant::now(),
    };
    let ending = connection.serve().await;
    Box::pin(connection.finish(ending)).await
}

/// Tells a connection the room is full and closes it.
async fn refuse(mut stream: Stream) -> io::Result<()> {
    let notice = Notice::ServerFull.to_bytes();
    let _ = tokio::time::timeout(GOODBYE, stream.write_all(&notice)).await;
    close_gracefully(stream, Instant::now() + GOODBYE).await
}

/// Why a connection's loop ended.
#[derive(Debug)]
enum Ending {
    /// `/quit` or `bye`.
    Quit,
    /// The client closed its side.
    Closed,
    /// It did not read what the room said in time.
    CutOff,
    /// The server is shutting down.
    Shutdown,
    /// The connection broke.
    Failed(io::Error),
}

/// What woke a connection up.
enum Event {
    /// The socket has input (or an error or end of stream) to read.
    Readable,
    /// The socket can take more of what we are writing.
    Writable,
    /// Something was queued for this client.
    Queued,
    /// The client paused in the middle of a line.
    Paused,
    /// Held input may go on (the flood rule's wait is over, or it is time
    /// to look at the window again).
    Retry,
    /// The window opened for this held sender: it has its turn.
    Turn,
    /// The stall timer ran out.
    Stalled,
    /// The server is shutting down.
    Shutdown,
    Failed(io::Error),
}

/// Why input waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hold {
    Open,
    /// The room's window is full.
    Window,
    /// The flood rule: until the retry timer.
    Flood,
    /// Its own answers are unread.
    Backlog,
    /// It moved to another room and has not written the old one's output
    /// out yet: what it says next goes after that.
    Moving,
}

/// A full socket's deadline: the member must have written the log up to
/// `target` by the time `timer` runs out.
struct Stall {
    target: u64,
    timer: Pin<Box<Sleep>>,
}

/// The connection's timers, each there only while needed, so an idle
/// connection carries none.
#[derive(Default)]
struct Timers {
    /// A line is unfinished: it is a message once the client pauses.
    pause: Option<Pin<Box<Sleep>>>,
    /// Held input looks again then.
    retry: Option<Pin<Box<Sleep>>>,
    stall: Option<Stall>,
}

struct Connection {
    stream: Stream,
    hub: Arc<Hub>,
    config: Arc<Config>,
    /// Its room, and itself as a member there.
    seat: Seat,
    /// The room it left, while its output there is being written out
    /// (before anything of the new room's).
    moving: Option<Seat>,
    nick: Arc<str>,
    /// Has taken a nick of its own (`/nick` or a seed `[NAME] ` prefix):
    /// no more prefix adoption.
    renamed: bool,
    /// Prefix adoption looks at the first message only.
    first_message: bool,
    framer: LineFramer,
    /// The last write found the socket full: wait until it is writable.
    blocked: bool,
    /// Messages read in this read, relayed together once it is processed.
    relay: Vec<u8>,
    /// `/quit` or `bye` was read: stop reading and say goodbye.
    quit: bool,
    /// Input read but not taken yet, while `hold` says wait.
    stash: Vec<u8>,
    hold: Hold,
    /// Released from a full window: the next chunk goes in regardless.
    turn: bool,
    /// The flood rule's theoretical arrival time: the sender's allowance
    /// is spent up to here.
    allowance: Instant,
}

impl Connection {
    /// Reads, relays and writes until the connection should end.
    async fn serve(&mut self) -> Ending {
        let mut timers = Timers::default();
        loop {
            self.pick_up_nick();
            let moving = self.moving.is_some();
            let flow = match self.write_queued() {
                Ok(flow) => flow,
                Err(e) => return Ending::Failed(e),
            };
            if moving && self.moving.is_none() {
                // The stall rule's target was a place in the old room.
                timers.stall = None;
                if self.hold == Hold::Moving {
                    self.hold = Hold::Open;
                }
            }
            self.watch_stall(flow, &mut timers.stall);
            if flow == Flow::Busy {
                tokio::task::yield_now().await;
            }
            if self.quit {
                return Ending::Quit;
            }
            if self.hold == Hold::Backlog && self.lag() < OWN_BACKLOG / 2 {
                self.hold = Hold::Open;
            }
            if self.hold == Hold::Open && !self.stash.is_empty() {
                self.take_stash(&mut timers);
                continue;
            }
            let writing = self.blocked;
            let event = std::future::poll_fn(|cx| self.poll_event(cx, writing, &mut timers)).await;
            match event {
                Event::Shutdown => return Ending::Shutdown,
                Event::Stalled => {
                    tracing::info!(
                        "{} did not read for {:?}: cut off",
                        self.nick,
                        self.config.stall_timeout
                    );
                    return Ending::CutOff;
                }
                Event::Failed(e) => return Ending::Failed(e),
                Event::Readable => match self.read(&mut timers) {
                    Ok(true) => {}
                    Ok(false) => {
                        self.flush_partial();
                        return if self.quit {
                            Ending::Quit
                        } else {
                            Ending::Closed
                        };
                    }
                    Err(e) => return Ending::Failed(e),
                },
                Event::Paused => {
                    timers.pause = None;
                    self.flush_partial();
                    if self.moving.is_some() {
                        self.hold = Hold::Moving;
                    }
                }
                Event::Retry => {
                    timers.retry = None;
                    if matches!(self.hold, Hold::Window | Hold::Flood) {
                        self.hold = Hold::Open;
                    }
                }
                Event::Turn => {
                    if self.hold == Hold::Window {
                        self.hold = Hold::Open;
                        timers.retry = None;
                    }
                    self.turn = true;
                }
                Event::Writable | Event::Queued => {}
            }
        }
    }

    /// `--redis`: another server claimed this connection's nick first and
    /// the hub gave it another one (see `super::hub`).
    fn pick_up_nick(&mut self) {
        let forced = self.seat.member.take_forced()
            | self
                .moving
                .as_ref()
                .is_some_and(|old| old.member.take_forced());
        if forced && let Some(nick) = self.hub.take_forced(self.seat.member.id) {
            self.nick = nick;
            self.renamed = true;
        }
    }

    /// Waits for the next thing to do. A hand-written poll instead of
    /// `select!` over futures: readiness is kept by tokio's registration
    /// and the wake-up by the member's waker, so an idle connection's
    /// state is little more than [`Connection`] itself.
    fn poll_event(&self, cx: &mut Context<'_>, writing: bool, timers: &mut Timers) -> Poll<Event> {
        // Register before looking, so a push or shutdown that happens
        // after the look still wakes us.
        self.seat.member.waker.register(cx.waker());
        if let Some(old) = &self.moving {
            old.member.waker.register(cx.waker());
        }
        if self.seat.room.is_closing() || self.hub.is_closing() {
            return Poll::Ready(Event::Shutdown);
        }
        let out = self.writing();
        if !writing && out.room.pending(&out.member) {
            return Poll::Ready(Event::Queued);
        }
        if self.seat.member.take_turn() {
            return Poll::Ready(Event::Turn);
        }
        if let Some(stall) = &mut timers.stall
            && stall.timer.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Event::Stalled);
        }
        if self.hold == Hold::Open && self.stash.is_empty() {
            match self.stream.poll_read_ready(cx) {
                Poll::Ready(Ok(())) => return Poll::Ready(Event::Readable),
                Poll::Ready(Err(e)) => return Poll::Ready(Event::Failed(e)),
                Poll::Pending => {}
            }
        }
        if writing {
            match self.stream.poll_write_ready(cx) {
                Poll::Ready(Ok(())) => return Poll::Ready(Event::Writable),
                Poll::Ready(Err(e)) => return Poll::Ready(Event::Failed(e)),
                Poll::Pending => {}
            }
        }
        // Held input is waiting in the kernel, not paused: an unfinished
        // line then is no message yet.
        if self.hold == Hold::Open
            && self.stash.is_empty()
            && let Some(sleep) = &mut timers.pause
            && sleep.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Event::Paused);
        }
        if let Some(sleep) = &mut timers.retry
            && sleep.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Event::Retry);
        }
        Poll::Pending
    }

    /// Keeps the stall rule after a write: a full socket arms the timer
    /// for what the room has said so far; reaching that re-arms it for
    /// what it says by then; an empty outbox disarms it.
    fn watch_stall(&self, flow: Flow, stall: &mut Option<Stall>) {
        if flow == Flow::Idle {
            *stall = None;
            return;
        }
        if flow == Flow::Busy && stall.is_none() {
            // Written out in full so far: the socket is not full.
            return;
        }
        let out = self.writing();
        let position = out.member.position();
        let deadline = || Instant::now() + self.config.stall_timeout;
        // Records a TLS session still holds count as unread: the member
        // must get them out too (one byte past the log's end stands for
        // them), or a reader that stopped would look caught up.
        let target = || out.room.end() + u64::from(self.stream.has_unsent());
        match stall {
            Some(s) if position < s.target => {}
            Some(s) => {
                s.target = target();
                s.timer.as_mut().reset(deadline());
            }
            None => {
                *stall = Some(Stall {
                    target: target(),
                    timer: Box::pin(tokio::time::sleep_until(deadline())),
                });
            }
        }
    }

    /// Reads what is waiting and takes what it may of it. `Ok(false)` at
    /// end of stream.
    fn read(&mut self, timers: &mut Timers) -> io::Result<bool> {
        if !self.admitted(timers) {
            return Ok(true);
        }
        SCRATCH.with_borrow_mut(|buf| match self.stream.try_read(buf) {
            Ok(0) => Ok(false),
            Ok(n) => {
                let taken = self.take(&buf[..n], timers);
                self.stash.extend_from_slice(&buf[taken..n]);
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(true),
            Err(e) => Err(e),
        })
    }

    /// Takes what it may of the stash.
    fn take_stash(&mut self, timers: &mut Timers) {
        if !self.admitted(timers) {
            return;
        }
        let stash = std::mem::take(&mut self.stash);
        let taken = self.take(&stash, timers);
        if taken < stash.len() {
            self.stash = stash[taken..].to_vec();
        }
    }

    /// Whether the next chunk of input may go into the room: its turn, or
    /// room in the window. If not, input is held until the window opens
    /// (or the retry timer says look again).
    fn admitted(&mut self, timers: &mut Timers) -> bool {
        if std::mem::take(&mut self.turn) || self.seat.room.admit(&self.seat.member) {
            return true;
        }
        self.hold = Hold::Window;
        self.arm_retry(timers);
        false
    }

    /// Sets the retry timer for what `hold` waits for: the flood rule's
    /// next allowance, or the next look at a full window.
    fn arm_retry(&self, timers: &mut Timers) {
        let at = match self.hold {
            Hold::Flood => {
                let wait = self.config.flood.map_or(Duration::ZERO, Flood::tolerance);
                self.allowance.checked_sub(wait).unwrap_or(self.allowance)
            }
            Hold::Window => Instant::now() + HELD_RETRY,
            Hold::Open | Hold::Backlog | Hold::Moving => return,
        };
        timers.retry = Some(Box::pin(tokio::time::sleep_until(at)));
    }

    /// Handles the lines in `data` until one of the holds applies; returns
    /// the bytes taken.
    fn take(&mut self, data: &[u8], timers: &mut Timers) -> usize {
        let now = self.config.flood.map(|_| Instant::now());
        let mut framer = std::mem::replace(&mut self.framer, LineFramer::new(0));
        let taken = framer.feed(data, &mut |input| {
            let command = self.on_input(input);
            self.go_on(command, now)
        });
        self.framer = framer;
        self.flush_relay();
        self.arm_retry(timers);
        // The pause timer exists only while a line is unfinished (and
        // nothing is waiting after it): an idle connection carries none.
        if taken == data.len() && self.framer.has_partial() {
            let deadline = Instant::now() + PAUSE;
            match &mut timers.pause {
                Some(sleep) => sleep.as_mut().reset(deadline),
                None => timers.pause = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
        } else {
            timers.pause = None;
        }
        taken
    }

    /// After a line: whether the next one may be taken now. `command`
    /// says whether the line was one (its answer is ours to read), `None`
    /// for an empty line, which costs nothing.
    fn go_on(&mut self, command: Option<bool>, now: Option<Instant>) -> ControlFlow<()> {
        let Some(command) = command else {
            return ControlFlow::Continue(());
        };
        if self.quit {
            return ControlFlow::Break(());
        }
        if self.moving.is_some() {
            self.flush_relay();
            self.hold = Hold::Moving;
            return ControlFlow::Break(());
        }
        if command && self.lag() > OWN_BACKLOG {
            self.hold = Hold::Backlog;
            return ControlFlow::Break(());
        }
        if let (Some(flood), Some(now)) = (self.config.flood, now) {
            self.allowance = self.allowance.max(now) + flood.interval();
            if self.allowance > now + flood.tolerance() {
                self.hold = Hold::Flood;
                return ControlFlow::Break(());
            }
        }
        // The chunk was let in as a whole, but what it turns into is
        // bounded too: a command's output goes straight into the log, and
        // short lines grow by their labels.
        if command || self.relay.len() >= READ_CHUNK {
            self.flush_relay();
            if !self.seat.room.admit(&self.seat.member) {
                self.hold = Hold::Window;
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    }

    /// The client paused mid-line (or closed): the tail is a message.
    fn flush_partial(&mut self) {
        let mut framer = std::mem::replace(&mut self.framer, LineFramer::new(0));
        framer.flush(&mut |input| {
            self.on_input(input);
            ControlFlow::Continue(())
        });
        self.framer = framer;
        self.flush_relay();
    }

    /// Handles one line; returns whether it was a command (`None`: an
    /// empty line, or input after `/quit`).
    fn on_input(&mut self, input: Input<'_>) -> Option<bool> {
        if self.quit {
            return None;
        }
        match input {
            Input::TooLong => {
                self.flush_relay();
                self.tell(&Notice::LineTooLong(self.config.max_line));
                Some(true)
            }
            Input::Line([]) => None,
            Input::Line(bytes) => {
                let text = decode(bytes);
                let command = match Command::parse(&text) {
                    Some(command) => {
                        self.flush_relay();
                        self.command(command);
                        true
                    }
                    None => {
                        self.message(&text);
                        false
                    }
                };
                self.first_message = false;
                Some(command)
            }
        }
    }

    /// An ordinary message: labelled and added to this read's relay batch.
    fn message(&mut self, text: &str) {
        let mut text = text;
        if let Some((name, rest)) = name_prefix(text) {
            if *name == *self.nick {
                // Our own seed 4-3 prefix: show the nick once.
                text = rest;
            } else if self.first_message && !self.renamed {
                match self.hub.rename(&self.seat, &self.nick, name) {
                    Ok(nick) => {
                        self.nick = nick;
                        self.renamed = true;
                        text = rest;
                    }
                    Err(NickError::Taken) => self.tell(&Notice::NickTaken(name)),
                }
            }
        }
        push_message(&mut self.relay, &self.nick, text);
    }

    fn command(&mut self, command: Command<'_>) {
        match command {
            Command::Nick(name) if !valid_nick(name) => self.tell(&Notice::InvalidNick),
            Command::Nick(name) => match self.hub.rename(&self.seat, &self.nick, name) {
                Ok(nick) => {
                    self.nick = nick;
                    self.renamed = true;
                }
                Err(NickError::Taken) => self.tell(&Notice::NickTaken(name)),
            },
            Command::Who => self.tell_bytes(&self.hub.who(&self.seat)),
            Command::Join(name) => self.join(name),
            Command::Rooms => self.tell_bytes(&self.hub.rooms()),
            Command::History(n) => {
                let n = n.min(self.config.history);
                self.tell_bytes(&self.seat.room.history(n));
            }
            // Batched with the messages around it: the same audience.
            Command::Me(action) => push_action(&mut self.relay, &self.nick, action),
            Command::Msg { to, text } => {
                let sent = self.hub.send_to(&self.seat, to, |spelled| {
                    let mut line = Vec::new();
                    push_private(&mut line, &self.nick, spelled, text);
                    line
                });
                if !sent {
                    self.tell(&Notice::NoSuchNick(to));
                }
            }
            Command::Help => self.tell(&Notice::Help),
            Command::Quit => self.quit = true,
            Command::Usage(usage) => self.tell(&Notice::Usage(usage)),
            Command::Unknown(name) => self.tell(&Notice::UnknownCommand(name)),
        }
    }

    /// `/join`: moves to the room (see `super::hub`); what it says from
    /// now on goes there.
    fn join(&mut self, name: &str) {
        let Some(name) = room_name(name) else {
            return self.tell(&Notice::InvalidRoom);
        };
        match self.hub.move_to(&self.seat, &self.nick, &name) {
            Ok(seat) => {
                // At most one move at a time: input waits while one is
                // under way (`Hold::Moving`).
                debug_assert!(self.moving.is_none());
                let old = std::mem::replace(&mut self.seat, seat);
                self.moving = Some(old);
            }
            Err(JoinError::AlreadyIn) => self.tell(&Notice::AlreadyIn(self.seat.room.name())),
            Err(JoinError::Closing) => {}
        }
    }

    /// Sends a notice to this client only.
    fn tell(&self, notice: &Notice<'_>) {
        self.tell_bytes(&notice.to_bytes());
    }

    /// Sends lines to this client only.
    fn tell_bytes(&self, bytes: &[u8]) {
        self.seat.room.tell(&self.seat.member, bytes);
    }

    /// The seat whose output is being written: the old room's while a
    /// move is under way.
    fn writing(&self) -> &Seat {
        self.moving.as_ref().unwrap_or(&self.seat)
    }

    /// How far behind its output the connection is, in bytes.
    fn lag(&self) -> u64 {
        let out = self.writing();
        out.room.lag(&out.member)
    }

    /// Relays the messages batched from the current read.
    fn flush_relay(&mut self) {
        if self.relay.is_empty() {
            return;
        }
        self.hub.relay(&self.seat, &self.relay);
        self.relay.clear();
        if self.relay.capacity() > KEEP_BUFFER {
            self.relay = Vec::new();
        }
    }

    /// Writes queued output without waiting, in as few calls as the
    /// socket allows (one `writev` carries everything the room said since
    /// the last one).
    fn write_queued(&mut self) -> io::Result<Flow> {
        let stream = &mut self.stream;
        let mut write = |seat: &Seat| {
            seat.room.write_out(&seat.member, WRITE_ROUNDS, |slices| {
                stream.try_write_vectored(slices)
            })
        };
        let mut flow = match &self.moving {
            Some(old) => write(old)?,
            None => Flow::Idle,
        };
        if flow == Flow::Idle {
            // The old room's output is all out (or there was none).
            self.moving = None;
            flow = write(&self.seat)?;
        }
        // A TLS session may hold records the socket has no room for yet:
        // the log is written out, but the socket is full all the same.
        if flow == Flow::Idle && self.stream.has_unsent() {
            flow = Flow::Blocked;
        }
        self.blocked = flow == Flow::Blocked;
        Ok(flow)
    }

    /// Leaves the room as `ending` says and closes the connection.
    async fn finish(mut self, ending: Ending) -> io::Result<()> {
        match ending {
            Ending::Quit | Ending::Closed => {
                let bye = Notice::Bye.to_bytes();
                let last = matches!(ending, Ending::Quit).then_some(&bye[..]);
                self.hub
                    .disconnect(&self.seat, &self.nick, Leave::Left, last);
                let deadline = Instant::now() + GOODBYE;
                self.flush_until(deadline).await?;
                close_gracefully(self.stream, deadline).await
            }
            Ending::Shutdown => {
                // The room's `* server shutting down` is in the log already.
                self.hub
                    .disconnect(&self.seat, &self.nick, Leave::Shutdown, None);
                let deadline = Instant::now() + SHUTDOWN_FLUSH;
                self.flush_until(deadline).await?;
                close_gracefully(self.stream, deadline + SHUTDOWN_FLUSH).await
            }
            Ending::CutOff => {
                self.hub
                    .disconnect(&self.seat, &self.nick, Leave::CutOff, None);
                // Reset: its unread backlog is dropped at once instead of
                // lingering in the kernel for a reader that will not come.
                self.stream.reset_on_close();
                Ok(())
            }
            Ending::Failed(e) => {
                self.hub
                    .disconnect(&self.seat, &self.nick, Leave::Left, None);
                Err(e)
            }
        }
    }

    /// Writes what is queued until done or `deadline`.
    async fn flush_until(&mut self, deadline: Instant) -> io::Result<()> {
        loop {
            match self.write_queued()? {
                Flow::Idle if !self.blocked => return Ok(()),
                Flow::Busy => {}
                Flow::Idle | Flow::Blocked => {
                    if tokio::time::timeout_at(deadline, self.stream.writable())
                        .await
                        .is_err()
                    {
                        return Ok(());
                    }
                }
            }
        }
    }
}

/// Closes our side, then reads and discards until the client closes its
/// side or `deadline`: closing with unread input would send a reset that
/// can destroy our last lines before the client reads them.
async fn close_gracefully(mut stream: Stream, deadline: Instant) -> io::Result<()> {
    stream.shutdown().await?;
    let mut sink = vec![0; 4096];
    loop {
        match tokio::time::timeout_at(
            deadline,
            tokio::io::AsyncReadExt::read(&mut stream, &mut sink),
        )
        .await
        {
            Ok(Ok(0)) | Err(_) => return Ok(()),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
        }
    }
}
