//! The command line: every flag defined once, with its help and default,
//! and checked by clap before any socket is opened (a bad value is a
//! usage error, exit 2). [`crate::commands`] turns the parsed values into
//! each service's config.

use std::net::IpAddr;
use std::time::Duration;

use clap::{ArgAction, Args, Parser, Subcommand};

use sockit::echo::Reply;
use sockit::json::DEFAULT_MAX_SIZE;

/// The version `--version` prints: the package's, and the commit it was
/// built from where that was known (see build.rs).
const VERSION: &str = env!("SOCKIT_VERSION");

/// sockit: the socket toolkit for the course's programs, and for real use.
#[derive(Debug, Parser)]
#[command(name = "sockit", version = VERSION, propagate_version = true)]
#[command(
    about = "One fast, robust binary for everyday socket jobs: echo, chat, JSON over TCP, \
        LAN broadcast and discovery, ping, file transfer",
    long_about = "One fast, robust binary for everyday socket jobs: echo, chat, JSON over TCP, \
        LAN broadcast and discovery, ping, file transfer.\n\n\
        Every server prints `listening on ADDR:PORT` as its first line of standard output \
        (`-p 0` picks a free port). Data goes to stdout, diagnostics to stderr; errors read \
        `sockit: error: <what> (<cause>)` and exit 1, usage errors exit 2."
)]
pub struct Cli {
    /// More diagnostics on stderr: -v info, -vv debug, -vvv trace (RUST_LOG overrides)
    #[arg(short, long, action = ArgAction::Count, global = true,
          help_heading = "Global options")]
    pub verbose: u8,

    /// Fewer diagnostics on stderr: -q errors only, -qq nothing
    #[arg(short, long, action = ArgAction::Count, global = true, conflicts_with = "verbose",
          help_heading = "Global options")]
    pub quiet: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Echo over UDP and TCP: a server that replies as is, upper-cased or with fixed text, and a client
    #[command(subcommand)]
    Echo(EchoCommand),
    /// JSON values over TCP: a server that answers each value as one compact line, and a client
    #[command(subcommand)]
    Json(JsonCommand),
    /// A chat room over TCP for thousands, with nicks and commands, and a client to join one
    #[command(subcommand)]
    Chat(ChatCommand),
    /// UDP broadcast on every LAN this host is on: announce and listen
    #[command(subcommand)]
    Broadcast(BroadcastCommand),
    /// Find the devices on the LAN that run `sockit respond` (or the course's callee.py)
    #[command(
        long_about = "Find the devices on the LAN that run `sockit respond` (or the \
        course's callee.py): a probe goes to the broadcast address of every IPv4 interface and \
        to an IPv6 link-local multicast group on every interface, three times within the \
        window; every device that answers is listed once, with its name, host name and \
        round-trip time (the responder's deliberate reply delay subtracted). Exit 1 if \
        nothing answered."
    )]
    Discover(Discover),
    /// Answer discovery probes, so `sockit discover` (or the course's caller.py) finds this host
    #[command(
        long_about = "Answer discovery probes, so `sockit discover` (or the course's \
        caller.py) finds this host. Listens on IPv4 (broadcasts) and IPv6 (a link-local \
        multicast group joined on every interface). A reply is never more than 3 times \
        the size of the datagram that caused it, is sent after a random 0-50 ms delay, and \
        each source address gets at most 5 at once and 2 a second (200 a second in all), \
        so a responder cannot be used to flood anyone."
    )]
    Respond(Respond),
    /// Round-trip times to any UDP echo server (or over TCP), printed as ping prints them
    #[command(
        long_about = "Send numbered, timestamped probes to a UDP echo server (sockit's, socat's, \
        the course's upper-casing UDPServer.py) and print each reply's round-trip time, then \
        iputils ping's summary plus percentiles.\n\n\
        A reply is matched to its probe by run id, sequence number and send time. A reply \
        after -W seconds is reported as late and not counted as received; further copies of \
        a reply are duplicates, counted on their own (loss never goes negative); replies to \
        someone else's probes are ignored. Probes still within -W when the run is cut short \
        (Ctrl-C, -w) are shown as in flight, not lost. Ctrl-C prints the summary. Exit 0 if any probe \
        was answered in time, 1 otherwise. -q (global) prints only the summary."
    )]
    Ping(Ping),
    /// Send and receive files and directories: verified, resumable, each file appearing whole
    #[command(subcommand)]
    File(FileCommand),
    /// Print a shell completion script for sockit (bash, zsh, fish, elvish, powershell)
    #[command(
        long_about = "Print a shell completion script for sockit to stdout, generated from \
        the same command-line definition as this help. For example:\n\n  \
        sockit completions bash > ~/.local/share/bash-completion/completions/sockit\n  \
        sockit completions zsh > ~/.zfunc/_sockit\n  \
        sockit completions fish > ~/.config/fish/completions/sockit.fish"
    )]
    Completions(Completions),
    /// Print this machine's identity (what `--tls` servers show and clients `--pin`)
    #[command(
        long_about = "Print the identity a `--tls` server started here would show \
        (SKT- and 56 letters and digits: a hash of its public key, with check characters), \
        making the key first if there is none. Clients check a server with `--pin ID`."
    )]
    Id(IdArgs),
    /// Print sockit's manual page (roff) to stdout: `sockit man | man -l -`
    Man,
}

