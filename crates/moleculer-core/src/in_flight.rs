//! A count of work in progress (Moleculer's context tracking), cheap enough for every call: one
//! counter per thread slot, each on its own cache line, so concurrent calls on different cores
//! never write the same memory. Reading the total (only a stopping broker does) sums the slots.

use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};

use crossbeam_utils::CachePadded;

const SLOTS: usize = 16;

static NEXT_SLOT: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's slot, handed out round robin.
    static SLOT: usize = NEXT_SLOT.fetch_add(1, Ordering::Relaxed) % SLOTS;
}

/// Work in progress on one broker.
#[derive(Debug, Default)]
pub struct InFlight {
    slots: [CachePadded<AtomicIsize>; SLOTS],
}

/// Where an entry was counted; give it back to [`InFlight::leave`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entered(u8);

impl InFlight {
    /// Counts one piece of work in.
    #[inline]
    pub fn enter(&self) -> Entered {
        let slot = SLOT.with(|s| *s);
        self.slots[slot].fetch_add(1, Ordering::Relaxed);
        Entered(slot as u8)
    }

    /// Counts it out again (on whatever thread it finished).
    #[inline]
    pub fn leave(&self, entered: Entered) {
        self.slots[usize::from(entered.0)].fetch_sub(1, Ordering::Release);
    }

    /// Work in progress right now.
    pub fn count(&self) -> usize {
        let total: isize = self.slots.iter().map(|s| s.load(Ordering::Acquire)).sum();
        usize::try_from(total).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn entries_on_one_thread_and_exits_on_others_balance() {
        let work = Arc::new(InFlight::default());
        let entered: Vec<Entered> = (0..100).map(|_| work.enter()).collect();
        assert_eq!(work.count(), 100);
        let threads: Vec<_> = entered
            .chunks(25)
            .map(|chunk| {
                let (work, chunk) = (work.clone(), chunk.to_vec());
                std::thread::spawn(move || chunk.into_iter().for_each(|e| work.leave(e)))
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(work.count(), 0);
    }
}
