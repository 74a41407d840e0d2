# Copyright © 2026 mlx-kyutai-is contributors
"""Maintainer script: make the bf16 / q8 / q4 MLX conversions of the checkpoint, each with a
model card, and optionally upload them to the Hugging Face hub.

    python convert/publish.py --out-dir dist                      # convert only, look at dist/
    python convert/publish.py --out-dir dist --repo-prefix mlx-community/kyutai-stt-1b-is-en --upload

Every conversion is `mlx_kyutai_is.models.convert.convert()`; this script only names the variants,
writes README.md and uploads.
"""

import argparse
import sys
from pathlib import Path

from mlx_kyutai_is import __version__
from mlx_kyutai_is.models.convert import convert
from mlx_kyutai_is.models.loading import DEFAULT_MODEL

# name -> convert() options
VARIANTS = {
    "bf16": dict(quantize=False),
    "q8": dict(quantize=True, q_bits=8, q_group_size=64),
    "q4": dict(quantize=True, q_bits=4, q_group_size=64),
}

DESCRIPTION = {
    "bf16": "the language model in bfloat16, as published: no loss against the original weights",
    "q8": "the language model's transformer linear layers quantized to 8 bits (group size 64),\n"
    "two thirds of the size of bf16 with a logit error at the level of bf16's own rounding",
    "q4": "the language model's transformer linear layers quantized to 4 bits (group size 64),\n"
    "the smallest and fastest; check it on your own audio before relying on it",
}


def _size_mb(d: Path) -> float:
    return sum(f.stat().st_size for f in d.iterdir() if f.is_file()) / 2**20


def model_card(repo: str, base: str, variant: str, size_mb: float, license: str | None) -> str:
    """README.md for one converted directory (hub front matter + usage)."""
    front = [
        "---",
        f"base_model: {base}",
        "library_name: mlx",
        "pipeline_tag: automatic-speech-recognition",
        "language:",
        "- is",
        "- en",
        *([f"license: {license}"] if license else []),
        "tags:",
        "- mlx",
        "- speech-to-text",
        "- speech-translation",
        "- kyutai",
        "- icelandic",
        "---",
    ]
    body = f"""
# {repo}

[{base}](https://huggingface.co/{base}) (Kyutai STT fine-tuned by Miðeind for Icelandic
transcription and Icelandic -> English translation), converted to [MLX](https://github.com/ml-explore/mlx)
with mlx-kyutai-is {__version__}: {DESCRIPTION[variant]}. The text head and the fused embedding
table stay bf16, the Mimi audio encoder float32. Size on disk: {size_mb:,.0f} MB.

## Use

```bash
pip install mlx-kyutai-is
mlx-kyutai-is transcribe talk.wav --model {repo}            # Icelandic text
mlx-kyutai-is transcribe talk.wav --model {repo} --task en  # English translation
mlx-kyutai-is mic --model {repo}                            # live, from the microphone
```

```python
from mlx_kyutai_is import load

stt = load("{repo}")
print(stt.transcribe("talk.wav", task="is").text)
```

## Reproduce

```bash
mlx-kyutai-is convert --hf-path {base} --mlx-path {repo.split("/")[-1]}{_convert_flags(variant)}
```

See the base model's card for training data, intended use, limitations and license.
"""
    return "\n".join(front) + "\n" + body


def _convert_flags(variant: str) -> str:
    opts = VARIANTS[variant]
    if not opts["quantize"]:
        return ""
    return f" -q --q-bits {opts['q_bits']} --q-group-size {opts['q_group_size']}"


def publish(
    hf_path: str = DEFAULT_MODEL,
    base_model: str = DEFAULT_MODEL,
    out_dir: str = "dist",
    variants: list[str] = tuple(VARIANTS),
    repo_prefix: str = "mlx-community/kyutai-stt-1b-is-en",
    license: str | None = None,
    upload: bool = False,
    force: bool = False,
    no_convert: bool = False,
) -> dict[str, Path]:
    """Convert each variant into `out_dir/<repo name>-<variant>`, write its README.md, and with
    `upload` push it to `<repo_prefix>-<variant>`. `base_model` is the hub id the cards cite
    (`hf_path` may be a local copy of it); `no_convert` reuses existing directories (cards are
    rewritten). Returns variant -> directory."""
    done = {}
    for v in variants:
        repo = f"{repo_prefix}-{v}"
        d = Path(out_dir) / repo.split("/")[-1]
        if no_convert:
            if not (d / "model.safetensors").is_file():
                raise FileNotFoundError(f"{d}: no converted model here (run without --no-convert first)")
            (d / "README.md").unlink(missing_ok=True)  # not counted in the size
        else:
            print(f"== {v}: {hf_path} -> {d}", flush=True)
            convert(hf_path, str(d), force=force, **VARIANTS[v])
        card = model_card(repo, base_model, v, _size_mb(d), license)
        (d / "README.md").write_text(card, encoding="utf-8")
        done[v] = d
    if upload:
        import huggingface_hub

        for v, d in done.items():
            repo = f"{repo_prefix}-{v}"
            print(f"== uploading {d} -> https://huggingface.co/{repo}", flush=True)
            huggingface_hub.create_repo(repo, repo_type="model", exist_ok=True)
            huggingface_hub.upload_folder(
                repo_id=repo,
                folder_path=str(d),
                repo_type="model",
                commit_message=f"mlx-kyutai-is {__version__}: {v} conversion of {hf_path}",
            )
    return done


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hf-path", default=DEFAULT_MODEL, help="source checkpoint (repo id or directory)")
    p.add_argument("--base-model", default=DEFAULT_MODEL, help="hub id the model cards cite as base_model")
    p.add_argument("--out-dir", default="dist", help="where the converted directories go")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--repo-prefix", default="mlx-community/kyutai-stt-1b-is-en", help="hub repos: PREFIX-<variant>")
    p.add_argument("--license", default=None, help="license id for the cards' front matter (the base model's)")
    p.add_argument("--upload", action="store_true", help="upload each directory with huggingface_hub.upload_folder")
    p.add_argument("--force", action="store_true", help="overwrite existing output directories")
    p.add_argument("--no-convert", action="store_true", help="reuse converted directories (rewrite cards, upload)")
    args = p.parse_args(argv)
    try:
        publish(**vars(args))
    except Exception as e:
        print(f"publish: error: {(str(e).strip().splitlines() or [type(e).__name__])[0]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
