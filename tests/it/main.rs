//! One integration-test binary (one link step, shared harness).

// The whole binary is test code; helpers outside #[test] fns may unwrap too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod architecture;
mod endpoints;
mod errors;
mod failover;
mod governance;
mod lifecycle;
mod observability;
mod openai_client;
mod proxy;
mod resilience;
mod security;
mod shared_state;
mod streaming;
mod tls;
mod tracing;
