//! One short function per command: each turns its parsed flags into its
//! service's config, opens what a server listens on, announces it, and
//! calls the service with the shutdown token. Policy (which sockets a
//! service opens, what it falls back to) lives in the services; this
//! module is only the wiring, and the one place that writes a server's
//! `listening on ADDR:PORT` line.

use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use sockit::context::Context;
use sockit::error::{Error, Result};
use sockit::identity::Identity;
use sockit::messages::Messages;
use sockit::service::Listen;
use sockit::transport::{Acceptor, Connector, FirstWord};
use sockit::trust::Trust;
use sockit::{chat, echo, file, json, lan, net, ping};

use clap::CommandFactory;

use crate::cli::{
    BroadcastCommand, BroadcastListen, BroadcastSend, ChatCommand, ChatJoin, ChatServe, Cli,
    Command, Completions, Discover, EchoCommand, EchoSend, EchoServe, FileCommand, FileReceive,
    FileSend, IdArgs, JsonCommand, JsonSend, JsonServe, Ping, Respond, TlsConnect, TlsServe,
};

/// File descriptors kept back from the connection cap for listeners,
/// stdio and the runtime.
const FD_RESERVE: u64 = 64;

/// Runs `command` until it finishes or `ctx.shutdown` is cancelled.
/// `quiet` is the global `-q` (ping then prints only its summary).
pub async fn run(command: Command, ctx: Context, quiet: bool) -> Result<()> {
    match command {
        Command::Echo(EchoCommand::Serve(args)) => echo_serve(args, ctx).await,
        Command::Echo(EchoCommand::Send(args)) => echo_send(args, ctx).await,
        Command::Json(JsonCommand::Serve(args)) => json_serve(args, ctx).await,
        Command::Json(JsonCommand::Send(args)) => json_send(args, ctx).await,
        Command::Chat(ChatCommand::Serve(args)) => chat_serve(args, ctx).await,
        Command::Chat(ChatCommand::Join(args)) => chat_join(args, ctx).await,
        Command::Broadcast(BroadcastCommand::Send(args)) => broadcast_send(args, ctx).await,
        Command::Broadcast(BroadcastCommand::Listen(args)) => broadcast_listen(args, ctx).await,
        Command::Discover(args) => discover(args, ctx).await,
        Command::Respond(args) => respond(args, ctx).await,
        Command::Ping(args) => ping(args, ctx, quiet).await,
        Command::File(FileCommand::Receive(args)) => file_receive(args, ctx).await,
        Command::File(FileCommand::Send(args)) => file_send(args, ctx).await,
        Command::Completions(args) => completions(args, ctx),
        Command::Id(args) => id(args, ctx),
        Command::Man => man(ctx),
    }
}

/// `sockit id`: the identity, made first if there is none (said on stderr).
fn id(args: IdArgs, mut ctx: Context) -> Result<()> {
    let path = match args.identity {
        Some(path) => path,
        None => sockit::identity::default_path()?,
    };
    let (identity, made) = sockit::identity::Identity::load_or_create(&path)?;
    if made {
        eprintln!("sockit: made a new identity in {}", path.display());
    }
    writeln!(ctx.out, "{}", identity.id)
        .and_then(|()| ctx.out.flush())
        .map_err(Error::Stdout)
}

/// The completion script for `args.shell`. Generated into memory first:
/// clap_complete panics on a failed write, and stdout may be a closed pipe.
fn completions(args: Completions, mut ctx: Context) -> Result<()> {
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut Cli::command(), "sockit", &mut script);
    ctx.out
        .write_all(&script)
        .and_then(|()| ctx.out.flush())
        .map_err(Error::Stdout)
}

/// The manual page, from the same definition as `--help`.
fn man(mut ctx: Context) -> Result<()> {
    let mut page = Vec::new();
    clap_mangen::Man::new(Cli::command())
        .render(&mut page)
        .map_err(Error::Stdout)?;
    ctx.out
        .write_all(&page)
        .and_then(|()| ctx.out.flush())
        .map_err(Error::Stdout)
}

async fn echo_serve(args: EchoServe, ctx: Context) -> Result<()> {
    let sides = match (args.udp, args.tcp) {
        (true, _) => echo::server::Sides::Udp,
        (_, true) => echo::server::Sides::Tcp,
        _ => echo::server::Sides::Both,
    };
    let sockets = echo::server::bind(SocketAddr::new(args.bind.bind, args.port), sides)?;
    let seed = args.seed.unwrap_or_else(rand::random);
    if args.drop > 0.0 {
        tracing::info!(
            "dropping {}% of datagrams, --seed {seed}",
            args.drop * 100.0
        );
    }
    let access = args.bind.access();
    let config = echo::server::Config {
        reply: args.reply(),
        drop: args.drop,
        seed,
        delay: Duration::from_millis(args.delay),
        access: access.clone(),
    };
    let acceptor = acceptor(&args.tls, FirstWord::Client)?;
    announce(sockets.local)?;
    announce_identity(&acceptor)?;
    let serving = echo::server::Serving {
        tcp: sockets
            .tcp
            .map(|tcp| listen_with(tcp, acceptor.0, access.clone())),
        udp: sockets.udp,
    };
    echo::server::run(serving, config, ctx).await
}

