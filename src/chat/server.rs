//! `sockit chat serve`: the room's connections.
//!
//! Each connection is one task that reads, relays and writes without ever
//! blocking on another connection: lines read are appended to the room's
//! shared log at once (see `super::room` for the fan-out and the
//! slow-client policy), and the task writes what the log and its private
//! queue hold for it whenever the socket can take it. Reading and writing
//! are interleaved in one hand-written poll loop with non-blocking reads
//! and writes, so a client that talks without reading is still read from
//! until it falls too far behind.
//!
//! Reads go into one scratch buffer per worker thread; only the unfinished
//! tail of a line is kept per connection, so an idle connection holds no
//! read buffer at all (the room is meant for ten thousand of them).

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;

use super::protocol::{
    Command, Input, LineFramer, Notice, PAUSE, decode, name_prefix, push_action, push_message,
    push_private, valid_nick,
};
use super::room::{
    FLUSH_SLOTS, Flow, LARGE_ROOM, Leave, Member, NickError, PRESENCE_INTERVAL, Queued, Room,
};
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
}

/// Bytes read from a socket at once (into the per-thread scratch buffer).
const READ_CHUNK: usize = 16 * 1024;

/// A relay buffer grown past this is given back once relayed.
const KEEP_BUFFER: usize = 16 * 1024;

/// Rounds of take-and-write before the task lets others run, so a member
/// whose output grows as fast as it is written cannot hog a thread.
const WRITE_ROUNDS: usize = 8;

/// How long a leaving client's last lines may take to go out, and how
/// long we then wait for it to close its side.
const GOODBYE: Duration = Duration::from_secs(1);

/// The same for a server shutdown, inside [`service::SHUTDOWN_GRACE`].
const SHUTDOWN_FLUSH: Duration = Duration::from_millis(200);

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; READ_CHUNK]);
}

/// Serves the chat room on `listen` until the shutdown token is cancelled.
pub async fn run(listen: Listen, config: Config, ctx: RunContext) -> Result<()> {
    let shutdown = ctx.shutdown;
    let room = Arc::new(Room::new(config.echo_self, config.max_clients));
    let clock = tokio::spawn(tick(room.clone(), shutdown.clone()));
    let max_line = config.max_line;
    service::serve_tcp(listen, shutdown, OnShutdown::Finish, move |stream, _, _| {
        serve_connection(stream, room.clone(), max_line)
    })
    .await;
    clock.abort();
    Ok(())
}

/// The room's clock: flushes coalesced output every
/// [`Room::flush_interval`], sums up a large room's joins and leaves
/// every [`PRESENCE_INTERVAL`], and on shutdown wakes every connection
/// through the room (so no connection waits on the token itself).
async fn tick(room: Arc<Room>, shutdown: CancellationToken) {
    let mut last_presence = Instant::now();
    let mut slot = 0;
    loop {
        // A small room seals as it goes: its clock only needs to notice
        // the room growing.
        let tick = if room.online() > LARGE_ROOM {
            room.flush_interval() / FLUSH_SLOTS as u32
        } else {
            room.flush_interval()
        };
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = shutdown.cancelled() => {
                room.close_all();
                return;
            }
        }
        room.flush(slot);
        slot = (slot + 1) % FLUSH_SLOTS;
        if last_presence.elapsed() >= PRESENCE_INTERVAL {
            last_presence = Instant::now();
            if let Some(summary) = room.presence_summary() {
                room.broadcast(None, &summary);
            }
        }
    }
}

