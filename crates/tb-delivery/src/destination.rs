//! A destination's run: its intake turns each batch of events into jobs stored in one
//! transaction, then acknowledges the events (delivered: durably stored); its loader claims
//! due jobs, loads them with at most `concurrency` loads at once, renews their leases while
//! they run, and settles each with its verdict (retry with backoff, discard, chained jobs).

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tb_connectors::InputQueue;
use tb_event::{AckStatus, Event};
use tb_pipeline::ExpressionRuntime;
use tb_store::{
    Attempt, ClaimKey, ClaimOnInsert, Claimed, JobId, JsonText, NewJob, Settlement, Store, now_ms,
};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::action::{Action, KeyProblem, Target};
use crate::breaker::{Allowance, Breaker};
use crate::config::DestinationConfig;
use crate::http::{HttpLoader, LoadResult};
use crate::metrics::DeliveryMetrics;
use crate::postgres::PgLoader;
use crate::retry::{Verdict, backoff};
use crate::schedule::Schedule;
use crate::wrapped::ConnectorLoader;

/// The shortest lease: a load renews its leases every third of it, and renewals must not
/// become a load of their own.
const MIN_LEASE: Duration = Duration::from_secs(1);
/// Most events of the batches gathered into one insert transaction.
const GROUP_COMMIT_EVENTS: usize = 4_096;
/// How often the pending-jobs gauge is counted again.
const COUNT_EVERY: Duration = Duration::from_secs(5);
/// How often the loader looks for due retries and expired leases when nothing wakes it.
const POLL: Duration = Duration::from_secs(1);
/// How often succeeded jobs past their retention are pruned, and how many at a time.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
const PRUNE_BATCH: u32 = 1_000;
/// Batches of jobs claimed on insert that may wait for the loader to take them up.
const HANDOFF_BATCHES: usize = 16;

/// A destination, built and checked.
pub struct Destination {
    id: String,
    config: DestinationConfig,
    actions: Vec<Action>,
    /// For each of [`DestinationConfig::inputs`], the actions that read it.
    routes: Vec<Vec<usize>>,
    sender: Sender,
    schedule: Schedule,
    quota: Option<Quota>,
}

/// What loads a destination's jobs into the outside system.
enum Sender {
    Http(HttpLoader),
    Postgres(PgLoader),
    Connector(Box<ConnectorLoader>),
}

impl Sender {
    /// Loads `jobs` of `action` to `path`: one result per job, in order.
    async fn load(&self, action: &Action, path: &str, jobs: &[Claimed]) -> Vec<LoadResult> {
        match self {
            Self::Http(http) => {
                let result = http
                    .load(&action.method, path, jobs, &action.retry_on)
                    .await;
                vec![result; jobs.len()]
            }
            Self::Postgres(postgres) => postgres.load(jobs).await,
            Self::Connector(connector) => connector.load(jobs).await,
        }
    }
}

/// What a destination's run is given by the runtime.
pub struct DestinationContext {
    /// The job store.
    pub store: Store,
    /// Its input queue (none when nothing feeds it).
    pub input: Option<InputQueue>,
    /// Cancelled when the destination must stop loading (shutdown, reload).
    pub intake: CancellationToken,
    /// Delivery metrics.
    pub metrics: DeliveryMetrics,
    /// Its circuit breaker, shared with the API.
    pub breaker: Breaker,
    /// Where state is kept (a wrapped connector's checkpoints).
    pub data_dir: std::path::PathBuf,
}

impl Destination {
    /// Builds destination `id` from its config.
    ///
    /// # Errors
    ///
    /// Every problem, each with the path of its key.
    pub fn build(id: &str, config: DestinationConfig) -> Result<Self, Vec<KeyProblem>> {
        let mut problems = Vec::new();
        let loader = match config.kind.as_str() {
            "http" => HttpLoader::new(&config).map(Sender::Http),
            "postgres" => PgLoader::new(&config).map(Sender::Postgres),
            "connector" => ConnectorLoader::new(id, config.connector.as_ref(), config.timeout)
                .map(|loader| Sender::Connector(Box::new(loader))),
            kind => Err((
                "kind".to_owned(),
                format!(
                    "unknown destination kind `{kind}`; known kinds: http, postgres, connector"
                ),
            )),
        }
        .map_err(|problem| problems.push(problem))
        .ok();
        let schedule = Schedule::parse(&config.schedule)
            .map_err(|message| problems.push(("schedule".to_owned(), message)))
            .ok();
        let quota = match config.rate_limit.as_deref().map(parse_rate) {
            None => None,
            Some(Ok(quota)) => Some(quota),
            Some(Err(message)) => {
                problems.push(("rate_limit".to_owned(), message));
                None
            }
        };
        if config.lease < MIN_LEASE {
            problems.push(("lease".to_owned(), "lease must be at least 1s".to_owned()));
        }
        if config.concurrency == 0 {
            problems.push((
                "concurrency".to_owned(),
                "concurrency must be at least 1".to_owned(),
            ));
        }
        if config.batch_size == 0 {
            problems.push((
                "batch_size".to_owned(),
                "batch_size must be at least 1".to_owned(),
            ));
        }
        if let Some(breaker) = &config.circuit_breaker
            && breaker.consecutive_failures == 0
        {
            problems.push((
                "circuit_breaker.consecutive_failures".to_owned(),
                "consecutive_failures must be at least 1".to_owned(),
            ));
        }
        let mut actions = Vec::new();
        for (name, action) in &config.actions {
            match Action::build(id, name, action) {
                Ok(action) => actions.push(action),
                Err(found) => problems.extend(found),
            }
        }
        let (Some(loader), Some(schedule), true) = (loader, schedule, problems.is_empty()) else {
            return Err(problems);
        };
        let routes = config
            .inputs()
            .iter()
            .map(|input| {
                config
                    .actions
                    .values()
                    .enumerate()
                    .filter(|(_, action)| action.inputs.contains(input))
                    .map(|(index, _)| index)
                    .collect()
            })
            .collect();
        Ok(Self {
            id: id.to_owned(),
            config,
            actions,
            routes,
            sender: loader,
            schedule,
            quota,
        })
    }

