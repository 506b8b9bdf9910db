use super::*;

/// vLLM v1 with two data-parallel engines behind one API server, as its
/// `PrometheusStatLogger` writes it (`vllm/v1/metrics/loggers.py`: label names `model_name`,
/// `engine`; the deprecated `gpu_cache_usage_perc` next to `kv_cache_usage_perc`, as 0.9 and
/// 0.10 do), with prometheus_client's process, Python and HTTP collectors around it.
const VLLM: &str = include_str!("fixtures/vllm.txt");
/// SGLang started with `--enable-metrics --enable-metrics-for-all-schedulers` at TP 2: every
/// tensor-parallel rank repeats the batch (`sglang/srt/metrics/collector.py`).
const SGLANG: &str = include_str!("fixtures/sglang.txt");
/// llama.cpp's `llama-server --metrics` from a build that still exported the KV gauges
/// (`tools/server/server.cpp`: no labels, `# HELP`/`# TYPE` before each sample).
const LLAMACPP: &str = include_str!("fixtures/llamacpp.txt");

fn close(a: Option<f64>, b: f64) -> bool {
    a.is_some_and(|a| (a - b).abs() < 1e-9)
}

#[test]
fn vllm_sums_its_engines_and_averages_kv() {
    let r = parse(VLLM).unwrap();
    assert_eq!((r.running, r.waiting), (22.0, 4.0));
    assert!(close(r.kv_usage, (0.5346 + 0.4054) / 2.0), "{r:?}");
}

#[test]
fn sglang_counts_one_tensor_parallel_rank() {
    let r = parse(SGLANG).unwrap();
    assert_eq!((r.running, r.waiting), (7.0, 2.0));
    assert!(close(r.kv_usage, 0.62), "{r:?}");
}

#[test]
fn llamacpp_without_labels() {
    let r = parse(LLAMACPP).unwrap();
    assert_eq!((r.running, r.waiting), (4.0, 5.0));
    assert!(close(r.kv_usage, 0.283691), "{r:?}");
}

#[test]
fn the_current_kv_name_wins_over_the_deprecated_one() {
    let text = "vllm:num_requests_running{engine=\"0\",model_name=\"m\"} 1.0\n\
                vllm:gpu_cache_usage_perc{engine=\"0\",model_name=\"m\"} 0.9\n\
                vllm:kv_cache_usage_perc{engine=\"0\",model_name=\"m\"} 0.3\n";
    assert!(close(parse(text).unwrap().kv_usage, 0.3));
    // Before 0.9 only the old name exists.
    let old = "vllm:num_requests_running 1\nvllm:gpu_cache_usage_perc 0.75\n";
    assert!(close(parse(old).unwrap().kv_usage, 0.75));
}

#[test]
fn models_on_one_engine_are_summed() {
    // Two served models (or LoRA adapters) share the engine's one batch and queue.
    let text = "vllm:num_requests_waiting{model_name=\"a\"} 2\n\
                vllm:num_requests_waiting{model_name=\"b\"} 5\n\
                vllm:num_requests_running{model_name=\"a\"} 1\n";
    let r = parse(text).unwrap();
    assert_eq!((r.running, r.waiting, r.kv_usage), (1.0, 7.0, None));
}

#[test]
fn similar_names_braces_in_values_and_junk_are_not_misread() {
    let text = "vllm:num_requests_running_total 99\n\
                vllm:num_requests_waiting_by_reason{reason=\"capacity\"} 50\n\
                vllm:num_requests_running{model_name=\"a}\\\"b\",tp_rank=\"0\"} 3 1712345678000\n\
                vllm:num_requests_waiting{model_name=\"a\"} NaN\n\
                vllm:num_requests_waiting{model_name=\"a\"} not-a-number\n\
                vllm:num_requests_waiting{model_name=\"unterminated\n\
                sglang:num_queue_reqs{tp_rank=\"1\"} 40\n\
                \n   \n#vllm:num_requests_running 7\n";
    let r = parse(text).unwrap();
    assert_eq!((r.running, r.waiting), (3.0, 0.0));
}

#[test]
fn text_without_load_gauges_is_none() {
    assert_eq!(parse(""), None);
    assert_eq!(
        parse("# TYPE process_open_fds gauge\nprocess_open_fds 87.0\n"),
        None
    );
    // TGI's names are not read (it has no KV or batch gauge in the same sense).
    assert_eq!(parse("tgi_queue_size 3\ntgi_batch_current_size 8\n"), None);
}

#[test]
fn lumen_sims_metrics_parse() {
    // lumen-sim's exposition (no performance model): running from its live count, nothing
    // waiting.
    let text = "# HELP vllm:num_requests_running Number of requests currently running on GPU.\n\
                # TYPE vllm:num_requests_running gauge\n\
                vllm:num_requests_running{model_name=\"sim-model\"} 2\n\
                # HELP vllm:num_requests_waiting Number of requests waiting to be processed.\n\
                # TYPE vllm:num_requests_waiting gauge\n\
                vllm:num_requests_waiting{model_name=\"sim-model\"} 0\n";
    let r = parse(text).unwrap();
    assert_eq!((r.running, r.waiting, r.kv_usage), (2.0, 0.0, None));
}
