//! One destination site: its queue of due recipients, its limits, and the
//! connection workers that drain it.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use volley_conf::{SiteLimits, TlsPolicy};
use volley_queue::BatchView;

use crate::conn::{connect_tcp, ConnError, Connection};
use crate::delivery::lanes::Lanes;
use crate::delivery::record::{Answer, Level, Via};
use crate::delivery::work::Item;
use crate::delivery::Shared;
use crate::metrics::{SiteMetrics, SUPPRESSED};
use crate::outcome::{BounceClass, Verdict};
use crate::shaping::{backoff, pauses_site, RateLimit};
use crate::suppress::sending_domain;
use volley_inbound::Verp;
use volley_merge::source::RenderError;
use volley_queue::holds::Holds;
use volley_queue::ids::is_inbound_id;
use volley_smtp::client::{
    CloseReason, Event, RcptResult, SessionConfig, Stage, TlsMode, Transaction, TransactionResult,
};
use volley_smtp::reply::ENHANCED_TEXT_MAX;

/// Consecutive failures to connect to every host of a site, once a connection
/// to it has worked in this round, before its remaining recipients are
/// deferred (a daemon round comes back later).
const CONNECT_ROUNDS: u32 = 3;

/// Whether a site's workers give up after `failures` consecutive failures to
/// reach any of its hosts: at once when no connection to it has worked in this
/// round (an unreachable destination defers at once, as Postfix does, instead
/// of holding the round, and everything queued behind it, through backoffs);
/// after [`CONNECT_ROUNDS`] when one has (a busy server refusing some
/// connections while others deliver).
fn give_up(failures: u32, connected: bool) -> bool {
    failures >= if connected { CONNECT_ROUNDS } else { 1 }
}

/// A host to connect to: name (for logs, TLS) and addresses.
#[derive(Debug, Clone)]
pub struct Host {
    /// MX or smarthost name.
    pub name: String,
    /// Its addresses, in the order to try.
    pub addrs: Vec<IpAddr>,
    /// TCP port.
    pub port: u16,
}

/// A destination site for one round.
#[derive(Debug)]
pub struct Site {
    /// The site key (sorted MX names, or `route:host:port`).
    pub key: String,
    /// Hosts in preference order.
    pub hosts: Vec<Host>,
    /// Limits from `[site]` and the matching `[[site_override]]`.
    pub limits: SiteLimits,
    /// STARTTLS policy.
    pub tls: TlsPolicy,
    queue: Mutex<VecDeque<Item>>,
    rate: Arc<Mutex<RateLimit>>,
    paused_until: Mutex<Option<Instant>>,
    failures: AtomicU32,
    /// A connection to the site has worked in this round.
    connected: AtomicBool,
    /// Its metrics' handles.
    metrics: SiteMetrics,
    /// The operator's holds, and their generation the round was planned at.
    holds: Arc<Holds>,
    holds_seen: u64,
}

