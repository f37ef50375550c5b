//! `State::digest`: one SHA-256 over the readable projections, so that two copies of the state
//! — the server's live one and a replay of its log — can be compared without shipping them.
//!
//! The digest is defined over a canonical byte stream that this file writes by hand (it does not
//! depend on any serde format, so changing how the API renders JSON never changes a digest):
//!
//! - every integer is big-endian at its own width (`u8`, `u32`, `u64`, `i32`, `i64`), a float is
//!   its IEEE-754 bits as a `u64`, a bool is one byte 0/1;
//! - a string or byte run is its length (`u64`) then its bytes; a UUID is its 16 bytes;
//! - an `Option` is a byte 0 (none) or 1 followed by the value; an enum is a variant byte
//!   (fixed below, never reordered) followed by its fields;
//! - a sequence or map is its length (`u64`) then its items; maps are walked in key order
//!   (`BTreeMap`s already are; the `HashMap` of jobs is sorted by id first);
//! - the stream opens with the label `reeve-state-digest-v2` (v2 added a job's `log_pruned_at`),
//!   then `head_seq`, `head_hash`, then the sections projects, tokens, watches, builds, jobs,
//!   each introduced by its name; builds and jobs are those in memory, and once any build has
//!   left memory a last section `cold` covers those: their count and the XOR of each one's
//!   own digest (`cold_hash`: the build and its jobs in the same encoding), so the digest
//!   costs what live state costs, whatever the length of the history.
//!
//! Every field of every projected struct is written, including the ones the API does not show
//! (`Watch::fires`, `Job::order`, a token's secret hash, lease ids): they decide future answers,
//! so a difference in them is a difference in state. Each struct is destructured without `..`,
//! so adding a field fails to compile here until the digest covers it.
//!
//! Left out, on purpose:
//! - **the audit index** (returned by `State::apply`, kept on disk): one entry per commit whose
//!   fields (seq, time, plane, principal, op, outcome) are copied from the commit itself, which
//!   `head_hash` already covers through the chain; only `target`/`project` are derived, and they
//!   are derived from the projections hashed here. `head_at` is the head commit's own time.
//!   Including the index would make the digest cost grow with the length of the log rather than
//!   the size of the state.
//! - **the idempotency projection**: a 24-hour retry cache of first answers, not something a
//!   client reads; its content is a function of the last day of commits (covered by
//!   `head_hash`) and of the projections hashed here at the time.
//! - **the indexes** (tokens by secret hash, watches by URI, builds by number, children, the
//!   claim queue, leases, the schedule, struggling watches, the jobs whose output retention
//!   may prune, the job counter): each is derived from fields hashed here by the same fold,
//!   and holds nothing of its own.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::commit::Hash;
use super::pipeline::{Accept, Dependency, JobSpec, Pipeline};
use super::{
    Build, Job, JobDep, JobState, LastRun, Lease, Millis, Principal, Project, RunOutcome, State,
    Token, TokenKind, Trigger, Watch,
};

/// The name of the digest's algorithm, as the API reports it.
pub const DIGEST_ALGORITHM: &str = "sha256";
const LABEL: &str = "reeve-state-digest-v2";

impl State {
    /// A SHA-256 over the readable projections and the head of the chain; see the module docs
    /// for what it covers and why. Pure and deterministic: equal states give equal digests.
    pub fn digest(&self) -> Hash {
        let mut c = Canon(Sha256::new());
        c.str(LABEL);
        c.u64(self.head_seq);
        c.bytes(&self.head_hash);

        c.str("projects");
        c.len(self.projects.len());
        for (id, p) in &self.projects {
            c.str(id);
            c.project(p);
        }

        c.str("tokens");
        c.len(self.tokens.len());
        for (id, t) in &self.tokens {
            c.uuid(id);
            c.token(t);
        }

        c.str("watches");
        c.len(self.watches.len());
        for (id, w) in &self.watches {
            c.uuid(id);
            c.watch(w);
        }

        c.str("builds");
        c.len(self.builds.len());
        for (id, b) in &self.builds {
            c.uuid(id);
            c.build(b);
        }

        c.str("jobs");
        let mut jobs: Vec<(&Uuid, &Job)> = self.jobs.iter().map(|(id, j)| (id, &**j)).collect();
        jobs.sort_unstable_by_key(|(id, _)| **id);
        c.len(jobs.len());
        for (id, j) in jobs {
            c.uuid(id);
            c.job(j);
        }

        // Builds that left memory (see `cold.rs`) count through their tally: how many, and
        // the XOR of each one's own digest. Only a state that has sent builds to the store
        // has this section, so the digest of every state that never did is unchanged.
        if self.cold != super::ColdTally::default() {
            c.str("cold");
            c.u64(self.cold.builds);
            c.bytes(&self.cold.hash);
        }

        c.0.finalize().into()
    }
}

