//! S3 GET throughput of the robovast pod's endpoint, direct and through kube-rs port-forward
//! (one websocket per TCP connection, as vast's port-forward supervisor does). Prints MiB/s;
//! asserts nothing about speed. Run: `cargo bench -p vast-sim --bench s3` (env
//! `S3_BENCH_MIB` sets the object size, default 64; `S3_BENCH_ROUNDS` the GETs per mode, default 5).

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::Instant;

use aws_sdk_s3::primitives::ByteStream;
use support::*;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn get_mibs(s3: &aws_sdk_s3::Client, size: u64, rounds: u64) -> Result<f64, String> {
    let start = Instant::now();
    for _ in 0..rounds {
        let out = s3
            .get_object()
            .bucket("bench")
            .key("obj")
            .send()
            .await
            .map_err(|e| format!("GET: {e:?}"))?;
        let mut body = out.body;
        let mut n = 0u64;
        while let Some(chunk) = body.try_next().await.map_err(|e| format!("body: {e}"))? {
            n += chunk.len() as u64;
        }
        if n != size {
            return Err(format!("short body: {n} of {size} bytes"));
        }
    }
    Ok((size * rounds) as f64 / (1 << 20) as f64 / start.elapsed().as_secs_f64())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), String> {
    let mib = env_u64("S3_BENCH_MIB", 64);
    let rounds = env_u64("S3_BENCH_ROUNDS", 5);
    let size = mib << 20;
    let sim = Sim::start().await;
    sim.add(robovast_pod()).await;
    let direct = format!("http://{}", sim.s3_direct("robovast"));
    let s3 = s3_client(&direct, "minioadmin");
    s3.create_bucket()
        .bucket("bench")
        .send()
        .await
        .map_err(|e| format!("create bucket: {e:?}"))?;
    let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    s3.put_object()
        .bucket("bench")
        .key("obj")
        .body(ByteStream::from(data))
        .send()
        .await
        .map_err(|e| format!("PUT: {e:?}"))?;

    // Warm-up (and ETag computation) once per mode, then measure.
    get_mibs(&s3, size, 1).await?;
    let d = get_mibs(&s3, size, rounds).await?;
    println!("S3 GET direct:            {d:8.1} MiB/s  ({rounds} x {mib} MiB)");

    let local = forward(sim.pods_api(), "robovast", 9000).await;
    let pf = s3_client(&format!("http://{local}"), "minioadmin");
    get_mibs(&pf, size, 1).await?;
    let p = get_mibs(&pf, size, rounds).await?;
    println!("S3 GET via port-forward:  {p:8.1} MiB/s  ({rounds} x {mib} MiB)");
    Ok(())
}