#[derive(Debug, Args)]
pub struct IdArgs {
    /// The identity file [default: $XDG_DATA_HOME/sockit/identity.pem, or
    /// ~/.local/share/sockit/identity.pem]
    #[arg(long, value_name = "FILE")]
    pub identity: Option<std::path::PathBuf>,
}

#[derive(Debug, Args)]
pub struct Completions {
    /// The shell to complete for
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Subcommand)]
pub enum BroadcastCommand {
    /// Send a datagram to every interface's broadcast address, once per interval
    #[command(
        long_about = "Send a datagram to the directed broadcast address of every up, \
        broadcast-capable IPv4 interface (so every LAN this host is on hears it, not only the \
        one the default route uses), once per interval; a line per datagram sent."
    )]
    Send(BroadcastSend),
    /// Print every datagram that arrives on the port, with its sender
    Listen(BroadcastListen),
}

#[derive(Debug, Args)]
pub struct BroadcastSend {
    /// The text to send
    #[arg(default_value = "broadcast message")]
    pub message: String,

    /// Destination port
    #[arg(short, long, default_value_t = 37020,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub port: u16,

    /// Seconds between rounds
    #[arg(short, long, value_name = "SECS", default_value = "1", value_parser = seconds)]
    pub interval: Duration,

    /// Rounds to send (0 = until stopped)
    #[arg(short, long, default_value_t = 0)]
    pub count: u64,

    /// Send to ADDR only (255.255.255.255, a directed broadcast or a unicast address)
    #[arg(long, value_name = "ADDR")]
    pub to: Option<IpAddr>,
}

#[derive(Debug, Args)]
pub struct BroadcastListen {
    #[command(flatten)]
    pub bind: Bind,

    /// Port to listen on (shared: other listeners on this host hear every datagram too)
    #[arg(short, long, default_value_t = 37020)]
    pub port: u16,

    /// Exit after COUNT datagrams (0 = until stopped)
    #[arg(short, long, default_value_t = 0)]
    pub count: u64,

    /// One JSON object per datagram: from, bytes, text
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct Discover {
    /// The port responders listen on
    #[arg(short, long, default_value_t = 37021,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub port: u16,

    /// Seconds to wait for answers (per window with --watch)
    #[arg(short, long, value_name = "SECS", default_value = "2", value_parser = seconds)]
    pub wait: Duration,

    /// One JSON object per device
    #[arg(long)]
    pub json: bool,

    /// Keep probing, one window after another; print devices as they appear and go
    #[arg(long)]
    pub watch: bool,

    /// Probe ADDR only (a host, or the broadcast address of one subnet)
    #[arg(long, value_name = "ADDR")]
    pub to: Option<IpAddr>,
}

#[derive(Debug, Args)]
pub struct Respond {
    #[command(flatten)]
    pub bind: Bind,

    /// Port to answer on (IPv4 and IPv6)
    #[arg(short, long, default_value_t = 37021)]
    pub port: u16,

