"""Loom's sigma-space solvers and closed-form schedules against references computed here.

The model is replaced by an analytic denoiser: data that is Gaussian, ``x0 ~ N(mu, s^2)`` per
element, has the exact clean estimate ``D(x, sigma) = (s^2 x + sigma^2 mu) / (s^2 + sigma^2)``
and an exact probability-flow ODE solution, ``x(sigma) = mu + (x(sigma_0) - mu) *
sqrt(s^2 + sigma^2) / sqrt(s^2 + sigma_0^2)``. Deterministic solvers must converge to it at
their order; each new solver is also checked step by step against its paper's update written
out here in a different form (integrals by numerical quadrature instead of closed forms,
Adams-Bashforth weights derived from the interpolating polynomial, …) with the same noise.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy import integrate

from loom.runtime.sampling.sigmas import kl_optimal_sigmas, linear_quadratic_sigmas
from loom.runtime.sampling.solvers import SOLVERS, SolverRun

S = 0.5  # data standard deviation
MU_C = torch.tensor([0.3, -0.7, 1.1, 0.0], dtype=torch.float64)  # "conditional" data mean
MU_U = torch.tensor([-0.2, 0.4, 0.5, 0.9], dtype=torch.float64)  # "unconditional" data mean


def gaussian_denoiser(x, sigma, mu):
    return (S**2 * x + sigma**2 * mu) / (S**2 + sigma**2)


class ToyRun(SolverRun):
    """Guided analytic denoiser; noise from a seeded generator (float64)."""

    def __init__(self, cfg=1.0, seed=0, mu_u=MU_U):
        self.cfg, self.calls, self.mu_u = cfg, [], mu_u
        self.gen, self.seed = torch.Generator().manual_seed(seed), seed

    def denoise(self, x, sigma, step):
        sigma = float(sigma)
        self.calls.append(sigma)
        cond, uncond = gaussian_denoiser(x, sigma, MU_C), gaussian_denoiser(x, sigma, self.mu_u)
        self.uncond = uncond
        return uncond + self.cfg * (cond - uncond)

    def noise(self, like):
        return torch.randn(like.shape, generator=self.gen, dtype=torch.float64)

    def brownian(self, like, sigma_min, sigma_max):
        from diffusers.schedulers.scheduling_dpmsolver_sde import BrownianTreeNoiseSampler

        return BrownianTreeNoiseSampler(like, sigma_min, sigma_max, self.seed)


def start(sigma0, seed=1):
    g = torch.Generator().manual_seed(seed)
    return MU_C + torch.randn(4, generator=g, dtype=torch.float64) * math.sqrt(S**2 + sigma0**2)


def exact(x_start, sigma0, sigma_end, mu=MU_C):
    return mu + (x_start - mu) * math.sqrt(S**2 + sigma_end**2) / math.sqrt(S**2 + sigma0**2)


def levels(n, hi=10.0, lo=0.05):
    """Exponentially spaced, ending above 0 (so the ODE's end point is not trivial)."""
    return torch.exp(torch.linspace(math.log(hi), math.log(lo), n + 1, dtype=torch.float64))


def solve(name, sigmas, run=None, x=None):
    run = run or ToyRun()
    x = start(float(sigmas[0])) if x is None else x
    return SOLVERS[name].fn(run, x.clone(), sigmas)


# -- convergence to the exact ODE solution ----------------------------------------------------

@pytest.mark.parametrize("name,order", [
    ("euler", 1), ("heun", 2), ("dpm_2", 2), ("dpmpp_2m", 2), ("res_multistep", 2),
    ("ipndm", 2), ("ddim", 1), ("lms", 3), ("gradient_estimation", 1),
])
def test_deterministic_solvers_converge_at_their_order(name, order):
    errors = []
    for n in (8, 16, 32):
        sigmas = levels(n)
        x = start(float(sigmas[0]))
        got = SOLVERS[name].fn(ToyRun(), x.clone(), sigmas)
        errors.append((got - exact(x, float(sigmas[0]), float(sigmas[-1]))).abs().max().item())
    rate = math.log2(errors[1] / errors[2])
    assert rate > order - 0.35, (name, errors, rate)


def test_cfg_pp_solvers_with_equal_predictions_are_their_plain_solvers():
    """When the unconditional prediction equals the guided one, CFG++ is the plain solver."""
    sigmas = levels(6)
    for name in ("euler", "euler_ancestral", "dpmpp_2m", "dpmpp_2s_ancestral", "res_multistep"):
        plain = solve(name, sigmas, ToyRun(cfg=3.0, seed=3, mu_u=MU_C))
        pp = solve(name + "_cfg_pp", sigmas, ToyRun(cfg=3.0, seed=3, mu_u=MU_C))
        assert torch.allclose(plain, pp, rtol=1e-12, atol=1e-12), name


# -- step-by-step references ------------------------------------------------------------------

def t_of(sigma):
    return -math.log(sigma)


def test_res_multistep_matches_the_exponential_integrator():
    """x(t_next) = e^-h x + int_0^h e^-(h - u) P(u) du, P the line through the last two clean
    estimates in t (the RES two-step method), integrated numerically."""
    sigmas = levels(5)
    x = start(float(sigmas[0]))
    got = solve("res_multistep", sigmas, x=x)
    ref, prev = x.clone(), None
    for i in range(len(sigmas) - 1):
        s, s_next = float(sigmas[i]), float(sigmas[i + 1])
        den = gaussian_denoiser(ref, s, MU_C)
        h = t_of(s_next) - t_of(s)
        if prev is None:
            ref = math.exp(-h) * ref + (1 - math.exp(-h)) * den
        else:
            u_prev = t_of(float(sigmas[i - 1])) - t_of(s)  # negative
            new = ref.clone()
            for k in range(len(ref)):
                d0, d1 = den[k].item(), prev[k].item()

                def integrand(u, d0=d0, d1=d1, u_prev=u_prev, h=h):
                    return math.exp(-(h - u)) * (d0 + (d1 - d0) * u / u_prev)

                integral = integrate.quad(integrand, 0.0, h, epsabs=1e-13, epsrel=1e-13)[0]
                new[k] = math.exp(-h) * ref[k].item() + integral
            ref = new
        prev = den
    assert torch.allclose(got, ref, rtol=1e-9, atol=1e-10)


def _er_phi(s):
    return s * (math.exp(s**0.3) + 10.0)


def _er_dphi(s):
    return math.exp(s**0.3) + 10.0 + s * math.exp(s**0.3) * 0.3 * s ** (-0.7)


def test_er_sde_matches_the_paper_solution_with_the_same_noise():
    """ER-SDE (Cui et al. 2023), VE: x_t = phi_t / phi_s x_s + phi_t int_{s_t}^{s_s}
    phi'(s) / phi(s)^2 P(s) ds + sqrt(s_t^2 - s_s^2 phi_t^2 / phi_s^2) z, with P the paper's
    Taylor expansion of the clean estimate at s_s (derivatives by backward differences of the
    last three estimates), integrated numerically (not by parts)."""
    sigmas = levels(6)
    x = start(float(sigmas[0]))
    got = solve("er_sde", sigmas, ToyRun(seed=7), x=x)
    gen = torch.Generator().manual_seed(7)
    ref, history = x.clone(), []
    for s, s_next in pairs(sigmas):
        den = gaussian_denoiser(ref, s, MU_C)
        history.insert(0, (s, den))
        del history[3:]
        r = _er_phi(s_next) / _er_phi(s)
        d1 = d2 = torch.zeros_like(den)
        if len(history) >= 2:
            d1 = (den - history[1][1]) / (s - history[1][0])
        if len(history) >= 3:
            d1_prev = (history[1][1] - history[2][1]) / (history[1][0] - history[2][0])
            d2 = (d1 - d1_prev) / ((s - history[2][0]) / 2)
        new = ref.clone()
        for k in range(len(ref)):
            c0, c1, c2 = den[k].item(), d1[k].item(), d2[k].item()

            def taylor(v, c0=c0, c1=c1, c2=c2, s=s):
                return c0 + (v - s) * c1 + (v - s) ** 2 / 2 * c2

            integral = integrate.quad(
                lambda v, taylor=taylor: _er_dphi(v) / _er_phi(v) ** 2 * taylor(v),
                s_next, s, epsabs=1e-13, epsrel=1e-12)[0]
            new[k] = r * ref[k].item() + _er_phi(s_next) * integral
        z = torch.randn(ref.shape, generator=gen, dtype=torch.float64)
        ref = new + z * math.sqrt(s_next**2 - s**2 * r**2)
    assert torch.allclose(got, ref, rtol=1e-7, atol=1e-8), (got - ref).abs().max()


def test_er_sde_ends_on_the_clean_estimate():
    sigmas = torch.cat([levels(4), torch.zeros(1, dtype=torch.float64)])
    run = ToyRun(seed=2)
    x = start(float(sigmas[0]))
    got = SOLVERS["er_sde"].fn(run, x.clone(), sigmas)
    # the last step lands on D(x, sigma_last): re-run the same steps but stop one early
    almost = SOLVERS["er_sde"].fn(ToyRun(seed=2), x.clone(), sigmas[:-1])
    assert torch.allclose(got, gaussian_denoiser(almost, float(sigmas[-2]), MU_C))


def _adams_bashforth(order):
    """Weights of f_n, f_{n-1}, ... for one step of size 1: the integral over [0, 1] of the
    Lagrange basis polynomials on the nodes 0, -1, -2, …"""
    nodes = [-j for j in range(order)]
    weights = []
    for j in range(order):
        others = [n for n in nodes if n != nodes[j]]
        poly = np.poly1d([1.0])
        for n in others:
            poly *= np.poly1d([1.0, -n]) / (nodes[j] - n)
        integ = poly.integ()
        weights.append(integ(1.0) - integ(0.0))
    return weights


def test_ipndm_is_adams_bashforth_on_the_derivative():
    sigmas = levels(7)
    x = start(float(sigmas[0]))
    got = solve("ipndm", sigmas, x=x)
    ref, slopes = x.clone(), []
    for s, s_next in pairs(sigmas):
        slopes.insert(0, (ref - gaussian_denoiser(ref, s, MU_C)) / s)
        del slopes[4:]
        weights = _adams_bashforth(len(slopes))
        ref = ref + (s_next - s) * sum(w * d for w, d in zip(weights, slopes, strict=True))
    assert torch.allclose(got, ref, rtol=1e-12, atol=1e-12)


def pairs(sigmas):
    """Each step's (sigma, next sigma), as floats."""
    return [(float(a), float(b)) for a, b in itertools.pairwise(sigmas)]


def ancestral_reference(x, sigmas, step):
    """A reference ancestral solver on the toy denoiser: ``step(ref, den, s, s_next)`` each step,
    and on the last step, to sigma 0, the clean estimate (as the ancestral solvers end)."""
    ref = x.clone()
    for s, s_next in pairs(sigmas):
        den = gaussian_denoiser(ref, s, MU_C)
        ref = den if s_next == 0 else step(ref, den, s, s_next)
    return ref


def _ancestral(s, s_next, eta=1.0):
    up = min(s_next, eta * math.sqrt(s_next**2 * (s**2 - s_next**2) / s**2))
    return math.sqrt(s_next**2 - up**2), up


def test_dpmpp_2s_ancestral_matches_dpm_solver_pp_2s():
    """DPM-Solver++(2S) (Lu et al. 2022, r = 1/2) in t = -log sigma, to sigma_down, then fresh
    noise of sigma_up."""
    sigmas = torch.cat([levels(5), torch.zeros(1, dtype=torch.float64)])
    x = start(float(sigmas[0]))
    got = solve("dpmpp_2s_ancestral", sigmas, ToyRun(seed=4), x=x)
    gen = torch.Generator().manual_seed(4)

    def step(ref, den, s, s_next):
        down, up = _ancestral(s, s_next)
        t, t_next = t_of(s), t_of(down)
        h = t_next - t
        t_mid = t + h / 2
        u = math.exp(-t_mid) / math.exp(-t) * ref - math.expm1(-h / 2) * den
        den2 = gaussian_denoiser(u, math.exp(-t_mid), MU_C)
        ref = math.exp(-t_next) / math.exp(-t) * ref - math.expm1(-h) * den2
        return ref + torch.randn(ref.shape, generator=gen, dtype=torch.float64) * up

    assert torch.allclose(got, ancestral_reference(x, sigmas, step), rtol=1e-10, atol=1e-10)


def test_dpmpp_sde_matches_dpm_solver_pp_2s_with_brownian_noise():
    """DPM-Solver++(2S) with SDE noise: ancestral step to the log-midpoint (noise from the
    Brownian path between sigma and the midpoint), the clean estimate there, then the ancestral
    step from sigma to sigma_next with it (noise: the path between sigma and sigma_next)."""
    from diffusers.schedulers.scheduling_dpmsolver_sde import BrownianTreeNoiseSampler

    sigmas = torch.cat([levels(4), torch.zeros(1, dtype=torch.float64)])
    x = start(float(sigmas[0]))
    got = solve("dpmpp_sde", sigmas, ToyRun(seed=9), x=x)
    path = BrownianTreeNoiseSampler(x, float(sigmas[-2]), float(sigmas[0]), 9)

    def step(ref, den, s, s_next):
        mid = math.sqrt(s * s_next)
        down, up = _ancestral(s, mid)
        x2 = den + (down / s) * (ref - den)
        x2 = x2 + path(torch.tensor(s), torch.tensor(mid)) * up
        den2 = gaussian_denoiser(x2, mid, MU_C)
        down, up = _ancestral(s, s_next)
        ref = den2 + (down / s) * (ref - den2)
        return ref + path(torch.tensor(s), torch.tensor(s_next)) * up

    ref = ancestral_reference(x, sigmas, step)
    # (the Brownian path is resolved to torchsde's tolerance, 1e-6 in sigma)
    assert torch.allclose(got, ref, rtol=1e-6, atol=1e-6), (got - ref).abs().max()


def test_euler_cfg_pp_is_cfg_pp_ddim():
    """CFG++ (Chung et al. 2024), DDIM in the x0 + sigma * eps form: the clean estimate from
    the guided prediction, the noise from the unconditional one."""
    sigmas = levels(4)
    x = start(float(sigmas[0]))
    cfg = 0.8
    got = solve("euler_cfg_pp", sigmas, ToyRun(cfg=cfg), x=x)
    ref = x.clone()
    for s, s_next in pairs(sigmas):
        d_c, d_u = gaussian_denoiser(ref, s, MU_C), gaussian_denoiser(ref, s, MU_U)
        guided = d_u + cfg * (d_c - d_u)
        eps_u = (ref - d_u) / s
        ref = guided + s_next * eps_u
    assert torch.allclose(got, ref, rtol=1e-12, atol=1e-12)
    # and it differs from plain euler with the same guidance
    assert not torch.allclose(got, solve("euler", sigmas, ToyRun(cfg=cfg), x=x))


def test_euler_ancestral_cfg_pp_step():
    sigmas = torch.cat([levels(3), torch.zeros(1, dtype=torch.float64)])
    x = start(float(sigmas[0]))
    cfg = 1.3
    got = solve("euler_ancestral_cfg_pp", sigmas, ToyRun(cfg=cfg, seed=8), x=x)
    gen = torch.Generator().manual_seed(8)
    ref = x.clone()
    for s, s_next in pairs(sigmas):
        d_c, d_u = gaussian_denoiser(ref, s, MU_C), gaussian_denoiser(ref, s, MU_U)
        guided = d_u + cfg * (d_c - d_u)
        if s_next == 0:
            ref = guided
            continue
        down, up = _ancestral(s, s_next)
        ref = guided + down * (ref - d_u) / s
        ref = ref + torch.randn(ref.shape, generator=gen, dtype=torch.float64) * up
    assert torch.allclose(got, ref, rtol=1e-12, atol=1e-12)


def test_dpmpp_2m_cfg_pp_step():
    """DPM-Solver++(2M)'s clean estimate D~ = D + (D - D_prev) / (2 r), r = h_prev / h, then
    x_next = D~_guided + (sigma_next / sigma) (x - D~_uncond)."""
    sigmas = levels(4)
    x = start(float(sigmas[0]))
    cfg = 1.2
    got = solve("dpmpp_2m_cfg_pp", sigmas, ToyRun(cfg=cfg), x=x)
    ref, prev = x.clone(), None
    for i in range(len(sigmas) - 1):
        s, s_next = float(sigmas[i]), float(sigmas[i + 1])
        d_c, d_u = gaussian_denoiser(ref, s, MU_C), gaussian_denoiser(ref, s, MU_U)
        g = d_u + cfg * (d_c - d_u)
        est_g, est_u = g, d_u
        if prev is not None:
            r = (t_of(s) - t_of(float(sigmas[i - 1]))) / (t_of(s_next) - t_of(s))
            est_g = g + (g - prev[0]) / (2 * r)
            est_u = d_u + (d_u - prev[1]) / (2 * r)
        ref = est_g + (s_next / s) * (ref - est_u)
        prev = (g, d_u)
    assert torch.allclose(got, ref, rtol=1e-12, atol=1e-12)


def test_gradient_estimation_steps():
    sigmas = levels(5)
    x = start(float(sigmas[0]))
    got = solve("gradient_estimation", sigmas, x=x)
    ref, d_prev = x.clone(), None
    for s, s_next in pairs(sigmas):
        d = (ref - gaussian_denoiser(ref, s, MU_C)) / s
        direction = d if d_prev is None else 2 * d - d_prev
        ref, d_prev = ref + (s_next - s) * direction, d
    assert torch.allclose(got, ref, rtol=1e-12, atol=1e-12)


def test_lcm_steps():
    sigmas = torch.cat([levels(3), torch.zeros(1, dtype=torch.float64)])
    x = start(float(sigmas[0]))
    got = solve("lcm", sigmas, ToyRun(seed=5), x=x)
    gen = torch.Generator().manual_seed(5)
    ref = x.clone()
    for i in range(len(sigmas) - 1):
        ref = gaussian_denoiser(ref, float(sigmas[i]), MU_C)
        if float(sigmas[i + 1]) > 0:
            ref = ref + torch.randn(4, generator=gen, dtype=torch.float64) * float(sigmas[i + 1])
    assert torch.allclose(got, ref, rtol=1e-12, atol=1e-12)


def test_stochastic_solvers_are_reproducible_per_seed():
    sigmas = torch.cat([levels(4), torch.zeros(1, dtype=torch.float64)])
    for name, solver in SOLVERS.items():
        a = solve(name, sigmas, ToyRun(cfg=1.5, seed=1))
        b = solve(name, sigmas, ToyRun(cfg=1.5, seed=1))
        assert torch.equal(a, b), name
        if solver.stochastic and name != "lcm":
            c = solve(name, sigmas, ToyRun(cfg=1.5, seed=2))
            assert not torch.equal(a, c), name


# -- closed-form schedules -------------------------------------------------------------------

def test_kl_optimal_schedule():
    lo, hi, n = 0.03, 14.6, 5
    got = kl_optimal_sigmas(n, lo, hi)
    ref = [math.tan((1 - i / (n - 1)) * math.atan(hi) + i / (n - 1) * math.atan(lo))
           for i in range(n)] + [0.0]
    assert np.allclose(got.numpy(), ref, rtol=1e-6)
    assert kl_optimal_sigmas(1, lo, hi).tolist() == pytest.approx([hi, 0.0])


@pytest.mark.parametrize("steps", [2, 5, 10, 25])
def test_linear_quadratic_schedule(steps):
    """Noise fraction 1 - sigma / sigma_max: linear to 0.025 over the first half, then the
    quadratic that continues it smoothly and reaches 1 (sigma 0) at the last step. The
    quadratic is solved for here from those three conditions."""
    hi, tau = 14.6, 0.025
    got = linear_quadratic_sigmas(steps, hi)
    assert len(got) == steps + 1
    lin = steps // 2
    a, b, c = np.linalg.solve(np.array([[lin**2, lin, 1.0], [2 * lin, 1.0, 0.0],
                                        [steps**2, steps, 1.0]]),
                              np.array([tau, tau / lin, 1.0]))
    fraction = [tau * i / lin if i < lin else a * i * i + b * i + c for i in range(steps + 1)]
    assert np.allclose(got.numpy(), [(1 - f) * hi for f in fraction], rtol=1e-5, atol=1e-5)
    assert got[0].item() == pytest.approx(hi) and got[-1].item() == 0.0
    assert (got[1:] <= got[:-1]).all()
    assert linear_quadratic_sigmas(1, hi).tolist() == pytest.approx([hi, 0.0])


# -- solver options (SamplerEulerAncestral & co.) -----------------------------------------------

def test_options_at_their_defaults_change_nothing():
    sigmas = torch.cat([levels(4), torch.zeros(1, dtype=torch.float64)])
    for name, options in [("euler_ancestral", dict(eta=1.0, s_noise=1.0)),
                          ("dpmpp_2s_ancestral", dict(eta=1.0, s_noise=1.0)),
                          ("dpmpp_2m_sde", dict(eta=1.0, s_noise=1.0, solver_type="midpoint")),
                          ("lms", dict(max_order=4))]:
        plain = SOLVERS[name](ToyRun(seed=3), start(float(sigmas[0])), sigmas)
        tuned = SOLVERS[name].with_options(**options)(ToyRun(seed=3), start(float(sigmas[0])),
                                                       sigmas)
        assert torch.equal(plain, tuned), name


def test_eta_zero_makes_the_ancestral_solvers_deterministic():
    sigmas = torch.cat([levels(5), torch.zeros(1, dtype=torch.float64)])
    x = start(float(sigmas[0]))
    for name, plain in [("euler_ancestral", "euler"), ("dpmpp_2m_sde", "dpmpp_2m")]:
        got = SOLVERS[name].with_options(eta=0.0)(ToyRun(seed=1), x.clone(), sigmas)
        ref = SOLVERS[plain](ToyRun(seed=2), x.clone(), sigmas)
        assert torch.allclose(got, ref, rtol=1e-12, atol=1e-12), name
    # s_noise 0: the deterministic part of the ancestral step only
    got = SOLVERS["euler_ancestral"].with_options(s_noise=0.0)(ToyRun(seed=1), x.clone(), sigmas)
    ref = x.clone()
    for s, s_next in pairs(sigmas):
        down, _ = _ancestral(s, s_next)
        ref = ref + (ref - gaussian_denoiser(ref, s, MU_C)) / s * (down - s)
    assert torch.allclose(got, ref, rtol=1e-12, atol=1e-12)
    # lms of order 1 is Euler
    lms1 = SOLVERS["lms"].with_options(max_order=1)(ToyRun(), x.clone(), sigmas)
    assert torch.allclose(lms1, SOLVERS["euler"](ToyRun(), x.clone(), sigmas), rtol=1e-12)


def test_dpmpp_2m_sde_heun_integrates_the_linear_term_exactly():
    """SDE-DPM-Solver++(2M), eta 1: x_next = e^-2h x + int_0^h 2 e^-2(h-u) P(u) du + noise,
    P the line in lambda through the last two clean estimates (quadrature here)."""
    sigmas = levels(5)
    x = start(float(sigmas[0]))
    got = SOLVERS["dpmpp_2m_sde"].with_options(solver_type="heun")(ToyRun(seed=6), x.clone(),
                                                                    sigmas)
    gen = torch.Generator().manual_seed(6)
    ref, prev = x.clone(), None
    for i in range(len(sigmas) - 1):
        s, s_next = float(sigmas[i]), float(sigmas[i + 1])
        den = gaussian_denoiser(ref, s, MU_C)
        h = t_of(s_next) - t_of(s)
        new = ref.clone()
        for k in range(len(ref)):
            d0 = den[k].item()
            slope = 0.0
            if prev is not None:
                slope = (d0 - prev[k].item()) / (t_of(s) - t_of(float(sigmas[i - 1])))

            def integrand(u, d0=d0, slope=slope, h=h):
                return 2 * math.exp(-2 * (h - u)) * (d0 + slope * u)

            new[k] = math.exp(-2 * h) * ref[k].item() + integrate.quad(integrand, 0.0, h)[0]
        z = torch.randn(ref.shape, generator=gen, dtype=torch.float64)
        ref = new + z * s_next * math.sqrt(1 - math.exp(-2 * h))
        prev = den
    assert torch.allclose(got, ref, rtol=1e-9, atol=1e-10)
