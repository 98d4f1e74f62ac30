//! Delivery threads ("lanes"): one single-threaded tokio runtime per thread, each
//! running whole connections, filled one at a time.
//!
//! A connection runs on one lane from connect to QUIT, so the wake-up for a reply
//! that arrives on its socket, the render of the next message and its write all
//! happen on the thread whose epoll saw the reply: nothing is handed between
//! threads per message, as tokio's work-stealing scheduler did.
//!
//! New connections go to the first lane that is not busy ([`SPILL_PERMILLE`] of its
//! time over the last [`SAMPLE`]), so a light load stays on one thread, where
//! each wake-up serves the replies of many connections; on a 2-core host that
//! also runs the receivers (the e2e benchmark) that costs less CPU per message
//! than spreading the same load over both cores (benches/README.md). A lane that
//! is saturated while another has room sheds a quarter of its connections: each
//! finishes the transactions it has in flight, says QUIT and reconnects through
//! [`Lanes::pick`], so CPU-bound work (RSA signing, TLS) spreads over every core.
//! The decisions are the pure functions [`choose`] and [`to_shed`].

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use tokio::runtime::{Builder, Handle};
use tokio::sync::oneshot;

/// How often the lanes' busy time is sampled.
pub const SAMPLE: Duration = Duration::from_millis(200);
/// A lane busier than this (per mille of the last sample) takes no new
/// connection while a less busy one exists.
pub const SPILL_PERMILLE: u32 = 700;
/// A lane at least this busy is saturated: it sheds connections to a lane below
/// [`RECEIVE_PERMILLE`].
pub const SATURATED_PERMILLE: u32 = 900;
/// A lane below this has room for shed connections.
pub const RECEIVE_PERMILLE: u32 = 500;

/// One lane's load over the last sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Load {
    /// Time spent running tasks, per mille of the sample.
    pub busy_permille: u32,
    /// Connections open on the lane.
    pub connections: usize,
}

/// The lane for a new connection: the first one below [`SPILL_PERMILLE`],
/// otherwise the least busy (the first of equals).
pub fn choose(loads: &[Load]) -> usize {
    if let Some(i) = loads.iter().position(|l| l.busy_permille < SPILL_PERMILLE) {
        return i;
    }
    loads
        .iter()
        .enumerate()
        .min_by_key(|(_, l)| l.busy_permille)
        .map_or(0, |(i, _)| i)
}

/// How many connections each lane should move elsewhere: a quarter of a
/// saturated lane's connections (at least one, and only when it has two or
/// more), when some lane has room.
pub fn to_shed(loads: &[Load]) -> Vec<usize> {
    let room = loads.iter().any(|l| l.busy_permille < RECEIVE_PERMILLE);
    loads
        .iter()
        .map(|l| {
            if room && l.busy_permille >= SATURATED_PERMILLE && l.connections >= 2 {
                (l.connections / 4).max(1)
            } else {
                0
            }
        })
        .collect()
}

#[derive(Debug)]
struct Lane {
    handle: Handle,
    busy_permille: AtomicU32,
    connections: AtomicUsize,
    shed: AtomicUsize,
}

#[derive(Debug)]
struct Sampler {
    at: Instant,
    busy: Vec<Duration>,
}

/// The delivery threads of one engine. Dropping it stops them: each lane's
/// runtime is dropped on its own thread, cancelling whatever still runs there.
#[derive(Debug)]
pub struct Lanes {
    lanes: Vec<Lane>,
    started: Instant,
    /// When the next sample is due, in nanoseconds since `started`.
    next_sample: AtomicU64,
    sampler: Mutex<Sampler>,
    stops: Vec<oneshot::Sender<()>>,
}

