//! Which event types some webhook wants: a set over
//! [`volley_conf::EVENT_TYPES`], so that delivery writes the high-volume
//! delivery events to the outbox only when a webhook will send them.

use std::sync::atomic::{AtomicU32, Ordering};

use volley_conf::EVENT_TYPES;

/// A set of event types.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Kinds(u32);

impl Kinds {
    /// No type.
    pub const NONE: Kinds = Kinds(0);

    /// Every type.
    pub fn all() -> Kinds {
        Kinds((1u32 << EVENT_TYPES.len()) - 1)
    }

    /// The types of a webhook's list (empty: every type); unknown names are
    /// left out.
    pub fn of(list: &[String]) -> Kinds {
        if list.is_empty() {
            return Kinds::all();
        }
        let mut bits = 0;
        for name in list {
            if let Some(i) = EVENT_TYPES.iter().position(|t| t == name) {
                bits |= 1 << i;
            }
        }
        Kinds(bits)
    }

    /// Both sets.
    pub fn union(self, other: Kinds) -> Kinds {
        Kinds(self.0 | other.0)
    }

    /// Whether type `name` is in the set.
    pub fn has(self, name: &str) -> bool {
        EVENT_TYPES
            .iter()
            .position(|t| *t == name)
            .is_some_and(|i| self.0 & (1 << i) != 0)
    }

    /// Whether any delivery outcome type is in the set.
    pub fn any_delivery(self) -> bool {
        DELIVERY.iter().any(|t| self.has(t))
    }
}

/// The types of delivery outcomes, written by delivery (not by the web or
/// inbound paths).
pub const DELIVERY: [&str; 4] = [
    "message.delivered",
    "message.deferred",
    "message.bounced",
    "message.expired",
];

/// A [`Kinds`] shared between the task that refreshes it and delivery.
#[derive(Debug, Default)]
pub struct SharedKinds(AtomicU32);

impl SharedKinds {
    /// The set now.
    pub fn get(&self) -> Kinds {
        Kinds(self.0.load(Ordering::Relaxed))
    }

    /// Replaces the set.
    pub fn set(&self, kinds: Kinds) {
        self.0.store(kinds.0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_of_types() {
        let some = Kinds::of(&[
            "message.bounced".to_owned(),
            "campaign.completed".to_owned(),
        ]);
        assert!(some.has("message.bounced") && some.has("campaign.completed"));
        assert!(!some.has("message.delivered"));
        assert!(some.any_delivery());
        let engagement = Kinds::of(&["message.clicked".to_owned()]);
        assert!(!engagement.any_delivery());
        assert_eq!(Kinds::of(&[]), Kinds::all());
        assert!(Kinds::all().has("message.expired"));
        assert!(engagement.union(some).has("message.clicked"));
        assert!(!Kinds::NONE.has("message.delivered"));
    }
}
