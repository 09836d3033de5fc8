//! The job format and its signature.
//!
//! On the wire a job is a flat list of stream fields: `v`, `kind`, `task`, `step`, `attempt`,
//! `priority` and `sig`, where `sig` is hex HMAC-SHA256 over
//! `v|kind|task|step|attempt|priority`. Signing every field means a forged or altered job
//! is refused before it can touch a task.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::domain::{Priority, StepId, TaskId};

const VERSION: &str = "2";

/// One unit of work on the queue. A step job always names its step and a plan job never
/// does: the wire format's optional `step` field exists only on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Job {
    /// Plan the task.
    Plan { task: TaskId, priority: Priority },
    /// Run `attempt` (1-based; informational, the store decides what runs) of one step.
    Step { task: TaskId, step: StepId, attempt: u32, priority: Priority },
}

impl Job {
    pub fn plan(task: TaskId, priority: Priority) -> Self {
        Self::Plan { task, priority }
    }

    /// A job to run `attempt` (1-based) of a step.
    pub fn step(task: TaskId, step: StepId, attempt: u32, priority: Priority) -> Self {
        Self::Step { task, step, attempt, priority }
    }

    pub fn task(&self) -> TaskId {
        match *self {
            Self::Plan { task, .. } | Self::Step { task, .. } => task,
        }
    }

    pub fn step_id(&self) -> Option<StepId> {
        match *self {
            Self::Plan { .. } => None,
            Self::Step { step, .. } => Some(step),
        }
    }

    pub fn attempt(&self) -> u32 {
        match *self {
            Self::Plan { .. } => 1,
            Self::Step { attempt, .. } => attempt,
        }
    }

    /// Which stream carries it: higher priorities are read first.
    pub fn priority(&self) -> Priority {
        match *self {
            Self::Plan { priority, .. } | Self::Step { priority, .. } => priority,
        }
    }

    /// `plan` or `step`: the wire's `kind` field and a metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Plan { .. } => "plan",
            Self::Step { .. } => "step",
        }
    }

    /// Names the work a job stands for: duplicates of one job share it, and each attempt of
    /// a step has its own, so acknowledging a failed attempt cannot hide its retry's job.
    pub fn key(&self) -> String {
        match self {
            Self::Step { step, attempt, .. } => format!("step:{step}:{attempt}"),
            Self::Plan { task, .. } => format!("plan:{task}"),
        }
    }
}

/// Signs and verifies jobs with the deployment's shared secret.
#[derive(Clone)]
pub struct JobSigner {
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for JobSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JobSigner(..)") // never print the key
    }
}

impl JobSigner {
    pub fn new(secret: &[u8]) -> Self {
        // HMAC takes keys of any length (long ones are hashed), so this cannot fail.
        Self { mac: Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts keys of any length") }
    }

    fn signature(&self, payload: &str) -> Hmac<Sha256> {
        let mut mac = self.mac.clone();
        mac.update(payload.as_bytes());
        mac
    }

    /// The stream fields of a job, signature included.
    pub fn encode(&self, job: &Job) -> Vec<(&'static str, String)> {
        let step = job.step_id().map(|s| s.to_string()).unwrap_or_default();
        let (kind, task, attempt, priority) =
            (job.kind(), job.task().to_string(), job.attempt().to_string(), job.priority().as_str());
        let payload = format!("{VERSION}|{kind}|{task}|{step}|{attempt}|{priority}");
        let sig = hex::encode(self.signature(&payload).finalize().into_bytes());
        vec![
            ("v", VERSION.to_owned()),
            ("kind", kind.to_owned()),
            ("task", task),
            ("step", step),
            ("attempt", attempt),
            ("priority", priority.to_owned()),
            ("sig", sig),
        ]
    }

    /// Parses and verifies a job from its stream fields.
    pub fn decode<'a>(&self, field: impl Fn(&str) -> Option<&'a str>) -> Result<Job, String> {
        let get = |name: &str| field(name).ok_or_else(|| format!("missing field `{name}`"));
        let version = get("v")?;
        if version != VERSION {
            return Err(format!("unsupported job version `{version}`"));
        }
        let (kind, task, step, attempt, priority) =
            (get("kind")?, get("task")?, get("step")?, get("attempt")?, get("priority")?);
        let sig = hex::decode(get("sig")?).map_err(|_| "signature is not hex".to_owned())?;
        self.signature(&format!("{version}|{kind}|{task}|{step}|{attempt}|{priority}"))
            .verify_slice(&sig)
            .map_err(|_| "bad signature".to_owned())?;
        let task = task.parse().map_err(|_| "task is not a uuid".to_owned())?;
        let attempt: u32 = attempt.parse().map_err(|_| "attempt is not a number".to_owned())?;
        let priority = priority.parse().map_err(|_| "unknown priority".to_owned())?;
        match (kind, step) {
            ("plan", "") => Ok(Job::plan(task, priority)),
            ("step", step) if !step.is_empty() => {
                let step = step.parse().map_err(|_| "step is not a uuid".to_owned())?;
                Ok(Job::step(task, step, attempt, priority))
            }
            ("plan" | "step", _) => Err("a step job needs a step and a plan job has none".into()),
            (other, _) => Err(format!("unknown job kind `{other}`")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(signer: &JobSigner, fields: &[(&'static str, String)]) -> Result<Job, String> {
        signer.decode(|name| fields.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_str()))
    }

    #[test]
    fn a_signed_job_round_trips() {
        let signer = JobSigner::new(b"0123456789abcdef");
        let job = Job::step(TaskId::new(), StepId::new(), 2, Priority::High);
        assert_eq!(decode(&signer, &signer.encode(&job)), Ok(job));
        let plan = Job::plan(TaskId::new(), Priority::Low);
        assert_eq!(decode(&signer, &signer.encode(&plan)), Ok(plan));
    }

    #[test]
    fn altered_or_foreign_jobs_are_refused() {
        let signer = JobSigner::new(b"0123456789abcdef");
        let mut fields = signer.encode(&Job::plan(TaskId::new(), Priority::Normal));
        fields[2].1 = TaskId::new().to_string(); // point it at another task
        assert_eq!(decode(&signer, &fields), Err("bad signature".into()));

        let mut fields = signer.encode(&Job::plan(TaskId::new(), Priority::Low));
        fields[5].1 = "high".into(); // jump the queue
        assert_eq!(decode(&signer, &fields), Err("bad signature".into()));

        let other = JobSigner::new(b"another-secret-key!");
        let fields = other.encode(&Job::plan(TaskId::new(), Priority::Normal));
        assert_eq!(decode(&signer, &fields), Err("bad signature".into()));

        let unsigned: Vec<_> = signer
            .encode(&Job::plan(TaskId::new(), Priority::Normal))
            .into_iter()
            .filter(|(k, _)| *k != "sig")
            .collect();
        assert_eq!(decode(&signer, &unsigned), Err("missing field `sig`".into()));
    }

    #[test]
    fn duplicates_share_a_key_and_attempts_do_not() {
        let (task, step) = (TaskId::new(), StepId::new());
        assert_eq!(Job::step(task, step, 1, Priority::High).key(), Job::step(task, step, 1, Priority::Low).key());
        assert_ne!(Job::step(task, step, 1, Priority::High).key(), Job::step(task, step, 2, Priority::High).key());
        assert_ne!(Job::plan(task, Priority::High).key(), Job::step(task, step, 1, Priority::High).key());
    }
}
