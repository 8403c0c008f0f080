//! The health monitor of a node: every backend is checked every `interval` (plus jitter, and a start spread
//! over the first interval so thousands of checks never fire together), its results turned into transitions
//! with rise/fall, and its last transitions kept for the CLI. Backends checked by SYN probes (the common TCP
//! check) are all driven by one scheduler task; every other kind of check has a task per backend.
//!
//! The daemon reads [`Monitor::weights`] (0 when down or manually drained, ramping during slow start) and
//! [`Monitor::services`] (whether each service has `min_healthy` healthy backends, i.e. whether to announce
//! its VIP), and waits on [`Monitor::changes`] to know when to read again. Manual drains survive health changes.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anylb_conf::{HealthCheck, HealthKind, NodeConfig};
use rustc_hash::FxHashMap;
use tokio::sync::{broadcast, watch};

use crate::calendar::Calendar;
use crate::checker::{self, Check, CheckError, DnsProbe, GrpcProbe, HttpProbe, Probe, TcpProbe};
use crate::latency::Durations;
use crate::state::{slow_start_weight, Health, RiseFall};
use crate::syn::{self, Prober};

/// Transitions kept per backend.
const HISTORY: usize = 16;

/// A backend of a service.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct Key {
    /// Service name.
    pub service: String,
    /// Backend address.
    pub address: IpAddr,
    /// Backend port.
    pub port: u16,
}

/// A change of health.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Transition {
    /// When.
    #[serde(serialize_with = "anylb_conf::json::time")]
    pub at: SystemTime,
    /// Which backend.
    pub key: Key,
    /// New health.
    pub to: Health,
    /// The last check's result.
    pub reason: String,
    /// The number of the check (1-based) that made the change.
    pub check: u64,
}

/// What the CLI shows of a backend.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BackendStatus {
    /// Which backend.
    pub key: Key,
    /// Health.
    pub health: Health,
    /// Manually drained.
    pub drained: bool,
    /// Configured weight.
    pub weight: u32,
    /// Effective weight now.
    pub effective_weight: u32,
    /// Last check result ("ok" or why it failed).
    pub last_result: Option<String>,
    /// How long the last check took, in milliseconds.
    pub last_check_ms: Option<f64>,
    /// The last failed check, however long ago.
    pub last_failure: Option<Failure>,
    /// Checks run.
    pub checks: u64,
    /// Checks failed.
    pub failures: u64,
    /// Durations of the checks run.
    pub durations: Durations,
    /// Last transitions, oldest first.
    pub transitions: Vec<Transition>,
}

/// A failed check.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Failure {
    /// When it ended.
    #[serde(serialize_with = "anylb_conf::json::time")]
    pub at: SystemTime,
    /// Why it failed.
    pub reason: String,
}

/// A service's health against its `min_healthy`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ServiceStatus {
    /// Name.
    pub name: String,
    /// VIP.
    pub vip: IpAddr,
    /// Backends up and not drained.
    pub healthy: u32,
    /// Backends.
    pub total: u32,
    /// Needed to announce.
    pub min_healthy: u32,
    /// Whether the VIP should be announced.
    pub announce: bool,
}

/// A backend's state. What every check writes comes first, in the record's first cache line (`repr(C)`,
/// aligned to a line): at 10,000 checks a second the records do not stay in cache, and a check that touched
/// fields spread over the record, and the heap text of its last result, waited on several lines instead of one.
#[derive(Debug)]
#[repr(C, align(64))]
struct Backend {
    checks: u64,
    last_duration: Option<Duration>,
    /// The last check passed (`last_result` is "ok"), so a passing check need not read that text.
    passing: bool,
    /// Its sum and first buckets share the first line.
    durations: Durations,
    weight: u32,
    drained: bool,
    admin_drained: bool,
    health: Health,
    up_since: Option<Instant>,
    slow_start: Option<Duration>,
    last_result: Option<String>,
    last_failure: Option<Failure>,
    failures: u64,
    transitions: VecDeque<Transition>,
}

// A check under 2.5 ms writes the first line only: the count, last duration, sum and first three buckets.
const _: () =
    assert!(std::mem::offset_of!(Backend, durations) + std::mem::offset_of!(Durations, counts) + 3 * 8 <= 64);

