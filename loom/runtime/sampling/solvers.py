"""Sigma-space solvers (k-diffusion style): each runs a whole schedule on a denoiser.

A solver is ``fn(run, x, sigmas) -> x``: ``x`` is the noisy sample at ``sigmas[0]`` in the
``x0 + sigma * eps`` form, ``sigmas`` a float32 CPU tensor of levels (highest first). It calls
``run.denoise(x, sigma, step)`` for the model's clean-image estimate ``D(x, sigma)`` (guided),
``run.uncond`` for the unguided estimate of that same call (CFG++ solvers), ``run.noise(x)``
for fresh unit Gaussian noise from the run's seeded generator, and ``run.done(step, x, D)``
after each step (progress, previews, inpaint masks; it may return a changed ``x``).

The update rules, written from the papers (``t = -log sigma``, ``h = t_next - t``):

* ``euler`` — Karras et al. 2022 (EDM), Alg. 1 with no churn: ``x += (sigma_next - sigma) * d``,
  ``d = (x - D) / sigma``. ``ddim`` is the same update (DDIM is Euler's method in this form).
* ``heun``, ``dpm_2`` — EDM's second-order step (end point / log-midpoint, Euler to 0).
* ``*_ancestral`` — the deterministic step to ``sigma_down`` then fresh noise of ``sigma_up``,
  ``sigma_up = min(sigma_next, eta * sqrt(sigma_next^2 (sigma^2 - sigma_next^2) / sigma^2))``,
  ``sigma_down = sqrt(sigma_next^2 - sigma_up^2)``.
* ``dpmpp_2m`` / ``dpmpp_2s_ancestral`` — DPM-Solver++ (Lu et al. 2022), multistep order 2 and
  single-step order 2 (midpoint ``r = 1/2``), data prediction.
* ``dpmpp_sde`` — DPM-Solver++(2S) with SDE noise (Lu et al. 2022; k-diffusion's form): an
  ancestral step to the log-midpoint, a second estimate there, then the ancestral step with the
  mixed estimate; the noise of both parts comes from one seeded Brownian path (torchsde, via
  diffusers' ``BrownianTreeNoiseSampler``), as diffusers' ``DPMSolverSDEScheduler`` draws it.
* ``res_multistep`` — the two-step exponential integrator of RES (Zhang et al. 2023): ``D``
  interpolated linearly in ``t`` through this and the previous estimate, integrated exactly:
  ``x_next = e^-h x + h (phi1 - phi2 / c) D + h (phi2 / c) D_prev`` with ``phi1 = (1 - e^-h) / h``,
  ``phi2 = (e^-h - 1 + h) / h^2``, ``c = -h_prev / h``.
* ``er_sde`` — ER-SDE-Solver-3 (Cui et al. 2023), VE form with the paper's noise scale
  ``phi(s) = s (e^(s^0.3) + 10)``: ``x_next = r x + (1 - r) D`` (``r = phi(s_next) / phi(s)``) plus
  first/second-derivative terms (divided differences of ``D``) with their exact weights, plus
  ``sqrt(s_next^2 - s^2 r^2)`` of fresh noise. The weights' integrals use Gauss-Legendre
  quadrature.
* ``dpmpp_2m_sde`` — SDE-DPM-Solver++(2M) (Lu et al. 2022), midpoint form (``heun``: the
  linear term integrated exactly), ``eta = 1``:
  ``x_next = (s_next / s) e^-h x + (1 - e^-2h) D + (1 - e^-2h) / (2 r) (D - D_prev)
  + s_next sqrt(1 - e^-2h) z``; Gaussian noise from the run's generator (as diffusers draws
  it), not ComfyUI's Brownian tree.
* ``lms`` — linear multistep on ``d`` up to order 4, weights from the real step sizes.
* ``ipndm`` — improved PNDM (Zhang & Chen 2022, DEIS): Adams-Bashforth on ``d`` of orders
  1, 2, 3, 4 (warming up), with the fixed-step coefficients.
* ``ddpm`` — ancestral DDPM (Ho et al. 2020): the posterior given ``x0 = D``, sampled.
* ``gradient_estimation`` — Permenter & Yvinec 2024: Euler along ``2 d - d_prev``.
* ``lcm`` — latent consistency sampling: ``x_next = D + sigma_next * noise``.
* ``*_cfg_pp`` — CFG++ (Chung et al. 2024). Each update above has the form
  ``x_next = D^ + (s_next / s) (x - D^)`` (with ``s_next`` = ``sigma_down`` for ancestral ones,
  ``D^`` the solver's clean estimate); CFG++ takes ``D^`` from the guided estimates but re-noises
  with the unconditional ones: ``x_next = D^_guided + (s_next / s) (x - D^_uncond)``.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from itertools import pairwise
from typing import Any

import numpy as np
import torch


class SolverRun:
    """The interface a solver sees (see the module docstring)."""

    uncond: torch.Tensor | None = None

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor, step: int) -> torch.Tensor:
        raise NotImplementedError

    def noise(self, like: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def brownian(self, like: torch.Tensor, sigma_min: float,
                 sigma_max: float) -> Callable[[Any, Any], torch.Tensor]:
        """``f(sigma, sigma_next)``: the unit-variance increment of one seeded Brownian path
        between two levels (noise that stays consistent however a step is subdivided)."""
        raise NotImplementedError

    def done(self, step: int, x: torch.Tensor, denoised: torch.Tensor) -> torch.Tensor:
        return x


@dataclass(frozen=True)
class Solver:
    """A ``SAMPLER`` value: a solver and the options it runs with (SamplerEulerAncestral & co.
    set them; KSamplerSelect uses the defaults)."""

    name: str
    fn: Callable
    stochastic: bool = False  # draws fresh noise during the steps
    options: tuple[tuple[str, Any], ...] = ()
    requires: tuple[str, ...] = ()  # importable modules it needs

    def with_options(self, **options: Any) -> Solver:
        return replace(self, options=tuple(sorted({**dict(self.options), **options}.items())))

    def __call__(self, run: SolverRun, x: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
        return self.fn(run, x, sigmas, **dict(self.options))


def _ancestral(sigma, sigma_next, eta: float = 1.0):
    """``(sigma_down, sigma_up)`` of an ancestral step."""
    if eta == 0 or float(sigma_next) == 0.0:
        return sigma_next, sigma_next * 0
    up = (sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2) ** 0.5
    up = torch.minimum(up * eta, sigma_next)
    return (sigma_next**2 - up**2) ** 0.5, up


def _renoise(x, den, den_noise, sigma, sigma_next):
    """``den + (sigma_next / sigma) * (x - den_noise)``: the first-order step to
    ``sigma_next``, re-noised with ``den_noise`` (``den`` itself, or the unconditional estimate
    for CFG++)."""
    return den + (x - den_noise) * (sigma_next / sigma)


def _uncond(run, den):
    return den if run.uncond is None else run.uncond


def euler(run, x, sigmas):
    for i, (s, s_next) in enumerate(pairwise(sigmas)):
        den = run.denoise(x, s, i)
        d = (x - den) / s
        x = run.done(i, x + d * (s_next - s), den)
    return x


def euler_cfg_pp(run, x, sigmas):
    for i, (s, s_next) in enumerate(pairwise(sigmas)):
        den = run.denoise(x, s, i)
        x = run.done(i, _renoise(x, den, _uncond(run, den), s, s_next), den)
    return x


def _ancestral_noise(run, x, s_next, up, s_noise):
    """An ancestral step's fresh noise (none on the last step, down to sigma 0)."""
    if float(s_next) > 0 and s_noise:
        return x + run.noise(x) * (up * s_noise)
    return x