async fn echo_send(args: EchoSend, ctx: Context) -> Result<()> {
    let config = echo::client::Config {
        connector: connector(&args.tls)?,
        host: args.target.host,
        port: args.target.port,
        udp: args.udp,
        wait: args.target.wait,
        json: args.json,
    };
    let messages = Messages::from_args_or_stdin(args.messages);
    let shutdown = ctx.shutdown.clone();
    until_interrupted(echo::client::send(messages, config, ctx), &shutdown).await
}

async fn json_serve(args: JsonServe, ctx: Context) -> Result<()> {
    let listener = net::bind_tcp(SocketAddr::new(args.bind.bind, args.port))?;
    let acceptor = acceptor(&args.tls, FirstWord::Client)?;
    announce(net::local_addr(&listener)?)?;
    announce_identity(&acceptor)?;
    let config = json::server::Config {
        max_size: args.max_size,
    };
    json::server::run(
        listen_with(listener, acceptor.0, args.bind.access()),
        config,
        ctx,
    )
    .await
}

async fn json_send(args: JsonSend, ctx: Context) -> Result<()> {
    let config = json::client::Config {
        connector: connector(&args.tls)?,
        host: args.target.host,
        port: args.target.port,
        wait: args.target.wait,
    };
    let messages = Messages::from_args_or_stdin(args.values);
    let shutdown = ctx.shutdown.clone();
    until_interrupted(json::client::send(messages, config, ctx), &shutdown).await
}

async fn chat_serve(args: ChatServe, ctx: Context) -> Result<()> {
    let listener = net::bind_tcp(SocketAddr::new(args.bind.bind, args.port))?;
    // Reached before the port is announced: a server that will not serve
    // the shared rooms says so before anyone connects.
    let redis = match &args.redis {
        Some(url) => Some(chat::server::Connected::connect(url, args.history).await?),
        None => None,
    };
    let acceptor = acceptor(&args.tls, FirstWord::Server)?;
    announce(net::local_addr(&listener)?)?;
    announce_identity(&acceptor)?;
    let config = chat::server::Config {
        echo_self: args.echo_self,
        max_clients: args.max_clients as usize,
        max_line: args.max_line,
        flood: (args.flood > 0).then_some(chat::server::Flood {
            rate: args.flood,
            burst: args.flood_burst,
        }),
        stall_timeout: args.stall_timeout,
        history: args.history,
        replay: args.replay.min(args.history),
    };
    let listen = listen_with(listener, acceptor.0, args.bind.access());
    chat::server::run(listen, config, redis, ctx).await
}

/// A client's connector as `--tls`, `--pin`, `--ca` and `--known-hosts` say.
fn connector(args: &TlsConnect) -> Result<Connector> {
    if !args.tls {
        return Ok(Connector::plain());
    }
    let trust = match (args.pin, &args.ca) {
        (Some(pin), _) => Trust::Pin(pin),
        (None, Some(ca)) => Trust::Ca(ca.clone()),
        (None, None) => Trust::KnownHosts(match &args.known_hosts {
            Some(file) => file.clone(),
            None => sockit::trust::default_known_hosts()?,
        }),
    };
    Connector::tls(trust)
}

/// A server's acceptor as `--tls` and friends say, and the identity it
/// shows (`None` without `--tls`).
fn acceptor(args: &TlsServe, first: FirstWord) -> Result<(Acceptor, Option<sockit::identity::Id>)> {
    if !args.tls {
        return Ok((Acceptor::plain(), None));
    }
    let identity = match (&args.cert, &args.key) {
        (Some(cert), Some(key)) => Identity::from_files(cert, key)?,
        _ => {
            let path = match &args.identity {
                Some(path) => path.clone(),
                None => sockit::identity::default_path()?,
            };
            let (identity, made) = Identity::load_or_create(&path)?;
            if made {
                eprintln!("sockit: made a new identity in {}", path.display());
            }
            identity
        }
    };
    let id = identity.id;
    Ok((Acceptor::tls(&identity, args.tls_only, first)?, Some(id)))
}

/// The line after `listening on` of a `--tls` server: what its clients
/// check it by.
fn announce_identity(acceptor: &(Acceptor, Option<sockit::identity::Id>)) -> Result<()> {
    if let Some(id) = acceptor.1 {
        let mut out = std::io::stdout().lock();
        writeln!(out, "identity {id}")
            .and_then(|()| out.flush())
            .map_err(Error::Stdout)?;
    }
    Ok(())
}

