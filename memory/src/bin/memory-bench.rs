//! `memory-bench`: measures the vector index layer (no Postgres) on synthetic data, to choose
//! and document the index parameters (docs/memory.md).
//!
//! ```text
//! cargo run --release -p memory --bin memory-bench -- --items 100000 --dim 384 --queries 1000
//! ```
//!
//! For each data set (uniform random unit vectors, the hardest case for HNSW, and clustered
//! vectors, closer to real embeddings) it reports: the insert rate of a batch build and of
//! one-at-a-time inserts, single-query search latency (p50/p99) of the exact flat index at
//! several sizes (to place the flat→HNSW threshold), and HNSW latency and recall@k against
//! exact search for each efSearch given. Ground truth is the exact flat search of every query.

use std::process::ExitCode;
use std::str::FromStr;
use std::time::{Duration, Instant};

use memory::index::{IndexKind, IndexParams, VectorIndex};
use memory::vector::normalize;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const USAGE: &str = "usage: memory-bench [--items N] [--dim D] [--queries Q] [--k K] [--data random|clustered|both]
                    [--m M] [--ef-construction E] [--ef-search E1,E2,…] [--flat-sizes S1,S2,…]
                    [--incremental N] [--clusters C] [--seed S]";

#[derive(Debug, Clone)]
struct Args {
    items: usize,
    dim: usize,
    queries: usize,
    k: usize,
    data: Vec<Data>,
    m: u32,
    ef_construction: u32,
    ef_search: Vec<u32>,
    flat_sizes: Vec<usize>,
    incremental: usize,
    clusters: Option<usize>,
    seed: u64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Data {
    Random,
    Clustered,
}

impl Args {
    fn parse(mut raw: impl Iterator<Item = String>) -> Result<Self, String> {
        let defaults = IndexParams::default();
        let mut args = Args {
            items: 100_000,
            dim: 384,
            queries: 1000,
            k: 10,
            data: vec![Data::Random, Data::Clustered],
            m: defaults.hnsw_m,
            ef_construction: defaults.ef_construction,
            ef_search: vec![defaults.ef_search],
            flat_sizes: vec![5_000, 10_000, 20_000, 50_000, 100_000],
            incremental: 2_000,
            clusters: None,
            seed: 42,
        };
        while let Some(flag) = raw.next() {
            let mut value = || raw.next().ok_or_else(|| format!("{flag} needs a value"));
            match flag.as_str() {
                "--items" => args.items = number(&value()?)?,
                "--dim" => args.dim = number(&value()?)?,
                "--queries" => args.queries = number(&value()?)?,
                "--k" => args.k = number(&value()?)?,
                "--m" => args.m = number(&value()?)?,
                "--ef-construction" => args.ef_construction = number(&value()?)?,
                "--ef-search" => args.ef_search = list(&value()?)?,
                "--flat-sizes" => args.flat_sizes = list(&value()?)?,
                "--incremental" => args.incremental = number(&value()?)?,
                "--seed" => args.seed = number(&value()?)?,
                "--clusters" => args.clusters = Some(number(&value()?)?),
                "--data" => {
                    args.data = match value()?.as_str() {
                        "random" => vec![Data::Random],
                        "clustered" => vec![Data::Clustered],
                        "both" => vec![Data::Random, Data::Clustered],
                        other => return Err(format!("unknown data set {other}")),
                    }
                }
                "--help" | "-h" => return Err(String::new()),
                other => return Err(format!("unknown flag {other}")),
            }
        }
        if args.items == 0 || args.dim == 0 || args.queries == 0 || args.k == 0 || args.k > args.items {
            return Err("items, dim, queries and k must be positive, and k at most items".into());
        }
        Ok(args)
    }
}

fn number<T: FromStr>(value: &str) -> Result<T, String> {
    value.parse().map_err(|_| format!("not a number: {value}"))
}

fn list<T: FromStr>(value: &str) -> Result<Vec<T>, String> {
    value.split(',').map(number).collect()
}

/// Unit vectors: uniform on the sphere, or around random centres (`items / 100` unless
/// `--clusters` says otherwise).
fn generate(data: Data, n: usize, dim: usize, centres: &[f32], rng: &mut StdRng) -> Vec<f32> {
    let mut out = Vec::with_capacity(n * dim);
    for _ in 0..n {
        let start = out.len();
        match data {
            Data::Random => out.extend((0..dim).map(|_| gaussian(rng))),
            Data::Clustered => {
                let c = rng.random_range(0..centres.len() / dim);
                // Noise of norm ~0.7 around unit centres: a point keeps a cosine of ~0.8 to
                // its centre, and the ranking inside a cluster is as random as uniform data.
                out.extend(
                    centres[c * dim..(c + 1) * dim].iter().map(|x| x + 0.7 * gaussian(rng) / (dim as f32).sqrt()),
                );
            }
        }
        normalize(&mut out[start..]);
    }
    out
}

/// A standard normal sample (Box–Muller).
fn gaussian(rng: &mut StdRng) -> f32 {
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random();
    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
}

struct Latency {
    p50: Duration,
    p99: Duration,
    mean: Duration,
}

fn latency(mut samples: Vec<Duration>) -> Latency {
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() as f64 * q).ceil() as usize).saturating_sub(1).min(samples.len() - 1)];
    let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
    Latency { p50: at(0.5), p99: at(0.99), mean }
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1000.0)
}

