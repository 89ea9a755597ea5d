# Copyright 2026 The sslam developers. Licensed under the MIT licence.
"""Converters from original SSLAM / EAT checkpoints to the native `modeling_sslam` format.

- `python -m sslam.conversion.convert_fairseq_checkpoint`: fairseq `.pt` checkpoints (pre-training or fine-tuned).
- `python -m sslam.conversion.convert_hub_checkpoint`: Hub remote-code folders (`model_type: "eat"`).
"""