impl Site {
    /// A site with its recipients; `rate` is its message rate limit,
    /// carried over from earlier rounds.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        key: String,
        hosts: Vec<Host>,
        limits: SiteLimits,
        tls: TlsPolicy,
        items: Vec<Item>,
        metrics: SiteMetrics,
        holds: (Arc<Holds>, u64),
        rate: Arc<Mutex<RateLimit>>,
    ) -> Site {
        Site {
            key,
            hosts,
            limits,
            tls,
            queue: Mutex::new(items.into()),
            rate,
            paused_until: Mutex::new(None),
            failures: AtomicU32::new(0),
            connected: AtomicBool::new(false),
            metrics,
            holds: holds.0,
            holds_seen: holds.1,
        }
    }

    /// The next recipient to send to; those of held batches (a suspended
    /// campaign) and those an operator's hold placed mid-round covers are
    /// dropped from the round as they come, their slots untouched.
    fn pop(&self) -> Option<Item> {
        let mut queue = lock(&self.queue);
        while let Some(item) = queue.pop_front() {
            if self.sendable(&item) {
                return Some(item);
            }
        }
        None
    }

    /// Whether `item` may be sent now: its batch is not held, nor is it under
    /// an operator's hold made since the round began (one atomic load when
    /// the holds did not change).
    fn sendable(&self, item: &Item) -> bool {
        if item.batch.held() {
            return false;
        }
        if self.holds.generation() == self.holds_seen {
            return true;
        }
        // The holds changed: a purge may have finalised it meanwhile.
        let index = item.index as usize;
        if item
            .batch
            .map
            .slot(index)
            .is_ok_and(|slot| slot.state.is_final())
        {
            return false;
        }
        let address = item.address();
        let domain = address.rsplit_once('@').map_or("", |(_, d)| d);
        !self
            .holds
            .snapshot()
            .holds(item.batch.map.header().campaign_id, domain, Some(&self.key))
    }

    fn push_front(&self, item: Item) {
        lock(&self.queue).push_front(item);
    }

    /// Up to `max` more recipients of the relayed message `first` belongs to,
    /// taken from the front of the queue, to share its transaction; none for a
    /// campaign recipient (`view` is `first`'s batch). A message's recipients
    /// at the site are queued one after the other (a round collects them in
    /// file order, and [`crate::delivery::work::group_relayed`] brings those
    /// of its domains together), so looking at the front finds them.
    fn companions(&self, first: &Item, view: &BatchView<'_>, max: usize) -> Vec<Item> {
        let message = |index: u32| view.message(index as usize).map(|m| m.number);
        let Some(number) = message(first.index).filter(|_| max > 0) else {
            return Vec::new();
        };
        // A message's recipients have consecutive indexes: when the next one
        // is another message's (most relayed mail has one recipient), there is
        // nothing to share, and the queue is not locked.
        if message(first.index + 1) != Some(number) {
            return Vec::new();
        }
        let mut more = Vec::new();
        let mut queue = lock(&self.queue);
        while more.len() < max {
            let Some(next) = queue.pop_front_if(|next| {
                Arc::ptr_eq(&next.batch, &first.batch) && message(next.index) == Some(number)
            }) else {
                break;
            };
            if self.sendable(&next) {
                more.push(next);
            }
        }
        more
    }

    /// Puts the recipients of a transaction that was not sent back at the front
    /// of the queue, in their order.
    fn push_front_all(&self, recipients: Recipients) {
        let mut queue = lock(&self.queue);
        for item in recipients.more.into_iter().rev() {
            queue.push_front(item);
        }
        queue.push_front(recipients.first);
    }

    fn len(&self) -> usize {
        lock(&self.queue).len()
    }

    fn pause(&self, for_: Duration) {
        let until = Instant::now() + for_;
        let mut paused = lock(&self.paused_until);
        if paused.is_none_or(|p| p < until) {
            *paused = Some(until);
        }
    }

    async fn wait_if_paused(&self) {
        let until = *lock(&self.paused_until);
        if let Some(until) = until {
            tokio::time::sleep_until(until.into()).await;
        }
    }

    /// How many connection workers to start: enough to carry the queue at the
    /// configured messages per connection, within the connection limit.
    pub fn workers(&self) -> usize {
        let per_conn = self.limits.max_messages_per_connection.max(1) as usize;
        self.len()
            .div_ceil(per_conn)
            .clamp(1, self.limits.max_connections.max(1) as usize)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Drains a site with its workers; returns when its queue is empty. Each
/// connection runs on the delivery lane [`Lanes::pick`] gives it.
pub async fn run(site: Arc<Site>, shared: Arc<Shared>, lanes: Arc<Lanes>) {
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..site.workers() {
        tasks.spawn(worker_loop(
            site.clone(),
            shared.clone(),
            lanes.clone(),
            worker,
        ));
    }
    while let Some(joined) = tasks.join_next().await {
        if let Err(err) = joined {
            tracing::error!(site = %site.key, %err, "site worker failed");
        }
    }
    // Anything left (every worker gave up): defer it, never drop it. When
    // stopping, what was never sent stays as it was, due at the next start.
    if shared.stopping() {
        return;
    }
    while let Some(item) = site.pop() {
        defer_connection(
            &site,
            &shared,
            &item,
            "no connection to the site could be used",
            &Via::default(),
            Instant::now(),
        );
    }
}

/// Defers a recipient for a connection-level failure (`reason`): no host
/// answered, or the transaction it was sent in (`started`) got no reply.
fn defer_connection(
    site: &Site,
    shared: &Shared,
    item: &Item,
    reason: &str,
    via: &Via,
    started: Instant,
) {
    let answer = Answer {
        code: 0,
        enhanced: "",
        subject: None,
        text: reason,
        level: Level::Connection,
    };
    let outcome = shared.recorder.record(
        item,
        &item.address(),
        Verdict::Temporary,
        &answer,
        via,
        started,
    );
    site.metrics.outcome(outcome.metric());
}

/// One connection slot of a site: connects, delivers, and connects again while
/// the site has recipients, each connection on the lane picked for it.
async fn worker_loop(site: Arc<Site>, shared: Arc<Shared>, lanes: Arc<Lanes>, worker: usize) {
    loop {
        site.wait_if_paused().await;
        if shared.stopping() {
            return;
        }
        // Claim a recipient before connecting, so no worker opens a connection the
        // others have left nothing to send over.
        let Some(first) = site.pop() else { return };
        let Ok(_permit) = shared.connections.clone().acquire_owned().await else {
            site.push_front(first);
            return;
        };
        let (lane, handle) = lanes.pick();
        // A set of one: dropping this worker (the round cancelled) aborts the
        // connection too.
        let mut connection = tokio::task::JoinSet::new();
        connection.spawn_on(
            connect_and_deliver(
                site.clone(),
                shared.clone(),
                lanes.clone(),
                lane,
                worker,
                first,
            ),
            handle,
        );
        let outcome = match connection.join_next().await {
            Some(Ok(outcome)) => outcome,
            Some(Err(err)) if err.is_panic() => {
                tracing::error!(site = %site.key, %err, "connection task failed");
                Ok(())
            }
            // Cancelled: the lanes are stopping.
            Some(Err(_)) | None => return,
        };
        let Err(reason) = outcome else { continue };
        let failures = site.failures.fetch_add(1, Ordering::AcqRel) + 1;
        tracing::warn!(site = %site.key, failures, %reason, "cannot connect to any host of the site");
        if give_up(failures, site.connected.load(Ordering::Acquire)) {
            let via = Via {
                mx: site
                    .hosts
                    .first()
                    .map(|h| h.name.clone())
                    .unwrap_or_default(),
                ..Via::default()
            };
            while let Some(item) = site.pop() {
                defer_connection(&site, &shared, &item, &reason, &via, Instant::now());
            }
            return;
        }
        let wait = backoff(
            failures,
            site.limits.connect_backoff,
            site.limits.connect_backoff_max,
        );
        tokio::time::sleep(wait).await;
    }
}

/// One connection, run on its lane: opens it and delivers over it. When no host
/// can be reached, puts `first` back and says why.
async fn connect_and_deliver(
    site: Arc<Site>,
    shared: Arc<Shared>,
    lanes: Arc<Lanes>,
    lane: usize,
    worker: usize,
    first: Item,
) -> Result<(), String> {
    let _seat = lanes.seat(lane);
    let opening = Instant::now();
    match open(&site, &shared, worker).await {
        Ok((conn, via)) => {
            site.metrics.connected(opening.elapsed().as_secs_f64());
            let _open = site.metrics.connection();
            site.failures.store(0, Ordering::Release);
            site.connected.store(true, Ordering::Release);
            let shed = || lanes.shedding(lane);
            deliver(&site, &shared, conn, &via, first, shed).await;
            Ok(())
        }
        Err(reason) => {
            site.push_front(first);
            Err(reason)
        }
    }
}

/// Connects to the first host (in preference order) that accepts a connection and
/// completes the greeting, EHLO and STARTTLS; the next host is tried on failure.
/// On an opportunistic site, a host whose TLS handshake fails is tried again at
/// once in plaintext and remembered ([`super::tls_fallback`]).
async fn open(site: &Site, shared: &Shared, worker: usize) -> Result<(Connection, Via), String> {
    let mut last = String::from("no address for any host");
    let opportunistic = site.tls == TlsPolicy::Opportunistic;
    for host in &site.hosts {
        for &ip in &host.addrs {
            let plaintext = opportunistic && shared.plaintext.active(ip, Instant::now());
            let failure = match open_host(site, shared, worker, host, ip, plaintext).await {
                Ok(open) => return Ok(open),
                Err(failure) => failure,
            };
            last = failure.reason;
            if failure.handshake && opportunistic && !plaintext {
                tracing::warn!(site = %site.key, mx = %host.name, %ip, reason = %last,
                    "TLS handshake failed: sending to this host in plaintext for the next hour");
                shared.plaintext.remember(ip, Instant::now());
                match open_host(site, shared, worker, host, ip, true).await {
                    Ok(open) => return Ok(open),
                    Err(failure) => last = failure.reason,
                }
            }
        }
    }
    Err(last)
}

/// Why a host could not be opened.
struct OpenFailure {
    reason: String,
    /// The TLS handshake failed (after the server accepted STARTTLS).
    handshake: bool,
}

/// Connects to `host` at `ip`, through greeting, EHLO and STARTTLS (none when
/// `plaintext` or the site disables TLS).
async fn open_host(
    site: &Site,
    shared: &Shared,
    worker: usize,
    host: &Host,
    ip: IpAddr,
    plaintext: bool,
) -> Result<(Connection, Via), OpenFailure> {
    let failed = |reason: String| OpenFailure {
        reason,
        handshake: false,
    };
    let addr = SocketAddr::new(ip, host.port);
    let source = shared.source_address(worker);
    let stream = connect_tcp(addr, source, shared.timeouts.connect)
        .await
        .map_err(|err| failed(err.to_string()))?;
    let (mode, tls_config) = match site.tls {
        _ if plaintext => (TlsMode::Disabled, None),
        TlsPolicy::Disabled => (TlsMode::Disabled, None),
        TlsPolicy::Required if shared.tls_verify => {
            (TlsMode::Required, Some(shared.tls.verified.clone()))
        }
        TlsPolicy::Required => (TlsMode::Required, Some(shared.tls.opportunistic.clone())),
        TlsPolicy::Opportunistic => (
            TlsMode::Opportunistic,
            Some(shared.tls.opportunistic.clone()),
        ),
    };
    let config = SessionConfig {
        tls: mode,
        ..shared.session.clone()
    };
    let mut conn = Connection::new(
        stream,
        config,
        shared.timeouts,
        tls_config.map(|c| (c, host.name.clone())),
    );
    let at = |what: String| format!("{} [{}]: {what}", host.name, ip);
    match conn.next_event().await {
        Ok(Event::Ready(_)) => {
            let via = Via {
                mx: host.name.clone(),
                ip: ip.to_string(),
                tls: conn.encrypted,
            };
            Ok((conn, via))
        }
        Ok(Event::Closed(reason)) => Err(failed(at(format!("{reason:?}")))),
        Ok(other) => Err(failed(at(format!("unexpected {other:?}")))),
        Err(err @ ConnError::Tls(_)) => Err(OpenFailure {
            reason: at(err.to_string()),
            handshake: true,
        }),
        Err(err) => Err(failed(at(err.to_string()))),
    }
}

/// Sends up to `max_messages_per_connection` messages over one connection,
/// keeping up to `pipeline_depth` transactions in flight; ends early, after the
/// transactions in flight, when `shed` says the connection's lane is saturated
/// (the worker reconnects on another).
async fn deliver(
    site: &Site,
    shared: &Shared,
    mut conn: Connection,
    via: &Via,
    first: Item,
    shed: impl Fn() -> bool,
) {
    // Render no further ahead than the session can send (see `useful_depth`).
    let depth = conn.session().useful_depth(shared.pipeline_depth);
    let max = site.limits.max_messages_per_connection as usize;
    let mut sent = 0usize;
    // In flight, in enqueue order: the session reports results in that order,
    // so the one looked up is nearly always the first. Each transaction's
    // recipients: its first, and the others of a relayed message that share it.
    let mut pending: VecDeque<(u64, Recipients, Instant)> = VecDeque::with_capacity(depth);
    let max_more = (site.limits.max_recipients_per_transaction as usize).saturating_sub(1);
    // When the connection's last reply came: a pipelined transaction's own
    // time starts there (or at its start, if later), not behind the others.
    let mut last_reply = Instant::now();
    // Message buffers come back with their results and are rendered into again:
    // a few per connection, warm in the cache, instead of fresh memory for each
    // message.
    let mut spare: Vec<BytesMut> = Vec::with_capacity(depth + 1);
    let mut stop = false;
    let mut claimed = Some(first);
    loop {
        // Fill the pipeline.
        while !stop && pending.len() < depth && sent < max && !shared.stopping() {
            // State that cannot reach the disk must not be bet on: no new
            // transaction until a flush works again.
            if !shared.recorder.durable() {
                if pending.is_empty() {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                break;
            }
            let taken = lock(&site.rate).take(Instant::now());
            if let Err(wait) = taken {
                if pending.is_empty() {
                    tokio::time::sleep(wait).await;
                    continue;
                }
                break;
            }
            let Some(item) = claimed
                .take()
                .filter(|i| site.sendable(i))
                .or_else(|| site.pop())
            else {
                break;
            };
            let view = item.batch.map.view();
            let index = item.index as usize;
            let address = |item: &Item| {
                view.recipient(item.index as usize)
                    .map(|r| r.address())
                    .unwrap_or_default()
            };
            let mut rcpt_to = vec![address(&item)];
            // The list changed since the round was screened (another process's
            // suppression arrived): these are checked again.
            let rescreen = shared.suppressions.version() != shared.screened.load(Ordering::Relaxed);
            if rescreen && suppressed(site, shared, &item, &view, &rcpt_to[0]) {
                continue;
            }
            let mut more = site.companions(&item, &view, max_more);
            if !more.is_empty() {
                more.retain(|other| {
                    let rcpt = address(other);
                    let keep = !(rescreen && suppressed(site, shared, other, &view, &rcpt));
                    if keep {
                        rcpt_to.push(rcpt);
                    }
                    keep
                });
            }
            let mut body = spare
                .pop()
                .unwrap_or_else(|| BytesMut::with_capacity(BODY_CAPACITY));
            body.clear();
            let rendered = shared.source.envelope_from(&view, index).and_then(|from| {
                shared
                    .source
                    .render(&view, index, &mut body)
                    .map(|r| (from, r))
            });
            let signed = rendered.and_then(|(from, r)| match &shared.dkim {
                // A signing failure is this host's and may pass: the recipient
                // is deferred, not bounced.
                Some(dkim) => dkim
                    .sign_in_place(&mut body, r.crlf_only)
                    .map(|_| (from, r))
                    .map_err(|e| RenderError::transient(format!("DKIM: {e}"))),
                None => Ok((from, r)),
            });
            let (from, rendered) = match signed {
                Ok((from, rendered)) => (
                    with_verp(shared.verp.as_deref(), from, &view, index),
                    rendered,
                ),
                Err(err) => {
                    let answer = Answer {
                        code: 0,
                        enhanced: "",
                        subject: None,
                        text: &err.reason,
                        level: Level::Local,
                    };
                    let verdict = if err.transient {
                        Verdict::Temporary
                    } else {
                        Verdict::Permanent(BounceClass::Content)
                    };
                    let recipients = Recipients { first: item, more };
                    for (item, rcpt) in recipients.iter().zip(&rcpt_to) {
                        let outcome = shared.recorder.record(
                            item,
                            rcpt,
                            verdict,
                            &answer,
                            via,
                            Instant::now(),
                        );
                        site.metrics.outcome(outcome.metric());
                    }
                    spare.push(body);
                    continue;
                }
            };
            let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
            let tx = Transaction {
                id,
                mail_from: from,
                rcpt_to,
                body: body.freeze(),
                crlf_only: rendered.crlf_only,
            };
            let recipients = Recipients { first: item, more };
            for item in recipients.iter() {
                shared.recorder.mark_in_flight(item);
            }
            match conn.enqueue(tx) {
                Ok(()) => {
                    site.metrics.transaction_started();
                    pending.push_back((id, recipients, Instant::now()));
                    sent += 1;
                }
                Err(_) => {
                    site.push_front_all(recipients);
                    stop = true;
                }
            }
        }
        if pending.is_empty() {
            break;
        }
        match conn.next_event().await {
            Ok(Event::TransactionDone(result)) => {
                let at = pending.iter().position(|(id, ..)| *id == result.id);
                if let Some((_, recipients, started)) = at.and_then(|at| pending.remove(at)) {
                    let own = started.max(last_reply).elapsed().as_secs_f64();
                    last_reply = Instant::now();
                    if record_result(site, shared, recipients, &result, via, started, own) || shed()
                    {
                        stop = true;
                    }
                }
                if let Ok(buffer) = result.body.try_into_mut() {
                    // A large message's buffer is not kept: memory stays bounded
                    // by the typical message, not the largest one seen.
                    if spare.len() <= depth && buffer.capacity() <= SPARE_MAX_CAPACITY {
                        spare.push(buffer);
                    }
                }
            }
            Ok(Event::Closed(reason)) => {
                tracing::debug!(site = %site.key, ?reason, "connection closed");
                if matches!(reason, CloseReason::Failed(_)) {
                    // A session that failed for a reason other than a reply we
                    // record (protocol error, RSET refused): a short breather so
                    // the workers do not reconnect in a tight loop.
                    site.pause(site.limits.pause.min(Duration::from_secs(1)));
                }
                break;
            }
            Ok(_) => {}
            Err(err) => {
                tracing::debug!(site = %site.key, %err, "connection failed");
                break;
            }
        }
    }
    if let Some(item) = claimed {
        site.push_front(item);
    }
    // Transactions that never got a result (connection gone): connection-level.
    for (_, recipients, started) in pending.drain(..) {
        for item in recipients.iter() {
            defer_connection(
                site,
                shared,
                item,
                "connection lost before the reply",
                via,
                started,
            );
        }
        site.metrics.transaction_ended(None);
    }
    conn.quit().await;
}

/// Capacity of a fresh message buffer: a typical rendered message and its DKIM
/// signature fit without growing it.
const BODY_CAPACITY: usize = 16 * 1024;

/// Largest message buffer a connection keeps for the next message.
const SPARE_MAX_CAPACITY: usize = 256 * 1024;

/// The MAIL FROM of one message: the VERP return path of recipient `index` of
/// the batch when `verp` is set and the batch is a campaign's; a received
/// message relayed for a client ([`is_inbound_id`]) and the null sender keep
/// their own. Reuses `from`'s buffer: no allocation once it is long enough.
pub(crate) fn with_verp(
    verp: Option<&Verp>,
    mut from: String,
    batch: &BatchView<'_>,
    index: usize,
) -> String {
    let header = batch.header();
    match verp {
        Some(verp) if !from.is_empty() && !is_inbound_id(header.campaign_id) => {
            from.clear();
            verp.write_return_path(&mut from, header.campaign_id, header.batch_id, index as u32);
            from
        }
        _ => from,
    }
}

/// Finalises a recipient found on the suppression list since the round was
/// screened (the list changed meanwhile); false if it may be sent.
fn suppressed(site: &Site, shared: &Shared, item: &Item, view: &BatchView<'_>, rcpt: &str) -> bool {
    let domain = item
        .batch
        .sender_domain
        .get_or_init(|| sending_domain(&shared.source.envelope_from(view, 0).unwrap_or_default()));
    if !shared.suppressions.is_suppressed(rcpt, domain) {
        return false;
    }
    shared.recorder.suppressed(item, rcpt);
    site.metrics.outcome(SUPPRESSED);
    true
}

/// The recipients of one transaction, in `rcpt_to` order: the one it was
/// started for, and those of the same relayed message that share it.
struct Recipients {
    first: Item,
    more: Vec<Item>,
}

impl Recipients {
    fn iter(&self) -> impl Iterator<Item = &Item> {
        std::iter::once(&self.first).chain(&self.more)
    }

    fn into_iter(self) -> impl Iterator<Item = Item> {
        std::iter::once(self.first).chain(self.more)
    }
}

/// Whether a recipient refused at RCPT is sent again in the site's next
/// transaction rather than deferred: the server took others of the same
/// transaction and said this one was one too many (`452`, RFC 5321
/// 4.5.3.1.10, with `4.5.3` or no enhanced code), so it is the count, not the
/// address.
fn one_too_many(rcpt: &RcptResult, others_accepted: bool) -> bool {
    others_accepted
        && rcpt.stage == Stage::Rcpt
        && !rcpt.local
        && rcpt.reply.code == 452
        && rcpt
            .reply
            .enhanced
            .is_none_or(|e| (e.subject, e.detail) == (5, 3))
}

/// Records one transaction's result (`own`: the seconds it had the
/// connection to itself); returns true if the site must pause. Recipients
/// refused as one too many go back to the front of the site's queue.
fn record_result(
    site: &Site,
    shared: &Shared,
    recipients: Recipients,
    result: &TransactionResult,
    via: &Via,
    started: Instant,
    own: f64,
) -> bool {
    let mut pause: Option<String> = None;
    let mut enhanced_buf = [0u8; ENHANCED_TEXT_MAX];
    let accepted = result.rcpts.iter().any(|r| r.stage == Stage::Data);
    let mut again: Vec<Item> = Vec::new();
    for (at, item) in recipients.into_iter().enumerate() {
        let Some(rcpt) = result.rcpts.get(at) else {
            // The session reports one result per recipient; should one be
            // missing, the recipient is retried, not left in flight.
            defer_connection(
                site,
                shared,
                &item,
                "no reply for this recipient",
                via,
                started,
            );
            continue;
        };
        if one_too_many(rcpt, accepted) {
            shared.recorder.not_sent(&item);
            again.push(item);
            continue;
        }
        let reply = &rcpt.reply;
        let text = reply.text();
        let subject = reply.enhanced.as_ref().map(|e| e.subject);
        let verdict = Verdict::from_reply(reply.code, subject);
        let enhanced = match &reply.enhanced {
            Some(e) => e.text_in(&mut enhanced_buf),
            None => "",
        };
        if pause.is_none() && pauses_site(reply.code, enhanced, &text, &site.limits.pause_patterns)
        {
            pause = Some(format!("{} {enhanced} {text}", reply.code));
        }
        let answer = Answer {
            code: reply.code,
            enhanced,
            subject,
            text: &text,
            level: if rcpt.local || reply.code == 421 {
                Level::Connection
            } else {
                Level::Recipient
            },
        };
        let outcome = shared
            .recorder
            .record(&item, &rcpt.rcpt, verdict, &answer, via, started);
        site.metrics.outcome(outcome.metric());
    }
    let mut again = again.into_iter();
    if let Some(first) = again.next() {
        site.push_front_all(Recipients {
            first,
            more: again.collect(),
        });
    }
    site.metrics
        .transaction_ended(Some((started.elapsed().as_secs_f64(), own)));
    let Some(reason) = pause else {
        return false;
    };
    tracing::info!(site = %site.key, pause = ?site.limits.pause, %reason, "site paused");
    site.metrics.paused(&reason, site.limits.pause);
    site.pause(site.limits.pause);
    true
}

#[cfg(test)]
mod tests {
    use volley_queue::{BatchBuilder, BatchMeta};

    use super::*;

    #[test]
    fn an_unreachable_site_gives_up_at_once_a_busy_one_after_retries() {
        let table = [
            (1, false, true),
            (1, true, false),
            (2, true, false),
            (CONNECT_ROUNDS, true, true),
            (0, false, false),
        ];
        for (failures, connected, expected) in table {
            assert_eq!(
                give_up(failures, connected),
                expected,
                "{failures} {connected}"
            );
        }
    }
    use volley_queue::ids::INBOUND_ID_BASE;
    use volley_smtp::reply::{Enhanced, Reply};

    #[test]
    fn only_a_count_refusal_beside_accepted_recipients_is_sent_again() {
        let rcpt = |stage, code, enhanced: Option<(u8, u16, u16)>, local| RcptResult {
            rcpt: "a@x.test".into(),
            reply: Reply::new(
                code,
                enhanced.map(|(c, s, d)| Enhanced::new(c, s, d)),
                "text",
            ),
            stage,
            local,
        };
        let table = [
            // (stage, code, enhanced, made up locally, others accepted) => again
            ((Stage::Rcpt, 452, Some((4, 5, 3)), false, true), true),
            ((Stage::Rcpt, 452, None, false, true), true),
            // Nothing else of the transaction taken: an ordinary deferral.
            ((Stage::Rcpt, 452, Some((4, 5, 3)), false, false), false),
            // Full mailbox or system storage: about the address, not the count.
            ((Stage::Rcpt, 452, Some((4, 2, 2)), false, true), false),
            ((Stage::Rcpt, 452, Some((4, 3, 1)), false, true), false),
            ((Stage::Rcpt, 451, None, false, true), false),
            ((Stage::Rcpt, 550, Some((5, 5, 3)), false, true), false),
            ((Stage::Data, 452, None, false, true), false),
            ((Stage::Mail, 452, None, false, true), false),
            ((Stage::Rcpt, 452, None, true, true), false),
        ];
        for ((stage, code, enhanced, local, others), again) in table {
            assert_eq!(
                one_too_many(&rcpt(stage, code, enhanced, local), others),
                again,
                "{stage:?} {code} {enhanced:?} {local} {others}"
            );
        }
    }

    fn batch(campaign_id: u64) -> Vec<u8> {
        let meta = BatchMeta {
            batch_id: 7,
            campaign_id,
            content_hash: [0; 32],
            created_at: 0,
        };
        let mut builder = BatchBuilder::new::<&str>(meta, &[]).unwrap_or_else(|e| panic!("{e}"));
        for r in ["a@x.test", "b@x.test", "c@x.test", "d@x.test"] {
            builder
                .push(r, &[] as &[&[u8]])
                .unwrap_or_else(|e| panic!("{e}"));
        }
        builder.finish().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn campaign_mail_gets_the_verp_return_path() {
        let verp = volley_inbound::testing::verp();
        let file = batch(42);
        let view = BatchView::parse(&file).unwrap_or_else(|e| panic!("{e}"));
        let mut from = String::with_capacity(128);
        from.push_str("news@acme.test");
        let buffer = from.as_ptr();
        let out = with_verp(Some(&verp), from, &view, 3);
        // The fixtures' address of (42, 7, 3), written into the same buffer.
        assert_eq!(
            out,
            "b-aaaaaaaaaaacuaaaaaaaaaaaa4aaaaadbbekhwvnatpxkr4o@bounce.acme.test"
        );
        assert_eq!(out.as_ptr(), buffer);
        // Not without a [bounce] domain, nor for the null sender.
        assert_eq!(
            with_verp(None, "news@acme.test".into(), &view, 3),
            "news@acme.test"
        );
        assert_eq!(with_verp(Some(&verp), String::new(), &view, 3), "");
        // A relayed message keeps its sender.
        let relayed = batch(INBOUND_ID_BASE + 5);
        let view = BatchView::parse(&relayed).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            with_verp(Some(&verp), "app@src.test".into(), &view, 0),
            "app@src.test"
        );
    }
}
