"""Third-party output that says nothing to a user of this toolkit, silenced in one place.

Called by the CLI and the benchmarks (never on import: a library must not change its host's
logging). What is silenced, and why it is safe to:

* transformers' "We strongly recommend passing in an `attention_mask`": every block is a full
  window of real tokens (no padding), so there is nothing to mask.
* transformers' ``loss_type=None`` notice and the ``is_gradient_checkpointing`` FutureWarning
  (raised inside peft/transformers, not by our calls).
* Opacus' "Optimal order is the largest alpha": the RDP accountant's ε is still a valid upper
  bound when the optimum sits at the edge of its α grid (only possibly looser).
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

_MESSAGES = (
    r".*Optimal order is the (largest|smallest) alpha.*",
    r".*`is_gradient_checkpointing` is deprecated.*",
    r".*attention_mask.*",
    r".*loss_type=None.*",
)


def quiet_third_party() -> None:
    """Silence the third-party warnings listed in this module's docstring (idempotent).

    transformers is not imported for it (half a second of CPU a refused config need not spend):
    its verbosity comes from ``TRANSFORMERS_VERBOSITY`` when it is first imported (unless the user
    set it), and is set directly when it already is."""
    for pattern in _MESSAGES:
        warnings.filterwarnings("ignore", message=pattern)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
    logging.getLogger("transformers").setLevel(logging.ERROR)
