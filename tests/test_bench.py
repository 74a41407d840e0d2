"""The benchmark's code path on a tiny model, so it cannot rot (timings are printed, never asserted)."""

import json
import math
import subprocess
import sys
import time

import mlx.core as mx
import pytest

from mlx_kyutai_is import profiling
from mlx_kyutai_is.models import presets
from mlx_kyutai_is.models.config import ModelArgs
from mlx_kyutai_is.models.lm import bytes_per_step
from mlx_kyutai_is.models.loading import quantize_model
from mlx_kyutai_is.models.model import Model


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    cmd = [sys.executable, "-m", "mlx_kyutai_is", "bench", "--quick", "--offline-seconds", "1", "--length-steps", "500"]
    proc = subprocess.run([*cmd, "-o", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout, json.loads(out.read_text())


def _finite_positive(x):
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


@pytest.mark.slow
def test_quick_bench_measures_every_precision_and_batch(quick_run):
    _, r = quick_run
    assert set(r["precisions"]) == {"bf16", "q8", "q4"}
    assert r["config"]["layers"] == 2 and r["config"]["codebooks"] == 32
    for name, row in r["precisions"].items():
        assert set(row["batch"]) == {"1", "2"}
        for b in row["batch"].values():
            for key in ("lm_step_ms", "stream_step_ms"):
                assert b[key]["n"] >= 3 and _finite_positive(b[key]["median"]) and b[key]["p95"] >= b[key]["median"]
            assert _finite_positive(b["floor_ms"]) and _finite_positive(b["x_floor"])
            assert b["rtf"] == pytest.approx(b["stream_step_ms"]["median"] / 80.0)
        assert _finite_positive(row["offline"]["rtf"]) and row["offline"]["audio_s"] == 1
        assert _finite_positive(row["load_s"]) and _finite_positive(row["peak_mb"])
    # Quantized files are smaller than the bf16 one.
    sizes = {k: v["file_mb"] for k, v in r["precisions"].items()}
    assert sizes["q4"] < sizes["q8"] < sizes["bf16"]
    assert _finite_positive(r["mimi_frame_ms"]["median"])
    assert _finite_positive(r["bandwidth_gbs"]["best"])
    length = r["length"]
    assert length["steps"] == 500 and set(length["ms_per_step"]) == {"166", "400"}
    assert _finite_positive(length["ratio"])


@pytest.mark.slow
def test_quick_bench_runs_the_transformers_reference_on_the_same_checkpoint(quick_run):
    pytest.importorskip("transformers")
    _, r = quick_run
    ref = r["transformers"]
    assert set(ref["lm_step"]) == {"1", "2"} and all(_finite_positive(s["median"]) for s in ref["lm_step"].values())
    # The recipe ran over the 1 s of audio plus its 5 s of silence: ~75 steps at 12.5 Hz.
    assert 60 <= ref["recipe"]["steps"] <= 100 and _finite_positive(ref["recipe"]["rtf"])
    assert {"lm_step_vs_transformers_b1", "offline_rtf_vs_recipe"} <= set(r["ratios"])


@pytest.mark.slow
def test_quick_bench_prints_a_table(quick_run):
    table, r = quick_run
    assert r["date"] in table and "LM step ms" in table and "cost over length" in table
    rows = [line.split() for line in table.splitlines() if line.split()[:1] in (["bf16"], ["q8"], ["q4"])]
    assert [(row[0], row[1]) for row in rows] == [(p, b) for p in ("bf16", "q8", "q4") for b in ("1", "2")]


def test_bytes_per_step_counts_weights_embedding_rows_and_kv_window():
    args = ModelArgs.from_dict(presets.TINY)
    model = Model(args)
    model.lm.set_dtype(mx.bfloat16)
    lm, a = model.lm, args.lm
    linears = sum(p.nbytes for layer in lm.layers for p in _leaves(layer)) + sum(p.nbytes for p in _leaves(lm.norm))
    head = lm.lm_head.weight.nbytes
    rows = 33 * a.hidden_size * 2
    kv = 2 * a.num_hidden_layers * a.num_key_value_heads * a.sliding_window * a.head_dim * 2
    assert bytes_per_step(lm, 1) == linears + head + rows + kv
    assert bytes_per_step(lm, 2) == linears + head + 2 * rows + 2 * kv
    bf16 = bytes_per_step(lm, 1)
    quantize_model(model, bits=4, group_size=64)
    assert bytes_per_step(model.lm, 1) < bf16


def _leaves(module):
    from mlx.utils import tree_flatten

    return [v for _, v in tree_flatten(module.parameters())]


def test_repeat_stops_at_the_time_budget_after_three_timed_calls():
    calls = []
    ms = profiling.repeat(lambda i: (calls.append(i), time.sleep(0.02)), steps=100, warmup=1, budget_s=0.01)
    assert len(ms) == 3 and calls == [0, 1, 2, 3]
    assert len(profiling.repeat(lambda i: None, steps=5, warmup=2)) == 5


@pytest.fixture(scope="module")
def sections_run(tmp_path_factory):
    """--kernels, --batch and --bulk on the tiny model (bulk: 2 files of 1 s)."""
    out = tmp_path_factory.mktemp("bench") / "sections.json"
    cmd = [sys.executable, "-m", "mlx_kyutai_is", "bench", "--quick", "--precisions", "bf16", "--kernels"]
    cmd += ["--batch", "1,2", "--bulk", "--bulk-files", "2", "--bulk-seconds", "1", "-o", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout, json.loads(out.read_text())


@pytest.mark.slow
def test_batch_sweep_reports_step_throughput_and_capacity(sections_run):
    table, r = sections_run
    assert "precisions" not in r  # only the sections asked for ran
    sweep = r["engine"]["bf16"]
    assert set(sweep["batch"]) == {"1", "2"}
    for b, row in sweep["batch"].items():
        ms = row["step_ms"]["median"]
        assert row["step_ms"]["n"] >= 3 and _finite_positive(ms)
        assert row["audio_s_per_s"] == pytest.approx(int(b) * 80.0 / ms)
        assert row["ms_per_stream"] == pytest.approx(ms / int(b))
    fast = [int(b) for b, row in sweep["batch"].items() if row["step_ms"]["median"] < 80.0]
    assert sweep["capacity_streams"] == max(fast, default=0)
    assert "engine step" in table and "capacity in real-time streams" in table


@pytest.mark.slow
def test_bulk_times_batch_size_one_and_the_default_in_one_run(sections_run):
    from mlx_kyutai_is.stt import DEFAULT_BATCH_SIZE

    table, r = sections_run
    bulk = r["bulk"]["bf16"]
    assert bulk["files"] == 2 and bulk["seconds"] == 1 and bulk["default_batch_size"] == DEFAULT_BATCH_SIZE
    assert set(bulk["runs"]) == {"1", str(DEFAULT_BATCH_SIZE)}
    assert all(_finite_positive(run["elapsed_s"]) for run in bulk["runs"].values())
    # A batched list transcription gives each file the tokens it gets alone.
    assert bulk["same_tokens"] is True
    assert "bulk (bf16): 2 files x 1 s" in table


# Kernels per steady-state frame of the full-size structure (bench.KERNELS), bf16, this package's
# path on the CPU (no custom kernels), each mx.fast op one. The counts are deterministic: these
# bounds are the figures measured when they were set, so a change that adds kernels fails here.
# (Before the fusions of issue 15, 2026-12-01: 388 / 412 / 800.)
KERNEL_BOUNDS = {"lm_step": 253, "mimi_frame": 281, "frame": 534}


@pytest.mark.slow
def test_kernel_counts_do_not_creep_back_up(sections_run):
    table, r = sections_run
    k = r["kernels"]["bf16"]
    for part, bound in KERNEL_BOUNDS.items():
        assert 0 < k[part]["total"] <= bound, (part, k[part]["by_type"])
        assert sum(k[part]["by_type"].values()) == k[part]["total"]
    assert k["frame"]["total"] == k["lm_step"]["total"] + k["mimi_frame"]["total"]
    # Each fast op counts one: 33 RMSNorms in the LM (32 layers' two + the final one), 16 LayerNorms in Mimi.
    assert k["lm_step"]["by_type"]["fast.rms_norm"] == 33
    assert k["mimi_frame"]["by_type"]["fast.layer_norm"] == 16
    assert k["host_syncs_per_frame"] == 1.0
    assert "kernels per 80 ms frame" in table


def test_bad_batch_list_is_one_line():
    proc = subprocess.run(
        [sys.executable, "-m", "mlx_kyutai_is", "bench", "--batch", "1,x"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2 and "--batch" in proc.stderr and "Traceback" not in proc.stderr
