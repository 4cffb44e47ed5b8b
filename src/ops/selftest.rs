//! The `selftest` operation's steps: no-ops and side-effect-ledger writers that exercise the
//! engine (harnesses, the kill -9 torture test, the benchmark).
//!
//! Parameters: `items` (number of map items), `ledger` (optional file path; each effect
//! appends one line), `item_delay_ms` (work per item), `chunks` (per-item chunks, each
//! checkpointed with a cursor), `fail_item` (this item fails permanently on its first attempt).
//! Failpoints: `selftest.plan`, `selftest.item`, `selftest.finish` (return a transient error).

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::{json, Value};

use crate::engine::{Registry, Step, StepContext, StepError};

pub fn register(r: &mut Registry) {
    r.register("selftest.plan", Plan);
    r.register("selftest.item", Item);
    r.register("selftest.finish", Finish);
}

/// Appends one line to the ledger (one `write` on an `O_APPEND` file: survives SIGKILL).
pub fn ledger_append(cx: &StepContext, line: &str) -> Result<(), StepError> {
    let Some(path) = cx.param::<String>("ledger")? else {
        return Ok(());
    };
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| super::base::io_err("open the ledger", Path::new(&path), e))?;
    f.write_all(format!("{line}\n").as_bytes())
        .map_err(|e| super::base::io_err("append to the ledger", Path::new(&path), e))
}

#[cfg_attr(not(feature = "failpoints"), allow(dead_code))]
fn injected(name: &str, arg: Option<String>) -> Result<Value, StepError> {
    Err(StepError::transient(format!(
        "failpoint {name}{}",
        arg.map(|a| format!(": {a}")).unwrap_or_default()
    )))
}

struct Plan;

impl Step for Plan {
    fn run<'a>(&'a self, cx: &'a StepContext) -> BoxFuture<'a, Result<Value, StepError>> {
        Box::pin(async move {
            fail::fail_point!("selftest.plan", |a| injected("selftest.plan", a));
            let n: u64 = cx.param("items")?.unwrap_or(10);
            ledger_append(cx, "plan")?;
            Ok(Value::Array((0..n).map(|i| json!(i)).collect()))
        })
    }
}

struct Item;

impl Step for Item {
    fn run<'a>(&'a self, cx: &'a StepContext) -> BoxFuture<'a, Result<Value, StepError>> {
        Box::pin(async move {
            fail::fail_point!("selftest.item", |a| injected("selftest.item", a));
            let i: u64 = cx.item()?;
            if cx.param::<u64>("fail_item")? == Some(i) && cx.attempt() == 1 {
                return Err(StepError::permanent(format!(
                    "item {i} fails on its first attempt (fail_item)"
                )));
            }
            let delay = Duration::from_millis(cx.param::<u64>("item_delay_ms")?.unwrap_or(0));
            let chunks: u64 = cx.param("chunks")?.unwrap_or(0);
            let from: u64 = cx.cursor()?.unwrap_or(0);
            for c in from..chunks {
                pause(cx, delay).await?;
                ledger_append(cx, &format!("item {i} chunk {c}"))?;
                cx.progress(c + 1, chunks);
                cx.save_cursor(&(c + 1))?;
            }
            if chunks == 0 {
                pause(cx, delay).await?;
            }
            ledger_append(cx, &format!("item {i}"))?;
            Ok(json!(i))
        })
    }
}

async fn pause(cx: &StepContext, delay: Duration) -> Result<(), StepError> {
    if delay.is_zero() {
        return Ok(());
    }
    tokio::select! {
        _ = tokio::time::sleep(delay) => Ok(()),
        _ = cx.cancel_token().cancelled() => Err(StepError::cancelled()),
    }
}

struct Finish;

impl Step for Finish {
    fn run<'a>(&'a self, cx: &'a StepContext) -> BoxFuture<'a, Result<Value, StepError>> {
        Box::pin(async move {
            fail::fail_point!("selftest.finish", |a| injected("selftest.finish", a));
            let items: Vec<u64> = cx.output("item")?;
            ledger_append(cx, &format!("finish {}", items.len()))?;
            Ok(json!({ "count": items.len() }))
        })
    }
}
