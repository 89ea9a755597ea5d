# Copyright 2026 The sslam developers. Licensed under the MIT licence.
"""SSLAM / EAT pre-training with the Hugging Face `Trainer`: data sources (`training.data`), tar shards
(`training.shards`), the batch collator (`training.collator`), the training policies as callbacks (`training.callbacks`:
EMA teacher, collapse and divergence guards, skipped-clip limit, shard position), atomic checkpoints
(`training.checkpoints`), the trainer (`training.trainer`) and the command line (`python -m sslam.training.pretrain`).
See training/README.md."""
