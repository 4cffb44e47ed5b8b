//! Workflow definitions as data: the YAML format of `workflows/`, its parsing and validation
//! (unique names, known implementations, acyclic `after:` edges via petgraph, inputs and map
//! sources only from ancestors).

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use petgraph::graphmap::DiGraphMap;
use serde::{Deserialize, Serialize};

use super::retry::RetryPolicy;

/// A validated workflow: one operation's steps in a topological order.
#[derive(Debug, Clone)]
pub struct Definition {
    /// Where it came from (file name), for messages.
    pub source: String,
    /// The YAML text, persisted with every run so a resume uses the same definition.
    pub text: String,
    pub operation: String,
    pub version: u32,
    pub description: String,
    /// Global limit of concurrently executing steps.
    pub concurrency: usize,
    /// Steps in topological order (stable: file order among independent steps).
    pub steps: Vec<StepDef>,
    /// `ancestors[i]`: indices of every transitive predecessor of step `i`.
    pub ancestors: Vec<BTreeSet<usize>>,
    /// `deps[i]`: indices of the direct `after:` predecessors of step `i`.
    pub deps: Vec<Vec<usize>>,
}

/// One step of a definition.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepDef {
    pub name: String,
    /// Name of the Rust implementation (see `ops::registry`).
    pub run: String,
    #[serde(default)]
    pub after: Vec<String>,
    /// Ancestor steps whose outputs this step reads.
    #[serde(default)]
    pub inputs: Vec<String>,
    #[serde(default)]
    pub retry: RetryPolicy,
    /// Per-attempt time limit.
    #[serde(default, with = "super::retry::opt_duration")]
    pub timeout: Option<Duration>,
    #[serde(default)]
    pub on_exhausted: OnExhausted,
    /// Fan-out: one child per item of an ancestor's output array.
    #[serde(default)]
    pub map: Option<MapDef>,
    /// Named limits the step's body enforces itself (e.g. `builds: 3`: archive builds started
    /// before giving up), read with `cx.budget("builds")`: data, not constants in Rust.
    #[serde(default)]
    pub budgets: std::collections::BTreeMap<String, u32>,
}

/// What happens when a step's retries are exhausted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnExhausted {
    /// The run fails.
    #[default]
    Fail,
    /// The run pauses; `vast resume` continues it with a fresh retry budget.
    Pause,
}

/// A `map:` fan-out.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MapDef {
    /// The ancestor step whose output (a JSON array) gives the items.
    pub over: String,
    /// At most this many children run at once.
    #[serde(default = "default_map_concurrency")]
    pub concurrency: usize,
    /// What a child that fails with a permanent error does to the run (exhausted transient
    /// retries always follow `on_exhausted`: the run stops, resumable).
    #[serde(default)]
    pub on_item_failure: OnItemFailure,
}

/// `map.on_item_failure`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnItemFailure {
    /// The run fails (as for any step).
    #[default]
    Fail,
    /// The item is recorded as failed (terminal) and the others go on; the same item of every
    /// later map over the same list is skipped, and the run ends succeeded *with failures*
    /// (exit 1).
    Continue,
}

fn default_map_concurrency() -> usize {
    8
}