impl Lanes {
    /// Starts `count` lanes (0: one per CPU core, as the OS reports them).
    pub fn start(count: usize) -> std::io::Result<Lanes> {
        let count = if count == 0 {
            thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            count
        };
        let mut lanes = Vec::with_capacity(count);
        let mut stops = Vec::with_capacity(count);
        for i in 0..count {
            let runtime = Builder::new_current_thread().enable_all().build()?;
            let (stop, stopped) = oneshot::channel::<()>();
            lanes.push(Lane {
                handle: runtime.handle().clone(),
                busy_permille: AtomicU32::new(0),
                connections: AtomicUsize::new(0),
                shed: AtomicUsize::new(0),
            });
            stops.push(stop);
            thread::Builder::new()
                .name(format!("volley-lane-{i}"))
                .spawn(move || {
                    // Tasks spawned through the handle run while this blocks;
                    // the sender's drop (the engine's) ends it.
                    let _ = runtime.block_on(stopped);
                })?;
        }
        let started = Instant::now();
        Ok(Lanes {
            sampler: Mutex::new(Sampler {
                at: started,
                busy: vec![Duration::ZERO; lanes.len()],
            }),
            lanes,
            started,
            next_sample: AtomicU64::new(SAMPLE.as_nanos() as u64),
            stops,
        })
    }

    /// How many lanes there are.
    pub fn len(&self) -> usize {
        self.lanes.len()
    }

    /// Always false: there is at least one lane.
    pub fn is_empty(&self) -> bool {
        self.lanes.is_empty()
    }

    /// The lane for a new connection (see [`choose`]): its index and runtime.
    pub fn pick(&self) -> (usize, &Handle) {
        self.maybe_sample(Instant::now());
        let i = if self.lanes.len() == 1 {
            0
        } else {
            choose(&self.loads())
        };
        (i, &self.lanes[i].handle)
    }

    /// Counts a connection on `lane` until the returned guard is dropped.
    pub fn seat(self: &Arc<Self>, lane: usize) -> Seat {
        self.lanes[lane].connections.fetch_add(1, Ordering::Relaxed);
        Seat {
            lanes: Arc::clone(self),
            lane,
        }
    }

    /// Whether a connection on `lane` should finish and reconnect elsewhere
    /// (the lane is saturated while another has room): true for as many
    /// callers as [`to_shed`] said at the last sample.
    pub fn shedding(&self, lane: usize, now: Instant) -> bool {
        if self.lanes.len() == 1 {
            return false;
        }
        self.maybe_sample(now);
        self.lanes[lane]
            .shed
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
    }

    /// Each lane's load at the last sample.
    pub fn loads(&self) -> Vec<Load> {
        self.lanes
            .iter()
            .map(|l| Load {
                busy_permille: l.busy_permille.load(Ordering::Relaxed),
                connections: l.connections.load(Ordering::Relaxed),
            })
            .collect()
    }

    fn maybe_sample(&self, now: Instant) {
        let since = now.saturating_duration_since(self.started).as_nanos() as u64;
        if since < self.next_sample.load(Ordering::Relaxed) {
            return;
        }
        // One caller samples; the others go on with the last figures.
        let Ok(mut sampler) = self.sampler.try_lock() else {
            return;
        };
        let window = now.saturating_duration_since(sampler.at);
        if window < SAMPLE {
            return;
        }
        for (lane, last) in self.lanes.iter().zip(sampler.busy.iter_mut()) {
            let busy = lane.handle.metrics().worker_total_busy_duration(0);
            let delta = busy.saturating_sub(*last);
            *last = busy;
            let permille = (delta.as_nanos() * 1000 / window.as_nanos().max(1)).min(1000) as u32;
            lane.busy_permille.store(permille, Ordering::Relaxed);
        }
        for (lane, shed) in self.lanes.iter().zip(to_shed(&self.loads())) {
            lane.shed.store(shed, Ordering::Relaxed);
        }
        sampler.at = now;
        self.next_sample
            .store(since + SAMPLE.as_nanos() as u64, Ordering::Relaxed);
    }
}

impl Drop for Lanes {
    fn drop(&mut self) {
        // Not joined: the engine may be dropped from inside one of its own
        // lanes' tasks; each thread ends by itself once its sender is gone.
        self.stops.clear();
    }
}

