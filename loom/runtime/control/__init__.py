"""ControlNets and T2I-Adapters: the CONTROL_NET value, its loader, and the control it puts on
CONDITIONING entries.

- :mod:`.types` — ``CONTROL_NET``: a loaded diffusers ``ControlNetModel`` or ``T2IAdapter``
- :mod:`.detect` — what a control file is and its diffusers config, from keys and shapes
- :mod:`.loader` — single files (original or diffusers layout) and diffusers folders
- :mod:`.hint` — an IMAGE as the control input at the latent's pixel size
- :mod:`.apply` — :class:`Control`: a sampling hook on conditioning entries that adds the
  residuals inside Loom's sampling loop (both loops), stacked through ``previous``
"""

from loom.runtime.control.apply import Control, apply_control
from loom.runtime.control.loader import load_control
from loom.runtime.control.types import ControlModel

__all__ = ["Control", "ControlModel", "apply_control", "load_control"]
