"""Priors of the reconstruction: object masks, the ellipsoid shape prior, view and light.

Masks. The release runs a face-parsing network (faces) or a scene/object segmenter (other
categories); their weights are downloads, so we offer, without any weights:
- ``load_mask``: a user's mask image (the most accurate option);
- ``box_mask``: a category-aware box (placement of the shape prior only; for centred,
  aligned crops such as the face datasets it is close to what the parser gives);
- ``foreground_mask``: a colour-model foreground estimate from the image itself (GrabCut
  like: colour Gaussians of the border and of the centre, re-estimated a few times);
  usable on plain or blurred backgrounds, unreliable where background and object share
  colours;
- any ``Segmenter`` callable the user supplies (e.g. a parser whose weights they have).
A mask is (B, 1, S, S) in [0, 1]; >= 0.7 counts as object for the shape prior.
Measured on 16 procedural heads (``gan2shape make-data -n 16 --size 64``; object = ground
truth depth below the background), intersection over union with the true object: box
0.77 (min 0.72), foreground 0.93 (min 0.90). The mask decides where the ellipsoid prior
sits (a box that is too large gives a too-wide initial shape) and, with ``use_mask``, which
pixels the pseudo samples keep.

Shape prior: an ellipsoid on the mask's bounding box (docs/method.md section 8) and the routine
that fits the depth network to it. View and light: multivariate normals loaded from the
release's ``{'mean', 'cov'}`` files, in the raw network convention (tanh outputs before
scaling, docs/method.md section 1).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from ..errors import UserError
from ..fileio import load_torch
from .factors import Light, depth_without_border, light_direction

# A segmenter maps images (B, 3, S, S) in [-1, 1] to object probabilities (B, 1, S, S).
Segmenter = Callable[[torch.Tensor], torch.Tensor]

MASK_THRESHOLD = 0.7  # the release's object threshold for placing the shape prior
MASK_METHODS = ("box", "foreground", "file", "segmenter")

# Category-aware boxes as (top, bottom, left, right) fractions of the image: where the
# object of an aligned crop of that category usually lies.
CATEGORY_BOXES: dict[str, tuple[float, float, float, float]] = {
    "face": (0.18, 0.92, 0.2, 0.8),
    "synface": (0.22, 0.9, 0.2, 0.8),
    "cat": (0.15, 0.9, 0.15, 0.85),
    "car": (0.25, 0.85, 0.06, 0.94),
    "church": (0.1, 0.85, 0.15, 0.85),
}
DEFAULT_BOX = (0.15, 0.85, 0.15, 0.85)


def load_mask(path: str | os.PathLike, image_size: int | None = None) -> torch.Tensor:
    """A user's mask image -> (1, 1, S, S) float in [0, 1] (object = bright).

    Any PNG/JPEG mode is accepted: grey or colour (luminance), or a cut-out whose alpha
    channel is used when it has any transparency. A non-square mask is cropped to its
    centre square, as images are (``gan2shape.gan.images.IMAGE_POLICY``); it must contain
    some object. Resized to ``image_size`` by area averaging (``None``: kept at the file's size,
    for callers that crop it like the image first).
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"mask not found: {path}")
    try:
        with Image.open(path) as im:
            im.load()
            alpha = im.getchannel("A") if "A" in im.getbands() else None
            if alpha is not None and alpha.getextrema()[0] < 255:
                array = np.asarray(alpha, dtype=np.float64) / 255.0  # a cut-out: alpha
            elif im.mode in ("I", "I;16", "I;16B", "F"):
                array = np.asarray(im, dtype=np.float64)
                array = array / max(array.max(), 1.0)
            else:
                array = np.asarray(im.convert("L"), dtype=np.float64) / 255.0
    except (UnidentifiedImageError, OSError) as exc:
        raise UserError(f"mask {path} is not a readable image ({type(exc).__name__})") from exc
    h, w = array.shape
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    array = array[top:top + side, left:left + side]
    h = side
    mask = torch.from_numpy(np.ascontiguousarray(array)).float().view(1, 1, h, h)
    if image_size is not None and h != image_size:
        mask = F.interpolate(mask, size=(image_size, image_size),
                             mode="area" if h > image_size else "bilinear", align_corners=None)
    if not (mask >= MASK_THRESHOLD).any():
        raise UserError(f"mask {path} has no object pixel (none >= {MASK_THRESHOLD} of white)")
    return mask.clamp(0, 1)


def box_mask(image_size: int, category: str, batch: int = 1) -> torch.Tensor:
    """Category-aware box mask (B, 1, S, S): 1 inside the category's usual object box."""
    top, bottom, left, right = CATEGORY_BOXES.get(category, DEFAULT_BOX)
    rows = torch.arange(image_size, dtype=torch.float32) + 0.5
    inside_r = (rows >= top * image_size) & (rows <= bottom * image_size)
    inside_c = (rows >= left * image_size) & (rows <= right * image_size)
    mask = (inside_r[:, None] & inside_c[None, :]).float()
    return mask.expand(batch, 1, image_size, image_size).clone()