def euler_ancestral(run, x, sigmas, eta: float = 1.0, s_noise: float = 1.0,
                    cfg_pp: bool = False):
    for i, (s, s_next) in enumerate(pairwise(sigmas)):
        den = run.denoise(x, s, i)
        down, up = _ancestral(s, s_next, eta)
        if cfg_pp:
            x = _renoise(x, den, _uncond(run, den), s, down)
        else:
            x = x + (x - den) / s * (down - s)
        x = run.done(i, _ancestral_noise(run, x, s_next, up, s_noise), den)
    return x


def euler_ancestral_cfg_pp(run, x, sigmas, eta: float = 1.0, s_noise: float = 1.0):
    return euler_ancestral(run, x, sigmas, eta, s_noise, cfg_pp=True)


def heun(run, x, sigmas):
    for i, (s, s_next) in enumerate(pairwise(sigmas)):
        den = run.denoise(x, s, i)
        d = (x - den) / s
        dt = s_next - s
        if float(s_next) == 0:
            x = x + d * dt
        else:
            x2 = x + d * dt
            d2 = (x2 - run.denoise(x2, s_next, i)) / s_next
            x = x + (d + d2) / 2 * dt
        x = run.done(i, x, den)
    return x


def _dpm2_step(run, x, den, s, target, i):
    d = (x - den) / s
    if float(target) == 0:
        return x + d * (target - s)
    mid = s.log().lerp(target.log(), 0.5).exp()
    x2 = x + d * (mid - s)
    d2 = (x2 - run.denoise(x2, mid, i)) / mid
    return x + d2 * (target - s)