    /// The name `discover` shows (default: the host name; at most 64 bytes)
    #[arg(short, long, value_name = "NAME", value_parser = device_name)]
    pub name: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum FileCommand {
    /// Receive files into a directory
    #[command(
        long_about = "Receive files and directories from `sockit file send` into DIR.\n\n\
        Each file is received under a temporary name in DIR, verified end to end with BLAKE3, \
        synced to disk and only then given its final name: a file under its final name is always \
        complete and correct. Nothing is ever written outside DIR: absolute paths, `..`, \
        symlinks and device names are refused and the sender is told why. An interrupted \
        transfer resumes from the part already received when the same file is sent again."
    )]
    Receive(FileReceive),
    /// Send files and directories (recursively) to a receiver
    #[command(
        long_about = "Send files and directories (recursively, empty directories \
        included) to `sockit file receive`. A directory is sent under its own name, a file \
        under its name without the leading path. Shows a progress bar on stderr when it is a \
        terminal and prints a summary (files, bytes, seconds, MB/s); exits 1 if any file \
        failed, with the reason for each."
    )]
    Send(FileSend),
}

#[derive(Debug, Args)]
pub struct FileReceive {
    #[command(flatten)]
    pub bind: Bind,

    /// Port to listen on (0 = any free port)
    #[arg(short, long, default_value_t = 9009)]
    pub port: u16,

    /// Directory to receive into (created if missing)
    #[arg(short, long, value_name = "DIR", default_value = ".")]
    pub dir: std::path::PathBuf,

    /// Exit after the first transfer (exit 1 if any of its files failed)
    #[arg(long)]
    pub once: bool,

    /// Replace files that already exist (atomically; never through a symlink)
    #[arg(long)]
    pub overwrite: bool,

    /// A sender that sends nothing for this long mid-transfer is told so and
    /// closed (its partial file is kept for a resume)
    #[arg(long, value_name = "SECS", default_value = "60", value_parser = seconds)]
    pub idle_timeout: Duration,

    /// Partial files of interrupted transfers are kept this long for a
    /// resume, then removed (checked at start and hourly; 0 = at once)
    #[arg(long, value_name = "DAYS", default_value = "7", value_parser = days)]
    pub keep_partial: Duration,

    /// Most space partial files may take in all (suffixes K, M, G, T);
    /// beyond it the oldest are removed
    #[arg(long, value_name = "SIZE", default_value = "4G", value_parser = disk_size)]
    pub max_partial: u64,

    #[command(flatten)]
    pub tls: TlsServe,
}

#[derive(Debug, Args)]
pub struct FileSend {
    #[command(flatten)]
    pub target: Target,

    /// Files and directories to send
    #[arg(value_name = "PATH", required = true)]
    pub paths: Vec<std::path::PathBuf>,

    /// Print one JSON object per entry and a summary object, instead of the summary line
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub tls: TlsConnect,
}

#[derive(Debug, Subcommand)]
pub enum ChatCommand {
    /// Host a chat room
    #[command(
        long_about = "Host a chat room: one message per line (or per pause, for clients \
        that send no newline), relayed to everyone else as `[nick] text`.\n\n\
        Clients start as guestN and can use /nick NAME, /who, /me ACTION, /msg NICK TEXT, \
        /help and /quit (or a bare `bye`); a client that puts `[NAME] ` before its first \
        message (as the course's client does) gets NAME as its nick. Joins and leaves are announced one by one in rooms of up to 100 people; in \
        larger rooms they are summed up once a second, so a crowd connecting at once does not \
        flood everyone, and what the room says is sent out in batches every 20 to 50 ms \
        (longer for larger rooms), one write per client per batch.\n\n\
        Flow control: no client that reads loses a line. The room runs at most 1 MiB ahead \
        of its slowest reader; a sender that would push it further is simply read more \
        slowly (TCP pushes back on it), and so is one over the --flood rule. A client whose \
        socket is full and that does not catch up within --stall-timeout is cut off, and \
        the room is told `* NICK was cut off (not reading)`."
    )]
    Serve(ChatServe),
    /// Join a chat room: print what arrives, send each stdin line
    Join(ChatJoin),
}