fn default_concurrency() -> usize {
    16
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefinition {
    operation: String,
    #[serde(default = "one")]
    version: u32,
    #[serde(default)]
    description: String,
    #[serde(default = "default_concurrency")]
    concurrency: usize,
    steps: Vec<StepDef>,
}

fn one() -> u32 {
    1
}

/// A definition that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("workflow {file}{}: {problem}", step.as_ref().map(|s| format!(", step '{s}'")).unwrap_or_default())]
pub struct DefinitionError {
    pub file: String,
    pub step: Option<String>,
    pub problem: String,
}

impl Definition {
    /// Parses and validates `text` (from `source`), checking implementations with `known`.
    pub fn parse(
        source: &str,
        text: &str,
        known: &dyn Fn(&str) -> bool,
    ) -> Result<Definition, DefinitionError> {
        let err = |step: Option<&str>, problem: String| DefinitionError {
            file: source.to_string(),
            step: step.map(str::to_string),
            problem,
        };
        let raw: RawDefinition = serde_yaml::from_str(text).map_err(|e| {
            let at = e
                .location()
                .map(|l| format!("line {}: ", l.line()))
                .unwrap_or_default();
            err(None, format!("{at}{e}"))
        })?;
        if raw.operation.is_empty()
            || !raw
                .operation
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'-')
        {
            return Err(err(
                None,
                format!(
                    "operation '{}' must be lowercase letters and '-'",
                    raw.operation
                ),
            ));
        }
        if raw.steps.is_empty() {
            return Err(err(None, "no steps".into()));
        }
        if raw.concurrency == 0 {
            return Err(err(None, "concurrency must be at least 1".into()));
        }
        let mut index = HashMap::new();
        for (i, s) in raw.steps.iter().enumerate() {
            if s.name.is_empty()
                || !s
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(err(
                    Some(&s.name),
                    "name must be letters, digits, '-' or '_'".into(),
                ));
            }
            if index.insert(s.name.clone(), i).is_some() {
                return Err(err(Some(&s.name), "duplicate step name".into()));
            }
            if !known(&s.run) {
                return Err(err(
                    Some(&s.name),
                    format!("unknown implementation '{}'", s.run),
                ));
            }
            s.retry.validate().map_err(|p| err(Some(&s.name), p))?;
            if let Some(m) = &s.map {
                if m.concurrency == 0 {
                    return Err(err(
                        Some(&s.name),
                        "map concurrency must be at least 1".into(),
                    ));
                }
            }
        }
        let mut graph = DiGraphMap::<usize, ()>::new();
        for i in 0..raw.steps.len() {
            graph.add_node(i);
        }
        let mut deps = vec![Vec::new(); raw.steps.len()];
        for (i, s) in raw.steps.iter().enumerate() {
            for a in &s.after {
                let j = *index
                    .get(a)
                    .ok_or_else(|| err(Some(&s.name), format!("after: unknown step '{a}'")))?;
                if j == i {
                    return Err(err(
                        Some(&s.name),
                        "after: a step cannot follow itself".into(),
                    ));
                }
                graph.add_edge(j, i, ());
                deps[i].push(j);
            }
        }
        let topo = petgraph::algo::toposort(&graph, None).map_err(|cycle| {
            let name = &raw.steps[cycle.node_id()].name;
            err(
                Some(name),
                "after: edges form a cycle through this step".into(),
            )
        })?;
        // Stable order: repeatedly take the first step (in file order) whose deps are placed.
        let _ = topo;
        let mut order = Vec::with_capacity(raw.steps.len());
        let mut placed = vec![false; raw.steps.len()];
        while order.len() < raw.steps.len() {
            let next = (0..raw.steps.len())
                .find(|&i| !placed[i] && deps[i].iter().all(|&d| placed[d]))
                .ok_or_else(|| err(None, "after: edges form a cycle".into()))?;
            placed[next] = true;
            order.push(next);
        }
        let mut ancestors: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); raw.steps.len()];
        for &i in &order {
            let mut set = BTreeSet::new();
            for &d in &deps[i] {
                set.insert(d);
                set.extend(ancestors[d].iter().copied());
            }
            ancestors[i] = set;
        }
        for (i, s) in raw.steps.iter().enumerate() {
            for inp in &s.inputs {
                let j = *index
                    .get(inp)
                    .ok_or_else(|| err(Some(&s.name), format!("inputs: unknown step '{inp}'")))?;
                if !ancestors[i].contains(&j) {
                    return Err(err(
                        Some(&s.name),
                        format!("inputs: '{inp}' is not an ancestor (add it to after:)"),
                    ));
                }
            }
            if let Some(m) = &s.map {
                let j = *index.get(&m.over).ok_or_else(|| {
                    err(
                        Some(&s.name),
                        format!("map.over: unknown step '{}'", m.over),
                    )
                })?;
                if !ancestors[i].contains(&j) {
                    return Err(err(
                        Some(&s.name),
                        format!(
                            "map.over: '{}' is not an ancestor (add it to after:)",
                            m.over
                        ),
                    ));
                }
            }
        }
        // Re-index everything into topological order.
        let mut new_of_old = vec![0; raw.steps.len()];
        for (new, &old) in order.iter().enumerate() {
            new_of_old[old] = new;
        }
        let steps: Vec<StepDef> = order.iter().map(|&o| raw.steps[o].clone()).collect();
        let deps2 = order
            .iter()
            .map(|&o| deps[o].iter().map(|&d| new_of_old[d]).collect())
            .collect();
        let anc2 = order
            .iter()
            .map(|&o| ancestors[o].iter().map(|&d| new_of_old[d]).collect())
            .collect();
        Ok(Definition {
            source: source.to_string(),
            text: text.to_string(),
            operation: raw.operation,
            version: raw.version,
            description: raw.description,
            concurrency: raw.concurrency,
            steps,
            ancestors: anc2,
            deps: deps2,
        })
    }

    /// The index of step `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.steps.iter().position(|s| s.name == name)
    }

    /// The graph as Graphviz dot.
    pub fn to_dot(&self) -> String {
        let mut out = format!("digraph \"{}\" {{\n  rankdir=LR;\n", self.operation);
        for s in &self.steps {
            let shape = if s.map.is_some() { "box3d" } else { "box" };
            out.push_str(&format!(
                "  \"{}\" [shape={shape}, label=\"{}\\n{}\"];\n",
                s.name, s.name, s.run
            ));
        }
        for (i, ds) in self.deps.iter().enumerate() {
            for &d in ds {
                out.push_str(&format!(
                    "  \"{}\" -> \"{}\";\n",
                    self.steps[d].name, self.steps[i].name
                ));
            }
        }
        out.push_str("}\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(n: &str) -> bool {
        n.starts_with("t.")
    }

    fn parse(text: &str) -> Result<Definition, DefinitionError> {
        Definition::parse("test.yaml", text, &known)
    }

    #[test]
    fn valid_definition_is_topologically_ordered() {
        let d = parse(
            "operation: demo\nsteps:\n  - {name: c, run: t.c, after: [b], inputs: [a]}\n  - {name: a, run: t.a}\n  - {name: b, run: t.b, after: [a], map: {over: a, concurrency: 2}}\n",
        )
        .expect("valid");
        let names: Vec<_> = d.steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(d.deps[2], vec![1]);
        assert!(d.ancestors[2].contains(&0));
        assert!(d.to_dot().contains("\"a\" -> \"b\""));
    }

    #[test]
    fn invalid_definitions_name_file_step_and_problem() {
        let cases = [
            ("operation: demo\nsteps:\n  - {name: a, run: t.a}\n  - {name: a, run: t.b}\n", Some("a"), "duplicate"),
            ("operation: demo\nsteps:\n  - {name: a, run: nope}\n", Some("a"), "unknown implementation 'nope'"),
            ("operation: demo\nsteps:\n  - {name: a, run: t.a, after: [b]}\n  - {name: b, run: t.b, after: [a]}\n", None, "cycle"),
            ("operation: demo\nsteps:\n  - {name: a, run: t.a, after: [a]}\n", Some("a"), "itself"),
            ("operation: demo\nsteps:\n  - {name: a, run: t.a}\n  - {name: b, run: t.b, inputs: [a]}\n", Some("b"), "not an ancestor"),
            ("operation: demo\nsteps:\n  - {name: a, run: t.a}\n  - {name: b, run: t.b, map: {over: a}}\n", Some("b"), "map.over"),
            ("operation: demo\nsteps:\n  - {name: a, run: t.a, after: [zz]}\n", Some("a"), "unknown step 'zz'"),
            ("operation: demo\nsteps:\n  - {name: a, run: t.a, colour: red}\n", None, "line 3"),
            ("operation: demo\nsteps:\n  - {name: a, run: t.a, retry: {max_attempts: 0}}\n", Some("a"), "max_attempts"),
            ("operation: demo\nsteps:\n  - {name: a, run: t.a, timeout: 5 parsecs}\n", None, "duration"),
            ("operation: demo\nsteps: []\n", None, "no steps"),
        ];
        for (text, step, needle) in cases {
            let e = parse(text).expect_err(text);
            assert_eq!(e.file, "test.yaml");
            let msg = e.to_string();
            assert!(msg.contains(needle), "{msg} should contain {needle}");
            if let Some(s) = step {
                assert_eq!(e.step.as_deref(), Some(s), "{msg}");
            }
        }
    }

    #[test]
    fn random_dags_are_ordered_and_any_back_edge_is_a_cycle() {
        use rand::{seq::SliceRandom, Rng};
        let mut rng = rand::rng();
        for _ in 0..200 {
            let n = rng.random_range(1..12);
            let mut deps: Vec<Vec<usize>> = vec![Vec::new(); n];
            for (i, d) in deps.iter_mut().enumerate() {
                for j in 0..i {
                    if rng.random_bool(0.3) {
                        d.push(j);
                    }
                }
            }
            let mut order: Vec<usize> = (0..n).collect();
            order.shuffle(&mut rng);
            let yaml = |deps: &Vec<Vec<usize>>| {
                let mut y = String::from("operation: r\nsteps:\n");
                for &i in &order {
                    let after: Vec<String> = deps[i].iter().map(|d| format!("s{d}")).collect();
                    y.push_str(&format!(
                        "  - {{name: s{i}, run: t.x, after: [{}]}}\n",
                        after.join(", ")
                    ));
                }
                y
            };
            let d = parse(&yaml(&deps)).expect("acyclic");
            let pos = |name: &str| d.steps.iter().position(|s| s.name == name).expect("step");
            for (i, ds) in deps.iter().enumerate() {
                for j in ds {
                    assert!(pos(&format!("s{j}")) < pos(&format!("s{i}")));
                }
            }
            // Close a cycle along any existing edge j -> i by adding i -> j.
            if let Some((i, j)) = deps
                .iter()
                .enumerate()
                .find_map(|(i, ds)| ds.first().map(|&j| (i, j)))
            {
                let mut cyclic = deps.clone();
                cyclic[j].push(i);
                let e = parse(&yaml(&cyclic)).expect_err("cycle");
                assert!(e.problem.contains("cycle"), "{e}");
            }
        }
    }
}
