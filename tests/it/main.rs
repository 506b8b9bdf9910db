//! One integration-test binary (one link step, shared harness).

// The whole binary is test code; helpers outside #[test] fns may unwrap too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

/// Counts heap bytes (current and peak), so `bad_input`'s engine-fault cases can bound Lumen's
/// memory; each runs in its own process, where the peak is that case's alone.
#[global_allocator]
static ALLOC: cap::Cap<std::alloc::System> = cap::Cap::new(std::alloc::System, usize::MAX);

mod architecture;
mod audio;
mod bad_input;
mod continuation;
mod discovery;
mod endpoints;
mod engines;
mod errors;
mod failover;
mod faults;
mod fuzz_corpus;
mod governance;
mod http1;
mod http2;
mod lease_billing;
mod lifecycle;
mod limits;
mod memory;
mod messages;
mod native_responses;
mod observability;
mod openai_client;
mod proxy;
mod resilience;
mod responses;
mod routing;
mod security;
mod shared_state;
mod stream_billing;
mod streaming;
mod tls;
mod tracing;