def dpm_2(run, x, sigmas):
    for i in range(len(sigmas) - 1):
        den = run.denoise(x, sigmas[i], i)
        x = run.done(i, _dpm2_step(run, x, den, sigmas[i], sigmas[i + 1], i), den)
    return x


def dpm_2_ancestral(run, x, sigmas, eta: float = 1.0):
    for i, (s, s_next) in enumerate(pairwise(sigmas)):
        den = run.denoise(x, s, i)
        down, up = _ancestral(s, s_next, eta)
        x = _dpm2_step(run, x, den, s, down, i)
        if float(s_next) > 0:
            x = x + run.noise(x) * up
        x = run.done(i, x, den)
    return x


def dpmpp_2m(run, x, sigmas, cfg_pp: bool = False):
    prev = prev_u = None
    h_prev = None
    for i, (s, s_next) in enumerate(pairwise(sigmas)):
        den = run.denoise(x, s, i)
        den_u = _uncond(run, den) if cfg_pp else den
        est, est_u = den, den_u
        if float(s_next) > 0:
            h = s.log() - s_next.log()
            if prev is not None:
                k = h / (2 * h_prev)  # 1 / (2 r), r = h_prev / h
                est, est_u = den + k * (den - prev), den_u + k * (den_u - prev_u)
            h_prev = h
        x = run.done(i, _renoise(x, est, est_u, s, s_next), den)
        prev, prev_u = den, den_u
    return x


def dpmpp_2m_cfg_pp(run, x, sigmas):
    return dpmpp_2m(run, x, sigmas, cfg_pp=True)


def dpmpp_2m_sde(run, x, sigmas, eta: float = 1.0, s_noise: float = 1.0,
                 solver_type: str = "midpoint"):
    prev = h_prev = None
    for i, (s, s_next) in enumerate(pairwise(sigmas)):
        den = run.denoise(x, s, i)
        if float(s_next) == 0:
            x = run.done(i, den, den)
            prev = den
            continue
        h = s.log() - s_next.log()
        eh = eta * h
        # the SDE's data term weight, 1 - e^-(h + eta h)
        w = -torch.expm1(-h - eh)
        x = (s_next / s) * torch.exp(-eh) * x + w * den
        if prev is not None:
            d1 = (h / h_prev) * (den - prev)  # h * dD/dlambda, by a backward difference
            if solver_type == "heun":
                # the linear term integrated exactly: 1 - (1 - e^-H) / H, H = h + eta h
                x = x + (1 - w / (h + eh)) * d1
            else:
                x = x + 0.5 * w * d1  # evaluated at the midpoint
        if eta and s_noise:
            x = x + run.noise(x) * (s_next * (-torch.expm1(-2 * eh)) ** 0.5 * s_noise)
        x = run.done(i, x, den)
        prev, h_prev = den, h
    return x


