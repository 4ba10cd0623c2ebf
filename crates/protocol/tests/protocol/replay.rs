//! Single use under real concurrency: 64 threads redeem one grant; exactly one wins. Repeated
//! 1000 times, each round with its own freshly minted grant.

use std::sync::{Arc, Barrier};
use std::thread;

use countersign_protocol::VerifyError;

use crate::support::{Fixture, pending, present, request};

const THREADS: usize = 64;
const ROUNDS: usize = 1000;

#[test]
fn exactly_one_of_64_concurrent_redemptions_wins_1000_times() {
    let mut fx = Fixture::new();
    let pending = pending();
    let tokens: Vec<String> = (0..ROUNDS)
        .map(|_| fx.mint(&pending).token().to_owned())
        .collect();
    let verifier = fx.verifier();
    let action = Arc::new(request());

    for (round, token) in tokens.into_iter().enumerate() {
        let token = Arc::new(token);
        let barrier = Arc::new(Barrier::new(THREADS));
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                let (verifier, token, action, barrier) = (
                    verifier.clone(),
                    token.clone(),
                    action.clone(),
                    barrier.clone(),
                );
                thread::spawn(move || {
                    barrier.wait();
                    verifier.redeem(&present(&token, &action))
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let wins = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(wins, 1, "round {round}: {wins} redemptions succeeded");
        for r in results.iter().filter_map(|r| r.as_ref().err()) {
            assert_eq!(*r, VerifyError::Replayed, "round {round}");
        }
    }
    assert_eq!(fx.replay.len(), ROUNDS);
}
