//! Project model and manifests: the broken-`.vast` corpus, configuration naming, rendering
//! snapshots per cluster config, `prepare-run` output trees, schema validation of every
//! rendered manifest, and the CLI commands `init`, `configuration` and `prepare-run`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use vast::manifests::cluster_config::cluster_configs;
use vast::manifests::job::{render_job_attempt, render_jobs, JobContext};
use vast::manifests::kueue::{queue_objects, Quota};
use vast::manifests::prepare::{prepare_run, PrepareError, PrepareInput};
use vast::manifests::{cluster_config, to_yaml};
use vast::project::{generate, VastFile};

const RUN_ID: &str = "run-2026-01-02-030405-abcd";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn small() -> VastFile {
    VastFile::load(&fixtures().join("small/small.vast")).unwrap()
}

/// Every broken file and the exact message parsing or configuration generation produces (file
/// name, line, field, reason).
#[test]
fn broken_vast_corpus() {
    let cases: &[(&str, &str)] = &[
        ("unknown_top_key", "unknown_top_key.vast:6: <top>: unknown key `extras`, expected one of `version`, `metadata`, `general`, `configuration`, `execution`, `analysis`"),
        ("bad_version", "bad_version.vast:1: version: unsupported version 2; expected 1"),
        ("missing_execution", "missing_execution.vast: <top>: missing required section `execution`"),
        ("missing_image", "missing_image.vast:2: execution: missing required field `image`"),
        ("reserved_env", "reserved_env.vast:6: execution.env: execution.env contains reserved environment variable names: TEST_ID, ROS_LOG_DIR"),
        ("bad_config_name", "bad_config_name.vast:3: configuration[0].name: invalid name 'My_Config': must be all lowercase"),
        ("bad_cpu", "bad_cpu.vast:7: execution.resources.cpu: invalid cpu quantity 'lots'"),
        ("bad_per_cluster", "bad_per_cluster.vast:7: execution.resources.cpu: per-cluster list entries must be single `<context>: <value>` mappings"),
        ("bad_secondary_name", "bad_secondary_name.vast:6: execution.secondary_containers: entry 0: container name 'Nav_Stack' must be lowercase letters, digits and '-' (at most 63)"),
        ("unknown_execution_key", "unknown_execution_key.vast:6: execution: unknown key `gpus`, expected one of `image`, `runs`, `scenario_file`, `resources`, `secondary_containers`, `env`, `timeout`, `retries`, `node_selector`, `tolerations`, `priority_class`, `gpu`, `run_as_user`, `pre_command`, `post_command`, `test_files_filter`, `local`"),
        ("zero_runs", "zero_runs.vast:4: execution.runs: must be a positive integer, got 0"),
        ("relative_pre_command", "relative_pre_command.vast:6: execution.pre_command: must be an absolute path inside the container (e.g. /config/files/x.sh), got 'files/pre.sh'"),
        ("duplicate_config", "duplicate_config.vast:3: configuration[1].name: duplicate configuration name 'a'"),
        ("yaml_syntax", "yaml_syntax.vast:4: <top>: did not find expected key"),
        ("bad_glob", "bad_glob.vast:6: execution.test_files_filter: invalid glob 'files/[': error parsing glob 'files/[': unclosed character class; missing ']'"),
        ("env_not_scalar", "env_not_scalar.vast:6: execution.env: value of 'FOO' must be a string, number or boolean"),
        ("runs_not_int", "runs_not_int.vast:4: execution.runs: invalid type: string \"many\", expected i64"),
        ("unknown_entry_key", "unknown_entry_key.vast:4: configuration[0]: unknown key `variation`, expected one of `name`, `parameters`, `variations`"),
        ("secondary_unknown_key", "secondary_unknown_key.vast:6: execution.secondary_containers: entry 0: container 'nav': unknown key `resourcez`, expected `resources`"),
        // The secondary containers get the `.vast` env after their own CONTAINER_NAME.
        ("reserved_sidecar_env", "reserved_sidecar_env.vast:6: execution.env: execution.env contains reserved environment variable names: CONTAINER_NAME"),
        // Configuration generation errors also name the file, the line and the variation.
        ("unsupported_variation", "unsupported_variation.vast:11: configuration[1].variations[1].OneOfVariation: variation type 'OneOfVariation' is not supported (supported: ParameterVariationList, ParameterVariationDistributionUniform, ParameterVariationDistributionGaussian)"),
        ("empty_variation_values", "empty_variation_values.vast:8: configuration[0].variations[1].ParameterVariationList: Parameter 'values' must be a non-empty list for ParameterVariationList"),
        ("gaussian_without_seed", "gaussian_without_seed.vast:5: configuration[0].variations[0].ParameterVariationDistributionGaussian: Parameter 'seed' is required"),
        ("generated_duplicate", "generated_duplicate.vast:6: configuration[1].name: two configurations are both named 'a-1'; rename a configuration entry"),
        ("bad_retries", "bad_retries.vast:6: execution.retries: must be an integer from 0 to 10, got 20"),
        ("bad_toleration", "bad_toleration.vast:6: execution.tolerations: value for context 'gke': toleration 0: invalid operator 'Equals'; expected `Equal` or `Exists`"),
        ("bad_gpu", "bad_gpu.vast:7: execution.gpu: value for context 'local' must be a non-negative integer (GPUs per Job), got -2"),
        ("reserved_container", "reserved_container.vast:6: execution.secondary_containers: container name 'robovast' is reserved by vast"),
    ];
    let dir = fixtures().join("broken");
    let mut failures = Vec::new();
    for (name, want) in cases {
        let path = dir.join(format!("{name}.vast"));
        let got = match VastFile::load(&path).map(|v| generate(&v).map(|_| ())) {
            Ok(Ok(())) => "<parsed without error>".to_string(),
            Ok(Err(e)) => e.to_string().replace(&format!("{}/", dir.display()), ""),
            Err(e) => e.to_string().replace(&format!("{}/", dir.display()), ""),
        };
        if got != *want {
            failures.push(format!("{name}:\n  want: {want}\n  got:  {got}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let files = std::fs::read_dir(&dir).unwrap().count();
    assert_eq!(
        files,
        cases.len(),
        "every file of tests/fixtures/broken has a case"
    );
}

#[test]
fn example_project_parses_and_names_configs() {
    let v = VastFile::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/growth_sim/growth_sim.vast"),
    )
    .unwrap();
    let names: Vec<String> = generate(&v).unwrap().into_iter().map(|c| c.name).collect();
    assert_eq!(
        names,
        [
            "test-1-1",
            "test-1-2",
            "test-2-1",
            "test-2-2",
            "test-fixed-values"
        ]
    );
    assert_eq!(v.execution.runs, 3);
}

#[test]
fn four_by_three_list_gives_twelve_configs() {
    let text = "version: 1\nconfiguration:\n- name: test\n  variations:\n  - ParameterVariationList: {name: growth_rate, values: [0.05, 0.1, 0.3, 0.5]}\n  - ParameterVariationList: {name: initial_population, values: [50, 100, 200]}\nexecution: {image: i:1, runs: 1, scenario_file: scenario.osc}\n";
    let v = VastFile::parse(Path::new("g.vast"), text).unwrap();
    let names: Vec<String> = generate(&v).unwrap().into_iter().map(|c| c.name).collect();
    let want: Vec<String> = (1..=4)
        .flat_map(|a| (1..=3).map(move |b| format!("test-{a}-{b}")))
        .collect();
    assert_eq!(names, want);
}

#[test]
fn secondary_container_forms() {
    let v = small();
    let sc = &v.execution.secondary_containers;
    let names: Vec<&str> = sc.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["nav", "simulation", "logger"]);
    // nested form keeps its per-cluster resources; sibling form keeps its resources.
    assert!(sc[0].resources.cpu.is_some());
    assert!(sc[1].resources == Default::default());
    assert_eq!(
        sc[2].resources.memory,
        Some(vast::project::vast_file::ResourceValue::Scalar(
            "256Mi".into()
        ))
    );
    assert_eq!(
        v.execution.env,
        vec![
            ("ENABLE_X11".to_string(), "false".to_string()),
            ("LEVEL".into(), "3".into())
        ]
    );
}

fn job_context<'a>(v: &'a VastFile, ctx: Option<&'a str>) -> JobContext<'a> {
    JobContext {
        run_id: RUN_ID,
        namespace: "sims",
        execution: &v.execution,
        context: ctx,
        total_jobs: 6,
        log_tree: true,
        spot: false,
    }
}

#[test]
fn jobs_resolve_per_cluster_resources() {
    let v = small();
    let configs = generate(&v).unwrap();
    let err = render_jobs(&job_context(&v, None), &configs, 2).unwrap_err();
    assert!(err.to_string().starts_with(
        "Per-cluster resource list ['gcp-c4', 'local'] found but no Kubernetes context"
    ));
    let err = render_jobs(&job_context(&v, Some("aks")), &configs, 2).unwrap_err();
    assert!(err
        .to_string()
        .starts_with("No resource entry found for context 'aks'."));
    let jobs = render_jobs(&job_context(&v, Some("gcp-c4")), &configs, 2).unwrap();
    assert_eq!(jobs.len(), 6);
    // run-number-major order
    let order: Vec<String> = jobs
        .iter()
        .map(|j| {
            j.spec
                .as_ref()
                .unwrap()
                .template
                .metadata
                .as_ref()
                .unwrap()
                .annotations
                .as_ref()
                .unwrap()["job-name-full"]
                .clone()
        })
        .collect();
    assert_eq!(order[0], format!("{RUN_ID}-speed-1-0"));
    assert_eq!(order[2], format!("{RUN_ID}-fixed-0"));
    assert_eq!(order[3], format!("{RUN_ID}-speed-1-1"));
    let pod = jobs[0]
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap();
    let limits = pod.containers[0]
        .resources
        .as_ref()
        .unwrap()
        .limits
        .as_ref()
        .unwrap();
    assert_eq!(limits["cpu"].0, "4");
    let nav = &pod.init_containers.as_ref().unwrap()[1];
    assert_eq!(nav.restart_policy.as_deref(), Some("Always"));
    assert_eq!(
        nav.resources.as_ref().unwrap().limits.as_ref().unwrap()["cpu"].0,
        "2"
    );
    // S3 keys never appear as plain values.
    let yaml = to_yaml(&jobs[0]).unwrap();
    assert!(yaml.contains("secretKeyRef"));
    assert!(!yaml.contains("minioadmin"));
}

#[test]
fn snapshot_jobs() {
    let v = small();
    let configs = generate(&v).unwrap();
    let jobs = render_jobs(&job_context(&v, Some("local")), &configs, 2).unwrap();
    // One config × run 0 and 1 is representative; names of all.
    let names: Vec<String> = jobs
        .iter()
        .map(|j| j.metadata.name.clone().unwrap())
        .collect();
    insta::assert_yaml_snapshot!("job_names", names);
    insta::assert_snapshot!("job_speed_1_run_0", to_yaml(&jobs[0]).unwrap());
    insta::assert_snapshot!("job_fixed_run_1", to_yaml(&jobs[5]).unwrap());
}

/// A `.vast` with per-cluster placement, rendered for two contexts (one on a gcp setup with
/// `spot=true`): the snapshots show nodeSelector, tolerations, priorityClassName, the GPU
/// resources, backoffLimit and podFailurePolicy of a Job, and a later attempt's name and label.
const PLACEMENT_VAST: &str = "version: 1
configuration:
  - name: drive
execution:
  image: ghcr.io/example/sim:1
  runs: 1
  scenario_file: scenario.osc
  retries: 3
  timeout: 3600
  resources:
    cpu: [{gke-spot: 4}, {lab: 2}]
    memory: 8Gi
  gpu: [{gke-spot: 1}, {lab: 0}]
  node_selector:
    - gke-spot: {cloud.google.com/gke-accelerator: nvidia-l4}
    - lab: {kubernetes.io/hostname: lab-1}
  tolerations:
    - gke-spot:
        - {key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}
    - lab:
        - {key: dedicated, operator: Equal, value: sim, effect: NoExecute, tolerationSeconds: 60}
  priority_class: [{gke-spot: campaign-low}, {lab: lab-default}]
";

fn placement_jobs() -> Vec<(String, serde_json::Value)> {
    let v = VastFile::parse(Path::new("placement.vast"), PLACEMENT_VAST).unwrap();
    let configs = generate(&v).unwrap();
    let mut out = Vec::new();
    for (context, spot, attempt) in [("gke-spot", true, 2), ("lab", false, 1)] {
        let ctx = JobContext {
            spot,
            total_jobs: 1,
            ..job_context(&v, Some(context))
        };
        let job = render_job_attempt(&ctx, &configs[0], 0, attempt).unwrap();
        out.push((context.to_string(), serde_json::to_value(job).unwrap()));
    }
    // Wrong or missing context: resource-style errors.
    let err = render_jobs(&job_context(&v, Some("aks")), &configs, 1).unwrap_err();
    assert!(err
        .to_string()
        .starts_with("No resource entry found for context 'aks'."));
    out
}

#[test]
fn snapshot_jobs_with_per_cluster_placement() {
    for (context, job) in placement_jobs() {
        insta::assert_snapshot!(format!("job_placement_{context}"), to_yaml(&job).unwrap());
    }
}

#[test]
fn snapshot_cluster_objects() {
    for c in cluster_configs() {
        let objs = c.render(&BTreeMap::new(), "sims").unwrap();
        insta::assert_snapshot!(
            format!("robovast_{}", c.name),
            vast::manifests::yaml_stream(&objs).unwrap()
        );
    }
    let gcp = cluster_config("gcp").unwrap();
    let opts: BTreeMap<String, String> = [
        ("storage_size".to_string(), "50Gi".to_string()),
        ("disk_type".to_string(), "pd-ssd".to_string()),
    ]
    .into();
    let y = gcp.manifest_yaml(&opts, "sims").unwrap();
    assert!(
        y.contains("storage: 50Gi") && y.contains("type: pd-ssd"),
        "{y}"
    );
    insta::assert_snapshot!(
        "kueue_queues",
        vast::manifests::yaml_stream(&queue_objects(
            "sims",
            Quota {
                cpu: 6,
                memory_gi: 28
            }
        ))
        .unwrap()
    );
}

fn prepare_input<'a>(
    v: &'a VastFile,
    configs: &'a [vast::project::Configuration],
    cluster: &str,
) -> PrepareInput<'a> {
    PrepareInput {
        vast: v,
        configs,
        runs: 2,
        cluster: cluster_config(cluster).unwrap(),
        options: BTreeMap::new(),
        namespace: "sims".into(),
        context: Some("local".into()),
        log_tree: false,
        run_id: RUN_ID.into(),
        quota: Quota {
            cpu: 8,
            memory_gi: 32,
        },
        created_at: "2026-01-02T03:04:05Z".into(),
    }
}

