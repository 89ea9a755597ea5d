"""Model-card generation for SSLAM checkpoints (Jinja2 templates + huggingface_hub metadata)."""

from sslam.model_cards.generate import (
    ORIGINAL_AS2M_FINETUNING,
    ORIGINAL_PRETRAINING,
    Result,
    build_model_card,
    write_model_card,
)

__all__ = ["ORIGINAL_AS2M_FINETUNING", "ORIGINAL_PRETRAINING", "Result", "build_model_card", "write_model_card"]
