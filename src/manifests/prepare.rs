//! `prepare-run OUTPUT`: every manifest, script and README of a run written without touching a
//! cluster. Everything is rendered in memory first, written into a temporary sibling directory
//! and renamed into place, so bad input never leaves a half-written OUTPUT.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use rand::Rng;

use super::cluster_config::ClusterConfig;
use super::job::{render_job, JobContext};
use super::kueue::{self, Quota};
use super::{to_yaml, yaml_stream, ManifestError};
use crate::project::configs::Configuration;
use crate::project::template::{self, Mode, TemplateError};
use crate::project::vast_file::VastFile;

const UPLOAD_SCRIPT: &str = include_str!("upload_configs.py");

/// A problem while preparing a run.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error("output directory '{}' already exists and is not empty; choose another directory or remove it", .0.display())]
    OutputExists(PathBuf),
    #[error("No scenario configs generated.")]
    NoConfigs,
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What `prepare-run` writes.
#[derive(Debug, Clone)]
pub struct PrepareInput<'a> {
    pub vast: &'a VastFile,
    pub configs: &'a [Configuration],
    pub runs: u32,
    pub cluster: &'static ClusterConfig,
    /// Cluster options (`-o`, merged with the saved setup); `namespace` is ignored here.
    pub options: BTreeMap<String, String>,
    pub namespace: String,
    pub context: Option<String>,
    pub log_tree: bool,
    pub run_id: String,
    pub quota: Quota,
    /// Recorded in `configurations.yaml`.
    pub created_at: String,
}

/// Summary of a prepared run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    pub jobs: usize,
    pub files: Vec<String>,
}

