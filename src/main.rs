//! The `swarmq` binary: parses flags, loads settings, runs the app until a signal.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use swarmq::settings::DEFAULT_CONFIG;
use swarmq::{App, Settings, Sources};
use tokio_util::sync::CancellationToken;

mod cli;

// mimalloc: the broker allocates and frees many small buffers per message, and
// glibc malloc took about a tenth of its CPU time in the word-count profile.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit status for a bad configuration (EX_USAGE).
const EXIT_USAGE: u8 = 64;

#[derive(Parser)]
#[command(name = "swarmq", version, about = "MQTT-bridged IoT task broker")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the broker: MQTT, task queues, the dashboard and API, /healthz and /metrics.
    Serve(ServeArgs),
    /// Print the built-in default configuration, with comments.
    PrintDefaultConfig,
    /// Exit 0 if the broker at URL answers /healthz with 200, 1 otherwise
    /// (for container health checks, where no curl is installed).
    Healthcheck {
        /// Address of the HTTP endpoint.
        #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
        http: String,
    },
    /// Read a password from stdin (one line) and print its argon2 hash, for
    /// `password_hash` of an [[auth.users]] or [[auth.identities]] entry.
    HashPassword,
    /// Manage identities: who may connect, and what each may do.
    #[command(subcommand)]
    Identity(IdentityCommand),
    /// Submit a task and print its id, or with --wait its result.
    Call(cli::CallArgs),
    /// List queues, workers or recent tasks as a table.
    Inspect(cli::InspectArgs),
    /// Remove every waiting task of a queue.
    Purge(cli::PurgeArgs),
    /// Revoke a task or a workflow, wherever it stands.
    Revoke(cli::RevokeArgs),
    /// Follow task events live, one line each.
    Tail(cli::TailArgs),
}

#[derive(Subcommand)]
enum IdentityCommand {
    /// Create an identity; its new token is the last line of standard output.
    Add {
        /// Name: the MQTT username, and the client id or its prefix (`NAME:…`).
        name: String,
        /// device, worker, app or admin.
        #[arg(long)]
        role: String,
        /// A queue it may use (a name or `prefix*`); repeat for more; default all.
        #[arg(long = "queue", value_name = "Q")]
        queues: Vec<String>,
        /// Also give it a password, read from standard input (one line): for
        /// people logging into the dashboard.
        #[arg(long)]
        password_stdin: bool,
        /// Most connections at once.
        #[arg(long, value_name = "N")]
        max_connections: Option<u32>,
        /// Most messages it may publish per second.
        #[arg(long, value_name = "N")]
        publish_rate: Option<f64>,
        #[command(flatten)]
        place: Place,
    },
    /// List every identity (declared in the configuration or in the data directory).
    List {
        #[command(flatten)]
        place: Place,
    },
    /// Revoke an identity: it can no longer connect, its connections are closed.
    Revoke {
        /// Its name.
        name: String,
        #[command(flatten)]
        place: Place,
    },
    /// Give an identity a new token (printed last); the old one stops working.
    Rotate {
        /// Its name.
        name: String,
        #[command(flatten)]
        place: Place,
    },
    /// Print a new token and, on the line before it, its hash, for
    /// `token_hash` of an [[auth.identities]] entry.
    HashToken,
    /// Print a docker-compose env file with a new token for each identity
    /// docker-compose.yml declares: `swarmq identity compose-env > .env`.
    ComposeEnv,
}

/// Where the identities are: the data directory, given or from a configuration.
#[derive(clap::Args)]
struct Place {
    /// The broker's data directory (store.data_dir).
    #[arg(long, value_name = "DIR", conflicts_with = "config")]
    data_dir: Option<PathBuf>,
    /// The broker's configuration file, for its data directory and declared identities.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// MQTT listen address (mqtt.listen), e.g. 0.0.0.0:1883; port 0 picks one.
    #[arg(long, value_name = "ADDR")]
    mqtt_listen: Option<String>,
    /// HTTP listen address (http.listen).
    #[arg(long, value_name = "ADDR")]
    http_listen: Option<String>,
    /// Data directory of the queue store (store.data_dir).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// A TOML file layered over the defaults.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::PrintDefaultConfig => {
            print!("{DEFAULT_CONFIG}");
            ExitCode::SUCCESS
        }
        Command::Serve(args) => serve(args),
        Command::Healthcheck { http } => healthcheck(&http),
        Command::HashPassword => hash_password(),
        Command::Identity(cmd) => identity(cmd),
        Command::Call(args) => cli::run(cli::call(args)),
        Command::Inspect(args) => cli::run(cli::inspect(args)),
        Command::Purge(args) => cli::run(cli::purge(args)),
        Command::Revoke(args) => cli::run(cli::revoke(args)),
        Command::Tail(args) => cli::run(cli::tail(args)),
    }
}

