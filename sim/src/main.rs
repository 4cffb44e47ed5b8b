//! `vast-sim serve --kubeconfig PATH`: runs a simulated cluster until SIGINT/SIGTERM;
//! `vast-sim scale --jobs N`: the sim's memory and create-throughput measurement.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use vast_sim::config::SimConfig;
use vast_sim::server::Sim;

#[derive(Parser)]
#[command(
    name = "vast-sim",
    version,
    about = "A simulated Kubernetes cluster for testing vast"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the simulated cluster and write a kubeconfig (context `vast-sim`).
    Serve(ServeArgs),
    /// Measure the sim: create N Jobs (Kueue, pods running for an hour) in this process and
    /// print the resident memory per Job and the creates per second (a `SCALE ...` line).
    Scale(ScaleArgs),
}

#[derive(clap::Args)]
struct ScaleArgs {
    /// Number of Jobs to create.
    #[arg(long, default_value_t = 10_000)]
    jobs: usize,
    /// Concurrent connections creating them.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Once every pod exists, wait at most this long for them to run before measuring.
    #[arg(long, default_value_t = 60)]
    run_wait_s: u64,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Where to write the kubeconfig.
    #[arg(long)]
    kubeconfig: PathBuf,
    /// YAML config file (see sim/README.md); flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Listen address (default 127.0.0.1:0, a free port).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Number of nodes.
    #[arg(long)]
    nodes: Option<u32>,
    /// Allocatable cpu per node (quantity, e.g. 16 or 7500m).
    #[arg(long)]
    node_cpu: Option<String>,
    /// Allocatable memory per node (quantity, e.g. 64Gi).
    #[arg(long)]
    node_memory: Option<String>,
    /// Run time of a Job's pod in milliseconds.
    #[arg(long)]
    job_duration_ms: Option<u64>,
    /// Delay from binding to Running in milliseconds.
    #[arg(long)]
    pod_start_ms: Option<u64>,
    /// Root of the pods' data directories (default: a temporary directory).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let args = match cli.command {
        Command::Serve(args) => args,
        Command::Scale(a) => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the tokio runtime")?;
            let r = rt.block_on(vast_sim::scale::run(
                a.jobs,
                a.connections,
                std::time::Duration::from_secs(a.run_wait_s),
            ))?;
            println!("{}", r.line());
            return Ok(());
        }
    };
    let mut config = match &args.config {
        Some(p) => SimConfig::from_file(p)?,
        None => SimConfig::default(),
    };
    config.apply_env()?;
    if let Some(v) = args.listen {
        config.listen = v;
    }
    if let Some(v) = args.nodes {
        config.nodes.count = v;
    }
    if let Some(v) = args.node_cpu {
        config.nodes.cpu = v;
    }
    if let Some(v) = args.node_memory {
        config.nodes.memory = v;
    }
    if let Some(v) = args.job_duration_ms {
        config.pods.job_duration_ms = v;
    }
    if let Some(v) = args.pod_start_ms {
        config.pods.start_ms = v;
    }
    if let Some(v) = args.data_dir {
        config.data_dir = Some(v);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    rt.block_on(async move {
        let sim = Sim::start(config).await?;
        sim.write_kubeconfig(&args.kubeconfig)?;
        println!("vast-sim serving the Kubernetes API on {}", sim.url());
        println!(
            "kubeconfig written to {} (context vast-sim)",
            args.kubeconfig.display()
        );
        println!(
            "use it with:  export KUBECONFIG={}  and then e.g.  kubectl get nodes",
            args.kubeconfig.display()
        );
        println!("stop with Ctrl-C");
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("cannot install the SIGTERM handler")?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.context("cannot wait for SIGINT")?,
            _ = term.recv() => {}
        }
        println!("vast-sim shutting down");
        sim.shutdown().await;
        Ok::<(), anyhow::Error>(())
    })
}
