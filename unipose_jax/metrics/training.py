"""Training metrics: the loss and gradient norm as a ``clu.metrics.Collection`` of averages,
built inside the jitted step and merged on the device between reports."""

import flax
from clu import metrics as clu_metrics


@flax.struct.dataclass
class TrainMetrics(clu_metrics.Collection):
  """Mean loss and gradient norm over the steps since the last report."""

  loss: clu_metrics.Average.from_output("loss")
  grad_norm: clu_metrics.Average.from_output("grad_norm")