/// `path` → content of every file under `dir` (sorted; executables marked).
fn tree(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let rel = p
                .strip_prefix(dir)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            use std::os::unix::fs::PermissionsExt;
            let exec = std::fs::metadata(&p).unwrap().permissions().mode() & 0o111 != 0;
            let key = if exec {
                format!("{rel} (executable)")
            } else {
                rel
            };
            out.insert(key, std::fs::read_to_string(&p).unwrap());
        }
    }
    out
}

#[test]
fn snapshot_prepare_run_trees() {
    let v = small();
    let configs = generate(&v).unwrap();
    for cluster in ["minikube", "gcp"] {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        let prepared = prepare_run(&out, &prepare_input(&v, &configs, cluster)).unwrap();
        assert_eq!(prepared.jobs, 6);
        let t = tree(&out);
        assert!(
            !t.contains_key("out_template/_config/files/notes.txt"),
            "filter applies"
        );
        // Only the output remains: the staging directory was renamed.
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1);
        let listing: Vec<&String> = t.keys().collect();
        insta::assert_yaml_snapshot!(format!("prepare_run_{cluster}_files"), listing);
        if cluster == "minikube" {
            let mut doc = String::new();
            for (k, content) in &t {
                if k.starts_with("jobs/")
                    || k.contains("entrypoint")
                    || k.contains("collect_sysinfo")
                    || k.contains("upload_configs")
                {
                    continue; // covered by the job and script snapshots / tests
                }
                doc.push_str(&format!("=== {k}\n{content}\n"));
            }
            insta::assert_snapshot!("prepare_run_minikube_contents", doc);
        }
    }
}

