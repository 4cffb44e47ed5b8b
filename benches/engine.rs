//! Engine benchmark (prints numbers; asserts nothing): a 10,000-item map workflow of no-op
//! steps through the real store (sled, group commit), then the resume of a run whose last item
//! failed, i.e. with 9,999 items done. Run with `cargo bench -p vast --bench engine`
//! (`-- --items N` to change the size).

use std::time::Instant;

use serde_json::json;
use tokio_util::sync::CancellationToken;
use vast::engine::{Engine, Outcome};
use vast::store::StateDir;

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let items: u64 = args
        .iter()
        .position(|a| a == "--items")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let tmp = tempfile::tempdir()?;
    let dir = StateDir::new(tmp.path());
    let def = vast::ops::definition("selftest").ok_or("no selftest workflow")??;
    let engine = Engine::new(vast::ops::registry(), Default::default());

    // 1. A full run of `items` no-op map children (plus plan and finish).
    let store = engine.create(&dir, &def, &json!({ "items": items }))?;
    let t0 = Instant::now();
    let out = rt.block_on(engine.execute(store, CancellationToken::new()))?;
    let wall = t0.elapsed();
    assert_eq!(out, Outcome::Succeeded);
    let steps = items + 2;
    println!(
        "full run: {items} map items ({steps} steps) in {:.3} s",
        wall.as_secs_f64()
    );
    println!(
        "amortised engine + store overhead: {:.1} µs per step",
        wall.as_secs_f64() * 1e6 / steps as f64
    );

    println!(
        "peak RSS after the full run: {:.1} MiB",
        peak_rss_kib() as f64 / 1024.0
    );

    // 2. Resume of a run with all but the last item done.
    let store = engine.create(
        &dir,
        &def,
        &json!({ "items": items, "fail_item": items - 1 }),
    )?;
    let id = store.id().to_string();
    let out = rt.block_on(engine.execute(store, CancellationToken::new()))?;
    assert!(matches!(out, Outcome::Failed(_)), "{out:?}");
    let t1 = Instant::now();
    let store = dir.open_run(&id)?;
    let opened = t1.elapsed();
    let out = rt.block_on(engine.execute(store, CancellationToken::new()))?;
    let resume = t1.elapsed();
    assert_eq!(out, Outcome::Succeeded);
    println!(
        "resume with {} of {items} items done: {:.1} ms to completion (open {:.1} ms)",
        items - 1,
        resume.as_secs_f64() * 1e3,
        opened.as_secs_f64() * 1e3
    );
    println!("peak RSS: {:.1} MiB", peak_rss_kib() as f64 / 1024.0);
    Ok(())
}