impl Backend {
    /// A backend not checked yet.
    fn new(weight: u32, drained: bool, health: Health, slow_start: Option<Duration>) -> Backend {
        Backend {
            checks: 0,
            last_duration: None,
            passing: false,
            durations: Durations::default(),
            weight,
            drained,
            admin_drained: false,
            health,
            up_since: None,
            slow_start,
            last_result: None,
            last_failure: None,
            failures: 0,
            transitions: VecDeque::new(),
        }
    }
}

#[derive(Debug)]
struct Inner {
    /// Every backend, in a slot of its own: a check (10,000 a second on a large node) reaches its backend by
    /// slot, with no hashing of its key.
    backends: Vec<(Key, Backend)>,
    /// The slot of each key, for the lookups by key (CLI, reload). Fx hashing, not SipHash: the keys come from
    /// the topology, so no one else chooses them.
    slots: FxHashMap<Key, usize>,
    services: Vec<(String, IpAddr, u32, Vec<Key>)>,
}

impl Inner {
    fn get(&self, key: &Key) -> Option<&Backend> {
        self.slots
            .get(key)
            .and_then(|&i| self.backends.get(i))
            .map(|(_, b)| b)
    }

    fn get_mut(&mut self, key: &Key) -> Option<&mut Backend> {
        let i = *self.slots.get(key)?;
        self.backends.get_mut(i).map(|(_, b)| b)
    }

    /// Adds a backend, or replaces the one of the same key; returns its slot.
    fn insert(&mut self, key: Key, b: Backend) -> usize {
        if let Some(&i) = self.slots.get(&key) {
            self.backends[i].1 = b;
            return i;
        }
        self.backends.push((key.clone(), b));
        self.slots.insert(key, self.backends.len() - 1);
        self.backends.len() - 1
    }
}

/// The running monitor.
#[derive(Debug, Clone)]
pub struct Monitor {
    inner: Arc<Mutex<Inner>>,
    events: broadcast::Sender<Transition>,
    changed: Arc<watch::Sender<u64>>,
    tasks: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

/// Checks start on a grid of this step, so that the thousands of checks of a second wake the control thread a
/// few hundred times rather than once per check (each wake-up is a context switch and, in a virtual machine, a
/// timer reprogramming that exits to the hypervisor); a SYN probe's answers then also come in batches.
const GRID: Duration = Duration::from_millis(4);

/// The grid's origin, common to every check of the process.
fn grid_origin() -> tokio::time::Instant {
    static ORIGIN: std::sync::OnceLock<tokio::time::Instant> = std::sync::OnceLock::new();
    *ORIGIN.get_or_init(tokio::time::Instant::now)
}

/// `t` rounded up to the next point of the [`GRID`] from `origin` (itself if on it; `origin` if before it).
fn on_grid(t: tokio::time::Instant, origin: tokio::time::Instant) -> tokio::time::Instant {
    point_at(grid_point(t, origin), origin)
}

/// The number of the first [`GRID`] point at or after `t` (0 is `origin`, and any time before it).
fn grid_point(t: tokio::time::Instant, origin: tokio::time::Instant) -> u64 {
    let since = t.saturating_duration_since(origin).as_nanos();
    u64::try_from(since.div_ceil(GRID.as_nanos())).unwrap_or(u64::MAX)
}

/// The number of the last [`GRID`] point at or before `t` (0 for any time before `origin`).
fn last_point(t: tokio::time::Instant, origin: tokio::time::Instant) -> u64 {
    let since = t.saturating_duration_since(origin).as_nanos();
    u64::try_from(since / GRID.as_nanos()).unwrap_or(u64::MAX)
}

/// The time of [`GRID`] point `k`.
fn point_at(k: u64, origin: tokio::time::Instant) -> tokio::time::Instant {
    let nanos = u128::from(k) * GRID.as_nanos();
    origin + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// A backend key's hash (FNV-1a over its service, address and port), computed once per backend: the
/// jitter of each of its checks comes from it ([`fraction`]).
fn key_seed(key: &Key) -> u64 {
    let octets = match key.address {
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        IpAddr::V6(a) => a.octets(),
    };
    key.service
        .bytes()
        .chain(octets)
        .chain(key.port.to_be_bytes())
        .fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        })
}