#[derive(Debug, Subcommand)]
pub enum EchoCommand {
    /// Serve echo on UDP and TCP (one port for both)
    Serve(EchoServe),
    /// Send messages to an echo server and print each reply
    Send(EchoSend),
}

#[derive(Debug, Subcommand)]
pub enum JsonCommand {
    /// Answer every JSON value with the same value as one compact line
    Serve(JsonServe),
    /// Send JSON values and print each reply on its own line
    Send(JsonSend),
}

/// Where a client connects: the same three arguments for every TCP client
/// command. (`ping` keeps iputils' meanings instead: a default port, `-W`
/// for the reply wait and `-w` for the whole run.)
#[derive(Debug, Args)]
pub struct Target {
    /// Server host name or address
    pub host: String,

    /// Server port
    #[arg(value_parser = clap::value_parser!(u16).range(1..))]
    pub port: u16,

    /// Seconds to wait for the connection, and for each reply or greeting the command expects
    #[arg(short, long, value_name = "SECS", default_value = "5", value_parser = seconds)]
    pub wait: Duration,
}

/// TLS on a TCP client, and how the server is checked.
#[derive(Debug, Args)]
pub struct TlsConnect {
    /// Connect in TLS; the server is checked by --pin, --ca, or else
    /// trusted on first use and remembered (a changed identity is refused)
    #[arg(long)]
    pub tls: bool,

    /// With --tls: the server must have exactly this identity (as its
    /// `identity` line or `sockit id` prints it)
    #[arg(long, value_name = "ID", requires = "tls", conflicts_with = "ca", value_parser = identity_id)]
    pub pin: Option<sockit::identity::Id>,

    /// With --tls: verify the server's certificate and host name against these CA certificates (PEM)
    #[arg(long, value_name = "FILE", requires = "tls")]
    pub ca: Option<std::path::PathBuf>,

    /// With --tls: where first-use trust is kept [default:
    /// $XDG_CONFIG_HOME/sockit/known_hosts, or ~/.config/sockit/known_hosts]
    #[arg(long, value_name = "FILE", requires = "tls")]
    pub known_hosts: Option<std::path::PathBuf>,
}

fn identity_id(s: &str) -> Result<sockit::identity::Id, String> {
    s.parse()
        .map_err(|e: sockit::identity::IdError| e.to_string())
}

/// TLS on a TCP server.
#[derive(Debug, Args)]
pub struct TlsServe {
    /// Take TLS connections (with this machine's identity, printed at
    /// start), and plaintext ones on the same port as before
    #[arg(long)]
    pub tls: bool,

    /// With --tls: refuse plaintext clients (each is told so in one line)
    #[arg(long, requires = "tls")]
    pub tls_only: bool,

    /// The identity file (made on first use, mode 0600) [default:
    /// $XDG_DATA_HOME/sockit/identity.pem, or ~/.local/share/sockit/identity.pem]
    #[arg(long, value_name = "FILE", requires = "tls", conflicts_with_all = ["cert", "key"])]
    pub identity: Option<std::path::PathBuf>,

    /// A certificate (chain, PEM) to use instead of the identity file, e.g. one from Let's Encrypt
    #[arg(long, value_name = "FILE", requires_all = ["tls", "key"])]
    pub cert: Option<std::path::PathBuf>,

    /// The private key (PEM) of --cert
    #[arg(long, value_name = "FILE", requires_all = ["tls", "cert"])]
    pub key: Option<std::path::PathBuf>,
}

/// Where a server listens.
#[derive(Debug, Args)]
pub struct Bind {
    /// Address to listen on (`::` serves IPv6 and IPv4)
    #[arg(short, long, value_name = "ADDR", default_value = "0.0.0.0")]
    pub bind: IpAddr,

    /// Serve only peers in this block (repeatable, IPv4 or IPv6: 10.0.0.0/8,
    /// fd00::/8, 127.0.0.1); with any --allow, everyone else is refused
    #[arg(long, value_name = "CIDR")]
    pub allow: Vec<sockit::access::Cidr>,

