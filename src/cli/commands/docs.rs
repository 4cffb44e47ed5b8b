//! `vast completion <shell>` (clap_complete) and `vast man [--out DIR]` (clap_mangen): both
//! generated from the same clap definition as the parser, so they never drift from it.

use crate::cli::output;
use std::io::Write;

use clap::CommandFactory;

use crate::cli::args::{Cli, CompletionArgs, ManArgs};
use crate::cli::ExitStatus;

/// Prints the completion script for `args.shell` on stdout.
pub fn completion(args: CompletionArgs) -> anyhow::Result<ExitStatus> {
    let mut cmd = Cli::command();
    let mut out = std::io::stdout().lock();
    clap_complete::generate(args.shell, &mut cmd, "vast", &mut out);
    out.flush()?;
    Ok(ExitStatus::Success)
}

/// Prints `vast.1`, or with `--out DIR` writes it and one page per (nested) subcommand.
pub fn man(args: ManArgs) -> anyhow::Result<ExitStatus> {
    let cmd = Cli::command();
    match args.out {
        None => {
            let mut out = std::io::stdout().lock();
            clap_mangen::Man::new(cmd).render(&mut out)?;
            out.flush()?;
        }
        Some(dir) => {
            std::fs::create_dir_all(&dir)
                .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
            let written = write_pages(&cmd, "vast", &dir)?;
            output::note(format!("wrote {written} man pages to {}", dir.display()));
        }
    }
    Ok(ExitStatus::Success)
}

fn write_pages(cmd: &clap::Command, name: &str, dir: &std::path::Path) -> anyhow::Result<usize> {
    let cmd = cmd.clone().name(name.to_string());
    let path = dir.join(format!("{name}.1"));
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut buf)?;
    std::fs::write(&path, buf)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    let mut n = 1;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        n += write_pages(sub, &format!("{name}-{}", sub.get_name()), dir)?;
    }
    Ok(n)
}
