//! `runnel run PIPELINE.sql`: prepare the script, start it (with the HTTP server when
//! asked), wait for it to end or for Ctrl-C, print the summary.

use anyhow::Context;
use runnel_connectors::descriptor::Resource;
use runnel_runtime::{PrepareOptions, Resources, prepare};
use runnel_server::{AdminState, Server, ServerState};

use crate::cli::RunArgs;

/// Plans and runs a pipeline file.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let sql = std::fs::read_to_string(&args.pipeline)
        .with_context(|| format!("cannot read pipeline file {}", args.pipeline.display()))?;
    let file = args.pipeline.display().to_string();
    let mut options = PrepareOptions::new(file.clone(), args.data_dir.clone());
    options.parallelism = args.parallelism;
    options.from_scratch = args.from_scratch;
    let prepared = prepare(&sql, &options).with_context(|| file.clone())?;
    if args.explain {
        if prepared.settings.distributed {
            print!(
                "{}",
                runnel_runtime::distributed::explain(&prepared).with_context(|| file.clone())?
            );
        } else {
            print!("{}", prepared.explain());
        }
        return Ok(());
    }
    if prepared.needs(Resource::ResultsHub) && args.listen.is_none() {
        eprintln!(
            "runnel: note: dashboard tables are shown on the web page only with --listen \
             127.0.0.1:8080"
        );
    }
    let mut resources = Resources::new(&args.data_dir);
    let mut server = None;
    let admin = AdminState::new(resources.hub.clone());
    if prepared.needs(Resource::Log) || args.listen.is_some() {
        let log = resources.open_log().await?;
        if let Some(addr) = &args.listen {
            let s = Server::start(
                addr,
                &args.http.config(),
                ServerState::new(log).with_auto_create(Some(1)),
                admin.clone(),
            )
            .await?;
            crate::cli::announce(
                &s,
                &format!("dashboard and API (log in {})", args.data_dir.display()),
            );
            server = Some(s);
        }
    }
    let result = if prepared.settings.distributed {
        let worker = args
            .worker_id
            .clone()
            .unwrap_or_else(runnel_runtime::distributed::default_worker_id);
        run_member(
            prepared,
            resources.clone(),
            worker,
            &admin,
            shutdown_signal(),
        )
        .await
    } else {
        if args.worker_id.is_some() {
            eprintln!(
                "runnel: note: --worker-id is for distributed pipelines (SET 'execution.mode' \
                 = 'distributed'); this one runs in this process alone"
            );
        }
        run_to_end(prepared, resources.clone(), &admin, shutdown_signal()).await
    };
    if let (Err(e), Some(s)) = (&result, &server) {
        // A failed pipeline does not take the page, the API and the log down with it:
        // they keep serving (and report the failure) until the user stops them.
        eprintln!(
            "runnel: the pipeline failed: {e:#}\nrunnel: the page and API stay up on {} to \
             show it; press Ctrl-C to stop",
            s.url()
        );
        shutdown_signal().await;
    }
    if let Some(server) = server {
        server.stop().await;
    }
    resources.close().await;
    result.with_context(|| format!("running {file}"))
}

/// Starts `prepared`, shows it in `admin`, runs it until it ends or `stop`, and prints the
/// summary on stderr.
pub async fn run_to_end(
    prepared: runnel_runtime::Prepared,
    resources: Resources,
    admin: &AdminState,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let file = prepared.origin().to_string();
    let mut running = prepared
        .start(resources)
        .await
        .with_context(|| format!("starting {file}"))?;
    admin.add_pipeline(running.handle());
    admin.set_ready(true);
    let result = running.run_until(stop).await;
    eprint!("{}", running.summary(false));
    Ok(result?)
}

/// Runs this process's share of a distributed pipeline until Ctrl-C or SIGTERM.
async fn run_member(
    prepared: runnel_runtime::Prepared,
    resources: Resources,
    worker: String,
    admin: &AdminState,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let file = prepared.origin().to_string();
    let mut member = runnel_runtime::distributed::Member::start(prepared, resources, worker)
        .await
        .with_context(|| format!("starting {file}"))?;
    admin.add_pipeline(member.handle());
    admin.set_ready(true);
    let result = member.run_until(stop).await;
    eprint!("{}", member.summary());
    Ok(result?)
}

/// Completes on Ctrl-C or SIGTERM.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    crate::cmd::serve::shutdown_signal()
}
