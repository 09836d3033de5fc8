//! Times Postgres round trips through sqlx on one connection, plain TCP and TLS, for
//! statements of growing size, to see whether the missing `TCP_NODELAY` on sqlx 0.9's
//! sockets (sqlx issue #4335) stalls them. A round trip that waits for a delayed ACK takes
//! 40 ms or more on Linux; one that does not takes well under a millisecond on loopback.
//!
//! `cargo run -p api --example pg_nodelay` (DATABASE_URL, default the local `postgres`
//! database; ROUNDS, default 200). docs/tcp-nodelay.md has the results and how to run the same
//! binary with the option set, for comparison.

use std::{
    str::FromStr,
    time::{Duration, Instant},
};

use sqlx::{
    Connection,
    postgres::{PgConnectOptions, PgConnection, PgSslMode},
};

/// Statement sizes to try: a typical one, one just under a TLS record (16 KiB), several
/// records, and more than a loopback segment (64 KiB).
const SIZES: [usize; 5] = [100, 12 * 1024, 20 * 1024, 70 * 1024, 200 * 1024];
/// A round trip this slow waited for a delayed ACK.
const STALL: Duration = Duration::from_millis(30);

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let rounds: usize = std::env::var("ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(200);
    println!(
        "{:<6} {:>8} {:>9} {:>9} {:>9} {:>9} {:>7}",
        "mode", "bytes", "p50 ms", "p90 ms", "p99 ms", "max ms", "stalls"
    );
    for (name, mode) in [("plain", PgSslMode::Disable), ("tls", PgSslMode::Require)] {
        let options = PgConnectOptions::from_str(&url)?.ssl_mode(mode);
        let mut connection = PgConnection::connect_with(&options).await?;
        for size in SIZES {
            let text = "x".repeat(size);
            let mut times = Vec::with_capacity(rounds);
            // The first rounds prepare the statement and warm the connection up.
            for round in 0..rounds + 5 {
                let started = Instant::now();
                let length: i32 =
                    sqlx::query_scalar("SELECT length($1::text)").bind(&text).fetch_one(&mut connection).await?;
                anyhow::ensure!(length as usize == size, "the server saw {length} bytes, not {size}");
                if round >= 5 {
                    times.push(started.elapsed());
                }
            }
            times.sort();
            let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize].as_secs_f64() * 1000.0;
            let stalls = times.iter().filter(|t| **t >= STALL).count();
            println!(
                "{name:<6} {size:>8} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {stalls:>7}",
                at(0.5),
                at(0.9),
                at(0.99),
                at(1.0)
            );
        }
        connection.close().await?;
    }
    Ok(())
}