    /// Refuse peers in this block (repeatable; wins over --allow)
    #[arg(long, value_name = "CIDR")]
    pub deny: Vec<sockit::access::Cidr>,
}

impl Bind {
    /// The rules `--allow` and `--deny` make.
    pub fn access(&self) -> std::sync::Arc<sockit::access::Access> {
        std::sync::Arc::new(sockit::access::Access::new(
            self.allow.clone(),
            self.deny.clone(),
        ))
    }
}

#[derive(Debug, Args)]
pub struct EchoServe {
    #[command(flatten)]
    pub bind: Bind,

    /// TLS on the TCP side (UDP stays plain)
    #[command(flatten)]
    pub tls: TlsServe,

    /// Port to listen on, for UDP and TCP (0 = any free port)
    #[arg(short, long, default_value_t = 12000)]
    pub port: u16,

    /// Serve UDP only
    #[arg(long, conflicts_with_all = ["tcp", "tls"])]
    pub udp: bool,

    /// Serve TCP only
    #[arg(long)]
    pub tcp: bool,

    /// Answer in upper case (Unicode-aware; other bytes unchanged)
    #[arg(long, conflicts_with = "reply")]
    pub upper: bool,

    /// Answer every datagram, line or newline-less chunk with TEXT instead
    #[arg(long, value_name = "TEXT", value_parser = reply_text)]
    pub reply: Option<String>,

    /// Silently drop each UDP datagram with probability P (0 to 1)
    #[arg(long, value_name = "P", default_value_t = 0.0, value_parser = probability)]
    pub drop: f64,

    /// Seed for --drop's pattern, to repeat a lossy run exactly [default: random]
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,

    /// Delay every reply by MS milliseconds
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub delay: u64,
}

impl EchoServe {
    /// The answer policy these flags ask for.
    pub fn reply(&self) -> Reply {
        match (&self.reply, self.upper) {
            (Some(text), _) => Reply::Fixed(text.clone().into_bytes().into()),
            (None, true) => Reply::Upper,
            (None, false) => Reply::Echo,
        }
    }
}

#[derive(Debug, Args)]
pub struct EchoSend {
    #[command(flatten)]
    pub target: Target,

    #[command(flatten)]
    pub tls: TlsConnect,

    /// Messages to send, one reply each [default: one per line of stdin]
    #[arg(value_name = "MESSAGE")]
    pub messages: Vec<String>,

    /// Use UDP (one datagram per message) instead of TCP
    #[arg(short, long, conflicts_with = "tls")]
    pub udp: bool,

    /// Print one JSON object per reply: {"message", "reply", "rtt_ms"}
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct JsonServe {
    #[command(flatten)]
    pub bind: Bind,

    #[command(flatten)]
    pub tls: TlsServe,

    /// Port to listen on (0 = any free port)
    #[arg(short, long, default_value_t = 9000)]
    pub port: u16,

    /// Largest value accepted, in bytes (suffixes K, M: 1024-based)
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_SIZE, value_parser = size)]
    pub max_size: usize,
}

#[derive(Debug, Args)]
pub struct JsonSend {
    #[command(flatten)]
    pub target: Target,

    #[command(flatten)]
    pub tls: TlsConnect,

