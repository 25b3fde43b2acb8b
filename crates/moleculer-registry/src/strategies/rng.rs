//! Randomness for strategies: the thread-local generator by default, a seeded one for tests.

use parking_lot::Mutex;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Where a strategy draws random numbers from.
#[derive(Debug, Default)]
pub enum StrategyRng {
    /// The thread-local generator: fast, no lock.
    #[default]
    Thread,
    /// A seeded generator, for repeatable tests.
    Seeded(Mutex<SmallRng>),
}

impl StrategyRng {
    /// A repeatable generator.
    pub fn seeded(seed: u64) -> Self {
        StrategyRng::Seeded(Mutex::new(SmallRng::seed_from_u64(seed)))
    }

    /// A uniform index in `0..n` (`n > 0`).
    pub fn below(&self, n: usize) -> usize {
        match self {
            StrategyRng::Thread => rand::rng().random_range(0..n),
            StrategyRng::Seeded(rng) => rng.lock().random_range(0..n),
        }
    }
}
