//! Per-user lanes of one process's sender: how many attempts each user has in flight, so a
//! user whose receiver is slow (or never answers) fills only their own lane and every other
//! user's deliveries go on.
//!
//! The sender asks [`Lanes::room`] before each claim and claims only what fits: at most
//! `per_user` attempts in flight per user and `total` in all. An attempt holds a
//! [`LaneGuard`] until it has been recorded; dropping the guard frees the slot.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
};

/// What may be claimed now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Room {
    /// Attempts that may start now, over all users.
    pub total: usize,
    /// Users with attempts in flight and how many more each may start (possibly 0).
    pub busy: Vec<(String, usize)>,
}

#[derive(Debug)]
pub struct Lanes {
    per_user: usize,
    total: usize,
    in_flight: Mutex<HashMap<String, usize>>,
}

impl Lanes {
    pub fn new(per_user: usize, total: usize) -> Arc<Self> {
        Arc::new(Self { per_user, total, in_flight: Mutex::default() })
    }

    /// How many attempts one user may have in flight.
    pub fn per_user(&self) -> usize {
        self.per_user
    }

    pub fn room(&self) -> Room {
        let in_flight = self.lock();
        let running: usize = in_flight.values().sum();
        Room {
            total: self.total.saturating_sub(running),
            busy: in_flight.iter().map(|(user, n)| (user.clone(), self.per_user.saturating_sub(*n))).collect(),
        }
    }

    /// Counts an attempt of `user` in flight until the guard is dropped.
    pub fn enter(self: &Arc<Self>, user: &str) -> LaneGuard {
        *self.lock().entry(user.to_owned()).or_default() += 1;
        LaneGuard { lanes: self.clone(), user: user.to_owned() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        // The map is consistent after every statement: a panic elsewhere cannot corrupt it.
        self.in_flight.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One attempt's slot in its user's lane.
#[derive(Debug)]
pub struct LaneGuard {
    lanes: Arc<Lanes>,
    user: String,
}

impl Drop for LaneGuard {
    fn drop(&mut self) {
        let mut in_flight = self.lanes.lock();
        if let Some(n) = in_flight.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                in_flight.remove(&self.user); // idle users cost nothing
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_lane_leaves_room_for_others_and_frees_on_drop() {
        let lanes = Lanes::new(2, 3);
        assert_eq!(lanes.room(), Room { total: 3, busy: vec![] });
        let a1 = lanes.enter("a");
        let a2 = lanes.enter("a");
        assert_eq!(lanes.room(), Room { total: 1, busy: vec![("a".into(), 0)] });
        let b1 = lanes.enter("b");
        let mut room = lanes.room();
        room.busy.sort();
        assert_eq!(room, Room { total: 0, busy: vec![("a".into(), 0), ("b".into(), 1)] });
        drop((a1, b1));
        assert_eq!(lanes.room(), Room { total: 2, busy: vec![("a".into(), 1)] });
        drop(a2);
        assert_eq!(lanes.room(), Room { total: 3, busy: vec![] }, "idle users are forgotten");
    }
}
