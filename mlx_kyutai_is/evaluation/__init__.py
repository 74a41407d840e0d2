# Copyright © 2026 mlx-kyutai-is contributors
"""Evaluation: manifests, WER/CER and BLEU/chrF, the transformers reference recipe, reports."""
