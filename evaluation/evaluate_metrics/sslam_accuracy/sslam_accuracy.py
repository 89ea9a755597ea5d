"""Local ``evaluate`` metric: accuracy of predicted class ids, as reported for ESC-50 and Speech Commands.

Load offline with ``evaluate.load("<abs path>/evaluation/evaluate_metrics/sslam_accuracy")`` or
``sslam.evaluation.metrics.load_metric("sslam_accuracy")``. The ``sslam`` package must be importable.
"""

import datasets
import evaluate

from sslam.evaluation.metrics import SSLAM_CITATION, accuracy

_DESCRIPTION = "Fraction of examples whose predicted class id equals the reference class id (in [0, 1])."

_INPUTS_DESCRIPTION = """
Args:
    predictions (list of int): predicted class ids (argmax of the logits), shape (N,).
    references (list of int): reference class ids, shape (N,).
Returns:
    accuracy (float): fraction of correct predictions, in [0, 1].
Example:
    >>> metric = evaluate.load("evaluation/evaluate_metrics/sslam_accuracy")
    >>> metric.compute(predictions=[0, 1, 2], references=[0, 1, 1])
    {'accuracy': 0.6666666666666666}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _INPUTS_DESCRIPTION)
class SslamAccuracy(evaluate.Metric):
    """Single-label accuracy over class ids."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=SSLAM_CITATION,
            inputs_description=_INPUTS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references):
        return {"accuracy": accuracy(predictions, references)}
