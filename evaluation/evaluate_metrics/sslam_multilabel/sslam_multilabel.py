"""Local ``evaluate`` metric: macro mAP, macro ROC AUC and d-prime for multi-label audio tagging.

mAP is computed exactly as the original EAT/SSLAM evaluation does (per-class average precision on the scores,
nan-mean over classes; classes without positives are skipped). Load offline with
``evaluate.load("<abs path>/evaluation/evaluate_metrics/sslam_multilabel")`` or
``sslam.evaluation.metrics.load_metric("sslam_multilabel")``. The ``sslam`` package must be importable.
"""

import datasets
import evaluate

from sslam.evaluation.metrics import SSLAM_CITATION, multilabel_metrics

_DESCRIPTION = (
    "Macro mean average precision (mAP), macro ROC AUC (mAUC) and d-prime of the mAUC for multi-label "
    "classification, as fractions."
)

_INPUTS_DESCRIPTION = """
Args:
    predictions (list of list of float): per-class scores (sigmoid outputs or logits), shape (N, C).
    references (list of list of int): binary multi-hot targets, shape (N, C).
Returns:
    mAP (float): nan-mean over classes of the per-class average precision, in [0, 1].
    mAUC (float): nan-mean over classes of the per-class ROC AUC, in [0, 1].
    d_prime (float): sqrt(2) * Phi^-1(mAUC).
Example:
    >>> metric = evaluate.load("evaluation/evaluate_metrics/sslam_multilabel")
    >>> metric.compute(predictions=[[0.9, 0.1], [0.2, 0.8]], references=[[1, 0], [0, 1]])["mAP"]
    1.0
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _INPUTS_DESCRIPTION)
class SslamMultilabel(evaluate.Metric):
    """Multi-label mAP / mAUC / d-prime."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=SSLAM_CITATION,
            inputs_description=_INPUTS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("float32")),
                    "references": datasets.Sequence(datasets.Value("int32")),
                }
            ),
        )

    def _compute(self, predictions, references):
        return multilabel_metrics(predictions, references)