def _gaussian_loglik(pixels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Log-likelihood of pixels (N, 3) under the weighted Gaussian fit of themselves."""
    w = weights / weights.sum().clamp(min=1e-8)
    mean = (w[:, None] * pixels).sum(0)
    centred = pixels - mean
    cov = (w[:, None, None] * centred[:, :, None] * centred[:, None, :]).sum(0)
    cov = cov + 1e-3 * torch.eye(3, dtype=pixels.dtype)  # colour noise floor
    inv = torch.linalg.inv(cov)
    maha = ((centred @ inv) * centred).sum(1)
    return -0.5 * (maha + torch.logdet(cov))


def foreground_mask(image: torch.Tensor, category: str = "", iterations: int = 5,
                    border_frac: float = 1 / 16) -> torch.Tensor:
    """Foreground estimate (B, 1, S, S) in [0, 1] from the image alone, no weights.

    Two colour Gaussians, background seeded by a frame of ``border_frac`` of the size,
    object by the category box, are re-estimated from the soft assignment for
    ``iterations`` rounds; the posterior is smoothed with a 5x5 box filter each round and
    the frame is kept background. image: (B, 3, S, S) in [-1, 1].
    """
    b, _, s, _ = image.shape
    frame = torch.ones(s, s)
    width = max(1, round(s * border_frac))
    frame[width:-width, width:-width] = 0
    prior = box_mask(s, category)[0, 0]
    out = []
    for x in image.detach().float().cpu():
        pixels = x.permute(1, 2, 0).reshape(-1, 3)
        fg = (prior * (1 - frame)).reshape(-1)
        for _ in range(iterations):
            llr = _gaussian_loglik(pixels, fg) - _gaussian_loglik(pixels, 1 - fg)
            prob = torch.sigmoid(llr.clamp(-30, 30)).view(1, 1, s, s)
            prob = F.avg_pool2d(prob, 5, stride=1, padding=2, count_include_pad=False)
            prob = prob[0, 0] * (1 - frame)
            fg = prob.reshape(-1)
        out.append(fg.view(1, s, s))
    return torch.stack(out).to(image.device)


def make_mask(method: str, image: torch.Tensor, category: str,
              path: str | os.PathLike | None = None,
              segmenter: Segmenter | None = None) -> torch.Tensor:
    """Object mask (B, 1, S, S) for images (B, 3, S, S) by ``method`` (see module doc).

    A mask from a file or a segmenter without any object pixel is an error; a
    ``foreground`` estimate without one falls back to the category box.
    """
    b, _, s, _ = image.shape
    if method == "file":
        if path is None:
            raise UserError("mask method 'file' needs a mask image (--mask)")
        return load_mask(path, s).to(image.device).expand(b, 1, s, s)
    if method == "box":
        return box_mask(s, category, b).to(image.device)
    if method == "foreground":
        mask = foreground_mask(image, category)
        empty = ~(mask >= MASK_THRESHOLD).flatten(1).any(1)
        if empty.any():
            mask[empty] = box_mask(s, category, int(empty.sum())).to(mask)
        return mask
    if method == "segmenter":
        if segmenter is None:
            raise UserError("mask method 'segmenter' needs a segmenter callable")
        with torch.no_grad():
            mask = segmenter(image).float()
        if mask.shape != (b, 1, s, s):
            raise UserError(f"segmenter returned shape {tuple(mask.shape)}, expected "
                            f"{(b, 1, s, s)}")
        if not (mask >= MASK_THRESHOLD).flatten(1).any(1).all():
            raise UserError("segmenter found no object in the image")
        return mask.clamp(0, 1)
    raise UserError(f"unknown mask method {method!r} (choose from {', '.join(MASK_METHODS)})")


def mask_box(mask: torch.Tensor) -> tuple[float, float, float, float]:
    """(max_y, min_y, max_x, min_x) pixel indices of mask >= 0.7; mask (H, W)."""
    ys, xs = torch.nonzero(mask >= MASK_THRESHOLD, as_tuple=True)
    if ys.numel() == 0:
        raise UserError(f"the object mask is empty (no pixel >= {MASK_THRESHOLD})")
    return float(ys.max()), float(ys.min()), float(xs.max()), float(xs.min())


def ellipsoid_prior(mask: torch.Tensor, category: str = "", near: float = 0.91,
                    far: float = 1.02, radius: float = 0.4) -> torch.Tensor:
    """The release's ellipsoid depth prior (H, W) on the bounding box of mask (H, W).

    Box tweaks: face: bottom to the last row, sides pulled in by width/12; synface: top
    raised by height/6; car, church: bottom lowered by height/6. Rows are stretched by the
    box's height/width ratio about the image centre row h/2 (as the release does, not about
    the box centre); within a circle of radius width/2 around the box centre the depth is
    radius - sqrt(radius^2 - (dist / r * t)^2) + near with
    t = sqrt(radius^2 - (radius - (far - near))^2); ``far`` elsewhere.
    """
    h, w = mask.shape[-2:]
    max_y, min_y, max_x, min_x = mask_box(mask.reshape(h, w))
    if category == "synface":
        min_y = min_y - (max_y - min_y) / 6
    elif category == "face":
        max_y = h - 1
        width = max_x - min_x
        max_x -= width / 12
        min_x += width / 12
    elif category in ("car", "church"):
        max_y = max_y + (max_y - min_y) / 6
    if max_x <= min_x or max_y <= min_y:
        raise UserError("the object mask is too thin to place the shape prior on")
    r_pixel = (max_x - min_x) / 2
    ratio = (max_y - min_y) / (max_x - min_x)
    c_x, c_y = (max_x + min_x) / 2, (max_y + min_y) / 2
    rows = torch.arange(h, dtype=torch.float64).view(h, 1).expand(h, w)
    cols = torch.arange(w, dtype=torch.float64).view(1, w).expand(h, w)
    rows = (rows - h / 2) / ratio + h / 2
    t = math.sqrt(radius ** 2 - (radius - (far - near)) ** 2)
    dist = ((rows - c_y) ** 2 + (cols - c_x) ** 2).sqrt()
    depth = radius - (radius ** 2 - (dist / r_pixel * t) ** 2).abs().sqrt() + near
    return torch.where(dist <= r_pixel, depth, torch.full_like(depth, far)).float()


def fit_depth_to_prior(net_depth: torch.nn.Module, image: torch.Tensor, prior: torch.Tensor,
                       steps: int = 1000, lr: float = 1e-4, weight_decay: float = 5e-4,
                       min_depth: float = 0.9, max_depth: float = 1.1,
                       progress: Callable[[int, float], None] | None = None) -> float:
    """Train the depth network so that its depth (no border) matches ``prior`` by MSE.

    image: (B, 3, S, S); prior: (S, S) or (B, S, S). Adam (0.9, 0.999), the release's
    1000 steps at lr 1e-4 by default. ``progress(step, loss)`` is called after each step.
    Returns the last loss.
    """
    prior = prior.to(image).expand(image.shape[0], *prior.shape[-2:])
    params = [p for p in net_depth.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999), weight_decay=weight_decay)
    loss_value = float("nan")
    for step in range(steps):
        depth = depth_without_border(net_depth(image), min_depth, max_depth)
        loss = F.mse_loss(depth, prior)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_value = loss.item()
        if progress is not None:
            progress(step, loss_value)
    return loss_value


def _checked_mvn(obj: object, dim: int, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean (dim,), cov (dim, dim)) from a release prior dict, with one-line errors."""
    if not isinstance(obj, dict) or "mean" not in obj or "cov" not in obj:
        raise UserError(f"{what} must be a dict with 'mean' and 'cov'")
    mean = torch.as_tensor(obj["mean"], dtype=torch.float64).reshape(-1)
    cov = torch.as_tensor(obj["cov"], dtype=torch.float64)
    if mean.numel() != dim or cov.shape != (dim, dim):
        raise UserError(f"{what} has mean {tuple(mean.shape)} and cov {tuple(cov.shape)}; "
                        f"expected ({dim},) and ({dim}, {dim})")
    if not (torch.isfinite(mean).all() and torch.isfinite(cov).all()):
        raise UserError(f"{what} contains NaN or infinite values")
    if not torch.allclose(cov, cov.T, atol=1e-6):
        raise UserError(f"{what} covariance is not symmetric")
    return mean, cov


