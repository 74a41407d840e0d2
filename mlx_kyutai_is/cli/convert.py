# Copyright © 2026 mlx-kyutai-is contributors
"""`mlx-kyutai-is convert`: a Hugging Face checkpoint to an MLX directory, optionally quantized."""

import argparse

from ..models.convert import convert
from ..models.loading import DEFAULT_MODEL, DTYPES, MAX_FILE_SIZE_GB
from .common import parser, run


def configure_parser() -> argparse.ArgumentParser:
    p = parser(
        "convert",
        description="Convert a Hugging Face Kyutai STT checkpoint (repo id or directory) to MLX, "
        "optionally quantizing the language model. The output loads with `--model DIR`.",
        epilog="examples:\n"
        "  mlx-kyutai-is convert --mlx-path kyutai-is-bf16\n"
        "  mlx-kyutai-is convert -q --q-bits 4 --mlx-path kyutai-is-q4\n"
        "  mlx-kyutai-is convert --hf-path ./checkpoint -q --q-bits 8 --mlx-path kyutai-is-q8",
    )
    p.add_argument(
        "--hf-path",
        "--model",
        dest="hf_path_or_repo",
        metavar="PATH_OR_REPO",
        default=DEFAULT_MODEL,
        help="source: a local Hugging Face checkpoint directory or a hub repo id",
    )
    p.add_argument("--mlx-path", default="mlx_model", metavar="DIR", help="output directory")
    p.add_argument("-q", "--quantize", action="store_true", help="quantize the language model's linear layers")
    p.add_argument("--q-bits", type=int, default=4, choices=(4, 8), help="bits per weight")
    p.add_argument(
        "--q-group-size", type=int, default=64, choices=(32, 64, 128), help="quantization group size"
    )
    p.add_argument(
        "--dtype",
        default=None,
        choices=list(DTYPES),
        help="float type of the language model's weights (default: as stored, bfloat16); Mimi stays float32",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="replace the model in an existing non-empty output directory (swapped in once the new one is complete)",
    )
    p.add_argument(
        "--max-file-size-gb",
        type=float,
        default=MAX_FILE_SIZE_GB,
        metavar="GB",
        help="split the weights into shards of at most this size",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    """Command-line entry; returns the exit status (errors: one line on stderr, status 1)."""
    p = configure_parser()
    args = p.parse_args(argv)
    return run(p.prog, lambda: convert(**vars(args)) and None)
