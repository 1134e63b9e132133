//! Duplicate call suppression: while a call for a key is running, later
//! callers for the same key wait for it and share its result instead of
//! running their own.
//!
//! Nothing is cached here: once a call ends, the next caller runs a new one.
//! If a leader unwinds (panics), its waiters are woken and one of them runs
//! the call itself, so nobody waits forever. A leader that asks for its own
//! key again (from inside its call) gets [`Reentrant`] instead of waiting on
//! itself.

use parking_lot::{Condvar, Mutex};
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;

/// The caller is already running the call for this key (it would wait on
/// itself forever).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reentrant;

enum State<V> {
    Running,
    Done(V),
    /// The leader unwound without a result.
    Abandoned,
}

/// Identifies the calling thread while it lives: the address of a
/// thread-local. (Unlike `thread::current()`, this allocates nothing on
/// threads that C code created.)
fn thread_mark() -> usize {
    thread_local!(static MARK: u8 = const { 0 });
    MARK.with(|m| m as *const u8 as usize)
}

struct Call<V> {
    leader: usize,
    state: Mutex<State<V>>,
    cv: Condvar,
    waiters: Mutex<usize>,
}

/// A set of in-flight calls keyed by `K`, each producing a `V`.
pub struct Group<K, V> {
    calls: Mutex<HashMap<K, Arc<Call<V>>>>,
}

impl<K, V> Default for Group<K, V> {
    fn default() -> Self {
        Group {
            calls: Mutex::new(HashMap::new()),
        }
    }
}

/// What one caller got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shared<V> {
    pub value: V,
    /// True if another caller ran the call and this one only waited.
    pub shared: bool,
}

impl<K: Hash + Eq + Clone, V: Clone> Group<K, V> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `f` for `key`, or waits for the call already running for it and
    /// returns a clone of its result.
    pub fn run(&self, key: K, f: impl FnOnce() -> V) -> Result<Shared<V>, Reentrant> {
        let mut f = Some(f);
        loop {
            let me = thread_mark();
            let (call, leader) = {
                let mut calls = self.calls.lock();
                match calls.get(&key) {
                    Some(c) if c.leader == me => return Err(Reentrant),
                    Some(c) => (c.clone(), false),
                    None => {
                        let c = Arc::new(Call {
                            leader: me,
                            state: Mutex::new(State::Running),
                            cv: Condvar::new(),
                            waiters: Mutex::new(0),
                        });
                        calls.insert(key.clone(), c.clone());
                        (c, true)
                    }
                }
            };
            if leader {
                let f = f
                    .take()
                    .unwrap_or_else(|| unreachable!("a caller leads at most once"));
                return Ok(self.lead(&key, &call, f));
            }
            if let Some(value) = wait(&call) {
                return Ok(Shared {
                    value,
                    shared: true,
                });
            }
            // The leader unwound: try again, possibly as the leader.
        }
    }

    fn lead(&self, key: &K, call: &Arc<Call<V>>, f: impl FnOnce() -> V) -> Shared<V> {
        // Publishes the result, or `Abandoned` if `f` unwinds.
        struct Finish<'a, K: Hash + Eq, V> {
            group: &'a Group<K, V>,
            key: &'a K,
            call: &'a Arc<Call<V>>,
            value: Option<V>,
        }
        impl<K: Hash + Eq, V> Drop for Finish<'_, K, V> {
            fn drop(&mut self) {
                let mut calls = self.group.calls.lock();
                if calls
                    .get(self.key)
                    .is_some_and(|c| Arc::ptr_eq(c, self.call))
                {
                    calls.remove(self.key);
                }
                drop(calls);
                *self.call.state.lock() = match self.value.take() {
                    Some(v) => State::Done(v),
                    None => State::Abandoned,
                };
                self.call.cv.notify_all();
            }
        }
        let mut finish = Finish {
            group: self,
            key,
            call,
            value: None,
        };
        let value = f();
        finish.value = Some(value.clone());
        drop(finish);
        Shared {
            value,
            shared: false,
        }
    }

    /// Callers waiting on the call running for `key` (0 if none runs).
    pub fn waiters(&self, key: &K) -> usize {
        let call = self.calls.lock().get(key).cloned();
        call.map_or(0, |c| *c.waiters.lock())
    }

    /// Keys with a call running now.
    pub fn in_flight(&self) -> usize {
        self.calls.lock().len()
    }
}