/// The digest of one cold build and its jobs, in the canonical encoding above.
pub(super) fn cold_hash(cold: &super::ColdBuild) -> Hash {
    let mut c = Canon(Sha256::new());
    c.str("reeve-cold-build-v1");
    c.uuid(&cold.build.id);
    c.build(&cold.build);
    c.len(cold.jobs.len());
    for j in &cold.jobs {
        c.uuid(&j.id);
        c.job(j);
    }
    c.0.finalize().into()
}

/// The canonical writer: everything goes straight into the hash, nothing is buffered.
struct Canon(Sha256);

impl Canon {
    fn u8(&mut self, v: u8) {
        self.0.update([v]);
    }

    fn u32(&mut self, v: u32) {
        self.0.update(v.to_be_bytes());
    }

    fn u64(&mut self, v: u64) {
        self.0.update(v.to_be_bytes());
    }

    fn i32(&mut self, v: i32) {
        self.0.update(v.to_be_bytes());
    }

    fn i64(&mut self, v: Millis) {
        self.0.update(v.to_be_bytes());
    }

    fn f64(&mut self, v: f64) {
        self.u64(v.to_bits());
    }

    fn bool(&mut self, v: bool) {
        self.u8(u8::from(v));
    }

    fn len(&mut self, n: usize) {
        self.u64(n as u64);
    }

    fn bytes(&mut self, b: &[u8]) {
        self.len(b.len());
        self.0.update(b);
    }

    fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }

    fn uuid(&mut self, id: &Uuid) {
        self.0.update(id.as_bytes());
    }

    fn opt<T>(&mut self, v: Option<T>, mut write: impl FnMut(&mut Self, T)) {
        match v {
            None => self.u8(0),
            Some(v) => {
                self.u8(1);
                write(self, v);
            }
        }
    }

    fn opt_str(&mut self, v: Option<&String>) {
        self.opt(v, |c, s| c.str(s));
    }

    fn opt_millis(&mut self, v: Option<Millis>) {
        self.opt(v, Canon::i64);
    }

    fn opt_uuid(&mut self, v: Option<&Uuid>) {
        self.opt(v, Canon::uuid);
    }

    fn string_map(&mut self, m: &BTreeMap<String, String>) {
        self.len(m.len());
        for (k, v) in m {
            self.str(k);
            self.str(v);
        }
    }

    fn principal(&mut self, p: &Principal) {
        match p {
            Principal::System => self.u8(0),
            Principal::Token(id) => {
                self.u8(1);
                self.uuid(id);
            }
        }
    }

    fn token_kind(&mut self, k: TokenKind) {
        self.u8(match k {
            TokenKind::Admin => 0,
            TokenKind::Api => 1,
            TokenKind::Mcp => 2,
            TokenKind::Runner => 3,
        });
    }

    fn job_state(&mut self, s: JobState) {
        self.u8(match s {
            JobState::Queued => 0,
            JobState::Scheduled => 1,
            JobState::Running => 2,
            JobState::Finished => 3,
            JobState::Failure => 4,
            JobState::Error => 5,
            JobState::Skipped => 6,
            JobState::Killed => 7,
        });
    }

    fn accept(&mut self, a: Accept) {
        self.u8(match a {
            Accept::Finished => 0,
            Accept::Failure => 1,
            Accept::Error => 2,
            Accept::Killed => 3,
            Accept::Skipped => 4,
            Accept::Any => 5,
        });
    }

    fn accepts(&mut self, on: &[Accept]) {
        self.len(on.len());
        for a in on {
            self.accept(*a);
        }
    }

    fn trigger(&mut self, t: &Trigger) {
        match t {
            Trigger::Api => self.u8(0),
            Trigger::Mcp => self.u8(1),
            Trigger::Watch(id) => {
                self.u8(2);
                self.uuid(id);
            }
        }
    }

    fn pipeline(&mut self, p: &Pipeline) {
        match p {
            Pipeline::Jobs(jobs) => {
                self.u8(0);
                self.len(jobs.len());
                for spec in jobs {
                    let JobSpec {
                        name,
                        run,
                        depends_on,
                        env,
                        timeout_seconds,
                    } = spec;
                    self.str(name);
                    self.str(run);
                    self.len(depends_on.len());
                    for Dependency { job, on } in depends_on {
                        self.str(job);
                        self.accepts(on);
                    }
                    self.string_map(env);
                    self.opt(*timeout_seconds, Canon::u64);
                }
            }
            Pipeline::Generate(command) => {
                self.u8(1);
                self.str(command);
            }
        }
    }

    fn project(&mut self, p: &Project) {
        let Project {
            id,
            name,
            created_at,
            created_by,
            default_pipeline,
            builds,
        } = p;
        self.str(id);
        self.str(name);
        self.i64(*created_at);
        self.principal(created_by);
        self.opt(default_pipeline.as_ref(), Canon::pipeline);
        self.u64(*builds);
    }

    fn token(&mut self, t: &Token) {
        let Token {
            id,
            secret_hash,
            kind,
            description,
            enabled_projects,
            allow_trigger,
            expires_at,
            created_at,
            created_by,
            revoked_at,
        } = t;
        self.uuid(id);
        self.bytes(secret_hash);
        self.token_kind(*kind);
        self.str(description);
        self.len(enabled_projects.len());
        for (project, expiry) in enabled_projects {
            self.str(project);
            self.opt_millis(*expiry);
        }
        self.bool(*allow_trigger);
        self.opt_millis(*expires_at);
        self.i64(*created_at);
        self.principal(created_by);
        self.opt_millis(*revoked_at);
    }

    fn watch(&mut self, w: &Watch) {
        let Watch {
            id,
            project,
            source,
            to_uri,
            watch_interval,
            is_active,
            reason,
            instruction,
            created_at,
            created_by,
            updated_at,
            next_run_at,
            last_run,
            consecutive_failures,
            pipeline,
            fires,
            skipped_overlap,
            missed,
            version,
        } = w;
        self.uuid(id);
        self.str(project);
        self.str(source);
        self.str(to_uri);
        self.f64(*watch_interval);
        self.bool(*is_active);
        self.opt_str(reason.as_ref());
        self.opt_str(instruction.as_ref());
        self.i64(*created_at);
        self.principal(created_by);
        self.i64(*updated_at);
        self.opt_millis(*next_run_at);
        self.opt(last_run.as_ref(), Canon::last_run);
        self.u32(*consecutive_failures);
        self.opt(pipeline.as_ref(), Canon::pipeline);
        self.u64(*fires);
        self.u64(*skipped_overlap);
        self.u64(*missed);
        self.u64(*version);
    }

    fn last_run(&mut self, r: &LastRun) {
        let LastRun {
            at,
            build_id,
            outcome,
            finished_at,
            manual,
            missed,
        } = r;
        self.i64(*at);
        self.opt_uuid(build_id.as_ref());
        match outcome {
            RunOutcome::Triggered => self.u8(0),
            RunOutcome::Build(s) => {
                self.u8(1);
                self.job_state(*s);
            }
        }
        self.opt_millis(*finished_at);
        self.bool(*manual);
        self.u32(*missed);
    }

    fn build(&mut self, b: &Build) {
        let Build {
            id,
            project,
            number,
            restart_counter,
            pipeline,
            env,
            trigger,
            created_at,
            created_by,
            aborted,
            restarted_from,
            jobs,
            order,
            version,
        } = b;
        self.uuid(id);
        self.str(project);
        self.u64(*number);
        self.u64(*restart_counter);
        self.pipeline(pipeline);
        self.string_map(env);
        self.trigger(trigger);
        self.i64(*created_at);
        self.principal(created_by);
        self.bool(*aborted);
        self.opt_uuid(restarted_from.as_ref());
        self.len(jobs.len());
        for j in jobs {
            self.uuid(j);
        }
        self.u64(*order);
        self.u64(*version);
    }

    fn job(&mut self, j: &Job) {
        let Job {
            id,
            build_id,
            name,
            run,
            env,
            timeout_seconds,
            state,
            depends_on,
            superseded_by,
            cloned_from,
            created_at,
            started_at,
            finished_at,
            exit_code,
            message,
            lease,
            order,
            version,
            log_pruned_at,
        } = j;
        self.uuid(id);
        self.uuid(build_id);
        self.str(name);
        self.str(run);
        self.string_map(env);
        self.opt(*timeout_seconds, Canon::u64);
        self.job_state(*state);
        self.len(depends_on.len());
        for JobDep { job, job_id, on } in depends_on {
            self.str(job);
            self.uuid(job_id);
            self.accepts(on);
        }
        self.opt_uuid(superseded_by.as_ref());
        self.opt_uuid(cloned_from.as_ref());
        self.i64(*created_at);
        self.opt_millis(*started_at);
        self.opt_millis(*finished_at);
        self.opt(*exit_code, Canon::i32);
        self.opt_str(message.as_ref());
        self.opt(lease.as_ref(), |c, l: &Lease| {
            let Lease {
                id,
                runner,
                expires_at,
            } = l;
            c.uuid(id);
            c.principal(runner);
            c.i64(*expires_at);
        });
        self.u64(*order);
        self.u64(*version);
        self.opt_millis(*log_pruned_at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::commit::{Commit, CommitBody, GENESIS, Meta, Outcome};
    use crate::domain::{Command, Ctx, Plane, Rejection, Rules, decide};

    /// A small state built through the real decide/apply path.
    fn state_with(commands: &[Command]) -> State {
        let mut state = State::default();
        let mut prev = GENESIS;
        for (i, cmd) in commands.iter().enumerate() {
            let at = 1_700_000_000_000 + i as i64 * 1000;
            let ctx = Ctx {
                at,
                principal: Principal::System,
                plane: Plane::System,
                new_id: Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0000 + i as u128),
                rules: Rules::default(),
                renewals: Default::default(),
                cold_prunable: Vec::new(),
            };
            let (outcome, events) = match decide(&state, cmd, &ctx).map_err(Rejection::from) {
                Ok(events) => (Outcome::Accepted, events),
                Err(r) => (
                    Outcome::Rejected {
                        status: r.status,
                        code: r.code,
                        reason: r.reason,
                        field: r.field,
                    },
                    vec![],
                ),
            };
            let body = CommitBody {
                at,
                meta: Meta {
                    principal: Principal::System,
                    plane: Plane::System,
                    request_id: format!("r{i}"),
                    idempotency_key: None,
                    command: cmd.clone(),
                },
                outcome,
                events,
            };
            let (commit, _) = Commit::seal(i as u64 + 1, prev, body).unwrap();
            prev = commit.hash;
            state.apply(&commit);
        }
        state
    }

    fn workload() -> Vec<Command> {
        vec![
            Command::CreateProject {
                id: "docs".into(),
                name: None,
            },
            Command::CreateWatch(crate::domain::NewWatch {
                project: "docs".into(),
                source: "https://example.com/a".into(),
                to_uri: "viking://a".into(),
                watch_interval: 5.0,
                reason: Some("why".into()),
                instruction: None,
                is_active: true,
            }),
            Command::TriggerBuild {
                project: "docs".into(),
                pipeline: Some(Pipeline::Jobs(vec![JobSpec {
                    name: "build".into(),
                    run: "make".into(),
                    depends_on: vec![],
                    env: BTreeMap::new(),
                    timeout_seconds: None,
                }])),
                env: BTreeMap::new(),
            },
        ]
    }

    #[test]
    fn equal_states_have_equal_digests_and_the_digest_is_stable_across_runs() {
        let a = state_with(&workload());
        let b = state_with(&workload());
        assert!(!a.jobs.is_empty(), "the workload must create jobs");
        assert_eq!(a.digest(), b.digest());
        assert_eq!(a.clone().digest(), a.digest());
    }

    #[test]
    fn any_change_to_a_readable_field_changes_the_digest() {
        let base = state_with(&workload());
        let d = base.digest();
        let mut changed = Vec::new();

        let mut s = base.clone();
        s.head_seq += 1;
        changed.push(("head_seq", s.digest()));

        let mut s = base.clone();
        s.head_hash[0] ^= 1;
        changed.push(("head_hash", s.digest()));

        let mut s = base.clone();
        let first = s.projects.keys().next().cloned();
        if let Some(p) = first.and_then(|k| s.projects.get_mut(&k)) {
            p.name.push('x');
        }
        changed.push(("project name", s.digest()));

        let mut s = base.clone();
        let first = s.watches.keys().next().cloned();
        if let Some(w) = first
            .and_then(|k| s.watches.get_mut(&k))
            .map(std::sync::Arc::make_mut)
        {
            w.watch_interval += 0.5;
        }
        changed.push(("watch interval", s.digest()));

        let mut s = base.clone();
        let first = s.watches.keys().next().cloned();
        if let Some(w) = first
            .and_then(|k| s.watches.get_mut(&k))
            .map(std::sync::Arc::make_mut)
        {
            w.fires += 1;
        }
        changed.push(("watch fires", s.digest()));

        let mut s = base.clone();
        let first = s.watches.keys().next().cloned();
        if let Some(w) = first
            .and_then(|k| s.watches.get_mut(&k))
            .map(std::sync::Arc::make_mut)
        {
            w.reason = None;
        }
        changed.push(("watch reason", s.digest()));

        let mut s = base.clone();
        let first = s.builds.keys().next().cloned();
        if let Some(b) = first
            .and_then(|k| s.builds.get_mut(&k))
            .map(std::sync::Arc::make_mut)
        {
            b.aborted = true;
        }
        changed.push(("build aborted", s.digest()));

        let mut s = base.clone();
        let first = s.jobs.keys().next().cloned();
        if let Some(j) = first
            .and_then(|k| s.jobs.get_mut(&k))
            .map(std::sync::Arc::make_mut)
        {
            j.state = JobState::Killed;
        }
        changed.push(("job state", s.digest()));

        let mut s = base.clone();
        let first = s.jobs.keys().next().cloned();
        if let Some(j) = first
            .and_then(|k| s.jobs.get_mut(&k))
            .map(std::sync::Arc::make_mut)
        {
            j.env.insert("K".into(), "V".into());
        }
        changed.push(("job env", s.digest()));

        let mut s = base.clone();
        let first = s.jobs.keys().next().cloned();
        if let Some(j) = first
            .and_then(|k| s.jobs.get_mut(&k))
            .map(std::sync::Arc::make_mut)
        {
            j.log_pruned_at = Some(1);
        }
        changed.push(("job log pruned", s.digest()));

        let mut with_token = base.clone();
        with_token.tokens.insert(
            Uuid::nil(),
            Token {
                id: Uuid::nil(),
                secret_hash: [7; 32],
                kind: TokenKind::Api,
                description: String::new(),
                enabled_projects: BTreeMap::new(),
                allow_trigger: true,
                expires_at: None,
                created_at: 0,
                created_by: Principal::System,
                revoked_at: None,
            },
        );
        changed.push(("a token", with_token.digest()));

        let mut s = base.clone();
        s.watches.clear();
        changed.push(("no watches", s.digest()));

        for (what, other) in &changed {
            assert_ne!(*other, d, "changing {what} left the digest unchanged");
        }
        let mut all: Vec<Hash> = changed.iter().map(|(_, h)| *h).collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), changed.len(), "two different changes collided");
    }
}