def _lms_weights(sigmas, i: int, order: int) -> list[float]:
    """Weights of d_i, d_(i-1), … : the integrals over [sigma_i, sigma_(i+1)] of the Lagrange
    basis polynomials on sigma_i, sigma_(i-1), … (exact: polynomials)."""
    nodes = [float(sigmas[i - j]) for j in range(order)]
    a, b = float(sigmas[i]), float(sigmas[i + 1])
    weights = []
    for j in range(order):
        poly = np.poly1d([1.0])
        for m in range(order):
            if m != j:
                poly *= np.poly1d([1.0, -nodes[m]]) / (nodes[j] - nodes[m])
        integral = poly.integ()
        weights.append(float(integral(b) - integral(a)))
    return weights


def lms(run, x, sigmas, max_order: int = 4):
    """Linear multistep (Adams-Bashforth with the real step sizes) on ``d``, up to order 4."""
    history: list[torch.Tensor] = []
    for i in range(len(sigmas) - 1):
        s = sigmas[i]
        den = run.denoise(x, s, i)
        history.insert(0, (x - den) / s)
        del history[max_order:]
        weights = _lms_weights(sigmas, i, len(history))
        x = run.done(i, x + sum(w * d for w, d in zip(weights, history, strict=True)), den)
    return x


def dpmpp_2s_ancestral(run, x, sigmas, eta: float = 1.0, s_noise: float = 1.0,
                       cfg_pp: bool = False):
    for i, (s, s_next) in enumerate(pairwise(sigmas)):
        den = run.denoise(x, s, i)
        den_u = _uncond(run, den) if cfg_pp else den
        down, up = _ancestral(s, s_next, eta)
        if float(down) == 0:
            x = _renoise(x, den, den_u, s, down)
        else:
            mid = (s * down) ** 0.5  # t + h / 2
            x2 = _renoise(x, den, den_u, s, mid)
            den2 = run.denoise(x2, mid, i)
            den2_u = _uncond(run, den2) if cfg_pp else den2
            x = _renoise(x, den2, den2_u, s, down)
        x = run.done(i, _ancestral_noise(run, x, s_next, up, s_noise), den)
    return x


def dpmpp_2s_ancestral_cfg_pp(run, x, sigmas, eta: float = 1.0, s_noise: float = 1.0):
    return dpmpp_2s_ancestral(run, x, sigmas, eta, s_noise, cfg_pp=True)


def dpmpp_sde(run, x, sigmas, eta: float = 1.0, s_noise: float = 1.0, r: float = 0.5):
    positive = sigmas[sigmas > 0]
    if len(positive) == 0:
        return x
    brownian = run.brownian(x, float(positive.min()), float(sigmas.max()))
    fac = 1 / (2 * r)
    for i, (s, s_next) in enumerate(pairwise(sigmas)):
        den = run.denoise(x, s, i)
        if float(s_next) == 0:
            x = run.done(i, x + (x - den) / s * (s_next - s), den)
            continue
        mid = (s.log().lerp(s_next.log(), r)).exp()  # t + r h
        down, up = _ancestral(s, mid, eta)
        x2 = _renoise(x, den, den, s, down)
        if s_noise:
            x2 = x2 + brownian(s, mid) * (s_noise * up)
        den2 = run.denoise(x2, mid, i)
        down, up = _ancestral(s, s_next, eta)
        x = _renoise(x, (1 - fac) * den + fac * den2, (1 - fac) * den + fac * den2, s, down)
        if s_noise:
            x = x + brownian(s, s_next) * (s_noise * up)
        x = run.done(i, x, den)
    return x


def _phi1(h):
    return -torch.expm1(-h) / h


def _phi2(h):
    return (torch.expm1(-h) + h) / h**2