fn identity(cmd: IdentityCommand) -> ExitCode {
    match run_identity(cmd) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("swarmq: {e:#}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// The settings an identity command works with.
fn place_settings(place: Place) -> anyhow::Result<Settings> {
    let mut sources = Sources::from_process_env();
    sources.file = place.config;
    if let Some(dir) = place.data_dir {
        sources
            .overrides
            .push(("store.data_dir".into(), dir.display().to_string()));
    }
    Ok(Settings::load(&sources)?)
}

fn run_identity(cmd: IdentityCommand) -> anyhow::Result<()> {
    use swarmq::access::registry::NewIdentity;
    use swarmq::access::{Access, IdentityFile, IdentityRole, Origin};
    let now_us = swarmq::engine::now_us();
    let declared =
        |settings: &Settings, name: &str| settings.auth.identities.iter().any(|i| i.name == name);
    match cmd {
        IdentityCommand::Add {
            name,
            role,
            queues,
            password_stdin,
            max_connections,
            publish_rate,
            place,
        } => {
            let settings = place_settings(place)?;
            let role = IdentityRole::parse(&role).ok_or_else(|| {
                anyhow::anyhow!("unknown role `{role}`: device, worker, app or admin")
            })?;
            if declared(&settings, &name) {
                anyhow::bail!("identity `{name}` is declared in the configuration");
            }
            let password = if password_stdin {
                let mut line = String::new();
                std::io::stdin().read_line(&mut line)?;
                Some(line.trim_end_matches(['\r', '\n']).to_string())
            } else {
                None
            };
            let file = IdentityFile::in_dir(settings.data_dir());
            let token = file.add(
                NewIdentity {
                    name: name.clone(),
                    role,
                    queues: queues.clone(),
                    password,
                    max_connections,
                    publish_rate,
                },
                now_us,
            )?;
            let queues = if queues.is_empty() {
                "all queues".to_string()
            } else {
                format!("queues {}", queues.join(", "))
            };
            println!(
                "added `{name}` ({}, {queues}) to {}",
                role.as_str(),
                file.path().display()
            );
            println!("its token, shown only now (the broker keeps a hash):");
            println!("{token}");
        }
        IdentityCommand::List { place } => {
            let settings = place_settings(place)?;
            let access = Access::new(&settings.auth, settings.data_dir())?;
            let directory = access.directory();
            println!(
                "{:<24} {:<7} {:<9} {:<8} {:<20} queues",
                "name", "role", "origin", "status", "created"
            );
            for i in directory.all() {
                let created = if i.created_at_us == 0 {
                    "-".to_string()
                } else {
                    chrono::DateTime::from_timestamp_micros(
                        i64::try_from(i.created_at_us).unwrap_or(i64::MAX),
                    )
                    .map_or_else(
                        || "-".to_string(),
                        |t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
                    )
                };
                println!(
                    "{:<24} {:<7} {:<9} {:<8} {:<20} {}",
                    i.name,
                    i.role.as_str(),
                    match i.origin {
                        Origin::Config => "config",
                        Origin::Registry => "data-dir",
                    },
                    if i.is_revoked() { "revoked" } else { "active" },
                    created,
                    if i.queues.is_empty() {
                        "*".to_string()
                    } else {
                        i.queues.join(",")
                    }
                );
            }
        }
        IdentityCommand::Revoke { name, place } => {
            let settings = place_settings(place)?;
            if declared(&settings, &name) {
                anyhow::bail!(
                    "identity `{name}` is declared in the configuration: remove it there"
                );
            }
            IdentityFile::in_dir(settings.data_dir()).revoke(&name, now_us)?;
            println!("revoked `{name}`; a running broker closes its connections within a second");
        }
        IdentityCommand::Rotate { name, place } => {
            let settings = place_settings(place)?;
            if declared(&settings, &name) {
                anyhow::bail!(
                    "identity `{name}` is declared in the configuration: change its token there"
                );
            }
            let token = IdentityFile::in_dir(settings.data_dir()).rotate(&name)?;
            println!("new token for `{name}`, shown only now; the old one no longer works:");
            println!("{token}");
        }
        IdentityCommand::ComposeEnv => {
            println!("# Tokens of docker-compose.yml's identities (config/docker-compose.toml).");
            println!(
                "# Keep this file secret; `swarmq identity compose-env > .env` makes a new one."
            );
            for role in ["ADMIN", "PRODUCER", "WORKER", "DEVICE"] {
                println!(
                    "SWARMQ_{role}_TOKEN={}",
                    swarmq::access::identity::new_token()?
                );
            }
        }
        IdentityCommand::HashToken => {
            let token = swarmq::access::identity::new_token()?;
            let hash = swarmq::access::TokenHash::new(&token)?;
            println!("{}", hash.as_str());
            println!("{token}");
        }
    }
    Ok(())
}

fn hash_password() -> ExitCode {
    let mut line = String::new();
    if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        eprint!("password (echoed): ");
    }
    if let Err(e) = std::io::stdin().read_line(&mut line) {
        eprintln!("swarmq: cannot read the password: {e}");
        return ExitCode::FAILURE;
    }
    let password = line.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        eprintln!("swarmq: the password is empty");
        return ExitCode::from(EXIT_USAGE);
    }
    match swarmq::http::hash_password(password) {
        Ok(hash) => {
            println!("{hash}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("swarmq: cannot hash the password: {e}");
            ExitCode::FAILURE
        }
    }
}

fn healthcheck(addr: &str) -> ExitCode {
    use std::io::{Read, Write};
    use std::net::{TcpStream, ToSocketAddrs};
    use std::time::Duration;
    let check = || -> std::io::Result<bool> {
        let addr = addr
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| std::io::Error::other("no address"))?;
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: swarmq\r\nConnection: close\r\n\r\n")?;
        let mut head = [0u8; 12];
        s.read_exact(&mut head)?;
        Ok(head.starts_with(b"HTTP/1.1 200"))
    };
    match check() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("swarmq: {addr}/healthz is not healthy");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("swarmq: cannot reach {addr}/healthz: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SWARMQ_LOG").unwrap_or_else(|_| {
                "info,rmqtt=warn,rmqtt_net=warn,rmqtt_retainer=warn,fjall=warn,lsm_tree=warn".into()
            }),
        )
        .init();

    raise_fd_limit();
    let mut sources = Sources::from_process_env();
    sources.file = args.config;
    if let Some(v) = args.mqtt_listen {
        sources.overrides.push(("mqtt.listen".into(), v));
    }
    if let Some(v) = args.http_listen {
        sources.overrides.push(("http.listen".into(), v));
    }
    if let Some(v) = args.data_dir {
        sources
            .overrides
            .push(("store.data_dir".into(), v.display().to_string()));
    }
    let settings = match Settings::load(&sources) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("swarmq: {:#}", anyhow::Error::from(e));
            return ExitCode::from(EXIT_USAGE);
        }
    };

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("swarmq: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("swarmq: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Raises the soft limit on open files to the hard limit and logs both: MQTT
/// and HTTP connections share it, and distributions' soft default (1,024)
/// is far below what one broker serves.
fn raise_fd_limit() {
    let before = rlimit::Resource::NOFILE.get().ok();
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(soft) => {
            let hard = before.map_or(soft, |(_, h)| h);
            tracing::info!(
                soft_before = before.map_or(0, |(s, _)| s),
                soft = soft,
                hard = hard,
                "open file limit"
            );
        }
        Err(e) => tracing::warn!(error = %e, "cannot raise the open file limit"),
    }
}

async fn run(settings: Settings) -> anyhow::Result<()> {
    let app = App::build(settings).await.context("cannot start swarmq")?;
    match app.mqtt_tls_addr() {
        Some(tls) => {
            tracing::info!(mqtt = %app.mqtt_addr(), mqtts = %tls, http = %app.http_addr(), "listening");
        }
        None => tracing::info!(mqtt = %app.mqtt_addr(), http = %app.http_addr(), "listening"),
    }
    let token = CancellationToken::new();
    tokio::spawn(swarmq::shutdown::cancel_on_signal(token.clone()));
    app.run(token).await;
    Ok(())
}
