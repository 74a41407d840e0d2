"""A quick soak: >= 20 000 steps (27 min of audio) of speech, silence and noise through a tiny
model at full speed, with constant memory. The 2-hour version is `scripts/soak.py`."""

import importlib.util
from pathlib import Path

import pytest

from checkpoints import build_checkpoint, small_codec_kwargs, small_lm_kwargs

SOAK = Path(__file__).resolve().parents[1] / "scripts" / "soak.py"


@pytest.fixture(scope="module")
def soak_module():
    spec = importlib.util.spec_from_file_location("soak", SOAK)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
def test_twenty_thousand_steps_constant_memory(tmp_path, soak_module):
    from mlx_kyutai_is import load

    ckpt = build_checkpoint(
        tmp_path / "tiny",
        lm=small_lm_kwargs(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2, ffn_dim=32),
        codec=small_codec_kwargs(hidden_size=16, upsample_groups=16, num_filters=2, num_hidden_layers=1,
                                 intermediate_size=32, num_attention_heads=2, num_key_value_heads=2, head_dim=8,
                                 codebook_dim=8, vector_quantization_hidden_dimension=8),
    )
    stt = load(str(ckpt))
    rows = soak_module.soak(stt, hours=20_100 * 0.08 / 3600, report_minutes=5, workdir=tmp_path, log=print)
    last = rows[-1]
    assert last["steps"] >= 20_000
    # MLX memory in use is the same at every report once the caches are full: nothing accumulates.
    assert len({r["mlx_active_mb"] for r in rows[1:]}) == 1, rows
    # The process does not grow either (a little slack for allocator noise).
    assert last["rss_mb"] - rows[1]["rss_mb"] < 50, rows
    assert last["words"] > 0