/// A connection counted on its lane; uncounted when dropped.
#[derive(Debug)]
pub struct Seat {
    lanes: Arc<Lanes>,
    lane: usize,
}

impl Drop for Seat {
    fn drop(&mut self) {
        self.lanes.lanes[self.lane]
            .connections
            .fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(busy_permille: u32, connections: usize) -> Load {
        Load {
            busy_permille,
            connections,
        }
    }

    #[test]
    fn new_connections_fill_the_first_lane_with_room() {
        assert_eq!(choose(&[load(0, 0), load(0, 0)]), 0);
        assert_eq!(choose(&[load(699, 90), load(0, 0)]), 0);
        assert_eq!(choose(&[load(700, 90), load(0, 0)]), 1);
        assert_eq!(choose(&[load(950, 50), load(800, 40), load(300, 5)]), 2);
        // Every lane busy: the least busy one.
        assert_eq!(choose(&[load(950, 50), load(800, 40), load(900, 5)]), 1);
        assert_eq!(choose(&[load(1000, 1), load(1000, 1)]), 0);
        assert_eq!(choose(&[]), 0);
    }

    #[test]
    fn a_saturated_lane_sheds_a_quarter_when_another_has_room() {
        assert_eq!(to_shed(&[load(950, 100), load(100, 0)]), vec![25, 0]);
        assert_eq!(to_shed(&[load(900, 3), load(499, 1)]), vec![1, 0]);
        // No lane with room: nothing moves.
        assert_eq!(to_shed(&[load(950, 100), load(500, 10)]), vec![0, 0]);
        // A single connection stays where it is (it would only bounce back).
        assert_eq!(to_shed(&[load(1000, 1), load(0, 0)]), vec![0, 0]);
        // Not saturated.
        assert_eq!(to_shed(&[load(899, 100), load(0, 0)]), vec![0, 0]);
    }

    #[test]
    fn tasks_run_on_the_lane_picked_and_a_busy_lane_spills() {
        let lanes = Arc::new(Lanes::start(2).unwrap());
        assert_eq!(lanes.len(), 2);
        let rt = Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            // Idle: every connection goes to lane 0, and runs on its thread.
            let (lane, handle) = lanes.pick();
            assert_eq!(lane, 0);
            let seat = lanes.seat(lane);
            let name = handle
                .spawn(async {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    thread::current().name().unwrap_or("").to_owned()
                })
                .await
                .unwrap();
            assert_eq!(name, "volley-lane-0");
            assert_eq!(lanes.loads()[0].connections, 1);
            drop(seat);
            assert_eq!(lanes.loads()[0].connections, 0);

            // Keep lane 0 busy (yielding now and then, as real work does) for
            // several samples, with four connections seated on it.
            let (_, handle) = lanes.pick();
            let hog = handle.spawn(async {
                let until = Instant::now() + SAMPLE * 5;
                while Instant::now() < until {
                    let slice = Instant::now() + Duration::from_millis(1);
                    while Instant::now() < slice {
                        std::hint::spin_loop();
                    }
                    tokio::task::yield_now().await;
                }
            });
            let _seats = [lanes.seat(0), lanes.seat(0), lanes.seat(0), lanes.seat(0)];
            let deadline = Instant::now() + Duration::from_secs(10);
            while lanes.pick().0 != 1 {
                assert!(Instant::now() < deadline, "lane 0 never measured busy");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert!(lanes.loads()[0].busy_permille >= SPILL_PERMILLE);
            // Saturated with four connections while lane 1 idles: one moves.
            while !lanes.shedding(0, Instant::now()) {
                assert!(Instant::now() < deadline, "lane 0 never shed");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert!(!lanes.shedding(1, Instant::now()));
            hog.await.unwrap();
        });
    }

    #[test]
    fn zero_means_one_lane_per_core() {
        let lanes = Lanes::start(0).unwrap();
        let cores = thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(lanes.len(), cores);
        assert!(!lanes.is_empty());
        assert!(!lanes.shedding(0, Instant::now()) || cores > 1);
    }
}
