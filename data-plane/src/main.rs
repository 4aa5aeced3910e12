//! `isame-lb`: parse flags, load the config, serve until a signal, drain, exit.

use clap::Parser;
use isame_data_plane::cli::{Cli, Command, LogFormat, Switch};
use isame_data_plane::server::{Server, ServerOptions};
use isame_data_plane::subscription::{self, Node};
use isame_data_plane::ReloadError;
use std::path::Path;
use std::process::ExitCode;
use tokio::signal::unix::{signal, SignalKind};

/// mimalloc: the request path allocates a few small objects per request
/// (header maps, channels); mimalloc's thread-local free lists make that
/// markedly cheaper than the system allocator (see docs/BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Some(Command::Validate { file }) => validate(file),
        Some(Command::Schema { reference }) => {
            use isame_proto::config::schema;
            if *reference {
                println!("{}", schema::reference::markdown(schema::this_build()));
            } else {
                print!("{}", schema::document_text());
            }
            ExitCode::SUCCESS
        }
        None => {
            let format = match cli.log_format {
                LogFormat::Text => isame_telemetry::LogFormat::Text,
                LogFormat::Json => isame_telemetry::LogFormat::Json,
            };
            let telemetry = match isame_telemetry::init("isame-lb", format) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("isame-lb: {e}");
                    return ExitCode::FAILURE;
                }
            };
            // A log filter that drops access lines (RUST_LOG=warn, or
            // isame::access=off) turns the access log off at the source.
            let access_log = cli.access_log == Switch::On
                && tracing::enabled!(target: "isame::access", tracing::Level::INFO);
            isame_data_plane::configure_logs(
                format,
                telemetry.line_writer(),
                access_log,
                telemetry.tracing(),
            );
            match run(&cli) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("isame-lb: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// `isame-lb validate FILE`: the same checks a reload makes, without serving.
fn validate(file: &Path) -> ExitCode {
    let checked = isame_data_plane::load_file(file).and_then(|config| {
        let summary = format!(
            "{} upstream(s), {} backend(s), {} route(s)",
            config.upstreams.len(),
            config
                .upstreams
                .iter()
                .map(|u| u.backends.len())
                .sum::<usize>(),
            config.routes.len()
        );
        isame_data_plane::check(config)?;
        Ok(summary)
    });
    match checked {
        Ok(summary) => {
            println!("{}: valid ({summary})", file.display());
            ExitCode::SUCCESS
        }
        Err(ReloadError::Invalid(errors)) => {
            eprintln!("{}: {} problem(s)", file.display(), errors.len());
            for e in errors.iter() {
                eprintln!("  {e}");
            }
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn workers(cli: &Cli) -> usize {
    cli.workers.map_or_else(
        || std::thread::available_parallelism().map_or(1, |n| n.get()),
        usize::from,
    )
}

/// `--ca`, `--cert` and `--key`, read.
fn client_tls(cli: &Cli) -> anyhow::Result<Option<subscription::ClientTls>> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", p.display()))
    };
    if cli.ca.is_none() && cli.cert.is_none() {
        return Ok(None);
    }
    Ok(Some(subscription::ClientTls {
        ca_pem: cli.ca.as_deref().map(read).transpose()?,
        identity: match (&cli.cert, &cli.key) {
            (Some(c), Some(k)) => Some((read(c)?, read(k)?)),
            _ => None,
        },
    }))
}

/// `isame-lb --control-plane URL --node-id ID`: follow the control plane.
fn run_subscribed(cli: &Cli, urls: &[String]) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        // Handlers first: a signal that arrives as soon as the node answers
        // must not meet the default action (which kills the process).
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let node = Node::start(subscription::Options {
            control_planes: urls.to_vec(),
            node_id: cli.node_id.clone().unwrap_or_default(),
            token: cli.token.clone(),
            cache_dir: cli.cache_dir.clone(),
            labels: cli.labels.clone(),
            listen: cli.listen,
            https_listen: cli.https_listen,
            admin_listen: cli.admin_listen,
            workers: workers(cli),
            report_interval: cli.report_interval,
            tls: client_tls(cli)?,
        })
        .await?;
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("shutting down: no new connections, finishing requests in flight");
        node.shutdown().await;
        anyhow::Ok(())
    })
}

fn run(cli: &Cli) -> anyhow::Result<()> {
    if !cli.control_plane.is_empty() {
        return run_subscribed(cli, &cli.control_plane);
    }
    let Some(path) = &cli.config else {
        eprintln!("isame-lb: --config FILE or --control-plane URL is required (see --help)");
        std::process::exit(2);
    };
    let config = isame_data_plane::load_file(path)?;
    let workers = workers(cli);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // Handlers first: a signal that arrives as soon as the proxy answers
    // must not meet the default action (SIGHUP's would kill the process).
    let (mut term, mut int, mut hup) = {
        let _rt = rt.enter();
        (
            signal(SignalKind::terminate())?,
            signal(SignalKind::interrupt())?,
            signal(SignalKind::hangup())?,
        )
    };
    let proxy = Server::start(ServerOptions {
        config,
        config_path: Some(path.clone()),
        listen: cli.listen,
        https_listen: cli.https_listen,
        admin_listen: cli.admin_listen,
        workers,
    })?;
    rt.block_on(async {
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = hup.recv() => {
                    tracing::info!("SIGHUP: reloading {}", path.display());
                    let _ = proxy.reload().await;
                }
            }
        }
        tracing::info!("shutting down: no new connections, finishing requests in flight");
        anyhow::Ok(())
    })?;
    proxy.shutdown();
    Ok(())
}
