//! `vast execution cluster upload-to-share`: the share provider and its variables are chosen
//! and checked from `.env` / the environment **before** any cluster access (upstream's
//! messages), then the finished runs are chosen and the `upload-to-share` workflow uploads
//! them from the pod. The provider's values never enter the run's parameters.

use crate::cli::output;
use serde_json::json;

use super::cluster_common::{context_param, resources};
use super::results_common::{choose, connect, list_runs, share_selection, Wording};
use crate::cli::args::UploadToShareArgs;
use crate::cli::execute::start_operation_as;
use crate::cli::{ExitStatus, Globals};
use crate::engine::RunId;
use crate::ops::share::ShareEnv;
use crate::store::StateDir;

pub async fn run(args: UploadToShareArgs, globals: &Globals) -> anyhow::Result<ExitStatus> {
    // The share configuration first: nothing touches the cluster before it is complete.
    let sh = share_selection()?;
    let (selected, share_type) = (sh.selected, sh.share_type);
    let (project_dir, vast_dir, plugin_scripts) = (sh.project_dir, sh.vast_dir, sh.plugin_scripts);

    let a = match connect(globals, args.context.clone()).await? {
        Ok(a) => a,
        Err(status) => return Ok(status),
    };
    if !a.has_archiver {
        output::error("Error: the robovast pod has no archiver container; upload-to-share runs there (re-create it with `vast execution cluster setup --force`)");
        return Ok(ExitStatus::Failure);
    }
    let runs = match list_runs(&a).await {
        Ok(r) => r,
        Err(e) => {
            output::error(format!("Unexpected error listing runs: {e}"));
            return Ok(ExitStatus::Failure);
        }
    };
    let wording = Wording {
        not_ready: "not ready",
        none_ready: "No runs ready to upload. Wait for jobs to finish and try again.",
        none_found: "No runs found to upload.",
    };
    let chosen = match choose(runs, args.run_id.as_deref(), &wording) {
        Ok(c) => c,
        Err(status) => return Ok(status),
    };
    output::status(format!(
        "Uploading {} to {share_type}...",
        output::plural(chosen.len() as u64, "run")
    ));
    let params = json!({
        "context": context_param(&args.context),
        "namespace": a.namespace,
        "state_dir": a.state_dir.display().to_string(),
        "project_dir": project_dir.as_ref().map(|p| p.display().to_string()),
        "vast_dir": vast_dir.as_ref().map(|p| p.display().to_string()),
        "runs": chosen,
        "share_type": share_type,
        "share_display": selected.provider.display_name(),
        "script": selected.provider.script_key(),
        "plugin_scripts": plugin_scripts,
        "force_archive": args.force,
        "keep_remote_archive": args.keep_archive,
        "skip_removal": args.skip_removal,
        "verbose": globals.verbosity > 0,
        "quiet": globals.verbosity < 0,
        "remove_after": "upload",
        "report_from": "remove",
    });
    let mut res = resources("upload-to-share", &params).await?;
    // The values as checked above (the resource built from `.env` again is the same).
    res.insert(ShareEnv(selected));
    let id = RunId::generate("upload-to-share");
    let dir = StateDir::new(&a.state_dir);
    // The summary is printed by the run's last step (so a resume prints it too).
    start_operation_as(&dir, &id, "upload-to-share", &params, res).await
}