/// A deterministic fraction in [0, 1) from a backend's seed ([`key_seed`]) and a counter (jitter without a
/// shared RNG).
fn fraction(seed: u64, n: u64) -> f64 {
    let mut h = seed ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    // FNV leaves keys that differ only in their last bytes (consecutive ports) close together in the high
    // bits; a full avalanche (MurmurHash3's finaliser) spreads them over [0, 1).
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// A checked backend: its check, its rise and fall, and when its next check is due.
#[derive(Debug)]
struct Scheduled {
    slot: usize,
    key: Key,
    check: Check,
    interval: Duration,
    jitter: f64,
    rf: RiseFall,
    /// The jitter's seed ([`key_seed`]) and the number of the next check.
    seed: u64,
    n: u64,
    next: tokio::time::Instant,
}

impl Scheduled {
    /// A backend whose first check comes within one interval from now (spread by its key).
    fn new(slot: usize, key: Key, check: Check, interval: Duration, jitter: f64, rf: RiseFall) -> Scheduled {
        let seed = key_seed(&key);
        Scheduled {
            slot,
            check,
            interval,
            jitter,
            rf,
            seed,
            n: 1,
            next: tokio::time::Instant::now() + interval.mul_f64(fraction(seed, 0)),
            key,
        }
    }

    /// Records a check's result in the backend's state; plans the next check (interval ± jitter × interval
    /// after this one was due); returns the health change, if any.
    fn record(
        &mut self,
        inner: &mut Inner,
        result: Result<(), CheckError>,
        took: Duration,
    ) -> Option<Transition> {
        let j = (fraction(self.seed, self.n) * 2.0 - 1.0) * self.jitter.clamp(0.0, 0.5);
        self.next += self.interval.mul_f64(1.0 + j);
        self.n += 1;
        let change = self.rf.record(result.is_ok());
        let (_, b) = inner.backends.get_mut(self.slot)?;
        b.checks += 1;
        b.last_duration = Some(took);
        b.durations.record(took);
        // Thousands of checks a second: a passing check allocates nothing.
        match result {
            Ok(()) if b.passing => {}
            Ok(()) => {
                b.last_result = Some("ok".to_owned());
                b.passing = true;
            }
            Err(e) => {
                b.passing = false;
                b.failures += 1;
                let reason = e.to_string();
                b.last_failure = Some(Failure {
                    at: SystemTime::now(),
                    reason: reason.clone(),
                });
                b.last_result = Some(reason);
            }
        }
        let h = change?;
        let text = b.last_result.clone().unwrap_or_default();
        b.health = h;
        b.up_since = (h == Health::Up).then(Instant::now);
        let t = Transition {
            at: SystemTime::now(),
            key: self.key.clone(),
            to: h,
            reason: text,
            check: b.checks,
        };
        b.transitions.push_back(t.clone());
        while b.transitions.len() > HISTORY {
            b.transitions.pop_front();
        }
        Some(t)
    }
}

impl Monitor {
    /// Starts checking every backend of the services in `cfg` on the current tokio runtime.
    pub fn start(cfg: &NodeConfig) -> Monitor {
        Self::start_after(cfg, None)
    }

    /// Like [`start`](Self::start), but backends that `previous` already checked keep their health, history and
    /// manual drain (a reload must not take healthy backends down while they prove themselves again).
    pub fn start_after(cfg: &NodeConfig, previous: Option<&Monitor>) -> Monitor {
        let (events, _) = broadcast::channel(1024);
        let (changed, _) = watch::channel(0u64);
        let mut inner = Inner {
            backends: Vec::new(),
            slots: FxHashMap::default(),
            services: Vec::new(),
        };
        let mut checks = Vec::new();
        for s in &cfg.services {
            let mut keys = Vec::new();
            let checked = s.health.as_ref().is_some_and(|h| h.kind != HealthKind::None);
            for b in &s.backends {
                let port = b.port.or(s.port.port()).unwrap_or(0);
                let key = Key {
                    service: s.name.clone(),
                    address: b.address,
                    port,
                };
                let slow_start = s.health.as_ref().and_then(|h| h.slow_start).map(|d| d.get());
                let health = if checked { Health::Down } else { Health::Up };
                let slot = inner.insert(
                    key.clone(),
                    Backend::new(b.weight(), b.drained, health, slow_start),
                );
                if let (true, Some(h)) = (checked, &s.health) {
                    let check = Check {
                        probe: probe(h),
                        target: SocketAddr::new(b.address, h.port.unwrap_or(port)),
                        source: h.source,
                        timeout: h.timeout().get(),
                    };
                    checks.push((
                        slot,
                        key.clone(),
                        check,
                        h.interval().get(),
                        h.jitter(),
                        RiseFall::new(h.rise(), h.fall()),
                    ));
                }
                if let Some(prev) = previous.and_then(|p| p.inner.lock().ok()) {
                    if let (Some(old), Some(new)) = (prev.get(&key), inner.get_mut(&key)) {
                        new.health = old.health;
                        new.up_since = old.up_since;
                        new.admin_drained = old.admin_drained;
                        new.transitions = old.transitions.clone();
                        new.checks = old.checks;
                        new.failures = old.failures;
                        new.last_result = old.last_result.clone();
                        new.passing = old.passing;
                        new.last_duration = old.last_duration;
                        new.last_failure = old.last_failure.clone();
                        new.durations = old.durations.clone();
                    }
                }
                keys.push(key);
            }
            inner
                .services
                .push((s.name.clone(), s.vip, s.min_healthy(), keys));
        }
        // Carried-over health seeds the rise/fall state too.
        let seeded: Vec<_> = checks
            .into_iter()
            .map(|(slot, key, check, interval, jitter, rf)| {
                let up = inner.get(&key).is_some_and(|b| b.health == Health::Up);
                (
                    slot,
                    key,
                    check,
                    interval,
                    jitter,
                    if up { rf.into_up() } else { rf },
                )
            })
            .collect();
        let m = Monitor {
            inner: Arc::new(Mutex::new(inner)),
            events,
            changed: Arc::new(changed),
            tasks: Arc::new(Mutex::new(Vec::new())),
        };
        let mut handles = Vec::new();
        let mut syn_jobs = Vec::new();
        for (slot, key, check, interval, jitter, rf) in seeded {
            let b = Scheduled::new(slot, key, check, interval, jitter, rf);
            if checker::syn_prober(&b.check).is_some() {
                syn_jobs.push(b);
            } else {
                handles.push(tokio::spawn(m.clone().run_backend(b)));
            }
        }
        if !syn_jobs.is_empty() {
            handles.push(tokio::spawn(m.clone().run_syn(syn_jobs)));
        }
        handles.push(tokio::spawn(m.clone().ramp()));
        if let Ok(mut t) = m.tasks.lock() {
            *t = handles;
        }
        m
    }

    /// Stops every check.
    pub fn stop(&self) {
        if let Ok(mut t) = self.tasks.lock() {
            for h in t.drain(..) {
                h.abort();
            }
        }
    }

    /// Checks one backend by its own task (every kind but the SYN probe, which [`run_syn`](Self::run_syn)
    /// sends for all backends at once).
    async fn run_backend(self, mut b: Scheduled) {
        loop {
            tokio::time::sleep_until(on_grid(b.next, grid_origin())).await;
            let started = tokio::time::Instant::now();
            let result = checker::run(&b.check).await;
            let took = started.elapsed();
            let t = b.record(&mut self.lock(), result, took);
            if let Some(t) = t {
                self.announce(t);
            }
        }
    }

    /// Checks every backend whose check is a SYN probe, from one task: at each grid point it sends the probes
    /// due (none is a task of its own, and none sets a timer: the prober's sweeper bounds them), and it records
    /// the outcomes as they come, a batch under one lock. At 10,000 checks a second a task per backend cost
    /// two wake-ups, a timer and a channel per check.
    async fn run_syn(self, mut jobs: Vec<Scheduled>) {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let origin = grid_origin();
        // Backends not in flight, by the grid point they are due at.
        let mut calendar = Calendar::default();
        for (i, b) in jobs.iter().enumerate() {
            calendar.file(grid_point(b.next, origin), i);
        }
        let mut started = vec![tokio::time::Instant::now(); jobs.len()];
        let mut due = Vec::new();
        let mut outcomes = Vec::new();
        let mut results = Vec::new();
        let sleep = tokio::time::sleep_until(origin);
        tokio::pin!(sleep);
        loop {
            // With every backend in flight, a look at the prober once a second: one whose runtime has gone is
            // replaced, and its probes then end as timed out.
            let at = calendar.next().map_or_else(
                || tokio::time::Instant::now() + Duration::from_secs(1),
                |k| point_at(k, origin),
            );
            if at != sleep.deadline() {
                sleep.as_mut().reset(at);
            }
            tokio::select! {
                () = &mut sleep => {
                    let prober = Prober::get();
                    let now = tokio::time::Instant::now();
                    calendar.take_due(last_point(now, origin), &mut due);
                    for &i in &due {
                        started[i] = now;
                    }
                    let probes = due.drain(..).map(|i| (&jobs[i].check, i as u64));
                    for (token, e) in prober.start_all(probes, &tx) {
                        // The token is an index into `jobs`, as passed in.
                        results.push((token as usize, Err(e)));
                    }
                }
                n = rx.recv_many(&mut outcomes, 1024) => {
                    if n == 0 {
                        return;
                    }
                    results.extend(outcomes.drain(..).filter_map(|(token, answer)| {
                        let i = usize::try_from(token).ok().filter(|&i| i < jobs.len())?;
                        Some((i, syn::result_of(answer, jobs[i].check.timeout)))
                    }));
                }
            }
            if results.is_empty() {
                continue;
            }
            let mut transitions = Vec::new();
            {
                let mut inner = self.lock();
                for (i, result) in results.drain(..) {
                    let b = &mut jobs[i];
                    transitions.extend(b.record(&mut inner, result, started[i].elapsed()));
                    calendar.file(grid_point(b.next, origin), i);
                }
            }
            for t in transitions {
                self.announce(t);
            }
        }
    }

    /// The monitor's state for recording a check: taken over even from a thread that panicked holding it
    /// (the state is counters and history), since a check left unrecorded would never be planned again.
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Logs and publishes a health change.
    fn announce(&self, t: Transition) {
        tracing::info!(service = %t.key.service, backend = %t.key.address, port = t.key.port, to = ?t.to, reason = %t.reason, "backend health changed");
        let _ = self.events.send(t);
        self.bump();
    }

    /// While a backend is in slow start, signals a change every second so that weights are re-read.
    async fn ramp(self) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let ramping = self.inner.lock().is_ok_and(|inner| {
                inner.backends.iter().any(|(_, b)| {
                    b.health == Health::Up
                        && b.slow_start
                            .zip(b.up_since)
                            .is_some_and(|(s, u)| u.elapsed() < s + Duration::from_secs(1))
                })
            });
            if ramping {
                self.bump();
            }
        }
    }

    fn bump(&self) {
        self.changed.send_modify(|g| *g += 1);
    }

    /// Effective weights: (service, address, port) → weight.
    pub fn weights(&self) -> HashMap<(String, IpAddr, u16), u32> {
        let Ok(inner) = self.inner.lock() else {
            return HashMap::new();
        };
        inner
            .backends
            .iter()
            .map(|(k, b)| ((k.service.clone(), k.address, k.port), effective(b)))
            .collect()
    }

    /// Every service's health and announce decision.
    pub fn services(&self) -> Vec<ServiceStatus> {
        let Ok(inner) = self.inner.lock() else {
            return Vec::new();
        };
        inner
            .services
            .iter()
            .map(|(name, vip, min, keys)| {
                let healthy = keys
                    .iter()
                    .filter(|k| inner.get(k).is_some_and(|b| effective(b) > 0))
                    .count() as u32;
                ServiceStatus {
                    name: name.clone(),
                    vip: *vip,
                    healthy,
                    total: keys.len() as u32,
                    min_healthy: *min,
                    announce: healthy >= *min,
                }
            })
            .collect()
    }

    /// Backends of `service` (all when none).
    pub fn backends(&self, service: Option<&str>) -> Vec<BackendStatus> {
        let Ok(inner) = self.inner.lock() else {
            return Vec::new();
        };
        let mut v: Vec<BackendStatus> = inner
            .backends
            .iter()
            .filter(|(k, _)| service.is_none_or(|s| s == k.service))
            .map(|(k, b)| BackendStatus {
                key: k.clone(),
                health: b.health,
                drained: b.drained || b.admin_drained,
                weight: b.weight,
                effective_weight: effective(b),
                last_result: b.last_result.clone(),
                last_check_ms: b.last_duration.map(|d| d.as_secs_f64() * 1000.0),
                last_failure: b.last_failure.clone(),
                checks: b.checks,
                failures: b.failures,
                durations: b.durations.clone(),
                transitions: b.transitions.iter().cloned().collect(),
            })
            .collect();
        v.sort_by(|a, b| a.key.cmp(&b.key));
        v
    }

    /// Drains (or undrains) a backend by hand; returns false when there is no such backend.
    pub fn set_drained(&self, key: &Key, drained: bool) -> bool {
        let found = self.inner.lock().is_ok_and(|mut inner| match inner.get_mut(key) {
            Some(b) => {
                b.admin_drained = drained;
                true
            }
            None => false,
        });
        if found {
            self.bump();
        }
        found
    }

    /// Transitions as they happen.
    pub fn subscribe(&self) -> broadcast::Receiver<Transition> {
        self.events.subscribe()
    }

    /// A counter that increases whenever weights or announce decisions may have changed.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