def _cholesky(cov: torch.Tensor, what: str) -> torch.Tensor:
    """Lower Cholesky factor; a tiny jitter rescues semi-definite covariances."""
    for jitter in (0.0, 1e-9, 1e-6):
        factor, info = torch.linalg.cholesky_ex(cov + jitter * torch.eye(len(cov), dtype=cov.dtype))
        if info == 0:
            return factor
    raise UserError(f"{what} covariance is not positive definite")


class ViewLightPrior:
    """Multivariate normal priors of view (6-d) and light (4-d) in raw network units.

    ``view_mean`` / ``light_mean`` are what the release adds to the view and light
    networks' outputs (add_mean_V / add_mean_L). Samples are raw: convert them with
    ``factors.view_from_raw(sample)`` (no mean added again).
    """

    # With no file: frontal mean view and neutral light (ambient = diffuse = 0.5, light
    # from the camera); view spread of about 15 deg yaw, 6 deg pitch, 3 deg roll and 1 %
    # translation, a modest spread for aligned crops of one object category.
    DEFAULT_VIEW_STD = (0.1, 0.25, 0.05, 0.1, 0.1, 0.0)
    DEFAULT_LIGHT_STD = (0.1, 0.1, 0.2, 0.2)

    def __init__(self, view_mean: torch.Tensor, view_cov: torch.Tensor,
                 light_mean: torch.Tensor, light_cov: torch.Tensor, view_scale: float = 1.0):
        self.view_mean = torch.as_tensor(view_mean, dtype=torch.float64).reshape(6)
        self.view_cov = torch.as_tensor(view_cov, dtype=torch.float64).reshape(6, 6)
        self.light_mean = torch.as_tensor(light_mean, dtype=torch.float64).reshape(4)
        self.light_cov = torch.as_tensor(light_cov, dtype=torch.float64).reshape(4, 4)
        self.view_scale = float(view_scale)
        self._view_factor = _cholesky(self.view_cov, "view prior")
        self._light_factor = _cholesky(self.light_cov, "light prior")

    @classmethod
    def default(cls, view_scale: float = 1.0) -> ViewLightPrior:
        """The built-in prior used when no file is given (see the class constants)."""
        view_var = torch.tensor(cls.DEFAULT_VIEW_STD, dtype=torch.float64) ** 2
        light_var = torch.tensor(cls.DEFAULT_LIGHT_STD, dtype=torch.float64) ** 2
        return cls(torch.zeros(6), torch.diag(view_var), torch.zeros(4), torch.diag(light_var),
                   view_scale)

    @classmethod
    def load(cls, view_path: str | os.PathLike | None = None,
             light_path: str | os.PathLike | None = None,
             view_scale: float = 1.0) -> ViewLightPrior:
        """Read the release's ``{'mean', 'cov'}`` files; a missing path uses the default."""
        base = cls.default(view_scale)
        view_mean, view_cov = base.view_mean, base.view_cov
        light_mean, light_cov = base.light_mean, base.light_cov
        if view_path is not None:
            what = f"view prior {view_path}"
            view_mean, view_cov = _checked_mvn(load_torch(view_path, "view prior"), 6, what)
        if light_path is not None:
            what = f"light prior {light_path}"
            light_mean, light_cov = _checked_mvn(load_torch(light_path, "light prior"), 4, what)
        return cls(view_mean, view_cov, light_mean, light_cov, view_scale)

    def _sample(self, mean: torch.Tensor, factor: torch.Tensor, n: int,
                generator: torch.Generator | None) -> torch.Tensor:
        eps = torch.randn(n, len(mean), generator=generator, dtype=torch.float64)
        return (mean + eps @ factor.T).float()

    def sample_views(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Raw views (n, 6) from the view normal, yaw (index 1) multiplied by view_scale."""
        views = self._sample(self.view_mean, self._view_factor, n, generator)
        views[:, 1] *= self.view_scale
        return views

    def sample_lights(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Raw lights (n, 4) from the light normal."""
        return self._sample(self.light_mean, self._light_factor, n, generator)


def sample_random_light(n: int, ambient: torch.Tensor, diffuse: torch.Tensor,
                        rand_light: Sequence[float] = (-1, 1, -0.2, 0.8, -0.1, 0.6, -0.6),
                        generator: torch.Generator | None = None) -> Light:
    """Random lights for pseudo samples, as the release draws them.

    rand_light = (x_min, x_max, y_min, y_max, jitter_min, jitter_max, alpha): direction
    normalize(x, y, 1) with x, y uniform in their ranges; a jitter r uniform in
    [jitter_min, jitter_max] gives diffuse' = diffuse + r and ambient' = ambient + alpha * r
    (the release's ``(kd + r) * <n, l> + ka + alpha * r``). ambient, diffuse: scalars (the
    input image's light). Returns a :class:`Light` of batch n on the inputs' device.
    """
    x_min, x_max, y_min, y_max, j_min, j_max, alpha = (float(v) for v in rand_light)
    u = torch.rand(n, 3, generator=generator)
    dxy = torch.stack([x_min + (x_max - x_min) * u[:, 0], y_min + (y_max - y_min) * u[:, 1]], 1)
    jitter = j_min + (j_max - j_min) * u[:, 2]
    ambient = torch.as_tensor(ambient).reshape(-1)[:1]
    device, dtype = ambient.device, ambient.dtype
    jitter = jitter.to(device=device, dtype=dtype)
    diffuse = torch.as_tensor(diffuse).reshape(-1)[:1].to(device=device, dtype=dtype)
    return Light(ambient + alpha * jitter, diffuse + jitter,
                 light_direction(dxy.to(device=device, dtype=dtype)))