    /// Every chained action this destination names, with the key that names it.
    pub fn targets(&self) -> Vec<(String, Target)> {
        self.actions
            .iter()
            .flat_map(|action| {
                let prefix = if action.name == crate::DEFAULT_ACTION {
                    String::new()
                } else {
                    format!("actions.{}.", action.name)
                };
                action
                    .targets()
                    .into_iter()
                    .map(move |(key, target)| (format!("{prefix}{key}"), target.clone()))
            })
            .collect()
    }

    /// Actions whose version is deprecated at `now`, each with the key to point at and a
    /// warning.
    pub fn deprecations(&self, now: chrono::DateTime<chrono::Utc>) -> Vec<(String, String)> {
        self.actions
            .iter()
            .filter_map(|action| {
                let after = action.deprecated_after.filter(|after| *after <= now)?;
                let key = if action.name == crate::DEFAULT_ACTION {
                    "deprecated_after".to_owned()
                } else {
                    format!("actions.{}.deprecated_after", action.name)
                };
                let version = action.version.as_deref().unwrap_or("(unversioned)");
                let message = format!(
                    "destination {}: action {} version {version} is deprecated since {}; its jobs still run, but move to a newer version",
                    self.id,
                    action.name,
                    after.format("%Y-%m-%d")
                );
                Some((key, message))
            })
            .collect()
    }

    fn lease_ms(&self) -> i64 {
        i64::try_from(self.config.lease.as_millis()).unwrap_or(i64::MAX)
    }

    /// How many new jobs the store may keep in one row (a group, settled as one once all
    /// its jobs are loaded): a load's worth; with one job per load, half the loads that
    /// run at once, so that a group's slowest job holds back no more than that.
    fn group_max(&self) -> usize {
        if self.config.batch_size > 1 {
            self.config.batch_size as usize
        } else {
            (self.config.concurrency as usize / 2).max(1)
        }
    }

    /// Its actions' names.
    pub fn action_names(&self) -> Vec<String> {
        self.actions
            .iter()
            .map(|action| action.name.clone())
            .collect()
    }

    /// Runs until its input has closed and nothing is due, or until `intake` is cancelled
    /// and the loads in flight have settled.
    ///
    /// # Errors
    ///
    /// Never at present; a store that fails is retried, and its jobs are taken up again
    /// when their leases end.
    pub async fn run(self, context: DestinationContext) -> Result<(), String> {
        let DestinationContext {
            store,
            input,
            intake,
            metrics,
            breaker,
            data_dir,
        } = context;
        // Its settings are checked against the system it loads into before anything is
        // claimed: a refusal is this run's error, shown with the destination.
        let connector = match &self.sender {
            Sender::Connector(connector) => Some(connector.start(data_dir).await?),
            Sender::Postgres(postgres) => {
                postgres.check().await?;
                None
            }
            Sender::Http(_) => None,
        };
        // Its circuit shows from the start, not only once it first changes.
        metrics.circuit(
            &self.id,
            breaker.state() != crate::breaker::CircuitState::Closed,
        );
        let destination = Arc::new(self);
        let wake = Arc::new(Notify::new());
        let input_closed = CancellationToken::new();
        let concurrency = destination.config.concurrency as usize;
        let (handoff, handed) = Handoff::new(
            concurrency * destination.config.batch_size as usize,
            destination.lease_ms(),
        );
        let shared = handoff.shared.clone();
        let storing = {
            let destination = destination.clone();
            let store = store.clone();
            let wake = wake.clone();
            let metrics = metrics.clone();
            let input_closed = input_closed.clone();
            // Moved, not cloned: the loader knows the intake is over when its last sender
            // is gone.
            async move {
                // A destination nothing feeds (one that only chained actions reach) runs
                // until it is stopped, as a source does.
                if let Some(input) = input {
                    destination
                        .store_jobs(input, &store, &wake, &metrics, handoff)
                        .await;
                    input_closed.cancel();
                }
            }
        };
        let loading = Loader {
            limiter: destination
                .quota
                .map(|quota| Arc::new(RateLimiter::direct(quota))),
            destination,
            store,
            wake,
            metrics,
            breaker,
            loads: JoinSet::new(),
            load_permits: Arc::new(Semaphore::new(concurrency)),
            handoff: shared,
            handed,
            held: Vec::new(),
        }
        .run(intake, input_closed);
        tokio::join!(storing, loading);
        // The last hold on the connector's queue goes with the destination: it drains
        // (a file sink flushes) and ends.
        if let Some(connector) = connector
            && connector.await.is_err()
        {
            return Err("its connector panicked".to_owned());
        }
        Ok(())
    }

