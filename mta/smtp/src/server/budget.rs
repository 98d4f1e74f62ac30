//! The bytes of message content all sessions may hold in memory at once: a
//! message being received reserves its declared `SIZE` (else the size limit)
//! before its DATA or first BDAT chunk is read, and gives it back when the
//! driver answers its deposit (or the message is refused). The content
//! buffer never grows past the reservation (plus room for the trace header),
//! so the reservation is what the memory holds. A reservation that does not fit is refused with `452
//! 4.3.1` (try again later), so the daemon's memory has a ceiling whatever
//! clients do.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The budget, shared by every session of every listener.
#[derive(Debug)]
pub struct ContentBudget {
    limit: u64,
    used: AtomicU64,
}

/// Bytes reserved from a [`ContentBudget`], given back on drop.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<ContentBudget>,
    bytes: u64,
}

impl ContentBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: u64) -> Arc<ContentBudget> {
        Arc::new(ContentBudget {
            limit,
            used: AtomicU64::new(0),
        })
    }

    /// Bytes reserved now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Reserves `bytes`, or `None` when they do not fit.
    pub fn try_reserve(self: &Arc<Self>, bytes: u64) -> Option<Reservation> {
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            let next = used.checked_add(bytes).filter(|&n| n <= self.limit)?;
            match self
                .used
                .compare_exchange_weak(used, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => {
                    return Some(Reservation {
                        budget: Arc::clone(self),
                        bytes,
                    })
                }
                Err(now) => used = now,
            }
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_fit_the_limit_and_come_back() {
        let b = ContentBudget::new(100);
        let r1 = b.try_reserve(60).unwrap();
        assert!(b.try_reserve(41).is_none());
        let r2 = b.try_reserve(40).unwrap();
        assert_eq!(b.used(), 100);
        drop(r1);
        assert_eq!(b.used(), 40);
        assert!(b.try_reserve(u64::MAX).is_none());
        drop(r2);
        assert_eq!(b.used(), 0);
    }
}