/// The probe a service's health check runs, its defaults applied.
fn probe(h: &HealthCheck) -> Probe {
    let bytes = |s: &Option<String>| s.clone().map(String::into_bytes);
    match h.kind {
        HealthKind::Tcp => Probe::Tcp(TcpProbe {
            syn: h.syn.unwrap_or(true),
            send: bytes(&h.send),
            expect: bytes(&h.expect),
        }),
        HealthKind::Http | HealthKind::Https => Probe::Http(HttpProbe {
            path: h.path.clone().unwrap_or_else(|| "/".into()),
            host: h.host.clone(),
            status: if h.status.is_empty() {
                vec![200]
            } else {
                h.status.clone()
            },
            body: h.body.clone(),
            tls: (h.kind == HealthKind::Https).then(|| h.tls_verify.unwrap_or(false)),
        }),
        HealthKind::Grpc => Probe::Grpc(GrpcProbe {
            service: h.grpc_service.clone().unwrap_or_default(),
            authority: h.host.clone(),
            tls: h.tls.unwrap_or(false).then(|| h.tls_verify.unwrap_or(false)),
        }),
        HealthKind::Dns => Probe::Dns(DnsProbe {
            name: h.query.clone().unwrap_or_default(),
            qtype: h.query_type.unwrap_or_default().code(),
            rcode: h.rcode.unwrap_or_default().code(),
            address: h.answer,
        }),
        HealthKind::Udp => Probe::Udp {
            payload: h.payload.clone().unwrap_or_default().into_bytes(),
            expect: bytes(&h.expect),
        },
        HealthKind::Icmp => Probe::Icmp,
        HealthKind::Exec => Probe::Exec(h.command.clone()),
        HealthKind::None => Probe::None,
    }
}