def res_multistep(run, x, sigmas, cfg_pp: bool = False):
    prev = prev_u = None
    for i, (s, s_next) in enumerate(pairwise(sigmas)):
        den = run.denoise(x, s, i)
        den_u = _uncond(run, den) if cfg_pp else den
        est, est_u = den, den_u
        if prev is not None and float(s_next) > 0:
            h = s.log() - s_next.log()
            c = -(sigmas[i - 1].log() - s.log()) / h
            p1, p2 = _phi1(h), _phi2(h)
            # x_next = e^-h x + h (b1 D + b2 D_prev) = est + e^-h (x - est), est = (b1 D + b2 D_prev) / phi1
            b1, b2 = (p1 - p2 / c) / p1, (p2 / c) / p1
            est, est_u = b1 * den + b2 * prev, b1 * den_u + b2 * prev_u
        x = run.done(i, _renoise(x, est, est_u, s, s_next), den)
        prev, prev_u = den, den_u
    return x


def res_multistep_cfg_pp(run, x, sigmas):
    return res_multistep(run, x, sigmas, cfg_pp=True)


def er_sde_noise_scale(sigma):
    """The ER-SDE paper's noise scale function for solver 3: ``s (e^(s^0.3) + 10)``."""
    return sigma * (np.exp(sigma**0.3) + 10.0)


_GAUSS_LEGENDRE = np.polynomial.legendre.leggauss(32)


def er_sde_weights(sigma: float, sigma_next: float) -> tuple[float, float]:
    """``(int_{s_next}^{s} dσ / phi(σ), int_{s_next}^{s} (σ - s) / phi(σ) dσ)``, by
    Gauss-Legendre quadrature in log sigma (where the integrands are smooth)."""
    nodes, w = _GAUSS_LEGENDRE
    a, b = math.log(sigma_next), math.log(sigma)
    u = (b - a) / 2 * nodes + (a + b) / 2
    sig = np.exp(u)
    base = sig / er_sde_noise_scale(sig) * (b - a) / 2  # dσ = σ du
    return float(np.sum(w * base)), float(np.sum(w * base * (sig - sigma)))


def er_sde(run, x, sigmas, max_stage: int = 3, s_noise: float = 1.0):
    prev = d1_prev = None
    for i, (s, s_next) in enumerate(pairwise(sigmas)):
        den = run.denoise(x, s, i)
        fs, fn = float(s), float(s_next)
        if fn == 0:
            x = run.done(i, den, den)
            prev = den
            continue
        r = er_sde_noise_scale(fn) / er_sde_noise_scale(fs)
        x = r * x + (1 - r) * den
        if max_stage >= 2 and prev is not None:
            i0, i1 = er_sde_weights(fs, fn)
            phi_next = er_sde_noise_scale(fn)
            d1 = (den - prev) / (fs - float(sigmas[i - 1]))
            x = x + ((fn - fs) + phi_next * i0) * d1
            if max_stage >= 3 and d1_prev is not None:
                d2 = (d1 - d1_prev) / ((fs - float(sigmas[i - 2])) / 2)
                x = x + ((fn - fs) ** 2 / 2 + phi_next * i1) * d2
            d1_prev = d1
        if s_noise > 0:
            x = x + run.noise(x) * (s_noise * math.sqrt(max(fn**2 - fs**2 * r**2, 0.0)))
        x = run.done(i, x, den)
        prev = den
    return x


# Adams-Bashforth coefficients (newest derivative first) by order.
_ADAMS_BASHFORTH = {1: (1.0,), 2: (3 / 2, -1 / 2), 3: (23 / 12, -16 / 12, 5 / 12),
                    4: (55 / 24, -59 / 24, 37 / 24, -9 / 24)}


def ipndm(run, x, sigmas, max_order: int = 4):
    history: list[torch.Tensor] = []
    for i, (s, s_next) in enumerate(pairwise(sigmas)):
        den = run.denoise(x, s, i)
        history.insert(0, (x - den) / s)
        del history[max_order:]
        coeffs = _ADAMS_BASHFORTH[len(history)]
        slope = sum(c * d for c, d in zip(coeffs, history, strict=False))
        x = run.done(i, x + slope * (s_next - s), den)
    return x


