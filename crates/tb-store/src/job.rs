//! What a job is: its statuses, what is stored for a new one, what a claimer gets, and how
//! an attempt ends.

use std::fmt;

/// A job's id: stable across retries, so it is also the idempotency key a receiver sees.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(pub String);

impl JobId {
    /// A new id, time-ordered (UUID v7).
    pub fn new() -> Self {
        Self(uuid::Uuid::now_v7().to_string())
    }
}

impl JobId {
    /// A new group id: a UUID v7 whose low [`MEMBER_BITS`] bits are zero, so that its
    /// members' ids ([`JobId::member`]) follow it and no other group's.
    pub(crate) fn new_group() -> Self {
        let bits = uuid::Uuid::now_v7().as_u128() & !MEMBER_MASK;
        Self(uuid::Uuid::from_u128(bits).to_string())
    }

    /// The id of member `index` (from 1) of the group whose id this is.
    pub(crate) fn member(&self, index: u32) -> Self {
        Self::member_of(self.bits(), index)
    }

    /// The ids of members `indexes` (from 1) of the group whose id this is.
    pub(crate) fn members(&self, indexes: std::ops::Range<u32>) -> impl Iterator<Item = Self> {
        let base = self.bits();
        indexes.map(move |index| Self::member_of(base, index))
    }

    /// A group id's bits (0 for one that is not a UUID, which the store never makes).
    fn bits(&self) -> u128 {
        uuid::Uuid::parse_str(&self.0).map_or(0, |id| id.as_u128())
    }

    fn member_of(base: u128, index: u32) -> Self {
        Self(uuid::Uuid::from_u128(base | u128::from(index)).to_string())
    }

    /// The group this id would be a member of, and its index there: `None` for an id that
    /// is no member id (not a UUID, or its low bits are zero).
    pub(crate) fn group_of(&self) -> Option<(Self, u32)> {
        let bits = uuid::Uuid::parse_str(&self.0).ok()?.as_u128();
        let index = u32::try_from(bits & MEMBER_MASK)
            .ok()
            .filter(|index| *index > 0)?;
        Some((
            Self(uuid::Uuid::from_u128(bits & !MEMBER_MASK).to_string()),
            index,
        ))
    }
}

/// Low bits of a member's id that number it within its group.
pub(crate) const MEMBER_BITS: u32 = 10;
const MEMBER_MASK: u128 = (1 << MEMBER_BITS) - 1;
/// Most jobs one group holds.
pub const GROUP_MAX: usize = (1 << MEMBER_BITS) - 1;

/// The row a job is stored in with the other jobs of its group (see [`crate::group`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct GroupKey {
    /// The group's id (no job's).
    pub id: JobId,
    /// How many jobs it holds.
    pub size: u32,
}

impl Default for JobId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

/// Where a job is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum JobStatus {
    /// Waits for its time (a scheduled action's next tick, a later `run_at`).
    Scheduled,
    /// Ready to be claimed.
    Available,
    /// Claimed and being attempted, under a lease.
    Running,
    /// Delivered.
    Succeeded,
    /// Failed; will be tried again at its next attempt time.
    Retrying,
    /// Retries exhausted or a permanent error: a dead letter, kept until replayed or purged.
    Discarded,
    /// Stopped by a person.
    Cancelled,
}

impl JobStatus {
    /// Every status, in life order.
    pub const ALL: [Self; 7] = [
        Self::Scheduled,
        Self::Available,
        Self::Running,
        Self::Succeeded,
        Self::Retrying,
        Self::Discarded,
        Self::Cancelled,
    ];

    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::Available => "available",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Retrying => "retrying",
            Self::Discarded => "discarded",
            Self::Cancelled => "cancelled",
        }
    }

    /// The status stored as `name`: the store writes no other.
    pub(crate) fn stored(name: &str) -> Result<Self, crate::StoreError> {
        Self::parse(name)
            .ok_or_else(|| crate::StoreError::Corrupt(format!("a job has status `{name}`")))
    }

    /// The status named `name`, if any.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == name)
    }
}

/// A JSON document as text. A job's payload is stored, claimed and sent as it was written:
/// nothing on its way parses it again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JsonText(String);

impl JsonText {
    /// `value`, written.
    pub fn from_value(value: &serde_json::Value) -> Self {
        Self(value.to_string())
    }

    /// Text that is one JSON document: written by a JSON writer, or read back from the store
    /// that only ever holds such text.
    pub fn from_trusted(text: String) -> Self {
        Self(text)
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The document, parsed (`null` if the text was not JSON after all).
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::from_str(&self.0).unwrap_or(serde_json::Value::Null)
    }
}

/// A job to store.
#[derive(Clone, Debug)]
pub struct NewJob {
    /// Its id (see [`JobId::new`]).
    pub id: JobId,
    /// The destination that loads it.
    pub destination: String,
    /// The action of that destination.
    pub action: String,
    /// The action's declared version, if it has one.
    pub version: Option<String>,
    /// What is loaded (the marshalled event).
    pub payload: JsonText,
    /// The origin event's metadata.
    pub context: JsonText,
    /// When it may first be attempted; `None` for at once (`available`), a later time makes
    /// it `scheduled`.
    pub run_at: Option<i64>,
}

