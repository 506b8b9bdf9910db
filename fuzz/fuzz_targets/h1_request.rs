//! See `lumen_server::fuzz::h1_request` (the body lives there so `cargo test` replays the corpus).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lumen_server::fuzz::h1_request(data));