    /// JSON values to send [default: NDJSON, one value per line of stdin]
    #[arg(value_name = "VALUE", value_parser = json_value)]
    pub values: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ChatServe {
    #[command(flatten)]
    pub bind: Bind,

    #[command(flatten)]
    pub tls: TlsServe,

    /// Port to listen on (0 = any free port)
    #[arg(short, long, default_value_t = 9999)]
    pub port: u16,

    /// Relay each message to its sender too (as the course's first chat server did)
    #[arg(long)]
    pub echo_self: bool,

    /// Most clients on the server; one more is told `* error: server full`
    #[arg(long, value_name = "N", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_clients: u32,

    /// Longest line a client may send (suffixes K, M); longer ones are refused
    #[arg(long, value_name = "BYTES", default_value_t = sockit::chat::DEFAULT_MAX_LINE,
          value_parser = size)]
    pub max_line: usize,

    /// Lines a second one client may send, after a burst of --flood-burst
    /// (0 = no limit). Beyond it the client is throttled: the server reads
    /// its next line later, nothing is lost and nobody is disconnected
    #[arg(long, value_name = "LINES_PER_S",
          default_value_t = sockit::chat::server::DEFAULT_FLOOD.rate)]
    pub flood: u32,

    /// Lines one client may send at once before --flood applies
    #[arg(long, value_name = "LINES",
          default_value_t = sockit::chat::server::DEFAULT_FLOOD.burst,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub flood_burst: u32,

    /// A client whose socket is full and that does not read what the room
    /// said within this time is cut off (`* NICK was cut off (not
    /// reading)`); until then the room waits for it once its 1 MiB window
    /// is full
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = seconds)]
    pub stall_timeout: Duration,

    /// Lines kept per room for /history (and --replay); at most 512 KiB
    /// per room
    #[arg(long, value_name = "LINES",
          default_value_t = sockit::chat::history::DEFAULT_HISTORY)]
    pub history: usize,

    /// Lines of a room's history sent to everyone who enters it (0 = none,
    /// as the course's server did)
    #[arg(long, value_name = "LINES", default_value_t = 0)]
    pub replay: usize,

    /// Share the rooms with every server started with the same Redis:
    /// redis://HOST:PORT[/DB] or unix:///path/redis.sock (it must be
    /// reachable at start)
    #[arg(long, value_name = "URL")]
    pub redis: Option<String>,
}

#[derive(Debug, Args)]
pub struct ChatJoin {
    #[command(flatten)]
    pub target: Target,

    #[command(flatten)]
    pub tls: TlsConnect,

    /// Nick to use (sent as /nick to sockit, as a `[NAME] ` prefix to other servers)
    #[arg(short, long, value_name = "NAME", value_parser = nick)]
    pub name: Option<String>,
}

#[derive(Debug, Args)]
#[command(mut_arg("tls", |a| a.requires("tcp")))]
pub struct Ping {
    /// Server host name or address
    pub host: String,

    /// Server port
    #[arg(default_value_t = 12000, value_parser = clap::value_parser!(u16).range(1..))]
    pub port: u16,

    /// Stop after COUNT probes [default: until Ctrl-C or -w]
    #[arg(short, long, value_name = "COUNT", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,

    /// Seconds between probes; 0 = the next as soon as the last is answered or timed out
    #[arg(short, long, value_name = "SECS", default_value = "1", value_parser = interval)]
    pub interval: Duration,

    /// Seconds a reply may take to count as received; later ones are reported as late
    #[arg(short = 'W', long, value_name = "SECS", default_value = "1", value_parser = seconds)]
    pub wait: Duration,

    /// Stop after SECS seconds in all, whatever -c says
    #[arg(short = 'w', long, value_name = "SECS", value_parser = seconds)]
    pub deadline: Option<Duration>,

    /// Probe size in bytes (at least 56: header and newline)
    #[arg(short, long, value_name = "BYTES", default_value_t = 64,
          value_parser = clap::value_parser!(u64).range(sockit::ping::MIN_SIZE as u64..=sockit::ping::MAX_SIZE as u64))]
    pub size: u64,

    /// Print one JSON object with every figure instead of text
    #[arg(long)]
    pub json: bool,

    /// Probe over one TCP connection to an echo server (also reports the connect time)
    #[arg(long)]
    pub tcp: bool,

    /// TLS for --tcp (an echo server's `--tls`)
    #[command(flatten)]
    pub tls: TlsConnect,
}

/// Like [`seconds`], but 0 is allowed.
fn interval(s: &str) -> Result<Duration, String> {
    if s.parse::<f64>() == Ok(0.0) {
        Ok(Duration::ZERO)
    } else {
        seconds(s)
    }
}

fn nick(s: &str) -> Result<String, String> {
    if sockit::chat::valid_nick(s) {
        Ok(s.to_string())
    } else {
        Err("a nick is 1-32 letters, digits, _ or -".to_string())
    }
}

fn probability(s: &str) -> Result<f64, String> {
    let p: f64 = s.parse().map_err(|_| format!("'{s}' is not a number"))?;
    if (0.0..=1.0).contains(&p) {
        Ok(p)
    } else {
        Err(format!("{p} is not a probability between 0 and 1"))
    }
}

