//! Holds and purges of the queue, as the API asks for them ([`QueueOps`]):
//! implemented on one node over the spool and its engine (by the binary),
//! in a fleet over the store ([`crate::fleet::Fleet`]).

use std::future::Future;
use std::pin::Pin;

use serde_json::{json, Value};
use volley_queue::holds::Rule;

/// What a purge did: recipients finalised, batch files they were in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PurgeCount {
    /// Recipients finalised.
    pub recipients: u64,
    /// Batch files changed.
    pub batches: u64,
    /// Ordered, not done yet: a fleet's gateways carry it out as they hold
    /// or lease the batches (the counts above are then 0).
    pub ordered: bool,
}

/// A queue operation under way; its error is said to the caller as is.
pub type OpFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, String>> + Send + 'a>>;

/// The queue operations of a process.
pub trait QueueOps: Send + Sync {
    /// The holds in force.
    fn holds(&self) -> OpFuture<'_, Vec<Rule>>;
    /// Adds (`hold`) or removes a hold; answers whether it changed anything.
    fn hold<'a>(&'a self, rule: &'a Rule, hold: bool) -> OpFuture<'a, bool>;
    /// Finalises the unfinished recipients `rule` covers (or orders it done,
    /// in a fleet); `None` where that cannot be done.
    fn purge<'a>(&'a self, rule: &'a Rule) -> Option<OpFuture<'a, PurgeCount>>;
}

/// The JSON of a rule: `{"campaign": 12}`, `{"domain": "…"}`, `{"site": "…"}`.
pub fn rule_json(rule: &Rule) -> Value {
    match rule {
        Rule::Campaign(id) => json!({"campaign": id}),
        Rule::Domain(d) => json!({"domain": d}),
        Rule::Site(s) => json!({"site": s}),
    }
}