    /// The intake: each batch of events becomes jobs, stored in one transaction; then the
    /// events are acknowledged. An event no action can make a job of is rejected with the
    /// reason (its source sees it, and it counts); a store that fails errors the batch, so
    /// its source tries again.
    async fn store_jobs(
        &self,
        mut input: InputQueue,
        store: &Store,
        wake: &Notify,
        metrics: &DeliveryMetrics,
        handoff: Handoff,
    ) {
        let mut runtime = ExpressionRuntime::default();
        while let Some(first) = input.recv_from().await {
            // Group commit: the batches already waiting go into the same transaction, so
            // one sync to disk acknowledges them all.
            let mut batches = vec![first];
            let mut events = batches[0].events.len();
            while events < GROUP_COMMIT_EVENTS
                && let Some(next) = input.try_recv_from()
            {
                events += next.events.len();
                batches.push(next);
            }
            let mut jobs = Vec::with_capacity(events);
            let mut stored: Vec<Event> = Vec::with_capacity(events);
            for batch in batches {
                let actions = self
                    .routes
                    .get(batch.input)
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                for event in batch.events {
                    let made: Result<Vec<NewJob>, String> = actions
                        .iter()
                        .map(|index| self.actions[*index].job(&self.id, &event, &mut runtime))
                        .collect();
                    match made {
                        Ok(made) => {
                            jobs.extend(made);
                            stored.push(event);
                        }
                        Err(reason) => {
                            tracing::warn!(destination = %self.id, %reason, "An event could not become a job; it is rejected.");
                            event.complete_with(
                                AckStatus::Rejected,
                                format!("destination {}: {reason}", self.id),
                            );
                        }
                    }
                }
            }
            if jobs.is_empty() {
                continue;
            }
            let counts = count_by_action(&jobs);
            let (claim, slots) = handoff.reserve(jobs.len());
            let stored_count = jobs.len();
            match store
                .insert_claiming(jobs, now_ms(), claim, self.group_max())
                .await
            {
                Ok(claimed) => {
                    for (action, count) in counts {
                        metrics.jobs(&self.id, &action, "available", count);
                    }
                    for event in stored {
                        event.complete(AckStatus::Delivered);
                    }
                    // The loader looks for jobs in the store only when some were stored
                    // unclaimed.
                    if claimed.len() < stored_count {
                        wake.notify_one();
                    }
                    if let Some(slots) = slots.filter(|_| !claimed.is_empty()) {
                        handoff.hand_over(claimed, slots).await;
                    }
                }
                Err(error) => {
                    tracing::error!(destination = %self.id, %error, "Jobs could not be stored; their events are errored.");
                    let reason: Arc<str> = Arc::from(format!("destination {}: {error}", self.id));
                    for event in stored {
                        event.complete_with(AckStatus::Errored, reason.clone());
                    }
                }
            }
        }
    }
}

fn count_by_action(jobs: &[NewJob]) -> Vec<(String, u64)> {
    let mut counts: Vec<(String, u64)> = Vec::new();
    for job in jobs {
        match counts.iter_mut().find(|(action, _)| *action == job.action) {
            Some((_, count)) => *count += 1,
            None => counts.push((job.action.clone(), 1)),
        }
    }
    counts
}

/// `200/s`, `1000/m`, `10/h`.
fn parse_rate(text: &str) -> Result<Quota, String> {
    let wrong = || {
        format!("rate_limit `{text}` must be a count per second, minute or hour, such as \"200/s\"")
    };
    let (count, unit) = text.split_once('/').ok_or_else(wrong)?;
    let count: NonZeroU32 = count.trim().parse().map_err(|_| wrong())?;
    match unit.trim() {
        "s" | "sec" | "second" => Ok(Quota::per_second(count)),
        "m" | "min" | "minute" => Ok(Quota::per_minute(count)),
        "h" | "hour" => Ok(Quota::per_hour(count)),
        _ => Err(wrong()),
    }
}

/// One load: jobs of one action going to one path.
struct Load {
    action: usize,
    path: String,
    jobs: Vec<Claimed>,
    started_at: i64,
    /// Its jobs' places among the jobs a destination holds at once, given back when the load
    /// has settled.
    slots: Option<OwnedSemaphorePermit>,
}

/// A job whose load has ended, with how it went.
struct Finished {
    /// Its action's index (`usize::MAX`: no longer configured).
    action: usize,
    started_at: i64,
    job: Claimed,
    result: LoadResult,
}