#[test]
fn prepare_run_bad_input_writes_nothing() {
    let v = small();
    let configs = generate(&v).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    // Per-cluster resources without a context: rendering fails before anything is written.
    let mut input = prepare_input(&v, &configs, "rke2");
    input.context = None;
    assert!(matches!(
        prepare_run(&out, &input),
        Err(PrepareError::Manifest(_))
    ));
    assert_eq!(
        std::fs::read_dir(tmp.path()).unwrap().count(),
        0,
        "no output, no staging dir left"
    );
    // A missing scenario file fails while writing: the staging directory is removed.
    let mut broken = v.clone();
    broken.execution.scenario_file = "missing.osc".into();
    let input = prepare_input(&broken, &configs, "rke2");
    assert!(matches!(
        prepare_run(&out, &input),
        Err(PrepareError::Template(_))
    ));
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
    // A non-empty OUTPUT is refused and left alone.
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("keep"), "x").unwrap();
    let err = prepare_run(&out, &prepare_input(&v, &configs, "rke2")).unwrap_err();
    assert!(err.to_string().contains("already exists and is not empty"));
    assert_eq!(std::fs::read_to_string(out.join("keep")).unwrap(), "x");
    // An empty OUTPUT is replaced.
    std::fs::remove_file(out.join("keep")).unwrap();
    prepare_run(&out, &prepare_input(&v, &configs, "rke2")).unwrap();
    assert!(out.join("all-jobs.yaml").is_file());
}

