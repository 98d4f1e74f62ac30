//! Delivery threads ("lanes"): one single-threaded tokio runtime per thread, each
//! running whole connections, filled one at a time.
//!
//! A connection runs on one lane from connect to QUIT, so the wake-up for a reply
//! that arrives on its socket, the render of the next message and its write all
//! happen on the thread whose epoll saw the reply: nothing is handed between
//! threads per message, as tokio's work-stealing scheduler did.
//!
//! New connections go to the first lane that is not busy (its thread used less
//! than [`SPILL_PERMILLE`] of a core over the last [`SAMPLE`], as the kernel
//! accounts it), so a light load stays on one thread, where
//! each wake-up serves the replies of many connections; on a 2-core host that
//! also runs the receivers (the e2e benchmark) that costs less CPU per message
//! than spreading the same load over both cores (benches/README.md). A lane that
//! is saturated while another has room sheds a quarter of its connections: each
//! finishes the transactions it has in flight, says QUIT and reconnects through
//! [`Lanes::pick`], so CPU-bound work (RSA signing, TLS) spreads over every core.
//! The decisions are the pure functions [`choose`] and [`to_shed`].

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use tokio::runtime::{Builder, Handle};
use tokio::sync::{oneshot, Notify};

/// How often each lane measures the CPU time its thread used (while it has
/// connections): the kernel counts it in 10 ms ticks, so 500 ms gives 2%.
pub const SAMPLE: Duration = Duration::from_millis(500);
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
    /// CPU time the lane's thread used, per mille of the sample.
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

#[derive(Debug, Default)]
struct Gauge {
    busy_permille: AtomicU32,
    connections: AtomicUsize,
    shed: AtomicUsize,
    /// Wakes the lane's meter when its first connection is seated.
    seated: Notify,
}

/// The delivery threads of one engine. Dropping it stops them: each lane's
/// runtime is dropped on its own thread, cancelling whatever still runs there.
#[derive(Debug)]
pub struct Lanes {
    handles: Vec<Handle>,
    /// Lane `i`'s load, shared with its meter.
    gauges: Arc<[Gauge]>,
    stops: Vec<oneshot::Sender<()>>,
}

impl Lanes {
    /// Starts `count` lanes (0: one per CPU core, as the OS reports them).
    pub fn start(count: usize) -> std::io::Result<Lanes> {
        Lanes::start_metered(count, true)
    }

    /// Starts the lanes, with or without their meters (tests set the loads).
    fn start_metered(count: usize, metered: bool) -> std::io::Result<Lanes> {
        let count = if count == 0 {
            thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            count
        };
        let gauges: Arc<[Gauge]> = (0..count).map(|_| Gauge::default()).collect();
        let mut handles = Vec::with_capacity(count);
        let mut stops = Vec::with_capacity(count);
        for i in 0..count {
            let runtime = Builder::new_current_thread().enable_all().build()?;
            let (stop, stopped) = oneshot::channel::<()>();
            handles.push(runtime.handle().clone());
            stops.push(stop);
            let meter = (metered && count > 1).then(|| meter(Arc::clone(&gauges), i));
            thread::Builder::new()
                .name(format!("volley-lane-{i}"))
                .spawn(move || {
                    if let Some(meter) = meter {
                        runtime.spawn(meter);
                    }
                    // Tasks spawned through the handle run while this blocks;
                    // the sender's drop (the engine's) ends it.
                    let _ = runtime.block_on(stopped);
                })?;
        }
        Ok(Lanes {
            handles,
            gauges,
            stops,
        })
    }

    /// The lane for a new connection (see [`choose`]): its index and runtime.
    pub fn pick(&self) -> (usize, &Handle) {
        let i = if self.handles.len() == 1 {
            0
        } else {
            choose(&loads(&self.gauges))
        };
        (i, &self.handles[i])
    }

    /// Counts a connection on `lane` until the returned guard is dropped.
    pub fn seat(self: &Arc<Self>, lane: usize) -> Seat {
        let gauge = &self.gauges[lane];
        if gauge.connections.fetch_add(1, Ordering::Relaxed) == 0 {
            gauge.seated.notify_one();
        }
        Seat {
            lanes: Arc::clone(self),
            lane,
        }
    }

    /// Whether a connection on `lane` should finish and reconnect elsewhere
    /// (the lane is saturated while another has room): true for as many
    /// callers as [`to_shed`] said at the lane's last sample.
    pub fn shedding(&self, lane: usize) -> bool {
        self.gauges[lane]
            .shed
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
    }

    /// Each lane's load at its last sample.
    pub fn loads(&self) -> Vec<Load> {
        loads(&self.gauges)
    }
}

