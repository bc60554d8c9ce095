//! Jobs stored together. A group is one row holding the jobs of one insert that belong to
//! one destination and action and start in one state (up to the size the caller asks, a
//! destination's batch): their payloads and contexts one per line, one lease, one token,
//! one status, one attempt on record per attempt. Storing, claiming and settling 100 jobs
//! then costs one row's B-tree work, not 100 (W3 on SQLite: 43k events/s with a row per
//! job, about 100k with groups).
//!
//! A group stays whole while its jobs share one fate. When they part (a load settles some
//! of them differently, or a person cancels, replays or deletes one), the row is split into
//! one row per job, each in the group's state and with its attempts so far, and from then
//! on they are plain jobs.
//!
//! A member's id is the group's id plus its index (from 1) in the low [`MEMBER_BITS`] bits
//! of the UUID, so any member is found from its id alone, ids stay in the order the jobs
//! were stored, and a split job keeps its id (it is also the idempotency key receivers see).
//!
//! [`MEMBER_BITS`]: crate::job::MEMBER_BITS

use crate::StoreError;
use crate::job::{
    Attempt, ClaimKey, ClaimOnInsert, Claimed, GroupKey, JobId, JobPage, JobRecord, JobStatus,
    JsonText, NewJob, Settlement,
};

/// Jobs of an insert that go into one row: `jobs[start..start + len]`, under `group` when
/// they are more than one.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Span {
    pub start: usize,
    pub len: usize,
    pub group: Option<GroupKey>,
}

/// Cuts `jobs` into rows of at most `group_max` jobs, each a run of jobs with the same
/// destination, action, version and stored state (the first `claim.count` are claimed, the
/// rest not), and renames the members of each group of more than one after the group.
/// A payload with a line break (never written by the engine) goes in a row of its own.
pub(crate) fn layout(
    jobs: &mut [NewJob],
    now: i64,
    claim: Option<ClaimOnInsert>,
    group_max: usize,
) -> Vec<Span> {
    let group_max = group_max.clamp(1, crate::job::GROUP_MAX);
    let state =
        |index: usize, job: &NewJob| job.stored_state(now, ClaimOnInsert::lease_of(claim, index));
    let mut spans: Vec<Span> = Vec::new();
    for index in 0..jobs.len() {
        let groupable = !jobs[index].payload.as_str().contains('\n');
        let joins = groupable
            && spans.last().is_some_and(|span| {
                let first = &jobs[span.start];
                let job = &jobs[index];
                span.len < group_max
                    && !first.payload.as_str().contains('\n')
                    && first.destination == job.destination
                    && first.action == job.action
                    && first.version == job.version
                    && state(span.start, first) == state(index, job)
            });
        match spans.last_mut() {
            Some(span) if joins => span.len += 1,
            _ => spans.push(Span {
                start: index,
                len: 1,
                group: None,
            }),
        }
    }
    for span in &mut spans {
        if span.len > 1 {
            let id = JobId::new_group();
            let members = id.members(1..span.len as u32 + 1);
            for (job, member) in jobs[span.start..span.start + span.len]
                .iter_mut()
                .zip(members)
            {
                job.id = member;
            }
            span.group = Some(GroupKey {
                id,
                size: span.len as u32,
            });
        }
    }
    spans
}

/// One row to store: a job, or a group of them.
pub(crate) struct NewRow<'a> {
    pub id: &'a str,
    pub destination: &'a str,
    pub action: &'a str,
    pub version: Option<&'a str>,
    /// The payload, or the group's payloads one per line.
    pub payload: String,
    /// The context as JSON, or the group's contexts one per line.
    pub context: String,
    pub size: u32,
    pub status: JobStatus,
    /// Its next attempt time (a running row's lease end).
    pub at: i64,
}

