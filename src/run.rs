//! Turns a parsed command into a running service or client: binds what a
//! server needs, announces it, and hands it the shutdown token. This is
//! the one place that writes a server's `listening on ADDR:PORT` line.

use std::io::Write;
use std::net::SocketAddr;

use tokio_util::sync::CancellationToken;

use crate::cli::{BroadcastCommand, ChatCommand, Command, EchoCommand, FileCommand, JsonCommand};
use crate::error::{Error, Result};
use crate::messages::Messages;
use crate::{chat, echo, json, lan, net, ping, transfer};

/// File descriptors kept back from the connection cap for listeners,
/// stdio and the runtime.
const FD_RESERVE: u64 = 64;

/// Runs `command` until it finishes or `shutdown` is cancelled.
pub async fn run(command: Command, shutdown: CancellationToken) -> Result<()> {
    match command {
        Command::Echo(EchoCommand::Serve(args)) => {
            let addr = SocketAddr::new(args.bind.bind, args.port);
            let (tcp, udp) = match (args.udp, args.tcp) {
                (true, _) => (None, Some(net::bind_udp(addr)?)),
                (_, true) => (Some(net::bind_tcp(addr)?), None),
                _ => {
                    let (tcp, udp) = net::bind_pair(addr)?;
                    (Some(tcp), Some(udp))
                }
            };
            let local = match (&tcp, &udp) {
                (Some(t), _) => net::local_addr(t)?,
                (None, Some(u)) => local_udp(u)?,
                (None, None) => unreachable!("clap forbids --udp with --tcp"),
            };
            let seed = args.seed.unwrap_or_else(rand::random);
            if args.drop > 0.0 {
                tracing::info!(
                    "dropping {}% of datagrams, --seed {seed}",
                    args.drop * 100.0
                );
            }
            let config = echo::server::Config {
                reply: args.reply(),
                drop: args.drop,
                seed,
                delay: std::time::Duration::from_millis(args.delay),
            };
            announce(local)?;
            echo::server::run(tcp, udp, config, max_connections(), shutdown).await
        }
        Command::Echo(EchoCommand::Send(args)) => {
            let config = echo::client::Config {
                host: args.host,
                port: args.port,
                udp: args.udp,
                wait: args.wait,
                json: args.json,
            };
            let messages = Messages::from_args_or_stdin(args.messages);
            let stdout = std::io::stdout();
            until_interrupted(
                echo::client::send(&config, messages, &mut stdout.lock()),
                &shutdown,
            )
            .await
        }
        Command::Json(JsonCommand::Serve(args)) => {
            let listener = net::bind_tcp(SocketAddr::new(args.bind.bind, args.port))?;
            announce(net::local_addr(&listener)?)?;
            json::server::run(listener, args.max_size, max_connections(), shutdown).await
        }
        Command::Json(JsonCommand::Send(args)) => {
            let config = json::client::Config {
                host: args.host,
                port: args.port,
                wait: args.wait,
            };
            let messages = Messages::from_args_or_stdin(args.values);
            let stdout = std::io::stdout();
            until_interrupted(
                json::client::send(&config, messages, &mut stdout.lock()),
                &shutdown,
            )
            .await
        }
        Command::Chat(ChatCommand::Serve(args)) => {
            let listener = net::bind_tcp(SocketAddr::new(args.bind.bind, args.port))?;
            announce(net::local_addr(&listener)?)?;
            let config = chat::server::Config {
                echo_self: args.echo_self,
                max_clients: args.max_clients as usize,
                max_line: args.max_line,
            };
            chat::server::run(listener, config, max_connections(), shutdown).await
        }
        Command::Chat(ChatCommand::Join(args)) => {
            let config = chat::client::Config {
                host: args.host,
                port: args.port,
                name: args.name,
                connect_timeout: args.wait,
            };
            let messages = Messages::from_args_or_stdin(Vec::new());
            let stdout = std::io::stdout();
            until_interrupted(
                chat::client::join(&config, messages, &mut stdout.lock()),
                &shutdown,
            )
            .await
        }
        Command::Broadcast(BroadcastCommand::Send(args)) => {
            let config = lan::broadcast::SendConfig {
                message: args.message.into_bytes(),
                port: args.port,
                interval: args.interval,
                count: args.count,
                to: args.to,
            };
            lan::broadcast::send(&config, &mut std::io::stdout().lock(), &shutdown).await
        }
        Command::Broadcast(BroadcastCommand::Listen(args)) => {
            let addr = SocketAddr::new(args.bind.bind, args.port);
            let socket = net::bind_udp_broadcast(addr, true)?;
            announce(local_udp(&socket)?)?;
            let config = lan::broadcast::ListenConfig {
                count: args.count,
                json: args.json,
            };
            lan::broadcast::listen(socket, config, &mut std::io::stdout().lock(), &shutdown).await
        }
        Command::Discover(args) => {
            let config = lan::discover::Config {
                port: args.port,
                window: args.wait,
                json: args.json,
                watch: args.watch,
                to: args.to,
            };
            lan::discover::discover(&config, &mut std::io::stdout().lock(), &shutdown).await
        }
        Command::Respond(args) => {
            let v4 = net::bind_udp_broadcast(SocketAddr::new(args.bind.bind, args.port), false)?;
            let local = local_udp(&v4)?;
            // IPv6 on the same port, unless the user bound one address.
            let v6 = if args.bind.bind.is_unspecified() && args.bind.bind.is_ipv4() {
                let addr = SocketAddr::new(std::net::Ipv6Addr::UNSPECIFIED.into(), local.port());
                match net::bind_udp_broadcast(addr, false) {
                    Ok(v6) => {
                        let joined = lan::respond::join_group(&v6);
                        tracing::info!(
                            "IPv6: joined {} on {joined} interfaces",
                            lan::protocol::GROUP_V6
                        );
                        Some(v6)
                    }
                    Err(e) => {
                        tracing::warn!("answering over IPv4 only: {e}");
                        None
                    }
                }
            } else {
                None
            };
            let host = lan::protocol::clip_name(&net::host_name());
            let config = lan::respond::Config {
                name: args.name.unwrap_or_else(|| host.clone()),
                host,
                limits: lan::protocol::Limits::default(),
            };
            announce(local)?;
            lan::respond::run(v4, v6, config, std::io::stdout(), shutdown).await;
            Ok(())
        }
        Command::Ping(args) => {
            let config = ping::client::Config {
                host: args.host,
                port: args.port,
                count: args.count,
                interval: args.interval,
                wait: args.wait,
                deadline: args.deadline,
                size: args.size as usize,
                json: args.json,
                quiet: args.quiet,
                tcp: args.tcp,
            };
            // Ctrl-C ends the run with its summary, so the client watches
            // the token itself instead of being cancelled.
            ping::client::ping(config, shutdown, std::io::stdout()).await
        }
        Command::File(FileCommand::Receive(args)) => {
            let dir = transfer::server::prepare_dir(&args.dir)?;
            let listener = net::bind_tcp(SocketAddr::new(args.bind.bind, args.port))?;
            announce(net::local_addr(&listener)?)?;
            let config = transfer::server::Config {
                dir,
                overwrite: args.overwrite,
                once: args.once,
            };
            transfer::server::run(listener, config, shutdown).await
        }
        Command::File(FileCommand::Send(args)) => {
            let config = transfer::client::Config {
                host: args.host,
                port: args.port,
                paths: args.paths,
                json: args.json,
                wait: args.wait,
            };
            until_interrupted(transfer::client::send(config), &shutdown).await
        }
    }
}

/// The address a UDP socket is bound to.
fn local_udp(socket: &tokio::net::UdpSocket) -> Result<SocketAddr> {
    socket
        .local_addr()
        .map_err(|e| Error::io("cannot read the listening address", e))
}

/// Runs a client until it finishes or the user interrupts it (a client
/// waiting on stdin or on a reply must still stop on Ctrl-C).
async fn until_interrupted(
    client: impl std::future::Future<Output = Result<()>>,
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

/// How many connections a server may hold: the open-file limit (raised to
/// its hard maximum) less a reserve.
fn max_connections() -> usize {
    let limit = net::raise_fd_limit();
    limit.saturating_sub(FD_RESERVE).max(16) as usize
}
