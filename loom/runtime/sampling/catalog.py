"""Which sampler and scheduler names Loom offers, and which loop runs a pair.

Two loops share the model evaluation (:mod:`.prediction`):

* the **diffusers loop** (:mod:`.loop`) runs a diffusers scheduler — used by KSampler whenever
  the sampler maps onto one (:mod:`.schedulers`) that supports the schedule, so those results
  keep exact parity with diffusers pipelines;
* the **sigma loop** (:mod:`.sigma_loop`) runs Loom's own solvers (:mod:`.solvers`) on explicit
  noise levels — used by the custom-sampling nodes, and by KSampler for solvers and schedules
  diffusers lacks (``res_multistep``, ``kl_optimal``, ``euler_ancestral`` + ``karras``, …).
"""

from __future__ import annotations

from loom.runtime.sampling import schedulers as diffusers_side
from loom.runtime.sampling.sigmas import CLOSED_FORM_SCHEDULES
from loom.runtime.sampling.solvers import SOLVERS

# ComfyUI's menu order (names Loom does not offer are skipped).
_COMFY_ORDER = (
    "euler", "euler_cfg_pp", "euler_ancestral", "euler_ancestral_cfg_pp", "heun", "dpm_2",
    "dpm_2_ancestral", "lms", "dpmpp_2s_ancestral", "dpmpp_2s_ancestral_cfg_pp", "dpmpp_sde",
    "dpmpp_sde_gpu", "dpmpp_2m", "dpmpp_2m_cfg_pp", "dpmpp_2m_sde", "dpmpp_2m_sde_gpu",
    "dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "ddpm", "lcm", "ipndm", "deis", "res_multistep",
    "res_multistep_cfg_pp", "gradient_estimation", "er_sde", "ddim", "uni_pc", "uni_pc_bh2",
)

SAMPLER_NAMES: list[str] = [n for n in _COMFY_ORDER
                            if n in diffusers_side.sampler_specs() or n in SOLVERS]
SCHEDULER_NAMES: list[str] = [*diffusers_side.SCHEDULER_NAMES, *CLOSED_FORM_SCHEDULES]
# What SamplerCustom can run (KSamplerSelect's menu): Loom's own solvers.
SOLVER_NAMES: list[str] = [n for n in SAMPLER_NAMES if n in SOLVERS]


def uses_diffusers(sampler_name: str, scheduler_name: str) -> bool:
    """KSampler runs this pair on a diffusers scheduler (else on the sigma loop)."""
    return (sampler_name in diffusers_side.sampler_specs()
            and scheduler_name in diffusers_side.SCHEDULER_NAMES
            and diffusers_side.unsupported_reason(sampler_name, scheduler_name) is None)


def unsupported_reason(sampler_name: str, scheduler_name: str) -> str | None:
    """Why KSampler cannot run a (sampler, scheduler) pair, or None when it can."""
    if sampler_name not in SAMPLER_NAMES:
        return f"sampler {sampler_name!r} is not available (choices: {', '.join(SAMPLER_NAMES)})"
    if scheduler_name not in SCHEDULER_NAMES:
        return (f"scheduler {scheduler_name!r} is not available (choices: "
                f"{', '.join(SCHEDULER_NAMES)})")
    if sampler_name in SOLVERS or uses_diffusers(sampler_name, scheduler_name):
        return None
    ok = supported_schedulers(sampler_name)
    return (f"sampler {sampler_name!r} does not support the {scheduler_name!r} scheduler; "
            f"it works with: {', '.join(ok)}")


def supported_schedulers(sampler_name: str) -> list[str]:
    if sampler_name in SOLVERS:
        return list(SCHEDULER_NAMES)
    return [n for n in SCHEDULER_NAMES if uses_diffusers(sampler_name, n)]