/// The rows `spans` cut `jobs` into, in their stored states.
pub(crate) fn rows<'a>(
    jobs: &'a [NewJob],
    spans: &'a [Span],
    now: i64,
    claim: Option<ClaimOnInsert>,
) -> Vec<NewRow<'a>> {
    spans
        .iter()
        .map(|span| {
            let members = &jobs[span.start..span.start + span.len];
            let first = &members[0];
            let (status, at) = first.stored_state(now, ClaimOnInsert::lease_of(claim, span.start));
            let (id, payload, context) = match &span.group {
                None => (
                    first.id.0.as_str(),
                    first.payload.as_str().to_owned(),
                    first.context.as_str().to_owned(),
                ),
                Some(group) => (group.id.0.as_str(), payloads(members), contexts(members)),
            };
            NewRow {
                id,
                destination: &first.destination,
                action: &first.action,
                version: first.version.as_deref(),
                payload,
                context,
                size: span.len as u32,
                status,
                at,
            }
        })
        .collect()
}

/// The payloads of `jobs`, one per line.
fn payloads(jobs: &[NewJob]) -> String {
    lines(jobs.iter().map(|job| job.payload.as_str()))
}

/// The contexts of `jobs`, one per line.
fn contexts(jobs: &[NewJob]) -> String {
    lines(jobs.iter().map(|job| job.context.as_str()))
}

/// `texts`, one per line.
fn lines<'a>(texts: impl Iterator<Item = &'a str> + Clone) -> String {
    let mut text = String::with_capacity(texts.clone().map(|text| text.len() + 1).sum());
    for (index, line) in texts.enumerate() {
        if index > 0 {
            text.push('\n');
        }
        text.push_str(line);
    }
    text
}

/// The jobs of an insert at `now` that `claim` claimed, as their claimer holds them.
pub(crate) fn claimed_on_insert(
    jobs: Vec<NewJob>,
    spans: &[Span],
    now: i64,
    claim: Option<ClaimOnInsert>,
) -> Vec<Claimed> {
    let mut claimed = Vec::new();
    let mut jobs = jobs.into_iter();
    for span in spans {
        for (offset, job) in jobs.by_ref().take(span.len).enumerate() {
            let Some(lease_ms) = ClaimOnInsert::lease_of(claim, span.start + offset) else {
                continue;
            };
            let (status, lease_until) = job.stored_state(now, Some(lease_ms));
            if status == JobStatus::Running {
                claimed.push(Claimed {
                    id: job.id,
                    action: job.action,
                    payload: job.payload,
                    context: job.context,
                    attempt: 1,
                    token: 1,
                    lease_until,
                    group: span.group.clone(),
                });
            }
        }
    }
    claimed
}

/// A row as a claim returns it.
pub(crate) struct ClaimedRow {
    pub id: String,
    pub action: String,
    pub payload: String,
    pub context: String,
    pub attempt: u32,
    pub token: u64,
    pub lease_until: i64,
    pub size: u32,
}

/// The jobs of claimed rows, in id order.
pub(crate) fn claimed_jobs(rows: Vec<ClaimedRow>) -> Result<Vec<Claimed>, StoreError> {
    let mut claimed = Vec::with_capacity(rows.len());
    for row in rows {
        let group = (row.size > 1).then(|| GroupKey {
            id: JobId(row.id.clone()),
            size: row.size,
        });
        let mut ids = match &group {
            Some(group) => group.id.members(1..group.size + 1).collect(),
            None => vec![JobId(row.id.clone())],
        }
        .into_iter();
        for ((_, (payload, context)), id) in members(&row.id, row.size, &row.payload, &row.context)?
            .into_iter()
            .zip(ids.by_ref())
        {
            claimed.push(Claimed {
                id,
                action: row.action.clone(),
                payload: JsonText::from_trusted(payload.to_owned()),
                context: JsonText::from_trusted(context.to_owned()),
                attempt: row.attempt,
                token: row.token,
                lease_until: row.lease_until,
                group: group.clone(),
            });
        }
    }
    claimed.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(claimed)
}

/// A member of a row: its index (from 1), payload and context texts.
type MemberTexts<'a> = (u32, (&'a str, &'a str));

