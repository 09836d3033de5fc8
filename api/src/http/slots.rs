//! Per-user counts of requests that hold a connection open for long: event streams and
//! `Prefer: wait` requests. Each kind has its own count, at most `SSE_MAX_STREAMS_PER_USER`
//! per user in each API process.
//!
//! A slot is taken before the long part starts and given back when its guard is dropped,
//! whatever ended it (the task's end, the client leaving, a shutdown). Counting per process
//! rather than in Redis means a slot cannot outlive a crashed replica; with N replicas a user
//! holds at most N times the limit, which still bounds what one user can pin.

use std::{
    collections::HashMap,
    marker::PhantomData,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

/// The open event streams of each user (`GET /tasks/{id}/events`).
pub type StreamSlots = UserSlots<Streams>;
/// The waiting requests of each user (`Prefer: wait`).
pub type WaitSlots = UserSlots<Waits>;

/// Marks [`StreamSlots`]: a type of its own, so each count is a request extension of its own.
pub enum Streams {}
/// Marks [`WaitSlots`].
pub enum Waits {}

/// At most `max` slots per user, of one kind `K`.
pub struct UserSlots<K> {
    max: u32,
    open: Mutex<HashMap<String, u32>>,
    _kind: PhantomData<fn() -> K>,
}

impl<K> UserSlots<K> {
    pub fn new(max: u32) -> Arc<Self> {
        Arc::new(Self { max, open: Mutex::new(HashMap::new()), _kind: PhantomData })
    }

    /// How many slots each user may hold.
    pub fn max(&self) -> u32 {
        self.max
    }

    /// A slot for `user`, or `None` when they hold `max` already.
    pub fn acquire(self: &Arc<Self>, user: &str) -> Option<Slot<K>> {
        let mut open = self.lock();
        let count = open.entry(user.to_owned()).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(Slot { slots: self.clone(), user: user.to_owned() })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, u32>> {
        // Every change is one call, so the map is consistent whatever panicked holding it.
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One held slot, given back on drop.
pub struct Slot<K> {
    slots: Arc<UserSlots<K>>,
    user: String,
}

impl<K> Drop for Slot<K> {
    fn drop(&mut self) {
        let mut open = self.slots.lock();
        if let Some(count) = open.get_mut(&self.user) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                // Users holding nothing take no memory.
                open.remove(&self.user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_user_holds_at_most_max_and_a_dropped_slot_frees_its_place() {
        let slots = WaitSlots::new(2);
        let (a, b) = (slots.acquire("ann"), slots.acquire("ann"));
        assert!(a.is_some() && b.is_some());
        assert!(slots.acquire("ann").is_none(), "a third for the same user");
        assert!(slots.acquire("bob").is_some(), "another user has their own count");
        drop(a);
        assert!(slots.acquire("ann").is_some());
    }

    #[test]
    fn users_holding_nothing_are_forgotten() {
        let slots = StreamSlots::new(1);
        drop(slots.acquire("ann"));
        assert!(slots.lock().is_empty());
    }
}
