"""The learning core, in pure PyTorch (no Ray, no gRPC).

- :mod:`.attention`: excitation backprop and contrastive EB (c-EB) maps.
- :mod:`.importance`: Oja's rule turning pre/post attention into synaptic importance.
- :mod:`.penalty`: the one consolidation penalty every strategy plugs into.
- :mod:`.strategies`: importance estimators: ``asp``, ``ewc``, ``online_ewc``, ``si``, ``mas``, ``vanilla``.
- :mod:`.anchoring`, :mod:`.drift`: when to anchor (task boundaries, periodic, Page-Hinkley drift).
- :mod:`.learner`: :class:`OnlineLearner`, the training loop.
"""

from .attention import contrastive_excitation_backprop, excitation_backprop
from .importance import oja_update
from .learner import DEFAULT_LAM, STRATEGIES, OnlineLearner, default_device
from .models import cnn, mlp
from .penalty import Consolidation

__all__ = [
    "DEFAULT_LAM",
    "STRATEGIES",
    "Consolidation",
    "OnlineLearner",
    "cnn",
    "contrastive_excitation_backprop",
    "default_device",
    "excitation_backprop",
    "mlp",
    "oja_update",
]