/// A row with its attempts, as a store reads one.
pub(crate) type RowWithAttempts = (StoredRow, Vec<(Attempt, bool)>);

/// A row's members: index (from 1), payload and context texts.
fn members<'a>(
    id: &str,
    size: u32,
    payloads: &'a str,
    contexts: &'a str,
) -> Result<Vec<MemberTexts<'a>>, StoreError> {
    if size <= 1 {
        return Ok(vec![(1, (payloads, contexts))]);
    }
    let members: Vec<_> = (1..)
        .zip(payloads.split('\n').zip(contexts.split('\n')))
        .collect();
    if members.len() != size as usize || contexts.split('\n').count() != size as usize {
        return Err(StoreError::Corrupt(format!(
            "group {id} holds {} payloads for {size} jobs",
            members.len()
        )));
    }
    Ok(members)
}

/// A group's jobs as split rows: each member's id, payload and context.
pub(crate) fn split_members<'a>(
    group: &JobId,
    size: u32,
    payloads: &'a str,
    contexts: &'a str,
) -> Result<Vec<(JobId, &'a str, &'a str)>, StoreError> {
    Ok(members(&group.0, size, payloads, contexts)?
        .into_iter()
        .map(|(index, (payload, context))| (group.member(index), payload, context))
        .collect())
}

/// One row per job.
pub(crate) fn singles(count: usize) -> Vec<Span> {
    (0..count)
        .map(|start| Span {
            start,
            len: 1,
            group: None,
        })
        .collect()
}

fn json(id: &str, text: &str, what: &str) -> Result<serde_json::Value, StoreError> {
    serde_json::from_str(text)
        .map_err(|error| StoreError::Corrupt(format!("job {id} {what}: {error}")))
}

/// A stored row as read, before its members and JSON are.
pub(crate) struct StoredRow {
    pub id: String,
    pub destination: String,
    pub action: String,
    pub version: Option<String>,
    pub status: String,
    pub attempt: u32,
    pub next_attempt_at: i64,
    pub last_error: Option<String>,
    pub payload: String,
    pub context: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub size: u32,
}

impl StoredRow {
    /// Its jobs, in id order, without attempts.
    pub(crate) fn into_records(self) -> Result<Vec<JobRecord>, StoreError> {
        let status = JobStatus::stored(&self.status)?;
        let group = JobId(self.id.clone());
        members(&self.id, self.size, &self.payload, &self.context)?
            .into_iter()
            .map(|(index, (payload, context))| {
                let id = if self.size > 1 {
                    group.member(index)
                } else {
                    group.clone()
                };
                Ok(JobRecord {
                    payload: json(&id.0, payload, "payload")?,
                    context: json(&id.0, context, "context")?,
                    id,
                    destination: self.destination.clone(),
                    action: self.action.clone(),
                    version: self.version.clone(),
                    status,
                    attempt: self.attempt,
                    next_attempt_at: self.next_attempt_at,
                    last_error: self.last_error.clone(),
                    created_at: self.created_at,
                    updated_at: self.updated_at,
                    attempts: Vec::new(),
                })
            })
            .collect()
    }

    /// The job `id` if this row holds it: the row itself when it is one job, else its
    /// member of that id.
    pub(crate) fn into_job(self, id: &JobId) -> Result<Option<JobRecord>, StoreError> {
        Ok(self.into_records()?.into_iter().find(|job| job.id == *id))
    }
}

/// One page of jobs after `cursor` from `rows`, read in id order from the first row that
/// may hold a job after it ([`page_start`]); at least `limit + 1` rows, or all there are.
pub(crate) fn page(
    rows: Vec<StoredRow>,
    limit: u32,
    cursor: Option<&str>,
) -> Result<JobPage, StoreError> {
    let limit = limit as usize;
    let mut jobs = Vec::with_capacity(limit);
    for row in rows {
        for job in row.into_records()? {
            if cursor.is_none_or(|cursor| job.id.0.as_str() > cursor) && jobs.len() < limit {
                jobs.push(job);
            }
        }
        if jobs.len() == limit {
            break;
        }
    }
    let next_cursor = (jobs.len() == limit)
        .then(|| jobs.last().map(|job| job.id.0.clone()))
        .flatten();
    Ok(JobPage { jobs, next_cursor })
}

