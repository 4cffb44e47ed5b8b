//! Snapshot of every command's `--help` (walking clap's command tree, hidden commands too), so
//! a change to any flag, default or wording shows up in review. Rendered at 100 columns; the
//! value of an environment variable a flag reads is redacted.

use clap::CommandFactory;

/// `[env: NAME=value]` → `[env: NAME=]`: the help shows the current value when it is set.
fn redact_env_values(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find("[env: ") {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        let end = tail.find(']').unwrap_or(tail.len());
        let inner = &tail[..end];
        match inner.find('=') {
            Some(eq) => out.push_str(&inner[..=eq]),
            None => out.push_str(inner),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

fn walk(cmd: &mut clap::Command, path: &str, out: &mut Vec<(String, String)>) {
    let help = cmd.render_long_help().to_string();
    out.push((path.to_string(), redact_env_values(&help)));
    // clap's generated `help` subcommands repeat the others.
    for sub in cmd.get_subcommands_mut().filter(|s| s.get_name() != "help") {
        let name = format!("{path}-{}", sub.get_name());
        walk(sub, &name, out);
    }
}

#[test]
fn every_command_help() {
    let mut cmd = vast::cli::args::Cli::command().term_width(100);
    cmd.build();
    let mut helps = Vec::new();
    walk(&mut cmd, "vast", &mut helps);
    assert!(helps.len() > 20, "{} commands", helps.len());
    for (name, text) in helps {
        insta::assert_snapshot!(format!("help_{name}"), text);
    }
}

#[test]
fn env_values_are_redacted() {
    assert_eq!(
        redact_env_values("x [env: VAST_STATE_DIR=/tmp/s] y [env: A=] z"),
        "x [env: VAST_STATE_DIR=] y [env: A=] z"
    );
}
