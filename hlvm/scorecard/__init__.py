"""Score any encoder: a fixed, versioned identifiability suite run on a user's model, beside every control.

``hlvm.score(encoder, suite="v1")`` returns the scorecard record (and
``hlvm score`` writes it): per cell of the suite (mask kind x ratio x unit),
the held-out R^2 of CA's noise, the leak of the visible side's private noise,
the selectivity, their linear-probe twins, Theorem 2's verdict where the
code is ``dim_c`` wide, and the strongest control of the encoder's own width;
and the same numbers for every control. The package:

- :mod:`hlvm.scorecard.suites`: the frozen suites (``v1``) and their quick tiers;
- :mod:`hlvm.scorecard.encoders`: a user's callable, a ``hlvm train`` run, or a
  timm architecture, as an encode function (with the checks of bad encoders);
- :mod:`hlvm.scorecard.scoring`: the scoring itself;
- :mod:`hlvm.scorecard.card`: ``scorecard.json``, ``scorecard.md`` and the figure.

Example (a runnable copy is ``examples/avgpool_encoder.py``)::

    import numpy as np
    import hlvm

    def pool(images):                      # (B, 5, 8, 8), masked pixels zeroed
        b, c, h, w = images.shape
        return images.reshape(b, c, h // 2, 2, w // 2, 2).mean(axis=(3, 5)).reshape(b, -1)

    card = hlvm.score(pool, suite="v1", quick=True)
    card["cells"][0]["selectivity"], card["cells"][0]["strongest_control"]["label"]
"""

from __future__ import annotations

from .card import write_scorecard
from .encoders import Encoder, from_object, from_run, from_timm, load_callable
from .scoring import score
from .suites import SUITES, Suite, get_suite

__all__ = ["score", "write_scorecard", "Suite", "SUITES", "get_suite", "Encoder", "from_object", "from_run", "from_timm",
           "load_callable"]