impl NewJob {
    /// Its status and next attempt time when stored at `now`: `scheduled` until a later
    /// `run_at`; otherwise `running` under a lease of `claim_lease` ms when it is claimed
    /// as it is stored, else `available`. A running job's next attempt time is its lease's
    /// end, as a claim makes it.
    pub(crate) fn stored_state(&self, now: i64, claim_lease: Option<i64>) -> (JobStatus, i64) {
        match (self.run_at, claim_lease) {
            (Some(at), _) if at > now => (JobStatus::Scheduled, at),
            (_, Some(lease_ms)) => (JobStatus::Running, now + lease_ms),
            _ => (JobStatus::Available, now),
        }
    }
}

/// Jobs claimed as they are stored, by the claimer that stores them: the first `count` jobs
/// of a batch that are due, each leased for `lease_ms` (attempt 1, token 1), exactly as if
/// [`Store::claim`](crate::Store::claim) had taken them. It saves a destination that keeps
/// up with its input the claim's read and rewrite of every job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClaimOnInsert {
    /// How many of the batch's first jobs to claim.
    pub count: usize,
    /// Their lease.
    pub lease_ms: i64,
}

impl ClaimOnInsert {
    /// The lease of the job at `index` of a batch, if it is one to claim.
    pub(crate) fn lease_of(claim: Option<Self>, index: usize) -> Option<i64> {
        claim
            .filter(|claim| index < claim.count)
            .map(|claim| claim.lease_ms)
    }
}

/// A job as a claimer holds it.
#[derive(Clone, Debug, PartialEq)]
pub struct Claimed {
    /// The job.
    pub id: JobId,
    /// Its action.
    pub action: String,
    /// What to load.
    pub payload: JsonText,
    /// Where it came from, and what the action worked out when it was stored (such as the
    /// request path).
    pub context: JsonText,
    /// Which attempt this is (1 for the first).
    pub attempt: u32,
    /// The fencing token of this claim: only it can settle or extend the job.
    pub token: u64,
    /// When the lease ends unless a heartbeat extends it.
    pub lease_until: i64,
    /// The group it is stored in, if it shares a row with other jobs.
    pub group: Option<GroupKey>,
}

impl Claimed {
    /// What identifies this claim to the store: enough to renew its lease or settle it.
    pub fn key(&self) -> ClaimKey {
        ClaimKey {
            id: self.id.clone(),
            token: self.token,
            attempt: self.attempt,
            group: self.group.clone(),
        }
    }
}

/// One claim of one job, as heartbeats and settlements name it (without the payload).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimKey {
    /// The job.
    pub id: JobId,
    /// The claim's fencing token.
    pub token: u64,
    /// Which attempt the claim is.
    pub attempt: u32,
    /// The group the job is stored in, if any: its row holds the lease and the token.
    pub group: Option<GroupKey>,
}

/// How an attempt ended, as the claimer reports it.
#[derive(Clone, Debug, PartialEq)]
pub enum Settlement {
    /// Delivered.
    Succeeded,
    /// Failed; try again at `at` (unless retries are exhausted: the caller decides that,
    /// and reports [`Settlement::Discarded`] instead).
    Retry {
        /// The next attempt time.
        at: i64,
    },
    /// Failed for good.
    Discarded,
}

/// What happened in one attempt, kept with the job.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Attempt {
    /// When it started.
    pub started_at: i64,
    /// How long it took, in milliseconds.
    pub duration_ms: i64,
    /// The response code, if the destination gave one.
    pub code: Option<i64>,
    /// The error, for an attempt that failed.
    pub error: Option<String>,
    /// The start of the response body.
    pub body_excerpt: Option<String>,
}

/// A stored job, as the API shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct JobRecord {
    /// Its id.
    pub id: JobId,
    /// Its destination.
    pub destination: String,
    /// Its action.
    pub action: String,
    /// The action's version when it was made.
    pub version: Option<String>,
    /// Where it is.
    pub status: JobStatus,
    /// Attempts made so far.
    pub attempt: u32,
    /// When it may next be attempted.
    pub next_attempt_at: i64,
    /// The last attempt's error.
    pub last_error: Option<String>,
    /// What is loaded.
    pub payload: serde_json::Value,
    /// The origin event's metadata.
    pub context: serde_json::Value,
    /// When it was stored.
    pub created_at: i64,
    /// When it last changed.
    pub updated_at: i64,
    /// Every attempt, oldest first, with whether it was fenced (made by a claimer that had
    /// lost the job, so it changed nothing). Empty in a listing.
    pub attempts: Vec<(Attempt, bool)>,
}

/// Which jobs a listing, a bulk replay or a count is about; `None` matches every value.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct JobFilter {
    /// Only this destination's.
    pub destination: Option<String>,
    /// Only this action's.
    pub action: Option<String>,
    /// Only jobs in this status.
    pub status: Option<JobStatus>,
}

impl JobFilter {
    /// The destination, action and status matched, as query parameters (`None`: any).
    pub(crate) fn params(&self) -> (Option<&str>, Option<&str>, Option<&'static str>) {
        (
            self.destination.as_deref(),
            self.action.as_deref(),
            self.status.map(JobStatus::as_str),
        )
    }
}

/// One page of a listing: jobs in id order (oldest first), after `cursor` when given.
#[derive(Clone, Debug, PartialEq)]
pub struct JobPage {
    /// The jobs, without their attempts.
    pub jobs: Vec<JobRecord>,
    /// The cursor for the next page, when there may be one.
    pub next_cursor: Option<String>,
}