/// Splits `finished` into the jobs to settle now (on their own, or with every job of their
/// group) and those whose group still has jobs being loaded.
fn whole_groups(finished: Vec<Finished>) -> (Vec<Finished>, Vec<Finished>) {
    let mut present: Vec<(&JobId, usize)> = Vec::new();
    for job in &finished {
        if let Some(group) = &job.job.group {
            match present.iter_mut().find(|(id, _)| **id == group.id) {
                Some((_, count)) => *count += 1,
                None => present.push((&group.id, 1)),
            }
        }
    }
    let complete: Vec<JobId> = present
        .into_iter()
        .filter(|(id, count)| {
            finished
                .iter()
                .find_map(|job| job.job.group.as_ref().filter(|group| group.id == **id))
                .is_some_and(|group| *count >= group.size as usize)
        })
        .map(|(id, _)| id.clone())
        .collect();
    finished.into_iter().partition(|job| {
        job.job
            .group
            .as_ref()
            .is_none_or(|group| complete.contains(&group.id))
    })
}

/// Jobs the intake claimed as it stored them, for the loader, with their places.
struct Handed {
    jobs: Vec<Claimed>,
    slots: OwnedSemaphorePermit,
}

/// What the intake and the loader share to claim jobs as they are stored: while the loader
/// takes them (realtime, circuit closed) the intake stores new jobs already claimed, within
/// the places left for jobs being loaded, and hands them over, so they are neither read back
/// nor rewritten by a claim. While the store holds a backlog (the loader's last claim was
/// full), the intake leaves half the places to the loader's claims, so older jobs keep
/// going out at least at half the destination's pace however fast new ones come.
struct Handoff {
    shared: HandoffShared,
    sender: mpsc::Sender<Handed>,
}

/// The loader's half of [`Handoff`]: how many places the intake must leave free, and the
/// places.
#[derive(Clone)]
struct HandoffShared {
    /// The places the intake leaves to the loader's claims: none while the loader has
    /// caught up, half while the store holds a backlog, all (`usize::MAX`) while it takes no
    /// jobs this way.
    kept_for_claims: Arc<AtomicUsize>,
    /// One permit per job a destination may hold claimed at once (`concurrency` loads of
    /// `batch_size`), whichever way it was claimed.
    slots: Arc<Semaphore>,
    lease_ms: i64,
}

impl Handoff {
    fn new(slots: usize, lease_ms: i64) -> (Self, mpsc::Receiver<Handed>) {
        let (sender, receiver) = mpsc::channel(HANDOFF_BATCHES);
        let shared = HandoffShared {
            kept_for_claims: Arc::new(AtomicUsize::new(usize::MAX)),
            slots: Arc::new(Semaphore::new(slots)),
            lease_ms,
        };
        (Self { shared, sender }, receiver)
    }

    /// How many of `count` new jobs to claim as they are stored, with their places; none
    /// while the loader does not take them.
    fn reserve(&self, count: usize) -> (Option<ClaimOnInsert>, Option<OwnedSemaphorePermit>) {
        let kept = self.shared.kept_for_claims.load(Ordering::Acquire);
        let room = count.min(self.shared.slots.available_permits().saturating_sub(kept));
        let Some(slots) = u32::try_from(room)
            .ok()
            .filter(|room| *room > 0)
            .and_then(|room| self.shared.slots.clone().try_acquire_many_owned(room).ok())
        else {
            return (None, None);
        };
        let claim = ClaimOnInsert {
            count: room,
            lease_ms: self.shared.lease_ms,
        };
        (Some(claim), Some(slots))
    }

    /// Gives the loader jobs claimed on insert. Should it be gone, their leases run out and
    /// they are claimed again: nothing is lost.
    async fn hand_over(&self, jobs: Vec<Claimed>, slots: OwnedSemaphorePermit) {
        if self.sender.send(Handed { jobs, slots }).await.is_err() {
            tracing::warn!(
                "The loader stopped before taking jobs claimed for it; they are taken up when their leases end."
            );
        }
    }
}

/// The loading half of a destination's run.
struct Loader {
    destination: Arc<Destination>,
    store: Store,
    wake: Arc<Notify>,
    metrics: DeliveryMetrics,
    breaker: Breaker,
    limiter: Option<Arc<DefaultDirectRateLimiter>>,
    loads: JoinSet<(Load, Vec<LoadResult>)>,
    /// At most `concurrency` loads send at once.
    load_permits: Arc<Semaphore>,
    handoff: HandoffShared,
    /// Jobs the intake claimed as it stored them.
    handed: mpsc::Receiver<Handed>,
    /// Loaded jobs whose group still has jobs being loaded.
    held: Vec<Finished>,
}

