# Copyright © 2026 mlx-kyutai-is contributors
"""The whole speech-to-text model: Mimi encoder (audio -> codes) + language model (codes -> text).

Parameter names are `mimi.*` and `lm.*`; `Model.sanitize` maps a transformers checkpoint
(`codec_model.*`, `model.*`, `lm_head.*`) onto them, and leaves names already in this layout
alone, so the same load path reads Hugging Face and converted MLX directories.
"""

import mlx.nn as nn

from .config import ModelArgs
from .lm import LM, fuse_qkv
from .mimi import MimiEncoder

DEFAULT_GROUP_SIZE = 64


class Model(nn.Module):
    """Kyutai STT: `mimi` encodes 24 kHz audio into 12.5 Hz codes, `lm` turns codes into text.

    Parameters
    ----------
    args : ModelArgs
        From `ModelArgs.from_file(checkpoint_dir)`.
    """

    def __init__(self, args: ModelArgs):
        super().__init__()
        self.args = args
        self.lm = LM(args.lm)
        self.mimi = MimiEncoder(args.mimi)

    @staticmethod
    def sanitize(weights: dict) -> dict:
        """transformers keys -> this model's names; idempotent.

        `codec_model.X` -> `mimi.` + `MimiEncoder.sanitize` (decoder-only keys are dropped there),
        `model.X` / `lm_head.X` -> `lm.` + `LM.sanitize`. Keys already under `lm.` / `mimi.` pass
        through; anything else is kept as is, so a strict load reports it as unexpected.
        """
        out, codec, lm = {}, {}, {}
        for k, v in weights.items():
            if k.startswith("codec_model."):
                codec[k.removeprefix("codec_model.")] = v
            elif k.startswith(("model.", "lm_head.")):
                lm[k] = v
            else:
                out[k] = v
        out.update({f"mimi.{k}": v for k, v in MimiEncoder.sanitize(codec).items()})
        out.update({f"lm.{k}": v for k, v in LM.sanitize(lm).items()})
        # MLX directories converted before q/k/v were fused keep them apart under `lm.`/`mimi.`.
        return fuse_qkv(out)

    def quant_predicate(self, path: str, module: nn.Module, group_size: int = DEFAULT_GROUP_SIZE) -> bool:
        """Whether `nn.quantize` should quantize `module` at `path` (a `class_predicate`).

        Only the language model's transformer linear layers (fused `qkv_proj`, `o_proj`, `fc1`, `fc2`)
        whose input size is a multiple of `group_size`: 64 layers, 98 % of the LM's matmul weights.
        Use as ``class_predicate=lambda p, m: model.quant_predicate(p, m, group_size)``.

        Kept in float:

        - `lm.lm_head` (text head, 19 M weights, 2 % of the linears). Its rounding error goes
          straight into the logits whose argmax is the transcript, undamped by the residual
          stream: on the test checkpoint a 4-bit head alone gives 9 % relative logit error, all
          96 other layers 1.7 %. Keeping it bf16 costs 27 MB on a q4 file (~3 %) and 18 MB on q8.
          (llama.cpp's Q4_K_M and mlx_lm's mixed recipes also keep the output layer at higher bits.)
        - the fused embedding table: each step reads only 33 of its rows, so quantizing it would
          save memory but no time (see `LM.quant_predicate`).
        - all of Mimi (float32): small, and its errors are discrete code flips fed to every step.
        """
        if not path.startswith("lm.") or path == "lm.lm_head":
            return False
        if not self.lm.quant_predicate(path.removeprefix("lm."), module):
            return False
        return module.weight.shape[-1] % group_size == 0