def ddpm(run, x, sigmas):
    """Ancestral DDPM (Ho et al. 2020, eq. 6-7): the posterior q(x_prev | x, x0 = D) of a
    variance-preserving model, sampled, written for levels sigma (alpha_bar = 1 / (1 + s^2))."""
    for i, (s, s_next) in enumerate(pairwise(sigmas)):
        den = run.denoise(x, s, i)
        a, a_prev = 1 / (1 + s**2), 1 / (1 + s_next**2)
        alpha = a / a_prev
        beta = 1 - alpha
        mean = (a_prev**0.5 * beta / (1 - a)) * den + (alpha**0.5 * (1 - a_prev) / (1 - a)) * (
            x * a**0.5)
        if float(s_next) > 0:
            mean = mean + run.noise(x) * ((1 - a_prev) / (1 - a) * beta) ** 0.5
        x = run.done(i, mean / a_prev**0.5, den)
    return x


def gradient_estimation(run, x, sigmas, gamma: float = 2.0):
    """Permenter & Yvinec 2024: Euler with the direction extrapolated from the last two,
    ``gamma * d + (1 - gamma) * d_prev`` (the first step is plain Euler)."""
    d_prev = None
    for i, (s, s_next) in enumerate(pairwise(sigmas)):
        den = run.denoise(x, s, i)
        d = (x - den) / s
        step = d if d_prev is None else gamma * d + (1 - gamma) * d_prev
        x = run.done(i, x + step * (s_next - s), den)
        d_prev = d
    return x


def lcm(run, x, sigmas):
    for i in range(len(sigmas) - 1):
        den = run.denoise(x, sigmas[i], i)
        x = den
        if float(sigmas[i + 1]) > 0:
            x = x + run.noise(x) * sigmas[i + 1]
        x = run.done(i, x, den)
    return x


_ALL_SOLVERS = (
    Solver("euler", euler),
    Solver("euler_cfg_pp", euler_cfg_pp),
    Solver("euler_ancestral", euler_ancestral, stochastic=True),
    Solver("euler_ancestral_cfg_pp", euler_ancestral_cfg_pp, stochastic=True),
    Solver("heun", heun),
    Solver("dpm_2", dpm_2),
    Solver("dpm_2_ancestral", dpm_2_ancestral, stochastic=True),
    Solver("dpmpp_2s_ancestral", dpmpp_2s_ancestral, stochastic=True),
    Solver("dpmpp_2s_ancestral_cfg_pp", dpmpp_2s_ancestral_cfg_pp, stochastic=True),
    Solver("dpmpp_sde", dpmpp_sde, stochastic=True, requires=("torchsde",)),
    Solver("dpmpp_sde_gpu", dpmpp_sde, stochastic=True, requires=("torchsde",)),
    Solver("dpmpp_2m", dpmpp_2m),
    Solver("dpmpp_2m_cfg_pp", dpmpp_2m_cfg_pp),
    Solver("dpmpp_2m_sde", dpmpp_2m_sde, stochastic=True),
    # ComfyUI's *_gpu variants differ only in where their noise is drawn; ours is the CPU's
    Solver("dpmpp_2m_sde_gpu", dpmpp_2m_sde, stochastic=True),
    Solver("lms", lms),
    Solver("ddpm", ddpm, stochastic=True),
    Solver("lcm", lcm, stochastic=True),
    Solver("ipndm", ipndm),
    Solver("res_multistep", res_multistep),
    Solver("res_multistep_cfg_pp", res_multistep_cfg_pp),
    Solver("gradient_estimation", gradient_estimation),
    Solver("er_sde", er_sde, stochastic=True),
    Solver("ddim", euler),
)
# The solvers this installation can run.
SOLVERS: dict[str, Solver] = {s.name: s for s in _ALL_SOLVERS
                              if all(importlib.util.find_spec(m) for m in s.requires)}
