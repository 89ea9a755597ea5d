# Copyright 2026 The sslam developers. Licensed under the MIT licence.
"""SSLAM / EAT pre-training with the Hugging Face `Trainer`: data sources (`training.data`), the batch collator
(`training.collator`), the EMA teacher callback (`training.callbacks`), the trainer (`training.trainer`) and the command
line (`python -m sslam.training.pretrain`). See training/README.md."""