/// Waits for a call to end: its value, or `None` if its leader unwound.
fn wait<V: Clone>(call: &Call<V>) -> Option<V> {
    *call.waiters.lock() += 1;
    let mut state = call.state.lock();
    while matches!(*state, State::Running) {
        call.cv.wait(&mut state);
    }
    *call.waiters.lock() -= 1;
    match &*state {
        State::Done(v) => Some(v.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    /// Spins (bounded) until `n` callers wait on `key`.
    fn await_waiters(g: &Group<u32, u64>, key: u32, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while g.waiters(&key) < n {
            assert!(Instant::now() < deadline, "waiters never arrived");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn concurrent_callers_share_one_call() {
        let g = Arc::new(Group::<u32, u64>::new());
        let calls = Arc::new(AtomicUsize::new(0));
        let (release, gate) = mpsc::channel::<()>();
        let leader = {
            let (g, calls) = (g.clone(), calls.clone());
            std::thread::spawn(move || {
                g.run(7, || {
                    calls.fetch_add(1, SeqCst);
                    gate.recv().unwrap();
                    42
                })
            })
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while g.in_flight() == 0 {
            assert!(Instant::now() < deadline);
            std::thread::yield_now();
        }
        let followers: Vec<_> = (0..4)
            .map(|_| {
                let (g, calls) = (g.clone(), calls.clone());
                std::thread::spawn(move || {
                    g.run(7, || {
                        calls.fetch_add(1, SeqCst);
                        0
                    })
                })
            })
            .collect();
        await_waiters(&g, 7, 4);
        release.send(()).unwrap();
        let led = leader.join().unwrap().unwrap();
        assert_eq!(
            led,
            Shared {
                value: 42,
                shared: false
            }
        );
        for f in followers {
            assert_eq!(
                f.join().unwrap().unwrap(),
                Shared {
                    value: 42,
                    shared: true
                }
            );
        }
        assert_eq!(calls.load(SeqCst), 1);
        assert_eq!(g.in_flight(), 0);
    }

    #[test]
    fn finished_calls_are_not_cached_and_keys_are_independent() {
        let g = Group::<u32, u64>::new();
        assert_eq!(g.run(1, || 10).unwrap().value, 10);
        assert_eq!(g.run(1, || 11).unwrap().value, 11);
        assert_eq!(g.run(2, || 20).unwrap().value, 20);
        assert_eq!(g.in_flight(), 0);
    }

    #[test]
    fn reentrant_call_is_refused_not_deadlocked() {
        let g = Group::<u32, u64>::new();
        let inner = g.run(3, || match g.run(3, || 1) {
            Err(Reentrant) => 99,
            Ok(_) => 0,
        });
        assert_eq!(inner.unwrap().value, 99);
        // Another key from inside a call is fine.
        let other = g.run(4, || g.run(5, || 5).unwrap().value);
        assert_eq!(other.unwrap().value, 5);
    }

    #[test]
    fn a_panicking_leader_wakes_its_waiters_who_retry() {
        let g = Arc::new(Group::<u32, u64>::new());
        let (release, gate) = mpsc::channel::<()>();
        let leader = {
            let g = g.clone();
            std::thread::spawn(move || {
                let _ = g.run(9, || {
                    gate.recv().unwrap();
                    panic!("leader fails");
                });
            })
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while g.in_flight() == 0 {
            assert!(Instant::now() < deadline);
            std::thread::yield_now();
        }
        let follower = {
            let g = g.clone();
            std::thread::spawn(move || g.run(9, || 5))
        };
        await_waiters(&g, 9, 1);
        release.send(()).unwrap();
        assert!(leader.join().is_err());
        let got = follower.join().unwrap().unwrap();
        assert_eq!(
            got,
            Shared {
                value: 5,
                shared: false
            }
        );
        assert_eq!(g.in_flight(), 0);
    }
}