/// A device name travels in every reply: printable, and short enough that
/// a reply fits in three probes.
fn device_name(s: &str) -> Result<String, String> {
    if s.is_empty() || s.len() > sockit::lan::MAX_NAME {
        return Err(format!("a name is 1 to {} bytes", sockit::lan::MAX_NAME));
    }
    if s.chars().any(char::is_control) {
        return Err("a name cannot contain control characters".into());
    }
    Ok(s.to_string())
}

fn seconds(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("'{s}' is not a number of seconds"))?;
    if secs > 0.0 && secs <= 86_400.0 {
        Ok(Duration::from_secs_f64(secs))
    } else {
        Err(format!("{secs} is not between 0 and 86400 seconds"))
    }
}

fn size(s: &str) -> Result<usize, String> {
    let (digits, unit) = match s.to_ascii_uppercase().trim_end_matches(['B', 'I']) {
        t if t.ends_with('K') => (t[..t.len() - 1].to_string(), 1024),
        t if t.ends_with('M') => (t[..t.len() - 1].to_string(), 1024 * 1024),
        t => (t.to_string(), 1),
    };
    let n: usize = digits
        .parse()
        .map_err(|_| format!("'{s}' is not a size in bytes"))?;
    match n.checked_mul(unit) {
        Some(bytes) if bytes > 0 && bytes <= 1 << 30 => Ok(bytes),
        _ => Err(format!("'{s}' is not between 1 byte and 1 GiB")),
    }
}

/// A number of days, 0 allowed (at most ten years).
fn days(s: &str) -> Result<Duration, String> {
    let days: f64 = s
        .parse()
        .map_err(|_| format!("'{s}' is not a number of days"))?;
    if (0.0..=3650.0).contains(&days) {
        Ok(Duration::from_secs_f64(days * 86_400.0))
    } else {
        Err(format!("{days} is not between 0 and 3650 days"))
    }
}

/// A size on disk: bytes, or with K, M, G or T (powers of 1024); 0 allowed.
fn disk_size(s: &str) -> Result<u64, String> {
    let upper = s.to_ascii_uppercase();
    let t = upper.trim_end_matches(['B', 'I']);
    let (digits, shift) = match t.chars().last() {
        Some('K') => (&t[..t.len() - 1], 10),
        Some('M') => (&t[..t.len() - 1], 20),
        Some('G') => (&t[..t.len() - 1], 30),
        Some('T') => (&t[..t.len() - 1], 40),
        _ => (t, 0),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("'{s}' is not a size (bytes, or with K, M, G, T)"))?;
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("'{s}' is too large"))
}

/// A reply must fit in one datagram.
fn reply_text(s: &str) -> Result<String, String> {
    if s.len() <= 65_507 {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{} bytes is longer than one datagram (65507 bytes)",
            s.len()
        ))
    }
}

fn json_value(s: &str) -> Result<String, String> {
    sockit::json::parse_value(s.as_bytes())
        .map(|_| s.to_string())
        .map_err(|e| format!("not valid JSON: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn value_parsers() {
        assert_eq!(probability("0.3"), Ok(0.3));
        assert!(probability("1.5").is_err());
        assert_eq!(seconds("0.5"), Ok(Duration::from_millis(500)));
        assert!(seconds("0").is_err());
        assert_eq!(size("1M"), Ok(1 << 20));
        assert_eq!(size("64KiB"), Ok(64 << 10));
        assert_eq!(size("100"), Ok(100));
        assert!(size("0").is_err());
        assert!(json_value("{\"a\":1}").is_ok());
        assert!(json_value("{a}").is_err());
        assert_eq!(device_name("보드-1"), Ok("보드-1".into()));
        assert!(device_name("").is_err());
        assert!(device_name("a\x1b[2J").is_err());
        assert!(device_name(&"x".repeat(65)).is_err());
        assert_eq!(interval("0"), Ok(Duration::ZERO));
        assert_eq!(interval("0.2"), Ok(Duration::from_millis(200)));
        assert!(interval("-1").is_err());
    }
}
