# Copyright © 2026 mlx-kyutai-is contributors
"""Model configurations (transformers `config.json` dicts) for random models of the real
checkpoint's layout: the full size for figures, a tiny one for thousands of steps in seconds."""

# The published checkpoint's architecture (model card / its config.json). The codec is
# transformers' `MimiConfig` defaults with 32 quantizers, which `MimiArgs` defaults to.
FULL_SIZE = dict(
    vocab_size=9323,
    hidden_size=2048,
    num_hidden_layers=16,
    num_attention_heads=16,
    num_key_value_heads=16,
    ffn_dim=11264,
    sliding_window=375,
    max_position_embeddings=750,
    rope_parameters={"rope_type": "default", "rope_theta": 100000.0},
    rms_norm_eps=1e-8,
    num_codebooks=32,
    codebook_vocab_size=2049,
    audio_bos_token_id=2048,
    audio_pad_token_id=9323 + 32 * 2049,
    bos_token_id=9322,
    pad_token_id=3,
    codec_config={"num_quantizers": 32},
)
# A model small enough to run thousands of steps in seconds (same vocabularies and protocol).
TINY = dict(
    FULL_SIZE,
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=4,
    ffn_dim=192,
    sliding_window=16,
    max_position_embeddings=32,
    codec_config=dict(
        num_quantizers=32,
        hidden_size=64,
        upsample_groups=64,
        num_filters=8,
        codebook_dim=32,
        vector_quantization_hidden_dimension=32,
        num_hidden_layers=2,
        intermediate_size=128,
        num_attention_heads=4,
        num_key_value_heads=4,
        head_dim=16,
        sliding_window=20,
    ),
)