impl Loader {
    async fn run(mut self, intake: CancellationToken, input_closed: CancellationToken) {
        let id = self.destination.id.clone();
        let batch = self.destination.config.batch_size;
        let capacity = self.destination.config.concurrency as usize * batch as usize;
        let mut next_tick = self.destination.schedule.next_tick(chrono::Utc::now());
        let mut ticking = matches!(self.destination.schedule, Schedule::Realtime);
        let mut next_prune = Instant::now();
        let mut next_count = Instant::now();
        let mut next_poll = Instant::now();
        // Whether the last claim left nothing due behind; until then the store may hold a
        // backlog, which goes before new jobs.
        let mut caught_up = false;
        // Whether the store may hold jobs to claim: after a full claim, when woken (jobs
        // stored unclaimed, chained jobs, another node's jobs), once a poll period, at a tick
        // and at the end of input. Jobs handed over by the intake need no claim.
        let mut worth_claiming = true;
        loop {
            if intake.is_cancelled() {
                break;
            }
            if next_prune <= Instant::now() {
                self.prune().await;
                next_prune = Instant::now() + PRUNE_EVERY;
            }
            if next_count <= Instant::now() {
                self.count_pending().await;
                next_count = Instant::now() + COUNT_EVERY;
            }
            let mut wait = POLL;
            let mut claimed_all = false;
            // Claims come in chunks of at least half the places, so a busy destination does
            // not pay a transaction for every load that ends; once a poll period, any room
            // is used, so due retries are not kept waiting by a steady stream of new jobs.
            let room = self.handoff.slots.available_permits();
            let polling = next_poll <= Instant::now();
            worth_claiming |= polling || input_closed.is_cancelled();
            if ticking
                && worth_claiming
                && (room >= capacity.div_ceil(2)
                    || (room > 0 && (self.loads.is_empty() || polling)))
            {
                next_poll = Instant::now() + POLL;
                let limit = match self.breaker.allowance(Instant::now(), self.loads.len()) {
                    Allowance::Any => room,
                    Allowance::Probe => room.min(batch as usize),
                    Allowance::Wait(pause) => {
                        wait = wait.min(pause);
                        0
                    }
                };
                if limit > 0 {
                    match self.claim(limit).await {
                        Ok(count) => {
                            // A group is claimed whole, so a claim may take a few more.
                            claimed_all = count >= limit
                                && !matches!(
                                    self.breaker.allowance(Instant::now(), usize::MAX),
                                    Allowance::Wait(_)
                                );
                            caught_up = !claimed_all;
                            worth_claiming = claimed_all;
                        }
                        Err(error) => {
                            tracing::error!(destination = %id, %error, "Could not claim jobs; trying again.")
                        }
                    }
                    if !claimed_all && next_tick.is_some() && self.loads.is_empty() {
                        // A scheduled destination has loaded what was due at this tick.
                        ticking = false;
                    }
                }
            }
            let kept_for_claims = if next_tick.is_some()
                || self.breaker.state() != crate::breaker::CircuitState::Closed
            {
                usize::MAX
            } else if caught_up {
                0
            } else {
                capacity.div_ceil(2)
            };
            self.handoff
                .kept_for_claims
                .store(kept_for_claims, Ordering::Release);
            if input_closed.is_cancelled()
                && self.loads.is_empty()
                && self.handed.is_empty()
                && !claimed_all
                && (ticking || next_tick.is_none())
            {
                // Nothing feeds it and nothing more is due now: what waits for a later retry
                // stays stored for the next run.
                break;
            }
            if claimed_all && self.handoff.slots.available_permits() > 0 {
                continue;
            }
            if let Some(tick) = next_tick.filter(|_| !ticking) {
                let until = (tick - chrono::Utc::now()).to_std().unwrap_or_default();
                wait = wait
                    .max(Duration::ZERO)
                    .min(until.max(Duration::from_millis(1)));
                if until.is_zero() {
                    ticking = true;
                    worth_claiming = true;
                    next_tick = self.destination.schedule.next_tick(chrono::Utc::now());
                    continue;
                }
            }
            tokio::select! {
                Some(first) = self.loads.join_next(), if !self.loads.is_empty() => {
                    // Every load finished by now is settled in one transaction.
                    let mut done: Vec<_> = first.into_iter().collect();
                    while let Some(next) = self.loads.try_join_next() {
                        done.extend(next);
                    }
                    self.settle(done).await;
                }
                Some(handed) = self.handed.recv() => { self.start_claimed(handed.jobs, handed.slots) },
                () = self.wake.notified(), if next_tick.is_none() => worth_claiming = true,
                // Another node's new jobs (PostgreSQL's NOTIFY); on SQLite, a plain wait.
                _ = self.store.wait_for_jobs(&id, wait) => worth_claiming = true,
                () = intake.cancelled() => {}
                () = input_closed.cancelled(), if !input_closed.is_cancelled() => {}
            }
        }
        // Stopping: loads in flight finish and settle, and so do the jobs the intake claimed
        // before it heard; nothing new is claimed.
        self.handoff
            .kept_for_claims
            .store(usize::MAX, Ordering::Release);
        loop {
            tokio::select! {
                Some(handed) = self.handed.recv() => self.start_claimed(handed.jobs, handed.slots),
                Some(done) = self.loads.join_next(), if !self.loads.is_empty() => {
                    self.settle(done.into_iter().collect()).await;
                }
                else => break,
            }
        }
        // Only a load that panicked leaves jobs of a group waiting: the rest are settled
        // (their group split); the panicked load's jobs go again when their lease ends.
        let held = std::mem::take(&mut self.held);
        self.settle_finished(held).await;
    }