fn loads(gauges: &[Gauge]) -> Vec<Load> {
    gauges
        .iter()
        .map(|g| Load {
            busy_permille: g.busy_permille.load(Ordering::Relaxed),
            connections: g.connections.load(Ordering::Relaxed),
        })
        .collect()
}

/// Runs on lane `lane`: every [`SAMPLE`] while the lane has connections,
/// measures the CPU its own thread used and decides how many connections it
/// sheds. Asleep while the lane has none (an idle daemon is not woken).
async fn meter(gauges: Arc<[Gauge]>, lane: usize) {
    let gauge = &gauges[lane];
    loop {
        if gauge.connections.load(Ordering::Relaxed) == 0 {
            gauge.busy_permille.store(0, Ordering::Relaxed);
            gauge.shed.store(0, Ordering::Relaxed);
            gauge.seated.notified().await;
        }
        let (Some(cpu_before), at) = (thread_cpu(), Instant::now()) else {
            // No /proc: the lanes are filled in turn by load 0, i.e. packed.
            return;
        };
        tokio::time::sleep(SAMPLE).await;
        let Some(cpu) = thread_cpu() else { return };
        let window = at.elapsed().as_millis().max(1);
        let used = cpu.saturating_sub(cpu_before).as_millis();
        record(&gauges, lane, (used * 1000 / window).min(1000) as u32);
    }
}

/// Stores lane `lane`'s load for the last sample and how many connections it
/// sheds.
fn record(gauges: &[Gauge], lane: usize, busy_permille: u32) {
    let gauge = &gauges[lane];
    gauge.busy_permille.store(busy_permille, Ordering::Relaxed);
    let shed = to_shed(&loads(gauges))[lane];
    gauge.shed.store(shed, Ordering::Relaxed);
}

/// The CPU time (user and system) the calling thread has used, from
/// `/proc/thread-self/stat` (in the kernel's 100 Hz user ticks).
fn thread_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    // Fields 14 and 15 of proc(5): utime, stime; after the name, 12th and 13th.
    let mut fields = after_name.split_ascii_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
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
        self.lanes.gauges[self.lane]
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
    fn tasks_run_on_the_lane_picked_a_busy_lane_spills_a_saturated_one_sheds() {
        let lanes = Arc::new(Lanes::start_metered(2, false).unwrap());
        assert_eq!(lanes.loads().len(), 2);
        let rt = Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            // Idle: a connection goes to lane 0, and runs on its thread.
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
        });
        // Busy but not saturated: new connections go to lane 1, none move.
        let _seats = [lanes.seat(0), lanes.seat(0), lanes.seat(0), lanes.seat(0)];
        record(&lanes.gauges, 0, 750);
        assert_eq!(lanes.pick().0, 1);
        assert!(!lanes.shedding(0));
        // Saturated with four connections while lane 1 idles: one moves.
        record(&lanes.gauges, 0, 950);
        assert!(lanes.shedding(0));
        assert!(!lanes.shedding(0));
        assert!(!lanes.shedding(1));
        // Lane 1 busy too: nothing moves.
        record(&lanes.gauges, 1, 600);
        record(&lanes.gauges, 0, 950);
        assert!(!lanes.shedding(0));
    }

    #[test]
    fn a_lane_meters_its_own_thread_while_it_has_connections() {
        let lanes = Arc::new(Lanes::start(2).unwrap());
        let rt = Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let _seat = lanes.seat(0);
            // Work on lane 0, yielding now and then as real work does, until its
            // meter has seen it (any share of a core: the host may be busy).
            let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let hogging = Arc::clone(&stop);
            let hog = lanes.pick().1.spawn(async move {
                while !hogging.load(Ordering::Relaxed) {
                    let slice = Instant::now() + Duration::from_millis(1);
                    while Instant::now() < slice {
                        std::hint::spin_loop();
                    }
                    tokio::task::yield_now().await;
                }
            });
            let deadline = Instant::now() + Duration::from_secs(30);
            while lanes.loads()[0].busy_permille < 100 {
                assert!(Instant::now() < deadline, "lane 0's meter saw no CPU time");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            // Lane 1 has no connection: its meter sleeps and reports nothing.
            assert_eq!(lanes.loads()[1].busy_permille, 0);
            stop.store(true, Ordering::Relaxed);
            hog.await.unwrap();
        });
    }

    #[test]
    fn thread_cpu_time_is_read_and_grows() {
        let before = thread_cpu().unwrap();
        let until = Instant::now() + Duration::from_millis(120);
        while Instant::now() < until {
            std::hint::spin_loop();
        }
        assert!(thread_cpu().unwrap() > before);
    }

    #[test]
    fn zero_means_one_lane_per_core() {
        let lanes = Lanes::start(0).unwrap();
        let cores = thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(lanes.loads().len(), cores);
        assert!(!lanes.shedding(0));
    }
}
