//! See `lumen_backend_vllm::fuzz::h1_response` (the body lives there so `cargo test` replays the
//! corpus).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lumen_backend_vllm::fuzz::h1_response(data));