    /// Claims up to `limit` due jobs and starts their loads; returns how many it claimed.
    async fn claim(&mut self, limit: usize) -> Result<usize, tb_store::StoreError> {
        let Some(slots) = u32::try_from(limit).ok().and_then(|limit| {
            self.handoff
                .slots
                .clone()
                .try_acquire_many_owned(limit)
                .ok()
        }) else {
            // The intake took the places meanwhile.
            return Ok(0);
        };
        let claimed = self
            .store
            .claim(
                &self.destination.id,
                slots.num_permits() as u32,
                now_ms(),
                self.lease_ms(),
            )
            .await?;
        let count = claimed.len();
        self.start_claimed(claimed, slots);
        Ok(count)
    }

    /// Starts the loads of `claimed`, each holding its jobs' places (those left over are
    /// given back).
    fn start_claimed(&mut self, claimed: Vec<Claimed>, mut slots: OwnedSemaphorePermit) {
        for mut load in self.group(claimed) {
            load.slots = slots.split(load.jobs.len());
            self.start(load);
        }
    }

    /// Groups claimed jobs into loads of one action and path, `batch_size` at most each.
    /// The jobs of a stored group (claimed together, in id order) fill loads of their own
    /// where they can, so that they end together.
    fn group(&self, claimed: Vec<Claimed>) -> Vec<Load> {
        let batch = self.destination.config.batch_size as usize;
        let mut loads: Vec<Load> = Vec::new();
        let mut runtime = ExpressionRuntime::default();
        // The load that took the last job, and that job's group.
        let mut last: Option<(usize, Option<JobId>)> = None;
        for job in claimed {
            let Some(action) = self
                .destination
                .actions
                .iter()
                .position(|action| action.name == job.action)
            else {
                // An action removed from the config: its jobs wait, and show in the API.
                tracing::warn!(destination = %self.destination.id, action = %job.action, "A job's action is no longer configured; it is discarded.");
                loads.push(Load {
                    action: usize::MAX,
                    path: String::new(),
                    jobs: vec![job],
                    started_at: now_ms(),
                    slots: None,
                });
                continue;
            };
            let path = self.path_of(action, &job, &mut runtime);
            let group = job.group.as_ref().map(|group| group.id.clone());
            let fits = |load: &Load, room: usize| {
                load.action == action && load.path == path && load.jobs.len() + room <= batch
            };
            let with_group = last
                .as_ref()
                .filter(|(index, last_group)| {
                    group.is_some() && *last_group == group && fits(&loads[*index], 1)
                })
                .map(|(index, _)| *index);
            // A group's first job looks for room for the whole group (or a whole load).
            let room = job
                .group
                .as_ref()
                .map_or(1, |group| (group.size as usize).min(batch));
            let index = match with_group.or_else(|| loads.iter().position(|load| fits(load, room)))
            {
                Some(index) => {
                    loads[index].jobs.push(job);
                    index
                }
                None => {
                    loads.push(Load {
                        action,
                        path,
                        jobs: vec![job],
                        started_at: now_ms(),
                        slots: None,
                    });
                    loads.len() - 1
                }
            };
            last = Some((index, group));
        }
        loads
    }

