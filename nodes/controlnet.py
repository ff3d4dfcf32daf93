"""ControlNet and T2I-Adapter nodes with ComfyUI's names and inputs.

ControlNetLoader / DiffControlNetLoader / T2IAdapterLoader read ``models/controlnet/`` (single
files in the original or diffusers layout, or diffusers folders) and give a CONTROL_NET;
ControlNetLoader also takes T2I-Adapters, as ComfyUI's does. ControlNetApply (one conditioning)
and ControlNetApplyAdvanced (positive and negative, with start/end percent) return new
conditionings whose entries carry the control; applying another control on top stacks them. The
residuals are added inside Loom's sampling loop (:mod:`loom.runtime.control.apply`).
"""

from __future__ import annotations

from loom.files import model_path
from loom.nodeapi import Float, Link, ModelFile, Node, Output, fraction
from loom.runtime.control import apply_control, load_control
from loom.runtime.control.loader import check_kind, weights_file
from loom.runtime.sd.common import manager_of


def _load(ctx, name: str, expect: str | None = None, base_unet=None):
    manager = manager_of(ctx)
    path = model_path(ctx, "controlnet", name)
    if base_unet is None:
        # one copy per file for every worker (the manager's LoadedModels)
        model = manager.loaded.get("controlnet", weights_file(path),
                                   lambda: load_control(path, policy=manager.policy),
                                   options=manager.policy)
        return check_kind(model, expect)
    with manager.use(base_unet):  # read the base weights without anyone's patches
        return load_control(path, policy=manager.policy, expect=expect, base_unet=base_unet)


class ControlNetLoader(Node, category="loaders", display_name="Load ControlNet Model"):
    """Loads a ControlNet (or T2I-Adapter) from models/controlnet/: SD 1.x, SD 2.x or SDXL, a single
    file or a diffusers folder."""
    inputs = {"control_net_name": ModelFile("controlnet", tooltip="The ControlNet file or folder.")}
    outputs = (Output("CONTROL_NET"),)

    def run(self, control_net_name):
        return (_load(self.ctx, control_net_name),)


class DiffControlNetLoader(Node, category="loaders", display_name="Load ControlNet Model (diff)"):
    """Loads a ControlNet stored as differences to a base model (files with a 'difference' marker)
    by adding the connected model's UNet weights; plain ControlNets load as they are."""
    inputs = {
        "model": Link("MODEL"),
        "control_net_name": ModelFile("controlnet"),
    }
    outputs = (Output("CONTROL_NET"),)

    def run(self, model, control_net_name):
        return (_load(self.ctx, control_net_name, base_unet=model.unet),)


class T2IAdapterLoader(Node, category="loaders", display_name="Load T2I-Adapter"):
    """Loads a T2I-Adapter (diffusers folder or single file) from models/controlnet/; apply it with
    the ControlNet Apply nodes."""
    inputs = {"t2i_adapter_name": ModelFile("controlnet", tooltip="The T2I-Adapter file or folder.")}
    outputs = (Output("CONTROL_NET"),)

    def run(self, t2i_adapter_name):
        return (_load(self.ctx, t2i_adapter_name, expect="t2i_adapter"),)


def _strength() -> Float:
    return Float(1.0, min=0.0, max=10.0, step=0.01,
                 tooltip="How strongly the control steers the image (0 turns it off).")


class ControlNetApply(Node, category="conditioning/controlnet", display_name="Apply ControlNet (OLD)"):
    """Adds a ControlNet's guidance from an image to one conditioning."""
    inputs = {
        "conditioning": Link("CONDITIONING"),
        "control_net": Link("CONTROL_NET"),
        "image": Link("IMAGE", tooltip="The control image (edges, pose, depth, …)."),
        "strength": _strength(),
    }
    outputs = (Output("CONDITIONING"),)

    def run(self, conditioning, control_net, image, strength):
        if strength == 0:
            return (conditioning,)
        return (apply_control(conditioning, control_net, image, strength),)


class ControlNetApplyAdvanced(Node, category="conditioning/controlnet", display_name="Apply ControlNet"):
    """Adds a ControlNet's guidance to the positive and negative conditioning, over a part of the
    schedule (start/end percent of the steps)."""
    inputs = {
        "positive": Link("CONDITIONING"),
        "negative": Link("CONDITIONING"),
        "control_net": Link("CONTROL_NET"),
        "image": Link("IMAGE"),
        "strength": _strength(),
        "start_percent": fraction(0.0, step=0.001,
                                  tooltip="Where in the schedule the control starts (0 = first step)."),
        "end_percent": fraction(1.0, step=0.001, tooltip="Where it ends (1 = last step)."),
        "vae": Link("VAE", optional=True, tooltip="Not needed by SD 1.x/SDXL ControlNets."),
    }
    outputs = (Output("CONDITIONING", name="positive"), Output("CONDITIONING", name="negative"))

    def run(self, positive, negative, control_net, image, strength, start_percent=0.0,
            end_percent=1.0, vae=None):
        if strength == 0:
            return (positive, negative)
        made: dict = {}  # one new control per previous one, shared by both sides
        return (apply_control(positive, control_net, image, strength, start_percent,
                              end_percent, made),
                apply_control(negative, control_net, image, strength, start_percent,
                              end_percent, made))


NODES = [ControlNetLoader, DiffControlNetLoader, T2IAdapterLoader, ControlNetApply,
         ControlNetApplyAdvanced]