/// The id from which rows are read for a page after `cursor` (inclusive): its group's,
/// which may hold jobs after it.
pub(crate) fn page_start(cursor: Option<&str>) -> String {
    let Some(cursor) = cursor else {
        return String::new();
    };
    match JobId(cursor.to_owned()).group_of() {
        Some((group, _)) => group.0,
        None => cursor.to_owned(),
    }
}

/// How to settle a batch of attempts row by row: `entries` for the store (a group whose
/// jobs were all settled alike is one entry under the group's id), the groups to split
/// first (their jobs are settled one by one), and for each entry the attempts it stands for.
pub(crate) struct SettlePlan {
    pub split: Vec<JobId>,
    pub entries: Vec<(ClaimKey, Settlement, Attempt)>,
    pub covers: Vec<Vec<usize>>,
}

/// Plans `settled` (see [`SettlePlan`]).
pub(crate) fn plan_settlement(settled: &[(ClaimKey, Settlement, Attempt)]) -> SettlePlan {
    let mut plan = SettlePlan {
        split: Vec::new(),
        entries: Vec::new(),
        covers: Vec::new(),
    };
    let mut groups: Vec<(&GroupKey, Vec<usize>)> = Vec::new();
    for (index, (key, _, _)) in settled.iter().enumerate() {
        match &key.group {
            None => {
                plan.entries.push(settled[index].clone());
                plan.covers.push(vec![index]);
            }
            Some(group) => match groups.iter_mut().find(|(found, _)| found.id == group.id) {
                Some((_, indexes)) => indexes.push(index),
                None => groups.push((group, vec![index])),
            },
        }
    }
    for (group, indexes) in groups {
        match whole(group, &indexes, settled) {
            Some(entry) => {
                plan.entries.push(entry);
                plan.covers.push(indexes);
            }
            None => {
                plan.split.push(group.id.clone());
                for index in indexes {
                    plan.entries.push(as_single(&settled[index]));
                    plan.covers.push(vec![index]);
                }
            }
        }
    }
    plan
}

/// The one entry that settles a group, when `indexes` are all its jobs, under one claim,
/// settled alike (retries at the earliest of their times).
fn whole(
    group: &GroupKey,
    indexes: &[usize],
    settled: &[(ClaimKey, Settlement, Attempt)],
) -> Option<(ClaimKey, Settlement, Attempt)> {
    let (first_key, first_settlement, first_attempt) = &settled[indexes[0]];
    let mut distinct = indexes
        .iter()
        .map(|index| &settled[*index].0.id)
        .collect::<Vec<_>>();
    distinct.sort();
    distinct.dedup();
    if distinct.len() != group.size as usize {
        return None;
    }
    let mut settlement = first_settlement.clone();
    for index in indexes {
        let (key, other, _) = &settled[*index];
        if key.token != first_key.token || key.attempt != first_key.attempt {
            return None;
        }
        settlement = match (settlement, other) {
            (Settlement::Succeeded, Settlement::Succeeded) => Settlement::Succeeded,
            (Settlement::Discarded, Settlement::Discarded) => Settlement::Discarded,
            (Settlement::Retry { at }, Settlement::Retry { at: other }) => {
                Settlement::Retry { at: at.min(*other) }
            }
            _ => return None,
        };
    }
    Some((
        ClaimKey {
            id: group.id.clone(),
            token: first_key.token,
            attempt: first_key.attempt,
            group: None,
        },
        settlement,
        first_attempt.clone(),
    ))
}

/// An entry for a job of a split group: its own row now.
pub(crate) fn as_single(
    entry: &(ClaimKey, Settlement, Attempt),
) -> (ClaimKey, Settlement, Attempt) {
    let (key, settlement, attempt) = entry;
    (
        ClaimKey {
            group: None,
            ..key.clone()
        },
        settlement.clone(),
        attempt.clone(),
    )
}

