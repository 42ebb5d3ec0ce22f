"""Flow-guided filling: inpaint the motion, then carry values along it; method ``"flowfill"``.

In the spirit of Chatillon, Ballester, Haro, Arias & Raad ("video inpainting
via flow-guided iterative refinement with partial convolutions"):

1. **Flow estimation.** The gaps are pre-filled by linear interpolation in
   time, and OpenCV's Farneback dense flow is computed between consecutive
   frames, forward (``t -> t + 1``) and backward (``t -> t - 1``). A flow
   vector is trustworthy where the pixel is observed in both frames (at the
   pixel and where the flow lands) and, optionally, where the forward and
   backward flows agree (``fb_threshold``).
2. **Flow completion.** :class:`~gapfill.models.flow_refiner.FlowRefiner`
   (partial convolutions, warping of the neighbours' features and
   confidences, a residual confidence-weighted update and a learnable
   confidence update) completes the flows where they are not trustworthy.
   It reads the trusted vectors through partial convolutions and the raw
   estimate everywhere, and predicts a correction to the raw estimate. It is
   trained self-supervised on the data's own flows: extra pixels are hidden
   with masks of an occlusion process (:mod:`gapfill.masks`) and the flows
   re-estimated without them (a pool of ``pool`` such re-estimations, so the
   raw input there is as poor as in real gaps); the losses are L1 to the
   data's trustworthy vectors, total variation, and the
   ``min(forward-backward, backward-forward)`` consistency term, each
   refinement round ``i`` weighted by ``(i + 1)^2``.
3. **Propagation.** From each missing pixel, the completed flow is followed
   forward and backward up to ``max_frames`` frames; the first observed pixel
   each chain reaches gives a value (bilinear over the observed corners), and
   the values are averaged with weight ``1 / distance`` and blended with the
   fallback by the network's confidence in the flow. Pixels that no chain
   reaches get the fallback: linear interpolation in time (a spatial
   normalised convolution where a pixel is never observed) or a spatial
   normalised convolution of the frame, whichever fills observed pixels
   hidden after training better (``fallback="auto"``).

On SST cubes this is advection-aware filling: values move with the flow
instead of being interpolated in place.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from gapfill import masks
from gapfill.extras import require
from gapfill.methods.base import Coords, FillResult, NetworkMethod
from gapfill.methods.linear import spatial_fill
from gapfill.methods.stgconvnet import initial_guess
from gapfill.training import Run, Trainer, TrainingOptions, start_run
from gapfill.windows import fill_windows

if TYPE_CHECKING:
    import torch

    from gapfill.cube import Cube

FALLBACKS = ("auto", "spatial", "time")
#: Carry weights ``carry="auto"`` tries (the weight of the carried values, times the flow
#: network's confidence, against the fallback's).
CARRY_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)


@dataclass
class FlowFillOptions(TrainingOptions):
    """Options of the ``flowfill`` method (and :class:`~gapfill.training.TrainingOptions`).

    Attributes
    ----------
    features, hidden, iterations
        Feature channels, hidden channels and refinement rounds of the flow network.
    occlusion, coverage, occlusion_options
        The process hiding pixels in training (a :func:`gapfill.masks.make`
        name, or ``"empirical"``: the data's own gap patterns at other times),
        its coverage and extra options.
    pool
        Re-estimations of the flows with extra pixels hidden that training draws from.
    l1_weight, tv_weight, consistency_weight
        Loss weights: L1 to the trustworthy flow, total variation,
        forward-backward consistency.
    fb_threshold
        Forward-backward disagreement (pixels) above which an estimated flow
        vector is not trusted; ``None`` skips the check.
    winsize, levels
        Farneback window size and pyramid levels (levels are capped for small frames).
    max_frames
        Longest flow chain followed from a missing pixel, in frames.
    fallback
        For pixels no chain reaches (and the blend with low-confidence carried
        values): ``"time"`` (linear interpolation in time, a spatial fill where
        a pixel is never observed), ``"spatial"`` (normalised convolution of
        the frame's observed values), or ``"auto"``: the better of the two on
        observed pixels hidden after training (in the data's own gap patterns at
        other times), chosen together with ``carry``.
    carry
        Weight of the values carried along the flows, in ``[0, 1]``, times the flow
        network's confidence (the fallback has the rest): 1 trusts the carried values
        as much as the network trusts the flow, 0 never uses them; ``"auto"``: the
        weight of :data:`CARRY_WEIGHTS` that fills the hidden observed pixels best.
    sigma
        Gaussian scale (pixels) of the first spatial fallback pass.
    fill_window
        Window ``(T, H, W)`` of the flow completion when filling (larger cubes
        are done window by window); ``overlap`` between windows.
    overlap
        Overlap of those windows.

    Validation (every ``eval_every`` steps) is the L1 on fixed hidden flow
    vectors; the best network is kept.
    """

    features: int = 16
    hidden: int = 32
    iterations: int = 4
    occlusion: str = "cloud"
    coverage: float = 0.3
    occlusion_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    pool: int = 4
    l1_weight: float = 1.0
    tv_weight: float = 0.05
    consistency_weight: float = 0.1
    batch_size: int = 2
    steps: int = 1000
    time_budget: float | None = 60.0
    eval_every: int = 50
    checkpoint_every: int = 200
    fb_threshold: float | None = 1.0
    winsize: int = 9
    levels: int = 3
    max_frames: int = 8
    fallback: str = "auto"
    carry: float | str = "auto"
    sigma: float = 1.0
    fill_window: tuple[int, int, int] = (32, 128, 128)
    overlap: float = 0.25

    _method = "flowfill"
    cpu_only = True

    def __post_init__(self) -> None:
        super().__post_init__()
        self.occlusion_options = dict(self.occlusion_options or {})

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad option."""
        super().validate()
        bad = self._bad
        self._check_windows("fill_window")
        for name in ("features", "hidden", "iterations", "pool", "max_frames", "levels"):
            if int(getattr(self, name)) < (0 if name == "levels" else 1):
                bad(name, "must be a positive integer")
        if self.winsize < 3:
            bad("winsize", "must be >= 3")
        self._check_choices(occlusion=masks.PROCESSES, fallback=FALLBACKS)
        self._check_occlusion_options(self.occlusion)
        if not 0 < self.coverage < 1:
            bad("coverage", "must be in (0, 1)")
        for name in ("l1_weight", "tv_weight", "consistency_weight"):
            if getattr(self, name) < 0:
                bad(name, "must be >= 0")
        if self.fb_threshold is not None and not self.fb_threshold > 0:
            bad("fb_threshold", "must be > 0 or None")
        if not self.sigma > 0:
            bad("sigma", "must be > 0")
        if self.carry != "auto" and not (
            isinstance(self.carry, (int, float)) and not isinstance(self.carry, bool)
            and 0 <= self.carry <= 1
        ):
            bad("carry", 'must be "auto" or a number in [0, 1]')
        if not 0 <= self.overlap < 1:
            bad("overlap", "must be in [0, 1)")


# ----------------------------------------------------------------------------- flows
def _cv2() -> Any:
    return require("cv2", "the flowfill method")


def estimate_flows(
    prefilled: np.ndarray,
    observed: np.ndarray,
    winsize: int = 9,
    levels: int = 3,
    fb_threshold: float | None = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Farneback forward and backward flows of a gap-free ``(C, T, H, W)`` sequence.

    Parameters
    ----------
    prefilled
        The sequence with its gaps filled by simple means.
    observed
        ``(T, H, W)`` pixels observed in every channel.
    winsize, levels
        Farneback window and pyramid levels (capped so the coarsest level keeps 8 pixels).
    fb_threshold
        Forward-backward disagreement (pixels) above which a vector is not trusted.

    Returns
    -------
    flows
        ``(T, 4, H, W)`` float32: forward (dy, dx) to ``t + 1``, backward (dy, dx)
        to ``t - 1`` (0 where there is no such frame).
    trust
        ``(T, 2, H, W)`` float32 in {0, 1}: trustworthy forward / backward vectors.
    """
    cv2 = _cv2()
    c, t, h, w = prefilled.shape
    gray = prefilled.mean(0)
    lo, hi = np.percentile(gray, [1, 99]) if gray.size else (0.0, 1.0)
    u8 = np.clip((gray - lo) / max(hi - lo, 1e-6) * 255, 0, 255).astype(np.uint8)
    lev = int(max(0, min(levels, np.floor(np.log2(max(min(h, w), 1) / 8)))))
    flows = np.zeros((t, 4, h, w), dtype=np.float32)
    trust = np.zeros((t, 2, h, w), dtype=np.float32)

    def flow(a: int, b: int) -> np.ndarray:
        f = cv2.calcOpticalFlowFarneback(u8[a], u8[b], None, 0.5, lev, int(winsize), 3, 5, 1.1, 0)
        return np.stack([f[..., 1], f[..., 0]])  # (dy, dx)

    for i in range(t - 1):
        flows[i, :2] = flow(i, i + 1)
        flows[i + 1, 2:] = flow(i + 1, i)
    yy, xx = np.mgrid[0:h, 0:w]
    for i in range(t):
        for k, (j, sl, back) in enumerate(((i + 1, slice(0, 2), slice(2, 4)),
                                           (i - 1, slice(2, 4), slice(0, 2)))):
            if not 0 <= j < t:
                continue
            f = flows[i, sl]
            ty, tx = yy + f[0], xx + f[1]
            ny = np.clip(np.rint(ty), 0, h - 1).astype(int)
            nx = np.clip(np.rint(tx), 0, w - 1).astype(int)
            inside = (ty > -0.5) & (ty < h - 0.5) & (tx > -0.5) & (tx < w - 0.5)
            ok = observed[i] & observed[j] & inside & observed[j][ny, nx]
            if fb_threshold is not None:
                g = flows[j, back][:, ny, nx]  # the reverse flow where this one lands
                ok &= np.hypot(f[0] + g[0], f[1] + g[1]) < fb_threshold
            trust[i, k] = ok
    return flows, trust


def propagate(
    x: np.ndarray, flows: np.ndarray, max_frames: int
) -> tuple[np.ndarray, np.ndarray]:
    """Carry observed values along the flows to the missing pixels.

    Parameters
    ----------
    x
        ``(C, T, H, W)``, NaN where missing.
    flows
        ``(T, 4, H, W)`` complete forward and backward flows (dy, dx).
    max_frames
        Longest chain, in frames.

    Returns
    -------
    values
        ``(C, T, H, W)``: the distance-weighted mean of the observed values the
        chains reached, NaN where none did (and at observed pixels).
    weight
        ``(T, H, W)``: the summed weights (0 where nothing was reached).
    """
    import torch
    import torch.nn.functional as F

    c, t, h, w = x.shape
    obs = np.isfinite(x).all(0)
    xv = torch.from_numpy(np.where(obs[None], np.nan_to_num(x), 0.0).astype(np.float32))
    xv = xv.permute(1, 0, 2, 3)  # (T, C, H, W)
    om = torch.from_numpy(obs.astype(np.float32))[:, None]  # (T, 1, H, W)
    fl = torch.from_numpy(flows.astype(np.float32))
    acc = torch.zeros((t, c, h, w))
    wsum = torch.zeros((t, 1, h, w))
    yy = torch.arange(h, dtype=torch.float32).view(1, 1, h, 1).expand(t, 1, h, w)
    xx = torch.arange(w, dtype=torch.float32).view(1, 1, 1, w).expand(t, 1, h, w)
    frames = torch.arange(t)

    def sample(img: torch.Tensor, py: torch.Tensor, px: torch.Tensor) -> torch.Tensor:
        grid = torch.stack([2 * px[:, 0] / max(w - 1, 1) - 1, 2 * py[:, 0] / max(h - 1, 1) - 1], -1)
        return F.grid_sample(img, grid, mode="bilinear", padding_mode="zeros", align_corners=True)

    for step, sl in ((1, slice(0, 2)), (-1, slice(2, 4))):
        py, px = yy.clone(), xx.clone()
        alive = torch.from_numpy(~obs)[:, None].clone()
        for k in range(1, int(max_frames) + 1):
            src = frames + step * (k - 1)
            dst = frames + step * k
            valid = (dst >= 0) & (dst < t)
            if not bool((alive & valid.view(t, 1, 1, 1)).any()):
                break
            disp = sample(fl[src.clamp(0, t - 1), sl], py, px)
            py, px = py + disp[:, :1], px + disp[:, 1:]
            inside = (py >= 0) & (py <= h - 1) & (px >= 0) & (px <= w - 1)
            d = dst.clamp(0, t - 1)
            den = sample(om[d], py, px)
            num = sample(xv[d], py, px)
            hit = alive & valid.view(t, 1, 1, 1) & inside & (den > 0.5)
            wk = 1.0 / k
            acc += torch.where(hit, num / den.clamp(min=1e-6), 0.0) * wk
            wsum += hit.float() * wk
            alive &= ~hit & inside & valid.view(t, 1, 1, 1)
    values = torch.where(wsum > 0, acc / wsum.clamp(min=1e-12), torch.nan)
    return values.permute(1, 0, 2, 3).numpy(), wsum[:, 0].numpy()


# ----------------------------------------------------------------------------- losses
def flow_losses(
    pred: torch.Tensor, target: torch.Tensor, trust: torch.Tensor, scale: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """L1 on trusted vectors, total variation and min(fb, bf) consistency of flows.

    ``pred`` and ``target`` are ``(N, T, 4, H, W)``, ``trust`` is ``(N, T, 2, H, W)``;
    flows are in units of ``scale`` pixels.
    """
    import torch

    from gapfill.models.flow_refiner import warp

    n, t, _, h, w = pred.shape
    tr = trust.repeat_interleave(2, 2)
    l1 = ((pred - target).abs() * tr).sum() / tr.sum().clamp(min=1)
    tv = (pred[..., 1:, :] - pred[..., :-1, :]).abs().mean() + \
        (pred[..., :, 1:] - pred[..., :, :-1]).abs().mean()
    if t < 2:
        return l1, tv, pred.new_zeros(())
    fwd, bwd = pred[:, :, :2], pred[:, :, 2:]
    # forward-backward: F_t(p) + B_{t+1}(p + F_t(p)), frames 0..T-2
    f = fwd[:, :-1].reshape(-1, 2, h, w)
    fb = (f + warp(bwd[:, 1:].reshape(-1, 2, h, w), f * scale)).abs().sum(1)
    # backward-forward: B_t(p) + F_{t-1}(p + B_t(p)), frames 1..T-1
    b = bwd[:, 1:].reshape(-1, 2, h, w)
    bf = (b + warp(fwd[:, :-1].reshape(-1, 2, h, w), b * scale)).abs().sum(1)
    fb = fb.reshape(n, t - 1, h, w)
    bf = bf.reshape(n, t - 1, h, w)
    inf = torch.full_like(fb[:, :1], float("inf"))
    fb_t = torch.cat([fb, inf], 1)  # per frame t: fb defined for t <= T-2
    bf_t = torch.cat([inf, bf], 1)  # bf defined for t >= 1
    cons = torch.minimum(fb_t, bf_t).mean()
    return l1, tv, cons


# ----------------------------------------------------------------------------- the method
class FlowFill(NetworkMethod):
    """Flow-guided filling with flow completion; see the module docstring."""

    name = "flowfill"
    Options = FlowFillOptions

    def _build(self, flow_scale: float) -> None:
        from gapfill.models.flow_refiner import FlowRefiner, FlowRefinerConfig

        o = self.options
        cfg = FlowRefinerConfig(o.features, o.hidden, o.iterations, float(flow_scale))
        self._meta["net"] = dataclasses.asdict(cfg)
        self.net = FlowRefiner(cfg)

    def _flows(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Pre-fill, estimated flows and their trust for a ``(C, T, H, W)`` array."""
        o = self.options
        pre = initial_guess(x, "linear")
        observed = np.isfinite(x).all(0)
        flows, trust = estimate_flows(pre, observed, o.winsize, o.levels, o.fb_threshold)
        return pre, flows, trust

    # -- fit --------------------------------------------------------------------------
    def fit(self, cube: Cube, rng: np.random.Generator) -> None:
        """Train the flow completion network on the cube's own trustworthy flows."""
        import torch

        o = self.options
        x = cube.values()
        run = start_run(self, cube, rng, x)
        seed = run.seed
        _, flows, trust = self._flows(x)
        mag = np.hypot(flows[:, 0::2], flows[:, 1::2])[trust > 0]
        scale = float(max(1.0, np.percentile(mag, 95))) if mag.size else 1.0
        self._meta = {"window": [min(a, b) for a, b in zip(o.window, x.shape[1:])]}
        # Inputs of the self-supervision: the flows re-estimated with extra pixels hidden
        # (so the raw estimate there comes from the pre-filled frames, as in real gaps).
        process = self._process(o.occlusion, o.coverage, x, seed)
        setup = np.random.default_rng([seed, 2])
        pool = []
        for _ in range(o.pool):
            hide = process.sample(x.shape[1:], setup)
            _, raw, trust_in = self._flows(np.where(hide[None], np.nan, x))
            pool.append(((raw / scale).astype(np.float32), trust_in))
        torch.manual_seed(seed)  # the network's initial weights
        self._build(scale)
        trainer = _Trainer(self, run, flows / scale, trust, pool)
        if trust.any():
            info = trainer.fit()
        else:  # nothing to learn from: keep the initial network
            info = {"steps": 0, "stopped_by": "no_trusted_flow", "best_val_l1": None}
        scores = self._choose_blend(x, seed)
        fallback, carry = self._blend()
        info.update(flow_scale=round(scale, 3), trusted_share=round(float(trust.mean()), 4),
                    fallback=fallback, carry=carry, blend_mae=scores,
                    seconds=round(time.monotonic() - run.started, 2))
        self.fit_info.update(info)

    # -- fill -------------------------------------------------------------------------
    def fill(
        self,
        x: np.ndarray,
        rng: np.random.Generator,
        samples: int = 1,
        coords: Coords | None = None,
    ) -> FillResult:
        """Complete the flows of ``x`` and carry observed values along them (deterministic)."""
        self._check_fill(x, samples, self.net is not None)
        blend = self._blend()
        return FillResult(self._fill(x, [blend])[blend], None)

    @property
    def fills_without_training(self) -> bool:
        """Also when the fill carries nothing along the flows (carry weight 0): it is then
        the fallback alone, which the network does not touch."""
        return super().fills_without_training or (self.net is not None
                                                   and self._blend()[1] == 0)

    def _blend(self) -> tuple[str, float]:
        """The fallback and the carry weight of the fills: the options', or those chosen in
        ``fit`` where they are ``"auto"`` (a model without a choice: ``"time"``, 1)."""
        o = self.options
        fallback = o.fallback if o.fallback != "auto" else self._meta.get("fallback", "time")
        carry = o.carry if o.carry != "auto" else self._meta.get("carry", 1.0)
        return str(fallback), float(carry)

    def _fill(
        self, x: np.ndarray, blends: list[tuple[str, float]]
    ) -> dict[tuple[str, float], np.ndarray]:
        """The fill of ``x`` with each ``(fallback, carry weight)`` of ``blends`` (flows
        computed once)."""
        o = self.options
        pre, flows, trust = self._flows(x)
        flows, conf = self.complete_flows(flows, trust)
        values, _ = propagate(x, flows, o.max_frames)
        obs = np.isfinite(x)
        reached = np.isfinite(values)
        bases = {"time": pre}
        out = {}
        for fallback, carry in blends:
            if fallback not in bases:  # "spatial"
                base = spatial_fill(x, ~obs, o.sigma)
                bases[fallback] = np.where(np.isfinite(base), base, pre)
            base = bases[fallback]
            # trust a carried value as much as the flow that carried it (the completion's
            # confidence) times the carry weight; the fallback has the rest
            w = carry * conf[None]
            f = np.where(reached, w * np.nan_to_num(values) + (1 - w) * base, base)
            f = np.where(obs, x, f)
            out[(fallback, carry)] = np.where(np.isfinite(f), f, 0.0).astype(np.float32)
        return out

    def _process(self, name: str, coverage: float | None, x: np.ndarray, seed: int) -> Any:
        """An occlusion process; ``"empirical"`` cuts the data's own gap pattern at other times."""
        extra = self.options.occlusion_options if name == self.options.occlusion else {}
        missing = ~np.isfinite(x).all(0)
        never = missing.all(0)
        if name == "empirical" and never.all():
            return masks.make("remove_pixels", coverage=0.0, seed=seed)
        return masks.for_data(name, missing, never, coverage, seed, **extra)

    def _choose_blend(self, x: np.ndarray, seed: int) -> dict[str, float] | None:
        """Set ``meta["fallback"]`` and ``meta["carry"]`` (where the options say ``"auto"``)
        to the pair with the lowest MAE on observed pixels hidden in the data's own gap
        patterns at other times; returns the MAE of each pair tried (``"time, 0.5"``)."""
        o = self.options
        fallbacks = ("time", "spatial") if o.fallback == "auto" else (o.fallback,)
        carries = CARRY_WEIGHTS if o.carry == "auto" else (float(o.carry),)
        if len(fallbacks) * len(carries) == 1:
            return None
        hide = masks.own_gap_hides(x, seed)
        if hide is None:  # nothing to choose on: the fills of a model without a choice
            return None
        blends = [(f, c) for f in fallbacks for c in carries]
        fills = self._fill(np.where(hide, np.nan, x), blends)
        scores = {blend: float(np.abs(v[hide] - x[hide]).mean()) for blend, v in fills.items()}
        self._meta["fallback"], self._meta["carry"] = min(scores, key=lambda b: scores[b])
        return {f"{f}, {c:g}": round(v, 6) for (f, c), v in scores.items()}

    def complete_flows(self, flows: np.ndarray, trust: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Complete the untrusted vectors of ``(T, 4, H, W)`` flows with the network.

        Returns
        -------
        flows
            ``(T, 4, H, W)``: the trusted estimates kept, the network's elsewhere.
        confidence
            ``(T, H, W)`` in ``[0, 1]``: the network's final confidence (1 where
            both flows of the pixel were trusted).
        """
        import torch

        scale = float(self._meta["net"]["flow_scale"])
        t = flows.shape[0]
        stacked = np.concatenate([flows / scale, trust], 1).transpose(1, 0, 2, 3)  # (6, T, H, W)

        def fn(batch: np.ndarray) -> np.ndarray:
            b = torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 2, 1, 3, 4)
            raw, conf = b[:, :, :4], b[:, :, 4:]
            outs, m = self.net(raw * conf.repeat_interleave(2, 2), conf,
                               raw if self.net.cfg.raw_input else None)
            return torch.cat([outs[-1], m], 2).permute(0, 2, 1, 3, 4).numpy()

        self.net.eval()
        with torch.no_grad():
            pred = fill_windows(stacked.astype(np.float32), fn, self.options.fill_window,
                                overlap=self.options.overlap, batch_size=1)
        conf = np.clip(pred[4], 0, 1)
        pred = pred[:4].transpose(1, 0, 2, 3) * scale
        keep = trust.repeat(2, axis=1) > 0
        out = np.where(keep, flows, pred)
        out[t - 1, :2] = 0.0  # no frame after the last / before the first
        out[0, 2:] = 0.0
        conf = np.where(trust.min(1) > 0, 1.0, conf)
        return out.astype(np.float32), conf.astype(np.float32)

    def _rebuild(self) -> Any:
        from gapfill.models.flow_refiner import FlowRefiner, FlowRefinerConfig

        return FlowRefiner(FlowRefinerConfig(**self._meta["net"]))


# ----------------------------------------------------------------------------- training
class _Trainer(Trainer):
    """Self-supervised training of the flow network (one call of ``fit``)."""

    metrics = ("loss", "l1", "tv", "consistency")
    shown = ()
    val_name = "val_l1"
    finite_only = True
    first_eval = False

    def __init__(
        self,
        method: FlowFill,
        run: Run,
        flows: np.ndarray,
        trust: np.ndarray,
        pool: list[tuple[np.ndarray, np.ndarray]],
    ) -> None:
        import torch

        super().__init__(method, run)
        torch.manual_seed(self.seed)
        self.flows, self.trust = flows.astype(np.float32), trust.astype(np.float32)
        self.pool = pool
        self.window = tuple(method._meta["window"])
        self.opt = torch.optim.Adam(method.net.parameters(), lr=self.options.lr)
        self.val_batch = self.batch(2, member=0) if self.trust.any() else None

    def batch(self, n: int, member: int | None = None) -> dict[str, torch.Tensor]:
        """Random windows of a pool member: its raw flows and trust (the input), and
        the flows and trust of the data (the target)."""
        import torch

        tt, hh, ww = self.flows.shape[0], self.flows.shape[2], self.flows.shape[3]
        wt, wh, wwid = self.window
        out: dict[str, list[np.ndarray]] = {"flow": [], "trust": [], "raw": [], "trust_in": []}
        for _ in range(n):
            p = int(self.rng.integers(len(self.pool))) if member is None else member
            t0 = int(self.rng.integers(0, tt - wt + 1))
            y0 = int(self.rng.integers(0, hh - wh + 1))
            x0 = int(self.rng.integers(0, ww - wwid + 1))
            sl = (slice(t0, t0 + wt), slice(None), slice(y0, y0 + wh), slice(x0, x0 + wwid))
            raw, trust_in = self.pool[p]
            out["flow"].append(self.flows[sl])
            out["trust"].append(self.trust[sl])
            out["raw"].append(raw[sl])
            out["trust_in"].append(trust_in[sl])
        return {k: torch.from_numpy(np.stack(v).astype(np.float32)) for k, v in out.items()}

    def forward(self, b: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        """The network's flows of every round for a batch."""
        net = self.method.net
        flow_in = b["raw"] * b["trust_in"].repeat_interleave(2, 2)
        outs, _ = net(flow_in, b["trust_in"], b["raw"] if net.cfg.raw_input else None)
        return outs

    def losses(self, b: dict[str, torch.Tensor]) -> tuple[torch.Tensor, list[float]]:
        """The loss of a batch (rounds weighted by ``(i + 1)^2``) and its mean parts."""
        o, net = self.options, self.method.net
        outs = self.forward(b)
        scale = net.cfg.flow_scale
        n = len(outs)
        weights = [(i + 1) ** 2 for i in range(n)]
        total = sum(weights)
        loss = b["raw"].new_zeros(())
        parts = np.zeros(3)
        for wi, pred in zip(weights, outs):
            l1, tv, cons = flow_losses(pred, b["flow"], b["trust"], scale)
            li = o.l1_weight * l1 + o.tv_weight * tv + o.consistency_weight * cons
            loss = loss + wi / total * li
            parts += (float(l1.detach()), float(tv.detach()), float(cons.detach()))
        return loss, list(parts / n)

    def validate(self) -> float | None:
        """L1 of the last round on the hidden trusted vectors of the fixed validation batch."""
        import torch

        if self.val_batch is None:
            return None
        b = self.val_batch
        hidden = b["trust"] * (1 - b["trust_in"])
        if hidden.sum() == 0:
            return None
        net = self.method.net
        net.eval()
        with torch.no_grad():
            outs = self.forward(b)
        tr = hidden.repeat_interleave(2, 2)
        val = float(((outs[-1] - b["flow"]).abs() * tr).sum() / tr.sum())
        net.train()
        return val * net.cfg.flow_scale  # in pixels

    def train_step(self) -> tuple[float, ...]:
        """One Adam step on a random batch; the loss and its parts."""
        loss, parts = self.losses(self.batch(self.options.batch_size))
        self.optimise(loss, self.opt)
        return (float(loss.detach()), *parts)

    def before_loop(self) -> dict[str, Any]:
        return {"initial_val_l1": self.validate()}