    /// The path a job goes to: rendered when it was stored, or (for a chained job) from its
    /// payload now.
    fn path_of(&self, action: usize, job: &Claimed, runtime: &mut ExpressionRuntime) -> String {
        /// The path a job was stored with, read without the rest of its context.
        #[derive(serde::Deserialize)]
        struct StoredPath<'a> {
            #[serde(borrow)]
            path: Option<std::borrow::Cow<'a, str>>,
        }
        if let Ok(StoredPath { path: Some(path) }) = serde_json::from_str(job.context.as_str()) {
            return path.into_owned();
        }
        let value = vrl::value::Value::from(job.payload.to_value());
        match self.destination.actions[action].path_for(&value, runtime) {
            Ok(path) => path,
            Err(error) => {
                tracing::warn!(destination = %self.destination.id, job = %job.id, %error, "A chained job's path could not be filled; it goes to the URL itself.");
                String::new()
            }
        }
    }

    fn start(&mut self, load: Load) {
        let destination = self.destination.clone();
        let store = self.store.clone();
        let limiter = self.limiter.clone();
        let load_permits = self.load_permits.clone();
        self.loads.spawn(async move {
            if load.action == usize::MAX {
                let result = LoadResult {
                    verdict: Verdict::Discard,
                    code: None,
                    error: Some("its action is no longer in the config".to_owned()),
                    body_excerpt: None,
                    duration: Duration::ZERO,
                };
                let results = vec![result; load.jobs.len()];
                return (load, results);
            }
            let action = &destination.actions[load.action];
            let sending = async {
                // Waiting for its turn is under the heartbeat too: its jobs are claimed.
                let _turn = load_permits.acquire().await;
                if let Some(limiter) = &limiter {
                    limiter.until_ready().await;
                }
                destination
                    .sender
                    .load(action, &load.path, &load.jobs)
                    .await
            };
            let results =
                with_heartbeat(sending, &store, &load.jobs, destination.config.lease).await;
            (load, results)
        });
    }

    /// Settles finished loads in one transaction: each job succeeded, retries later, or is
    /// discarded; chained actions get their jobs; the breaker and the metrics hear of it.
    /// The jobs of a stored group whose other jobs are still being loaded wait for them, so
    /// that the group is settled as one row (see `tb_store::GroupKey`).
    async fn settle(&mut self, done: Vec<(Load, Vec<LoadResult>)>) {
        let id = self.destination.id.clone();
        let mut finished = std::mem::take(&mut self.held);
        // Their places are given back once they are settled or held.
        let mut slots = Vec::with_capacity(done.len());
        for (load, results) in done {
            self.record_in_breaker(&results);
            if let Some(longest) = results.iter().map(|result| result.duration).max()
                && let Some(job) = load.jobs.first()
            {
                self.metrics
                    .attempt(&id, &job.action, longest.as_secs_f64());
            }
            slots.push(load.slots);
            finished.extend(
                load.jobs
                    .into_iter()
                    .zip(results)
                    .map(|(job, result)| Finished {
                        action: load.action,
                        started_at: load.started_at,
                        job,
                        result,
                    }),
            );
        }
        let (ready, held) = whole_groups(finished);
        self.held = held;
        self.settle_finished(ready).await;
        drop(slots);
    }

    /// Settles `finished` jobs in one transaction (see [`Loader::settle`]).
    async fn settle_finished(&mut self, finished: Vec<Finished>) {
        if finished.is_empty() {
            return;
        }
        let id = self.destination.id.clone();
        let now = now_ms();
        let entries: Vec<_> = finished
            .iter()
            .map(|finished| self.settlement(finished, now))
            .collect();
        let owned = loop {
            match self.store.settle(entries.clone(), now).await {
                Ok(owned) => break owned,
                Err(error) => {
                    // Its leases run out meanwhile and the jobs are loaded again: at least once.
                    tracing::error!(destination = %id, %error, "Could not settle jobs; trying again.");
                    tokio::time::sleep(POLL).await;
                    if now_ms() - now > self.lease_ms() {
                        return;
                    }
                }
            }
        };
        let mut chained = Vec::new();
        // Counted per action and status, not per job: a metric's labels cost allocations.
        let mut settled_counts: Vec<(String, &'static str, u64)> = Vec::new();
        for ((finished, (_, settlement, _)), owned) in finished.iter().zip(&entries).zip(owned) {
            let job = &finished.job;
            if !owned {
                tracing::warn!(destination = %id, job = %job.id, "A job was settled by a claimer that no longer held it; its attempt is recorded as fenced.");
                continue;
            }
            let status = status_name(settlement);
            count_one(&mut settled_counts, &job.action, status);
            if let Some(action) = self.destination.actions.get(finished.action) {
                let targets = match settlement {
                    Settlement::Succeeded => &action.on_succeeded,
                    Settlement::Retry { .. } => &action.on_failed,
                    Settlement::Discarded => &action.on_discarded,
                };
                chained.extend(
                    targets
                        .iter()
                        .map(|target| chained_job(target, job, status, &finished.result)),
                );
            }
        }
        for (action, status, count) in settled_counts {
            self.metrics.jobs(&id, &action, status, count);
        }
        self.store_chained(chained).await;
    }

    /// A load failed if any of its jobs is to be retried, succeeded if any went through. A
    /// 4xx (a discard) says the destination is up but refuses this payload: it neither
    /// counts as a failure nor breaks a run of them.
    fn record_in_breaker(&self, results: &[LoadResult]) {
        let verdicts = || results.iter().map(|result| &result.verdict);
        let failed = if verdicts().any(|verdict| matches!(verdict, Verdict::Retry { .. })) {
            true
        } else if verdicts().any(|verdict| *verdict == Verdict::Succeeded) {
            false
        } else {
            return;
        };
        if self.breaker.record(failed, Instant::now()) {
            let id = &self.destination.id;
            let open = self.breaker.state() != crate::breaker::CircuitState::Closed;
            self.metrics.circuit(id, open);
            tracing::warn!(destination = %id, state = self.breaker.state().as_str(), "The destination's circuit changed.");
        }
    }

    /// What the store records for one job's attempt.
    fn settlement(&self, finished: &Finished, now: i64) -> (ClaimKey, Settlement, Attempt) {
        let Finished {
            job,
            result,
            started_at,
            ..
        } = finished;
        let retry = &self.destination.config.retry;
        let settlement = match &result.verdict {
            Verdict::Succeeded => Settlement::Succeeded,
            Verdict::Discard => Settlement::Discarded,
            Verdict::Retry { .. } if job.attempt > retry.max_retries => Settlement::Discarded,
            Verdict::Retry { after } => {
                let wait = backoff(retry, job.attempt).max(after.unwrap_or_default());
                Settlement::Retry {
                    at: now + wait.as_millis() as i64,
                }
            }
        };
        let attempt = Attempt {
            started_at: *started_at,
            duration_ms: result.duration.as_millis() as i64,
            code: result.code.map(i64::from),
            error: result.error.clone(),
            body_excerpt: result.body_excerpt.clone(),
        };
        (job.key(), settlement, attempt)
    }

    async fn store_chained(&self, chained: Vec<NewJob>) {
        if chained.is_empty() {
            return;
        }
        let counts: Vec<(String, String)> = chained
            .iter()
            .map(|job| (job.destination.clone(), job.action.clone()))
            .collect();
        match self.store.insert(chained, now_ms()).await {
            Ok(()) => {
                for (destination, action) in counts {
                    self.metrics.jobs(&destination, &action, "available", 1);
                }
                self.wake.notify_one();
            }
            Err(error) => {
                tracing::error!(destination = %self.destination.id, %error, "Could not store chained jobs.")
            }
        }
    }

    fn lease_ms(&self) -> i64 {
        self.destination.lease_ms()
    }

    /// Sets the pending-jobs gauge of each action from the store.
    async fn count_pending(&self) {
        match self.store.pending(&self.destination.id).await {
            Ok(pending) => {
                for action in &self.destination.actions {
                    let count = pending
                        .iter()
                        .find_map(|(name, count)| (*name == action.name).then_some(*count))
                        .unwrap_or(0);
                    self.metrics
                        .pending(&self.destination.id, &action.name, count);
                }
            }
            Err(error) => {
                tracing::warn!(destination = %self.destination.id, %error, "Could not count pending jobs.")
            }
        }
    }

    async fn prune(&self) {
        let before = now_ms() - self.destination.config.retention.as_millis() as i64;
        for _ in 0..10 {
            match self
                .store
                .prune_succeeded(&self.destination.id, before, PRUNE_BATCH)
                .await
            {
                Ok(pruned) if pruned == u64::from(PRUNE_BATCH) => {}
                Ok(_) => return,
                Err(error) => {
                    tracing::warn!(destination = %self.destination.id, %error, "Could not prune succeeded jobs.");
                    return;
                }
            }
        }
    }
}