async fn chat_join(args: ChatJoin, ctx: Context) -> Result<()> {
    let config = chat::client::Config {
        connector: connector(&args.tls)?,
        host: args.target.host,
        port: args.target.port,
        name: args.name,
        connect_timeout: args.target.wait,
    };
    let messages = Messages::from_args_or_stdin(Vec::new());
    let shutdown = ctx.shutdown.clone();
    until_interrupted(chat::client::join(messages, config, ctx), &shutdown).await
}

async fn broadcast_send(args: BroadcastSend, ctx: Context) -> Result<()> {
    let config = lan::broadcast::SendConfig {
        message: args.message.into_bytes(),
        port: args.port,
        interval: args.interval,
        count: args.count,
        to: args.to,
    };
    lan::broadcast::send(config, ctx).await
}

async fn broadcast_listen(args: BroadcastListen, ctx: Context) -> Result<()> {
    let socket = net::bind_udp_broadcast(SocketAddr::new(args.bind.bind, args.port), true)?;
    announce(net::local_udp(&socket)?)?;
    let config = lan::broadcast::ListenConfig {
        count: args.count,
        json: args.json,
        access: args.bind.access(),
    };
    lan::broadcast::listen(socket, config, ctx).await
}

async fn discover(args: Discover, ctx: Context) -> Result<()> {
    let config = lan::discover::Config {
        port: args.port,
        window: args.wait,
        json: args.json,
        watch: args.watch,
        to: args.to,
    };
    lan::discover::discover(config, ctx).await
}

async fn respond(args: Respond, ctx: Context) -> Result<()> {
    let sockets = lan::respond::bind(args.bind.bind, args.port)?;
    let host = lan::clip_name(&net::host_name());
    let config = lan::respond::Config {
        name: args.name.unwrap_or_else(|| host.clone()),
        host,
        limits: lan::Limits::default(),
        access: args.bind.access(),
    };
    announce(sockets.local)?;
    lan::respond::run(sockets, config, ctx).await;
    Ok(())
}

async fn ping(args: Ping, ctx: Context, quiet: bool) -> Result<()> {
    let config = ping::client::Config {
        host: args.host,
        port: args.port,
        count: args.count,
        interval: args.interval,
        wait: args.wait,
        deadline: args.deadline,
        size: args.size as usize,
        json: args.json,
        quiet,
        tcp: args.tcp,
        connector: connector(&args.tls)?,
    };
    // Ctrl-C ends the run with its summary, so the client watches the
    // token itself instead of being cancelled.
    ping::client::ping(config, ctx).await
}

async fn file_receive(args: FileReceive, ctx: Context) -> Result<()> {
    let dir = file::receive::prepare_dir(&args.dir)?;
    let listener = net::bind_tcp(SocketAddr::new(args.bind.bind, args.port))?;
    let acceptor = acceptor(&args.tls, FirstWord::Client)?;
    announce(net::local_addr(&listener)?)?;
    announce_identity(&acceptor)?;
    let config = file::receive::Config {
        dir,
        overwrite: args.overwrite,
        once: args.once,
        idle_timeout: args.idle_timeout,
        keep_partial: args.keep_partial,
        max_partial: args.max_partial,
    };
    let listen = listen_with(listener, acceptor.0, args.bind.access());
    file::receive::run(listen, config, ctx).await
}

async fn file_send(args: FileSend, ctx: Context) -> Result<()> {
    let config = file::send::Config {
        host: args.target.host,
        port: args.target.port,
        paths: args.paths,
        json: args.json,
        wait: args.target.wait,
        connector: connector(&args.tls)?,
    };
    let shutdown = ctx.shutdown.clone();
    until_interrupted(file::send::send(config, ctx), &shutdown).await
}

/// How every TCP server takes connections on: through `acceptor` (plain
/// or `--tls`), from whom `access` allows, and as many at once as the
/// open-file limit (raised to its hard maximum) allows, less a reserve.
fn listen_with(
    listener: tokio::net::TcpListener,
    acceptor: Acceptor,
    access: std::sync::Arc<sockit::access::Access>,
) -> Listen {
    let limit = net::raise_fd_limit();
    Listen {
        listener,
        acceptor,
        access,
        max_connections: limit.saturating_sub(FD_RESERVE).max(16) as usize,
    }
}

/// Runs a client until it finishes or the user interrupts it (a client
/// waiting on stdin or on a reply must still stop on Ctrl-C).
async fn until_interrupted(
    client: impl Future<Output = Result<()>>,
    shutdown: &CancellationToken,
) -> Result<()> {
    tokio::select! {
        result = client => result,
        _ = shutdown.cancelled() => Err(Error::Interrupted),
    }
}

/// Prints the first stdout line every server owes its caller.
fn announce(addr: SocketAddr) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on {addr}")
        .and_then(|()| out.flush())
        .map_err(Error::Stdout)?;
    tracing::info!("listening on {addr}");
    Ok(())
}