fn python_ok(args: &[&str]) -> (bool, String) {
    let o = Command::new("python3")
        .args(args)
        .output()
        .expect("python3 is needed (see .ci/run)");
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

/// Every rendered manifest against the official Kubernetes 1.33 schemas (strict: unknown fields
/// rejected) with `kubernetes-validate`, and the Kueue objects against our schema subset.
#[test]
fn manifests_validate_against_kubernetes_schemas() {
    let v = small();
    let configs = generate(&v).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for c in cluster_configs() {
        let p = tmp.path().join(format!("robovast-{}.yaml", c.name));
        std::fs::write(&p, c.manifest_yaml(&BTreeMap::new(), "sims").unwrap()).unwrap();
        files.push(p);
    }
    let jobs = render_jobs(&job_context(&v, Some("local")), &configs, 2).unwrap();
    let all: Vec<serde_json::Value> = jobs
        .iter()
        .map(|j| serde_json::to_value(j).unwrap())
        .collect();
    let p = tmp.path().join("jobs.yaml");
    std::fs::write(&p, vast::manifests::yaml_stream(&all).unwrap()).unwrap();
    files.push(p);
    let ex = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/growth_sim/growth_sim.vast");
    let ev = VastFile::load(&ex).unwrap();
    let ec = generate(&ev).unwrap();
    let ctx = JobContext {
        execution: &ev.execution,
        ..job_context(&ev, None)
    };
    let ejobs: Vec<serde_json::Value> = render_jobs(&ctx, &ec, 3)
        .unwrap()
        .iter()
        .map(|j| serde_json::to_value(j).unwrap())
        .collect();
    let mut ejobs = ejobs;
    ejobs.extend(placement_jobs().into_iter().map(|(_, j)| j));
    let p = tmp.path().join("example-jobs.yaml");
    std::fs::write(&p, vast::manifests::yaml_stream(&ejobs).unwrap()).unwrap();
    files.push(p);

    let script = "import sys\nfrom kubernetes_validate import validate, utils\nimport yaml\nbad = 0\nfor f in sys.argv[1:]:\n    for d in yaml.safe_load_all(open(f)):\n        try:\n            validate(d, '1.33.0', strict=True)\n        except Exception as e:\n            bad += 1\n            print(f, d['kind'], d['metadata']['name'], e)\nsys.exit(1 if bad else 0)\n";
    let mut args = vec!["-c", script];
    let names: Vec<String> = files
        .iter()
        .map(|f| f.to_string_lossy().to_string())
        .collect();
    args.extend(names.iter().map(String::as_str));
    let (ok, out) = python_ok(&args);
    assert!(ok, "kubernetes-validate failed:\n{out}");
    // The check can fail: a misspelt Job field and a non-string env value are rejected.
    let mut bad = all[0].clone();
    bad["spec"]["template"]["spec"]["restartPolicyy"] = serde_json::json!("Never");
    let mut bad_env = all[0].clone();
    bad_env["spec"]["template"]["spec"]["containers"][0]["env"][2]["value"] = serde_json::json!(3);
    for (i, b) in [bad, bad_env].iter().enumerate() {
        let p = tmp.path().join(format!("bad-{i}.yaml"));
        std::fs::write(
            &p,
            vast::manifests::yaml_stream(std::slice::from_ref(b)).unwrap(),
        )
        .unwrap();
        let (ok, out) = python_ok(&["-c", script, &p.to_string_lossy()]);
        assert!(!ok, "kubernetes-validate must reject bad-{i}:\n{out}");
    }

    // Kueue objects: hand-written v1beta2 subset schema (the CRD is not available offline).
    let q = tmp.path().join("queues.json");
    std::fs::write(
        &q,
        serde_json::to_string(&queue_objects(
            "sims",
            Quota {
                cpu: 3,
                memory_gi: 12,
            },
        ))
        .unwrap(),
    )
    .unwrap();
    let schema = fixtures().join("kueue-v1beta2-subset.schema.json");
    let script = "import json, sys, jsonschema\nroot = json.load(open(sys.argv[1]))\nfor o in json.load(open(sys.argv[2])):\n    s = dict(root[o['kind']]); s['definitions'] = root['definitions']\n    jsonschema.validate(o, s)\n";
    let (ok, out) = python_ok(&[
        "-c",
        script,
        &schema.to_string_lossy(),
        &q.to_string_lossy(),
    ]);
    assert!(ok, "Kueue schema validation failed:\n{out}");
    // The schema check can fail: a misspelt field is rejected.
    let mut bad = queue_objects(
        "sims",
        Quota {
            cpu: 3,
            memory_gi: 12,
        },
    );
    bad[2]["spec"]["clusterQueu"] = serde_json::json!("x");
    std::fs::write(&q, serde_json::to_string(&bad).unwrap()).unwrap();
    let (ok, _) = python_ok(&[
        "-c",
        script,
        &schema.to_string_lossy(),
        &q.to_string_lossy(),
    ]);
    assert!(!ok, "schema must reject an unknown field");
}

fn vast_cmd(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vast"));
    c.current_dir(dir)
        .env("KUBECONFIG", dir.join("no-kubeconfig"))
        .env_remove("VAST_LOG");
    c
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

#[test]
fn cli_init_configuration_and_prepare_run() {
    let tmp = tempfile::tempdir().unwrap();
    let proj = tmp.path().join("growth_sim");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/growth_sim"),
        &proj,
    );

    let o = vast_cmd(&proj)
        .args(["configuration", "list"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr)
        .contains("Project not initialized. Run 'vast init <config-file>' first."));

    let o = vast_cmd(&proj)
        .args(["init", "growth_sim.vast"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = vast_cmd(&proj.join("files"))
        .args(["config", "list"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.starts_with(
            "name: test-1-1\nconfig:\n  growth_rate: 0.05\n  initial_population: 50\n---\n"
        ),
        "{stdout}"
    );
    assert_eq!(stdout.matches("---").count(), 4);

    let o = vast_cmd(&proj)
        .args(["configuration", "generate", "gen"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "✓ Successfully generated 5 scenario configurations in directory 'gen'.\n"
    );
    let entry = std::fs::read_to_string(proj.join("gen/out_template/entrypoint.sh")).unwrap();
    assert!(entry.contains("fixuid"), "local mode");
    // Section 2.3's layout.
    let gen = proj.join("gen/out_template");
    for f in [
        "entrypoint.sh",
        "secondary_entrypoint.sh",
        "collect_sysinfo.py",
        "scenario.osc",
        "_config/configurations.yaml",
        "_config/files/pre_command.sh",
        "_config/files/post_command.sh",
        "_config/files/grow.sh",
        "test-1-1/config.yaml",
        "test-1-1/scenario.config",
        "test-2-2/scenario.config",
        "test-fixed-values/config.yaml",
        "test-fixed-values/scenario.config",
    ] {
        assert!(gen.join(f).is_file(), "out_template/{f}");
    }
    let cy: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(gen.join("_config/configurations.yaml")).unwrap(),
    )
    .unwrap();
    let keys: Vec<&str> = cy
        .as_mapping()
        .unwrap()
        .keys()
        .map(|k| k.as_str().unwrap())
        .collect();
    assert_eq!(
        keys,
        [
            "vast",
            "scenario_file",
            "configs",
            "_test_files",
            "execution",
            "created_at",
            "metadata"
        ]
    );
    assert_eq!(
        std::fs::read_to_string(gen.join("test-1-1/scenario.config")).unwrap(),
        "growth_sim:\n  growth_rate: 0.05\n  initial_population: 50\n"
    );
    let ids = std::fs::read_to_string(gen.join("test-1-1/config.yaml")).unwrap();
    assert!(
        ids.starts_with("config_identifier: ") && ids.contains("\nsub_identifier: "),
        "{ids}"
    );

    // No saved setup and no -k.
    let o = vast_cmd(&proj)
        .args(["execution", "cluster", "prepare-run", "out"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr)
        .contains("No cluster config specified and no saved config found."));
    let o = vast_cmd(&proj)
        .args(["execution", "cluster", "prepare-run", "out", "-k", "aws"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stderr).contains("Failed to get cluster config: Cluster config 'aws' not found. Available configs: azure, gcp, minikube, rke2"));
    let o = vast_cmd(&proj)
        .args([
            "execution",
            "cluster",
            "prepare-run",
            "out",
            "-k",
            "gcp",
            "-o",
            "size=1",
        ])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown option 'size' for cluster config 'gcp'; valid options: namespace, storage_size, disk_type"));
    let o = vast_cmd(&proj)
        .args([
            "execution",
            "cluster",
            "prepare-run",
            "out",
            "-k",
            "gcp",
            "-o",
            "namespace=Bad_NS",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("invalid namespace 'Bad_NS': must be a DNS-1123 label (lowercase letters, digits and '-', starting and ending with a letter or digit, at most 63 characters)"), "{}", String::from_utf8_lossy(&o.stderr));
    let o = vast_cmd(&proj)
        .args([
            "execution",
            "cluster",
            "prepare-run",
            "out",
            "-k",
            "gcp",
            "-c",
            "nope",
        ])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stderr)
        .contains("Config 'nope' not found (see available configs above)"));
    assert!(!proj.join("out").exists());

    // Without a cluster the quota falls back to the defaults, with a warning.
    let o = vast_cmd(&proj)
        .args([
            "execution",
            "cluster",
            "prepare-run",
            "out",
            "-k",
            "gcp",
            "-o",
            "namespace=sims",
            "-o",
            "storage_size=20Gi",
            "-c",
            "test-1-1",
            "-r",
            "2",
            "-t",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("Using defaults."));
    // stdout is exactly upstream's lines (with the space upstream's message lacked before the
    // directory); the quota warning goes to stderr.
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{stdout}");
    assert!(
        lines[0].starts_with("Preparing run configuration 'ID: run-")
            && lines[0].ends_with("', test configs: 1, runs per test config: 2..."),
        "{stdout}"
    );
    assert_eq!(
        lines[1..],
        [
            "✓ Successfully prepared 2 job manifests in directory 'out'.",
            "",
            "Follow README files to set up and execute."
        ]
    );
    let jobs = std::fs::read_dir(proj.join("out/jobs")).unwrap().count();
    assert_eq!(jobs, 2);
    let all = std::fs::read_to_string(proj.join("out/all-jobs.yaml")).unwrap();
    assert!(all.contains("namespace: sims") && all.contains("value: -t"));
    assert!(
        std::fs::read_to_string(proj.join("out/robovast-manifest.yaml"))
            .unwrap()
            .contains("storage: 20Gi")
    );
    assert!(
        std::fs::read_to_string(proj.join("out/kueue-queue-setup.yaml"))
            .unwrap()
            .contains("nominalQuota: 32Gi")
    );

    // A saved setup for the active context is found without -x (weakness 24 fixed).
    std::fs::write(proj.join("kubeconfig"), "apiVersion: v1\nkind: Config\ncurrent-context: lab\ncontexts:\n- name: lab\n  context: {cluster: lab}\nclusters:\n- name: lab\n  cluster: {server: 'http://127.0.0.1:9'}\nusers: []\n").unwrap();
    std::fs::write(
        proj.join(".robovast_cluster_config.lab"),
        "name: rke2\nkwargs:\n  namespace: labns\n",
    )
    .unwrap();
    let o = vast_cmd(&proj)
        .env("KUBECONFIG", proj.join("kubeconfig"))
        .args(["execution", "cluster", "prepare-run", "out2"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(proj.join("out2/README_rke2.md").is_file());
    assert!(std::fs::read_to_string(proj.join("out2/all-jobs.yaml"))
        .unwrap()
        .contains("namespace: labns"));
}

#[test]
fn upload_script_is_valid_python() {
    let s = vast::manifests::prepare::upload_script(RUN_ID, "sims", Some("ctx\"x"));
    assert!(s.contains(&format!("RUN_ID = \"{RUN_ID}\"")));
    assert!(s.contains("CONTEXT = \"ctx\\\"x\""));
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("upload_configs.py");
    std::fs::write(&p, &s).unwrap();
    let (ok, out) = python_ok(&["-m", "py_compile", &p.to_string_lossy()]);
    assert!(ok, "{out}");
    // Without out_template next to it: upstream's message and exit 1.
    let o = Command::new("python3").arg(&p).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).starts_with("ERROR: Config directory not found:"));
}

#[test]
fn undeclared_parameter_is_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("scenario.osc"),
        "scenario s:\n    speed: float = 1.0\n    do serial:\n        wait elapsed(1s)\n",
    )
    .unwrap();
    let path = tmp.path().join("p.vast");
    std::fs::write(&path, "version: 1\nconfiguration:\n- name: a\n  parameters:\n  - sped: 2\nexecution: {image: i:1, runs: 1, scenario_file: scenario.osc}\n").unwrap();
    let v = VastFile::load(&path).unwrap();
    let configs = generate(&v).unwrap();
    let err = vast::project::template::validate_parameters(&v, &configs).unwrap_err();
    assert_eq!(
        err.to_string(),
        "configuration 'a': parameter 'sped' is not declared by scenario 's' (declared: speed)"
    );
    let out = tmp.path().join("out");
    let err = prepare_run(&out, &prepare_input(&v, &configs, "rke2")).unwrap_err();
    assert!(err.to_string().contains("parameter 'sped' is not declared"));
    assert!(!out.exists());
}

/// `--vast-file/-V` is global: it works without a project, anywhere on the command line, and
/// overrides the project's `.vast` file (for `configuration` and `prepare-run`).
#[test]
fn cli_vast_file_override() {
    let tmp = tempfile::tempdir().unwrap();
    let proj = tmp.path().join("growth_sim");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/growth_sim"),
        &proj,
    );
    let elsewhere = tmp.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    // No project: -V before or after the subcommand.
    for args in [
        &[
            "-V",
            "../growth_sim/growth_sim.vast",
            "configuration",
            "list",
        ][..],
        &[
            "config",
            "list",
            "--vast-file",
            "../growth_sim/growth_sim.vast",
        ][..],
    ] {
        let o = vast_cmd(&elsewhere).args(args).output().unwrap();
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(String::from_utf8_lossy(&o.stdout).starts_with("name: test-1-1\n"));
    }
    let o = vast_cmd(&elsewhere)
        .args(["-V", "missing.vast", "config", "list"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("missing.vast"));

    // With a project, -V wins over the project's file.
    let o = vast_cmd(&proj)
        .args(["init", "growth_sim.vast"])
        .output()
        .unwrap();
    assert!(o.status.success());
    std::fs::write(
        proj.join("other.vast"),
        "version: 1\nconfiguration:\n- name: other\nexecution: {image: i:1, runs: 2, scenario_file: scenario.osc}\n",
    )
    .unwrap();
    let o = vast_cmd(&proj)
        .args(["-V", "other.vast", "config", "list"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "name: other\nconfig: {}\n"
    );
    let o = vast_cmd(&proj)
        .args([
            "-V",
            "other.vast",
            "execution",
            "cluster",
            "prepare-run",
            "out",
            "-k",
            "rke2",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let jobs: Vec<String> = std::fs::read_dir(proj.join("out/jobs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(jobs.len(), 2, "{jobs:?}");
    assert!(jobs.iter().all(|j| j.contains("-other-")), "{jobs:?}");
}

/// `vast init`: upstream's lines, a broken `.vast` refused (unless `--force`), an existing
/// project file kept unless `--force`.
#[test]
fn cli_init_messages() {
    let tmp = tempfile::tempdir().unwrap();
    let proj = tmp.path().join("growth_sim");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/growth_sim"),
        &proj,
    );
    let o = vast_cmd(&proj)
        .args(["init", "growth_sim.vast", "-r", "res"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let file = proj.join(".robovast_project");
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        format!(
            "✓ Project initialized successfully!\n  Configuration: {}\n  Results directory: {}\n  Project file: {}\n",
            proj.join("growth_sim.vast").display(),
            proj.join("res").display(),
            file.display()
        )
    );
    let again = vast_cmd(&proj)
        .args(["init", "growth_sim.vast"])
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists; use --force"));

    std::fs::write(proj.join("broken.vast"), "version: 2\n").unwrap();
    let o = vast_cmd(&proj)
        .args(["init", "broken.vast"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("Failed to load configuration file: ")
            && String::from_utf8_lossy(&o.stderr).contains("broken.vast:1: version"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = vast_cmd(&proj)
        .args(["init", "broken.vast", "--force"])
        .output()
        .unwrap();
    assert!(o.status.success());
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.starts_with(
            "⚠ Warning: Skipping checks (--force enabled)\n✓ Project initialized successfully!\n"
        ),
        "{stdout}"
    );
    assert!(std::fs::read_to_string(&file)
        .unwrap()
        .contains("\"config\": \"broken.vast\""));
}

/// Input errors come before the (up to 15 s) quota query: a per-cluster resource list without
/// `--context` fails at once even when the cluster's API server never answers.
#[test]
fn cli_prepare_run_input_errors_before_the_cluster_query() {
    let tmp = tempfile::tempdir().unwrap();
    let proj = tmp.path().join("p");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/growth_sim"),
        &proj,
    );
    let text = std::fs::read_to_string(proj.join("growth_sim.vast"))
        .unwrap()
        .replace("    cpu: 1\n", "    cpu:\n    - lab: 2\n");
    std::fs::write(proj.join("growth_sim.vast"), text).unwrap();
    // An API server that accepts connections and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    std::fs::write(proj.join("kubeconfig"), format!("apiVersion: v1\nkind: Config\ncurrent-context: lab\ncontexts:\n- name: lab\n  context: {{cluster: lab, user: u}}\nclusters:\n- name: lab\n  cluster: {{server: 'http://127.0.0.1:{port}'}}\nusers:\n- name: u\n  user: {{token: t}}\n")).unwrap();
    let start = std::time::Instant::now();
    let o = vast_cmd(&proj)
        .env("KUBECONFIG", proj.join("kubeconfig"))
        .args([
            "-V",
            "growth_sim.vast",
            "execution",
            "cluster",
            "prepare-run",
            "out",
            "-k",
            "rke2",
        ])
        .output()
        .unwrap();
    let took = start.elapsed();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains(
            "Per-cluster resource list ['lab'] found but no Kubernetes context was specified."
        ),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(took < std::time::Duration::from_secs(8), "took {took:?}");
    assert!(!proj.join("out").exists());
    drop(silent);
}
