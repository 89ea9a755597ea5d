"""Evaluation of SSLAM models: metrics, linear probing, fine-tuning and dataset helpers.

Submodules are imported on demand (``evaluation.metrics``, ``evaluation.linear_probe``, ``evaluation.finetune``,
``evaluation.datasets_io``; command line: ``python -m sslam.evaluation.run``) so that importing the package stays cheap.
"""