/// The rows heartbeats renew: one key per row, and for each claim the row key it is under.
pub(crate) fn row_keys(claims: &[ClaimKey]) -> (Vec<ClaimKey>, Vec<usize>) {
    let mut rows: Vec<ClaimKey> = Vec::new();
    let mut of_claim = Vec::with_capacity(claims.len());
    for claim in claims {
        let key = match &claim.group {
            Some(group) => ClaimKey {
                id: group.id.clone(),
                token: claim.token,
                attempt: claim.attempt,
                group: None,
            },
            None => claim.clone(),
        };
        match rows.iter().position(|row| *row == key) {
            Some(position) => of_claim.push(position),
            None => {
                of_claim.push(rows.len());
                rows.push(key);
            }
        }
    }
    (rows, of_claim)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(action: &str) -> NewJob {
        NewJob {
            id: JobId::new(),
            destination: "d".to_owned(),
            action: action.to_owned(),
            version: None,
            payload: JsonText::from_trusted("{}".to_owned()),
            context: JsonText::from_trusted("{}".to_owned()),
            run_at: None,
        }
    }

    #[test]
    fn member_ids_follow_their_group_and_lead_back_to_it() {
        let group = JobId::new_group();
        let third = group.member(3);
        assert!(third > group && third < JobId::new_group());
        assert_eq!(third.group_of(), Some((group.clone(), 3)));
        assert_eq!(group.group_of(), None, "a group's own id is no job's");
        assert_eq!(JobId("not-a-uuid".to_owned()).group_of(), None);
    }

    #[test]
    fn rows_are_runs_of_one_action_and_state_within_the_group_size() {
        let mut jobs: Vec<NewJob> = ["a", "a", "a", "b", "a", "a"].map(job).into();
        let claim = Some(ClaimOnInsert {
            count: 2,
            lease_ms: 1_000,
        });
        let spans = layout(&mut jobs, 0, claim, 2);
        let lens: Vec<usize> = spans.iter().map(|span| span.len).collect();
        assert_eq!(lens, [2, 1, 1, 2], "claimed pair; unclaimed a; b; a pair");
        assert_eq!(
            jobs[0].id,
            spans[0].group.as_ref().map(|g| g.id.member(1)).unwrap()
        );
        let claimed = claimed_on_insert(jobs, &spans, 0, claim);
        assert_eq!(claimed.len(), 2);
        assert!(claimed.iter().all(|job| job.group == spans[0].group));
    }

    #[test]
    fn a_group_settled_alike_is_one_entry_and_one_settled_apart_is_split() {
        let group = GroupKey {
            id: JobId::new_group(),
            size: 2,
        };
        let key = |index| ClaimKey {
            id: group.id.member(index),
            token: 1,
            attempt: 1,
            group: Some(group.clone()),
        };
        let entry = |index, settlement| (key(index), settlement, Attempt::default());
        let alike = [
            entry(1, Settlement::Retry { at: 9 }),
            entry(2, Settlement::Retry { at: 7 }),
        ];
        let plan = plan_settlement(&alike);
        assert!(plan.split.is_empty());
        assert_eq!(plan.entries.len(), 1);
        assert_eq!(plan.entries[0].0.id, group.id);
        assert_eq!(plan.entries[0].1, Settlement::Retry { at: 7 });
        assert_eq!(plan.covers, [vec![0, 1]]);

        let apart = [
            entry(1, Settlement::Succeeded),
            entry(2, Settlement::Discarded),
        ];
        let plan = plan_settlement(&apart);
        assert_eq!(plan.split, std::slice::from_ref(&group.id));
        assert_eq!(plan.entries.len(), 2);

        let partial = [entry(1, Settlement::Succeeded)];
        assert_eq!(
            plan_settlement(&partial).split,
            std::slice::from_ref(&group.id)
        );
    }
}