fn effective(b: &Backend) -> u32 {
    if b.health == Health::Down || b.drained || b.admin_drained {
        return 0;
    }
    let since = b.up_since.map_or(Duration::MAX, |u| u.elapsed());
    slow_start_weight(b.weight, since, b.slow_start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends_are_reached_by_slot_and_by_key() {
        let backend = |weight| Backend::new(weight, false, Health::Down, None);
        let key = |port| Key {
            service: "web".into(),
            address: "198.51.100.101".parse().unwrap(),
            port,
        };
        let mut inner = Inner {
            backends: Vec::new(),
            slots: FxHashMap::default(),
            services: Vec::new(),
        };
        assert_eq!(inner.insert(key(80), backend(1)), 0);
        assert_eq!(inner.insert(key(81), backend(2)), 1);
        // The same key again replaces its backend in place: one slot, one check loop's target.
        assert_eq!(inner.insert(key(80), backend(3)), 0);
        assert_eq!(inner.backends.len(), 2);
        assert_eq!(inner.get(&key(80)).map(|b| b.weight), Some(3));
        inner.get_mut(&key(81)).unwrap().checks = 7;
        assert_eq!(inner.backends[1].0, key(81));
        assert_eq!(inner.backends[1].1.checks, 7);
        assert!(inner.get(&key(82)).is_none());
    }

    #[tokio::test]
    async fn checks_go_on_after_a_panic_poisoned_the_monitor_state() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let toml = include_str!("../tests/one_backend.toml")
            .replace(
                "{health}",
                r#"{ kind = "tcp", interval = "20ms", timeout = "15ms" }"#,
            )
            .replace("{port}", &port.to_string());
        let cfg = anylb_conf::load_str(&toml, "h.toml")
            .unwrap()
            .resolve("n")
            .unwrap();
        let m = Monitor::start(&cfg);
        let inner = m.inner.clone();
        let _ = std::thread::spawn(move || {
            let _held = inner.lock();
            panic!("a panic while the monitor's state is held");
        })
        .join();
        assert!(m.inner.is_poisoned());
        let before = m.lock().backends[0].1.checks;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let after = m.lock().backends[0].1.checks;
        assert!(after >= before + 5, "{before} -> {after} checks");
        m.stop();
        drop(l);
    }

    #[test]
    fn check_times_are_rounded_up_to_the_grid() {
        let o = tokio::time::Instant::now();
        let ms = Duration::from_millis;
        assert_eq!(on_grid(o, o), o);
        assert_eq!(on_grid(o + ms(1), o), o + GRID);
        assert_eq!(on_grid(o + GRID, o), o + GRID);
        assert_eq!(on_grid(o + GRID + Duration::from_nanos(1), o), o + GRID * 2);
        assert_eq!(on_grid(o + ms(1003), o), o + ms(1004));
        // Before the origin: the origin.
        assert_eq!(on_grid(o, o + ms(5)), o + ms(5));
    }

    #[test]
    fn a_check_filed_at_its_point_is_due_once_the_clock_reaches_that_point() {
        let o = tokio::time::Instant::now();
        let ms = Duration::from_millis;
        // 1 ms after the origin: filed at point 1, not due at 3.9 ms (last point 0), due at 4 ms.
        let k = grid_point(o + ms(1), o);
        assert_eq!((k, point_at(k, o)), (1, o + GRID));
        assert_eq!(last_point(o + Duration::from_micros(3_900), o), 0);
        assert_eq!(last_point(o + GRID, o), 1);
        assert_eq!(last_point(o + ms(1003), o), 250);
        assert_eq!(grid_point(o + ms(1003), o), 251);
        // Before the origin, both are point 0.
        assert_eq!((grid_point(o, o + ms(5)), last_point(o, o + ms(5))), (0, 0));
    }

    #[test]
    fn first_checks_of_consecutive_ports_spread_over_the_interval() {
        // 1,000 backends on one address with consecutive ports: their start fractions must fill [0, 1) evenly
        // (no 10 ms slot of a 1 s interval with more than a few times its share).
        let mut slots = [0u32; 100];
        for port in 20_000u16..21_000 {
            let key = Key {
                service: "many".into(),
                address: "127.0.0.1".parse().unwrap_or(IpAddr::from([127, 0, 0, 1])),
                port,
            };
            slots[(fraction(key_seed(&key), 0) * 100.0) as usize] += 1;
        }
        let max = slots.iter().copied().max().unwrap_or(0);
        assert!(max <= 30, "busiest slot {max} of 1,000 (mean 10): {slots:?}");
        assert!(slots.iter().filter(|&&c| c == 0).count() < 5, "{slots:?}");
    }

    /// The probe a topology's `health` table becomes, defaults applied.
    fn probe_of(health: &str) -> Probe {
        let t: HealthCheck = toml::from_str(health).unwrap_or_else(|e| panic!("{e}"));
        probe(&t)
    }

    #[test]
    fn topology_keys_become_probes() {
        assert_eq!(
            probe_of("kind = \"tcp\"\nsend = \"QUIT\\r\\n\"\nexpect = \"221\""),
            Probe::Tcp(TcpProbe {
                syn: true,
                send: Some(b"QUIT\r\n".to_vec()),
                expect: Some(b"221".to_vec())
            })
        );
        assert_eq!(
            probe_of("kind = \"grpc\"\ngrpc_service = \"web\"\ntls = true\nhost = \"backend.test\""),
            Probe::Grpc(GrpcProbe {
                service: "web".into(),
                authority: Some("backend.test".into()),
                tls: Some(false),
            })
        );
        assert_eq!(probe_of("kind = \"grpc\""), Probe::Grpc(GrpcProbe::default()));
        assert_eq!(
            probe_of("kind = \"dns\"\nquery = \"ok.test\"\nquery_type = \"AAAA\"\nrcode = \"NXDOMAIN\"\nanswer = \"2001:db8::1\""),
            Probe::Dns(DnsProbe {
                name: "ok.test".into(),
                qtype: 28,
                rcode: 3,
                address: "2001:db8::1".parse().ok(),
            })
        );
        assert_eq!(
            probe_of("kind = \"https\""),
            Probe::Http(HttpProbe {
                path: "/".into(),
                host: None,
                status: vec![200],
                body: None,
                tls: Some(false),
            })
        );
    }
}
