//! Keeping a leased claim (a planning or a step) alive while its job works on it.

use super::JobContext;
use crate::store::{Lease, StoreError};

/// Renews the lease with `renew` (and keeps the queue delivery fresh) at a third of the
/// lease; returns, with the reason, only when the lease can no longer be held. `renew`
/// answers whether the lease is still ours.
pub(super) async fn keep_lease<F, Fut>(ctx: &JobContext<'_>, work: String, lease: &Lease, mut renew: F) -> String
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<bool, StoreError>>,
{
    let mut tick = tokio::time::interval(lease.duration / 3);
    tick.tick().await; // the first tick is immediate and the lease is fresh
    let mut failures = 0;
    loop {
        tick.tick().await;
        if let Err(e) = ctx.deps.source.touch(&ctx.config.id, ctx.delivery).await {
            tracing::debug!(%work, error = %e, "could not refresh the delivery");
        }
        match renew().await {
            Ok(true) => failures = 0,
            Ok(false) => return format!("another worker holds {work} now, or its task ended"),
            // A blip is survivable: the lease still has two thirds of its time.
            Err(e) if failures < 1 => {
                failures += 1;
                tracing::warn!(%work, error = %e, "could not renew the lease");
            }
            Err(e) => return format!("could not renew the lease: {e}"),
        }
    }
}