fn search_all(
    index: &mut VectorIndex,
    queries: &[f32],
    dim: usize,
    k: usize,
) -> Result<(Vec<Vec<i64>>, Latency), String> {
    let mut found = Vec::new();
    let mut samples = Vec::new();
    for query in queries.chunks_exact(dim) {
        let start = Instant::now();
        let hits = index.search(query, k).map_err(|e| e.to_string())?;
        samples.push(start.elapsed());
        found.push(hits.iter().map(|h| h.id).collect());
    }
    Ok((found, latency(samples)))
}

fn recall(found: &[Vec<i64>], truth: &[Vec<i64>]) -> f64 {
    let hits: usize = found.iter().zip(truth).map(|(f, t)| f.iter().filter(|id| t.contains(id)).count()).sum();
    let total: usize = truth.iter().map(Vec::len).sum();
    hits as f64 / total as f64
}

fn run(args: &Args) -> Result<(), String> {
    println!("# memory-bench");
    println!("load average at start: {}", load_average());
    println!(
        "items={} dim={} queries={} k={} M={} efConstruction={} OMP_NUM_THREADS={} OMP_WAIT_POLICY={} OPENBLAS_NUM_THREADS={}",
        args.items,
        args.dim,
        args.queries,
        args.k,
        args.m,
        args.ef_construction,
        std::env::var("OMP_NUM_THREADS").unwrap_or_else(|_| "(unset: all cores)".into()),
        std::env::var("OMP_WAIT_POLICY").unwrap_or_default(),
        std::env::var("OPENBLAS_NUM_THREADS").unwrap_or_default(),
    );
    let (dim, k) = (args.dim, args.k);
    for &data in &args.data {
        let mut rng = StdRng::seed_from_u64(args.seed);
        let clusters = args.clusters.unwrap_or(args.items / 100).max(1);
        let centres = generate(Data::Random, clusters, dim, &[], &mut rng);
        let vectors = generate(data, args.items, dim, &centres, &mut rng);
        let queries = generate(data, args.queries, dim, &centres, &mut rng);
        let ids: Vec<i64> = (1..=args.items as i64).collect();
        match data {
            Data::Random => println!("\n## Random data (uniform on the unit sphere)"),
            Data::Clustered => println!("\n## Clustered data ({clusters} clusters)"),
        }

        println!("\n### flat (exact), single-query latency by size\n");
        println!("| vectors | build (vectors/s) | p50 ms | p99 ms | mean ms |");
        println!("|---:|---:|---:|---:|---:|");
        let params = IndexParams { hnsw_m: args.m, ef_construction: args.ef_construction, ..IndexParams::default() };
        let mut sizes: Vec<usize> = args.flat_sizes.iter().copied().filter(|s| *s < args.items).collect();
        sizes.push(args.items);
        let mut truth = Vec::new();
        for size in sizes {
            let start = Instant::now();
            let mut flat = VectorIndex::build(dim, &params, IndexKind::Flat, &ids[..size], &vectors[..size * dim])
                .map_err(|e| e.to_string())?;
            let rate = size as f64 / start.elapsed().as_secs_f64();
            // The full-size run searches every query: its results are the ground truth. Single
            // queries, as the service runs them (and no BLAS, whose idle threads would spin).
            let sample = if size == args.items { &queries[..] } else { &queries[..args.queries.min(300) * dim] };
            let (found, lat) = search_all(&mut flat, sample, dim, k)?;
            println!("| {size} | {rate:.0} | {} | {} | {} |", ms(lat.p50), ms(lat.p99), ms(lat.mean));
            truth = found;
        }

        println!("\n### HNSW{} (efConstruction {}) at {} vectors\n", args.m, args.ef_construction, args.items);
        let batch = args.items - args.incremental.min(args.items / 2);
        let start = Instant::now();
        let mut hnsw = VectorIndex::build(dim, &params, IndexKind::Hnsw, &ids[..batch], &vectors[..batch * dim])
            .map_err(|e| e.to_string())?;
        let build = start.elapsed();
        let start = Instant::now();
        for i in batch..args.items {
            hnsw.add(&ids[i..=i], &vectors[i * dim..(i + 1) * dim]).map_err(|e| e.to_string())?;
        }
        let one_by_one = start.elapsed();
        println!(
            "batch build: {batch} vectors in {:.1} s ({:.0} vectors/s); one-at-a-time inserts: {} in {:.2} s ({:.0} vectors/s)\n",
            build.as_secs_f64(),
            batch as f64 / build.as_secs_f64(),
            args.items - batch,
            one_by_one.as_secs_f64(),
            (args.items - batch) as f64 / one_by_one.as_secs_f64().max(1e-9),
        );
        println!("| efSearch | recall@{k} | p50 ms | p99 ms | mean ms |");
        println!("|---:|---:|---:|---:|---:|");
        for &ef in &args.ef_search {
            let tuned = IndexParams { ef_search: ef, ..params.clone() };
            hnsw = reload_with(hnsw, &tuned, dim)?;
            let (found, lat) = search_all(&mut hnsw, &queries, dim, k)?;
            println!("| {ef} | {:.4} | {} | {} | {} |", recall(&found, &truth), ms(lat.p50), ms(lat.p99), ms(lat.mean));
        }
    }
    println!("\nload average at end: {}", load_average());
    Ok(())
}