async fn serve_connection(stream: Stream, room: Arc<Room>, max_line: usize) -> io::Result<()> {
    let Some((member, nick)) = room.join() else {
        tracing::info!("refusing a connection: server full");
        // Boxed, like `finish` below: rare paths must not grow the state
        // every idle connection carries.
        return Box::pin(refuse(stream)).await;
    };
    let mut connection = Connection {
        stream,
        room,
        member,
        nick,
        renamed: false,
        first_message: true,
        framer: LineFramer::new(max_line),
        max_line,
        blocked: false,
        relay: Vec::new(),
        quit: false,
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
    /// It fell too far behind: the client stopped reading.
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
    /// It fell too far behind: it stopped reading.
    Overflowed,
    /// The server is shutting down.
    Shutdown,
    Failed(io::Error),
}

struct Connection {
    stream: Stream,
    room: Arc<Room>,
    member: Arc<Member>,
    nick: Arc<str>,
    /// Has taken a nick of its own (`/nick` or a seed `[NAME] ` prefix):
    /// no more prefix adoption.
    renamed: bool,
    /// Prefix adoption looks at the first message only.
    first_message: bool,
    framer: LineFramer,
    max_line: usize,
    /// The last write found the socket full: wait until it is writable.
    blocked: bool,
    /// Messages read in this read, relayed together once it is processed.
    relay: Vec<u8>,
    /// `/quit` or `bye` was read: stop reading and say goodbye.
    quit: bool,
}

impl Connection {
    /// Reads, relays and writes until the connection should end.
    async fn serve(&mut self) -> Ending {
        // The pause timer exists only while a line is unfinished: an idle
        // connection carries no timer.
        let mut pause: Option<Pin<Box<Sleep>>> = None;
        loop {
            match self.write_queued() {
                Ok(Flow::CutOff) => return Ending::CutOff,
                Ok(Flow::Busy) => tokio::task::yield_now().await,
                Ok(Flow::Idle | Flow::Blocked) => {}
                Err(e) => return Ending::Failed(e),
            }
            if self.quit {
                return Ending::Quit;
            }
            let writing = self.blocked;
            let event = std::future::poll_fn(|cx| self.poll_event(cx, writing, &mut pause)).await;
            match event {
                Event::Shutdown => return Ending::Shutdown,
                Event::Overflowed => return Ending::CutOff,
                Event::Failed(e) => return Ending::Failed(e),
                Event::Readable => match self.read() {
                    Ok(true) => {
                        if self.framer.has_partial() {
                            let deadline = Instant::now() + PAUSE;
                            match &mut pause {
                                Some(sleep) => sleep.as_mut().reset(deadline),
                                None => pause = Some(Box::pin(tokio::time::sleep_until(deadline))),
                            }
                        } else {
                            pause = None;
                        }
                    }
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
                    pause = None;
                    self.flush_partial();
                }
                Event::Writable | Event::Queued => {}
            }
        }
    }

    /// Waits for the next thing to do. A hand-written poll instead of
    /// `select!` over futures: readiness is kept by tokio's registration
    /// and the wake-up by the member's waker, so an idle connection's
    /// state is little more than [`Connection`] itself.
    fn poll_event(
        &self,
        cx: &mut Context<'_>,
        writing: bool,
        pause: &mut Option<Pin<Box<Sleep>>>,
    ) -> Poll<Event> {
        // Register before looking, so a push or shutdown that happens
        // after the look still wakes us.
        self.member.waker.register(cx.waker());
        if self.room.is_closing() {
            return Poll::Ready(Event::Shutdown);
        }
        match self.room.queued(&self.member) {
            Queued::Overflowed => return Poll::Ready(Event::Overflowed),
            Queued::Bytes if !writing => return Poll::Ready(Event::Queued),
            _ => {}
        }
        match self.stream.poll_read_ready(cx) {
            Poll::Ready(Ok(())) => return Poll::Ready(Event::Readable),
            Poll::Ready(Err(e)) => return Poll::Ready(Event::Failed(e)),
            Poll::Pending => {}
        }
        if writing {
            match self.stream.poll_write_ready(cx) {
                Poll::Ready(Ok(())) => return Poll::Ready(Event::Writable),
                Poll::Ready(Err(e)) => return Poll::Ready(Event::Failed(e)),
                Poll::Pending => {}
            }
        }
        if let Some(sleep) = pause
            && sleep.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Event::Paused);
        }
        Poll::Pending
    }

    /// Reads what is waiting and handles every line in it. `Ok(false)` at
    /// end of stream.
    fn read(&mut self) -> io::Result<bool> {
        SCRATCH.with_borrow_mut(|buf| match self.stream.try_read(buf) {
            Ok(0) => Ok(false),
            Ok(n) => {
                let mut framer = std::mem::replace(&mut self.framer, LineFramer::new(0));
                framer.feed(&buf[..n], &mut |input| self.on_input(input));
                self.framer = framer;
                self.flush_relay();
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(true),
            Err(e) => Err(e),
        })
    }

    /// The client paused mid-line (or closed): the tail is a message.
    fn flush_partial(&mut self) {
        let mut framer = std::mem::replace(&mut self.framer, LineFramer::new(0));
        framer.flush(&mut |input| self.on_input(input));
        self.framer = framer;
        self.flush_relay();
    }

    fn on_input(&mut self, input: Input<'_>) {
        if self.quit {
            return;
        }
        match input {
            Input::TooLong => {
                self.flush_relay();
                self.tell(&Notice::LineTooLong(self.max_line));
            }
            Input::Line([]) => {}
            Input::Line(bytes) => {
                let text = decode(bytes);
                match Command::parse(&text) {
                    Some(command) => {
                        self.flush_relay();
                        self.command(command);
                    }
                    None => self.message(&text),
                }
                self.first_message = false;
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
                match self.room.rename(self.member.id, &self.nick, name) {
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
            Command::Nick(name) => match self.room.rename(self.member.id, &self.nick, name) {
                Ok(nick) => {
                    self.nick = nick;
                    self.renamed = true;
                }
                Err(NickError::Taken) => self.tell(&Notice::NickTaken(name)),
            },
            Command::Who => self.room.tell(&self.member, self.room.who()),
            Command::Me(action) => {
                let mut line = Vec::new();
                push_action(&mut line, &self.nick, action);
                self.room.relay(self.member.id, &line);
            }
            Command::Msg { to, text } => {
                let mut line = Vec::new();
                let sent = self.room.send_to(to, |spelled| {
                    push_private(&mut line, &self.nick, spelled, text);
                    line.clone()
                });
                match sent {
                    Some(id) if id == self.member.id => {}
                    Some(_) => self.room.tell(&self.member, line),
                    None => self.tell(&Notice::NoSuchNick(to)),
                }
            }
            Command::Help => self.tell(&Notice::Help),
            Command::Quit => self.quit = true,
            Command::Usage(usage) => self.tell(&Notice::Usage(usage)),
            Command::Unknown(name) => self.tell(&Notice::UnknownCommand(name)),
        }
    }

    /// Queues a notice for this client only.
    fn tell(&self, notice: &Notice<'_>) {
        self.room.tell(&self.member, notice.to_bytes());
    }

    /// Relays the messages batched from the current read.
    fn flush_relay(&mut self) {
        if self.relay.is_empty() {
            return;
        }
        self.room.relay(self.member.id, &self.relay);
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
        let flow = self.room.write_out(&self.member, WRITE_ROUNDS, |slices| {
            stream.try_write_vectored(slices)
        })?;
        self.blocked = flow == Flow::Blocked;
        Ok(flow)
    }

    /// Leaves the room as `ending` says and closes the connection.
    async fn finish(mut self, ending: Ending) -> io::Result<()> {
        match ending {
            Ending::Quit | Ending::Closed => {
                self.room.leave(&self.member, &self.nick, Leave::Left);
                if matches!(ending, Ending::Quit) {
                    self.room.tell(&self.member, Notice::Bye.to_bytes());
                }
                let deadline = Instant::now() + GOODBYE;
                self.flush_until(deadline).await?;
                close_gracefully(self.stream, deadline).await
            }
            Ending::Shutdown => {
                self.room.leave(&self.member, &self.nick, Leave::Shutdown);
                self.room
                    .tell(&self.member, Notice::ShuttingDown.to_bytes());
                let deadline = Instant::now() + SHUTDOWN_FLUSH;
                self.flush_until(deadline).await?;
                close_gracefully(self.stream, deadline + SHUTDOWN_FLUSH).await
            }
            Ending::CutOff => {
                tracing::info!("{} stopped reading: disconnected", self.nick);
                self.room.leave(&self.member, &self.nick, Leave::CutOff);
                // Reset: its unread backlog is dropped at once instead of
                // lingering in the kernel for a reader that will not come.
                self.stream.reset_on_close();
                Ok(())
            }
            Ending::Failed(e) => {
                self.room.leave(&self.member, &self.nick, Leave::Left);
                Err(e)
            }
        }
    }

    /// Writes what is queued until done or `deadline`.
    async fn flush_until(&mut self, deadline: Instant) -> io::Result<()> {
        loop {
            match self.write_queued()? {
                Flow::Idle | Flow::CutOff => return Ok(()),
                Flow::Busy => {}
                Flow::Blocked => {
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