fn count_one(counts: &mut Vec<(String, &'static str, u64)>, action: &str, status: &'static str) {
    match counts
        .iter_mut()
        .find(|(counted, counted_status, _)| counted == action && *counted_status == status)
    {
        Some((_, _, count)) => *count += 1,
        None => counts.push((action.to_owned(), status, 1)),
    }
}

fn status_name(settlement: &Settlement) -> &'static str {
    match settlement {
        Settlement::Succeeded => "succeeded",
        Settlement::Retry { .. } => "retrying",
        Settlement::Discarded => "discarded",
    }
}

/// A job for a chained action: the original payload and the outcome.
fn chained_job(target: &Target, job: &Claimed, status: &str, result: &LoadResult) -> NewJob {
    NewJob {
        id: JobId::new(),
        destination: target.destination.clone(),
        action: target.action.clone(),
        version: None,
        payload: JsonText::from_value(&serde_json::json!({
            "payload": job.payload.to_value(),
            "outcome": {
                "job_id": job.id.to_string(),
                "action": job.action,
                "status": status,
                "attempt": job.attempt,
                "code": result.code,
                "error": result.error,
                "body": result.body_excerpt,
            },
        })),
        context: JsonText::from_value(&serde_json::json!({ "chained_from": job.id.to_string() })),
        run_at: None,
    }
}

/// Runs `sending` while renewing the leases of `jobs` every third of `lease`.
async fn with_heartbeat(
    sending: impl Future<Output = Vec<LoadResult>>,
    store: &Store,
    jobs: &[Claimed],
    lease: Duration,
) -> Vec<LoadResult> {
    tokio::pin!(sending);
    let keys: Vec<ClaimKey> = jobs.iter().map(Claimed::key).collect();
    let every = lease / 3;
    let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tokio::select! {
            result = &mut sending => return result,
            _ = beat.tick() => {
                if let Err(error) = store.heartbeat(keys.clone(), now_ms(), lease.as_millis() as i64).await {
                    tracing::warn!(%error, "Could not renew the leases of jobs being loaded.");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reserved(handoff: &Handoff, count: usize) -> usize {
        match handoff.reserve(count) {
            (Some(claim), Some(slots)) => {
                assert_eq!(claim.count, slots.num_permits());
                // Held until the caller's load settles; here, given back at once.
                claim.count
            }
            (None, None) => 0,
            other => panic!("a claim and its places come together: {other:?}"),
        }
    }

    #[test]
    fn the_intake_claims_within_the_free_places_and_leaves_what_the_loader_keeps() {
        let (handoff, _handed) = Handoff::new(800, 15_000);
        assert_eq!(
            reserved(&handoff, 100),
            0,
            "closed until the loader opens it"
        );

        handoff.shared.kept_for_claims.store(0, Ordering::Release);
        assert_eq!(reserved(&handoff, 100), 100, "caught up: all it asks");
        let held = handoff.shared.slots.clone().try_acquire_many_owned(650);
        assert!(held.is_ok());
        assert_eq!(reserved(&handoff, 500), 150, "no more than the free places");

        handoff.shared.kept_for_claims.store(400, Ordering::Release);
        drop(held);
        assert_eq!(
            reserved(&handoff, 1_000),
            400,
            "behind: half the places stay for the loader's claims of older jobs"
        );
    }
}