/// The 1/5/15-minute load averages: other work on the machine skews latency percentiles.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Applies another efSearch by a write/read round trip, the way a restarted service picks up
/// new parameters (and a check that snapshots preserve the graph).
fn reload_with(index: VectorIndex, params: &IndexParams, dim: usize) -> Result<VectorIndex, String> {
    let path = std::env::temp_dir().join(format!("memory-bench-{}.faiss", std::process::id()));
    index.write(&path).map_err(|e| e.to_string())?;
    drop(index);
    let read = VectorIndex::read(&path, dim, params, IndexKind::Hnsw, &[]).map_err(|e| e.to_string());
    let _ = std::fs::remove_file(&path);
    read
}

/// Thread settings the service should run with (docs/memory.md): OpenMP threads that sleep
/// when idle instead of spinning, and a single-threaded BLAS. On a 2-core machine, spinning
/// idle threads left over from a parallel HNSW build steal the core a search needs.
const THREAD_ENV: [(&str, &str); 2] = [("OMP_WAIT_POLICY", "PASSIVE"), ("OPENBLAS_NUM_THREADS", "1")];

/// Runs this binary again with [`THREAD_ENV`] when it is not set: OpenMP and OpenBLAS read
/// it once at load time, and setting it in-process would need `unsafe`.
fn reexec_with_thread_env() -> Option<ExitCode> {
    if THREAD_ENV.iter().all(|(key, _)| std::env::var_os(key).is_some()) {
        return None;
    }
    let exe = std::env::current_exe().ok()?;
    let mut command = std::process::Command::new(exe);
    command.args(std::env::args_os().skip(1));
    for (key, value) in THREAD_ENV {
        if std::env::var_os(key).is_none() {
            command.env(key, value);
        }
    }
    let status = command.status().ok()?;
    Some(ExitCode::from(status.code().and_then(|c| u8::try_from(c).ok()).unwrap_or(1)))
}

fn main() -> ExitCode {
    if let Some(code) = reexec_with_thread_env() {
        return code;
    }
    match Args::parse(std::env::args().skip(1)) {
        Ok(args) => match run(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("memory-bench: {error}");
                ExitCode::FAILURE
            }
        },
        Err(error) => {
            if !error.is_empty() {
                eprintln!("memory-bench: {error}");
            }
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}
