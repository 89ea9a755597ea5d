# Copyright 2026 The sslam developers. Licensed under the MIT licence.
"""SSLAM for Hugging Face transformers 5.

Importing this package registers `SSLAMConfig`, `SSLAMModel`, `SSLAMForAudioClassification`,
`SSLAMForAudioFrameClassification`, `SSLAMForPreTraining` and `SSLAMFeatureExtractor` with the Auto classes, so `AutoModel.from_pretrained(folder)` and
`pipeline("audio-classification", model=folder)` work without `trust_remote_code`.
"""

from transformers import (
    AutoConfig,
    AutoFeatureExtractor,
    AutoModel,
    AutoModelForAudioClassification,
    AutoModelForAudioFrameClassification,
    AutoModelForPreTraining,
)

from .configuration_sslam import SSLAMConfig
from .feature_extraction_sslam import SSLAMFeatureExtractor
from .modeling_sslam import (
    SSLAMForAudioClassification,
    SSLAMForAudioFrameClassification,
    SSLAMModel,
    SSLAMPreTrainedModel,
)
from .pretraining_sslam import SSLAMForPreTraining


def _register_auto_classes() -> None:
    AutoConfig.register(SSLAMConfig.model_type, SSLAMConfig, exist_ok=True)
    AutoModel.register(SSLAMConfig, SSLAMModel, exist_ok=True)
    AutoModelForAudioClassification.register(SSLAMConfig, SSLAMForAudioClassification, exist_ok=True)
    AutoModelForAudioFrameClassification.register(SSLAMConfig, SSLAMForAudioFrameClassification, exist_ok=True)
    AutoModelForPreTraining.register(SSLAMConfig, SSLAMForPreTraining, exist_ok=True)
    AutoFeatureExtractor.register(SSLAMConfig, SSLAMFeatureExtractor, exist_ok=True)
    # `save_pretrained` then writes an `auto_map` and copies the code, for `trust_remote_code=True` users.
    SSLAMConfig.register_for_auto_class()
    SSLAMModel.register_for_auto_class("AutoModel")
    SSLAMForAudioClassification.register_for_auto_class("AutoModelForAudioClassification")
    SSLAMForAudioFrameClassification.register_for_auto_class("AutoModelForAudioFrameClassification")
    SSLAMFeatureExtractor.register_for_auto_class("AutoFeatureExtractor")


_register_auto_classes()

__all__ = [
    "SSLAMConfig",
    "SSLAMFeatureExtractor",
    "SSLAMForAudioClassification",
    "SSLAMForAudioFrameClassification",
    "SSLAMForPreTraining",
    "SSLAMModel",
    "SSLAMPreTrainedModel",
]
