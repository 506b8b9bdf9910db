//! SSE decoding throughput over a vLLM-shaped stream, fed in network-sized and tiny pieces.

#![allow(clippy::print_stdout, clippy::unwrap_used)]

use lumen_openai_types::sse::SseDecoder;
use tokio::time::Instant;

fn recorded_stream(tokens: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..tokens {
        out.extend_from_slice(format!(
            "data: {{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"meta-llama/Llama-3.1-8B-Instruct\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\" tok{i}\"}},\"logprobs\":null,\"finish_reason\":null}}]}}\n\n"
        ).as_bytes());
    }
    out.extend_from_slice(b"data: [DONE]\n\n");
    out
}

fn run(stream: &[u8], piece: usize, rounds: usize) -> (f64, usize) {
    let start = Instant::now();
    let mut events = 0;
    for _ in 0..rounds {
        let mut d = SseDecoder::new();
        for chunk in stream.chunks(piece) {
            d.push(chunk);
            while let Some(e) = d.next_event().unwrap() {
                events += usize::from(!e.data.is_empty());
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    ((stream.len() * rounds) as f64 / secs / 1e6, events)
}

fn main() {
    let stream = recorded_stream(1_000);
    for piece in [16 * 1024, 1_500, 64] {
        let (mbs, events) = run(&stream, piece, 200);
        println!("sse_decode piece={piece:>5}B  {mbs:>8.1} MB/s  ({events} events)");
    }
}