struct Staging {
    path: PathBuf,
    keep: bool,
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

fn io<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> PrepareError + 'a {
    move |source| PrepareError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

fn write(path: &Path, text: &str, exec: bool) -> Result<(), PrepareError> {
    template::write_file(path, text.as_bytes(), exec, |action, path, source| {
        PrepareError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    })
}

/// The `upload_configs.py` text for a run.
pub fn upload_script(run_id: &str, namespace: &str, context: Option<&str>) -> String {
    let esc = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    UPLOAD_SCRIPT
        .replace("@@RUN_ID@@", &esc(run_id))
        .replace("@@NAMESPACE@@", &esc(namespace))
        .replace("@@CONTEXT@@", &esc(context.unwrap_or("")))
}

fn readme(input: &PrepareInput<'_>, jobs: usize) -> String {
    let ns = &input.namespace;
    let cfg = input.cluster.name;
    format!(
        "# vast run {run}\n\n\
Prepared by `vast execution cluster prepare-run`: {jobs} Jobs ({configs} configuration(s) × {runs} run(s)) for namespace `{ns}`, cluster config `{cfg}`.\n\n\
0. Install Kueue and create the queues: see `README_kueue.md`.\n\
1. Create the S3 credentials Secret and the robovast pod: see `README_{cfg}.md`.\n\
2. Upload the configurations to the run's bucket `{run}` (needs kubectl and python3, nothing else):\n\n\
```bash\n./upload_configs.py\n```\n\n\
   Or, with only vast (no kubectl or python3; `-x CTX` for another context):\n\n\
```bash\nvast execution cluster upload-configs .\n```\n\n\
   Both can be re-run safely; vast skips files already uploaded.\n\n\
3. Create the Jobs:\n\n\
```bash\nkubectl apply -f all-jobs.yaml\n```\n\n\
Job specs are immutable: to re-deploy use `kubectl replace --force -f all-jobs.yaml`, or a single Job with\n\
`kubectl replace --force -f jobs/<job>.yaml -n {ns}`. Results are written to the bucket `{run}` under\n\
`<config>/<run number>/`; watch progress with `kubectl get jobs -n {ns} -l run-id={run}`.\n",
        run = input.run_id,
        configs = input.configs.len(),
        runs = input.runs,
    )
}

/// Renders everything, then writes it to `output` through a temporary sibling directory.
pub fn prepare_run(output: &Path, input: &PrepareInput<'_>) -> Result<Prepared, PrepareError> {
    if input.configs.is_empty() {
        return Err(PrepareError::NoConfigs);
    }
    if output.exists() {
        let empty = output.is_dir()
            && std::fs::read_dir(output)
                .map_err(io("list", output))?
                .next()
                .is_none();
        if !empty {
            return Err(PrepareError::OutputExists(output.to_path_buf()));
        }
    }
    // 1. Everything that depends on the input is checked before anything is written: the
    //    test-file globs, the cluster options, and one Job (resource resolution is the same for
    //    every Job of the run).
    template::collect_test_files(input.vast)?;
    let ctx = JobContext {
        run_id: &input.run_id,
        namespace: &input.namespace,
        execution: &input.vast.execution,
        context: input.context.as_deref(),
        total_jobs: input.configs.len() * input.runs as usize,
        log_tree: input.log_tree,
        // `spot` is a gcp option only (resolve_options rejects it elsewhere).
        spot: input.options.get("spot").is_some_and(|v| v == "true"),
    };
    render_job(&ctx, &input.configs[0], 0)?;
    let total = ctx.total_jobs;
    let files: Vec<(String, String, bool)> = vec![
        (
            "robovast-manifest.yaml".into(),
            input
                .cluster
                .manifest_yaml(&input.options, &input.namespace)?,
            false,
        ),
        (
            format!("README_{}.md", input.cluster.name),
            input.cluster.readme(&input.options, &input.namespace)?,
            false,
        ),
        (
            "kueue-queue-setup.yaml".into(),
            yaml_stream(&kueue::queue_objects(&input.namespace, input.quota))?,
            false,
        ),
        (
            "README_kueue.md".into(),
            kueue::readme(&input.namespace, input.quota),
            false,
        ),
        (
            "upload_configs.py".into(),
            upload_script(&input.run_id, &input.namespace, input.context.as_deref()),
            true,
        ),
        ("README.md".into(), readme(input, total), false),
    ];

    // 2. Write into a staging directory next to OUTPUT (removed again on any error).
    let parent = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(io("create", &parent))?;
    let base = output
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "out".into());
    let suffix: u32 = rand::rng().random();
    let mut staging = Staging {
        path: parent.join(format!(".{base}.vast-tmp-{suffix:08x}")),
        keep: false,
    };
    std::fs::create_dir(&staging.path).map_err(io("create", &staging.path))?;
    template::write_out_template(
        &staging.path.join("out_template"),
        input.vast,
        input.configs,
        Mode::Cluster,
        &input.created_at,
    )?;
    // Jobs are streamed (one rendered at a time), so 10,000 Jobs need little memory.
    let jobs_dir = staging.path.join("jobs");
    std::fs::create_dir(&jobs_dir).map_err(io("create", &jobs_dir))?;
    let all_path = staging.path.join("all-jobs.yaml");
    let all_file = std::fs::File::create(&all_path).map_err(io("write", &all_path))?;
    let mut all = std::io::BufWriter::new(all_file);
    let mut count = 0usize;
    for run in 0..input.runs {
        for c in input.configs {
            let job = render_job(&ctx, c, run)?;
            let y = to_yaml(&job)?;
            let name = job.metadata.name.unwrap_or_default();
            if count > 0 {
                all.write_all(b"---\n").map_err(io("write", &all_path))?;
            }
            all.write_all(y.as_bytes())
                .map_err(io("write", &all_path))?;
            write(&jobs_dir.join(format!("{name}.yaml")), &y, false)?;
            count += 1;
        }
    }
    all.flush().map_err(io("write", &all_path))?;
    drop(all);
    for (rel, text, exec) in &files {
        write(&staging.path.join(rel), text, *exec)?;
    }
    // 3. Rename into place (an existing OUTPUT is empty, checked above).
    if output.exists() {
        std::fs::remove_dir(output).map_err(io("replace", output))?;
    }
    std::fs::rename(&staging.path, output).map_err(io("rename into", output))?;
    staging.keep = true;
    let mut names: Vec<String> = files.into_iter().map(|(r, _, _)| r).collect();
    names.extend([
        "all-jobs.yaml".to_string(),
        "jobs/".to_string(),
        "out_template/".to_string(),
    ]);
    names.sort();
    Ok(Prepared {
        jobs: count,
        files: names,
    })
}
