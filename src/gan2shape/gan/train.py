"""Training of a small StyleGAN2 on a folder of images, or on fresh renders of the project's
procedural faces (``gan2shape train-gan``, whose command line is :mod:`.train_gan_command`).

StyleGAN2's recipe (Karras et al. 2020) at small scale: non-saturating logistic loss, lazy R1
on the discriminator, optional lazy path-length regularisation and style mixing, an
exponential moving average of the generator (the network that is sampled and shipped), and
optional differentiable flip/translate augmentation of the discriminator's inputs. Adam's
learning rate and betas are corrected for the lazy regularisation interval as in the paper.

Two additions for training on a CPU budget (``--warmup-kimg``, ``--recon-weight``): an image
encoder (:mod:`.encoder`) turns the generator into a variational autoencoder, which is
trained alone first (reconstruction L1 + a KL pull of the encoder's z towards the generator's
N(0, I) prior), a warm start that converges in a fraction of the adversarial time; the
adversarial phase then keeps that reconstruction term, so the generator's range stays the
data's. Everything sees images only (``--procedural`` renders carry no labels into training).

The output folder holds ``checkpoint.pt`` (rosinality format: 'g', 'd', 'g_ema', plus the
optimiser states, the iteration, the options and the RNG state, so ``--resume`` continues
bit for bit), ``samples/<iteration>.png`` (fixed latents), ``losses.jsonl`` and
``options.json``.

Started by torchrun, every process trains the same networks on its share of each batch
(``--batch`` is the global batch, split evenly) and DistributedDataParallel averages the
gradients, so the recipe does not depend on the number of processes. Process 0 writes the
checkpoint, samples and log (its own losses); a checkpoint resumes with any number of
processes.
"""

from __future__ import annotations

import copy
import json
import math
import signal
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from ..distributed import SINGLE, Group
from ..errors import UserError
from ..fileio import load_torch, save_image, save_json
from . import Discriminator, Generator, save_stylegan2
from .encoder import ImageEncoder, kl_to_standard_normal, sample_posterior
from .images import random_flip_translate, tensor_to_uint8
from .losses import d_logistic_loss, g_nonsaturating_loss, path_length_penalty, r1_penalty

CHECKPOINT = "checkpoint.pt"

# The embedded 64 px model's widths, wide where the image is small and narrow where it is
# large. Chosen by throughput on a shared 2-core AVX2 CPU (one thread, batch 16, CPU time):
# 128/64/32/16/8 trains 1779 images per CPU-minute, 128/128/64/32/16 796, 256/256/128/64/32
# 264; a few thousand iterations is all such a machine gives in an hour or two.
DEFAULT_CHANNELS_64 = {4: 128, 8: 64, 16: 32, 32: 16, 64: 8}
# Procedural faces of the reconstruction preview: 10^9 batches of 16 are never reached.
PREVIEW_FIRST_FACE = 16 * 10**9


@dataclass
class TrainConfig:
    """Everything that defines a training run (saved in the checkpoint as 'args')."""

    size: int = 64
    channels: dict[int, int] = field(default_factory=lambda: dict(DEFAULT_CHANNELS_64))
    style_dim: int = 512
    n_mlp: int = 8
    batch: int = 16
    iters: int = 10000
    lr: float = 0.002
    r1: float = 10.0
    r1_every: int = 16
    pl_weight: float = 0.0
    pl_every: int = 4
    pl_batch_shrink: int = 2
    mixing: float = 0.9
    aug: bool = False
    aug_shift: float = 0.125
    ema_kimg: float = 10.0
    ema_rampup: float = 0.05
    seed: int = 0
    bf16: bool = False
    device: str = "cpu"
    ckpt_every: int = 1000
    ckpt_minutes: float = 5.0
    sample_every: int = 500
    log_every: int = 10
    n_samples: int = 64
    # fresh renders of this procedural family every batch instead of a folder (data.scenes)
    procedural: str | None = None
    data_seed: int = 0
    # the autoencoder warm start (iterations) and the reconstruction weight after it
    warmup_iters: int = 0
    recon_weight: float = 0.0
    # KL against the mean-pixel L1: at 0.05 the posterior collapsed (64-d z, 64 px v1 faces:
    # KL 0.03 nats, L1 stuck at 0.29 after 2 kimg); at 1e-4 it carries ~130 nats and the L1
    # fell to 0.12 by 10 kimg.
    kl_weight: float = 1e-4

    @property
    def uses_encoder(self) -> bool:
        return self.warmup_iters > 0 or self.recon_weight > 0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channels"] = {int(k): int(v) for k, v in self.channels.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        known["channels"] = {int(k): int(v) for k, v in known.get("channels", {}).items()}
        return cls(**known)


def parse_channels(text: str, size: int) -> dict[int, int]:
    """'256x256x128x64x32' (widths from 4 px up to ``size``) -> {4: 256, ..., 64: 32}."""
    resolutions = [2**i for i in range(2, int(math.log2(size)) + 1)]
    try:
        widths = [int(v) for v in text.replace(",", "x").split("x")]
    except ValueError as exc:
        raise UserError(f"--channels {text!r}: expected widths like 256x128x64") from exc
    if len(widths) != len(resolutions) or min(widths) < 1:
        raise UserError(
            f"--channels {text!r}: need {len(resolutions)} positive widths, one per resolution "
            f"{'/'.join(map(str, resolutions))} px"
        )
    return dict(zip(resolutions, widths, strict=True))


def build_networks(cfg: TrainConfig) -> tuple[Generator, Discriminator]:
    g = Generator(cfg.size, style_dim=cfg.style_dim, n_mlp=cfg.n_mlp, channels=cfg.channels)
    d = Discriminator(cfg.size, channels=cfg.channels)
    return g.to(cfg.device), d.to(cfg.device)


def build_optimisers(
    cfg: TrainConfig, g: Generator, d: Discriminator
) -> tuple[torch.optim.Adam, torch.optim.Adam]:
    """Adam(lr, betas (0, 0.99)) with StyleGAN2's lazy-regularisation corrections."""
    g_ratio = cfg.pl_every / (cfg.pl_every + 1) if cfg.pl_weight > 0 else 1.0
    d_ratio = cfg.r1_every / (cfg.r1_every + 1)
    g_optim = torch.optim.Adam(
        g.parameters(), lr=cfg.lr * g_ratio, betas=(0.0, 0.99**g_ratio)
    )
    d_optim = torch.optim.Adam(
        d.parameters(), lr=cfg.lr * d_ratio, betas=(0.0, 0.99**d_ratio)
    )
    return g_optim, d_optim


@torch.no_grad()
def accumulate(ema: torch.nn.Module, model: torch.nn.Module, beta: float) -> None:
    """ema = beta * ema + (1 - beta) * model for parameters; buffers are copied."""
    for p_ema, p in zip(ema.parameters(), model.parameters(), strict=True):
        p_ema.lerp_(p, 1.0 - beta)
    for b_ema, b in zip(ema.buffers(), model.buffers(), strict=True):
        b_ema.copy_(b)


def ema_beta(cfg: TrainConfig, images_seen: int) -> float:
    """Per-iteration EMA decay for a half-life of ``ema_kimg`` thousand images.

    rosinality's 0.5 ** (32 / (10 * 1000)) for batch 32; the half-life ramps up as 5 % of the
    images seen (StyleGAN2-ADA) so that early samples are not a blur of the random start.
    """
    half_life = cfg.ema_kimg * 1000
    if cfg.ema_rampup > 0:
        half_life = min(half_life, images_seen * cfg.ema_rampup)
    return 0.5 ** (cfg.batch / max(half_life, 1e-8))


def set_requires_grad(model: torch.nn.Module, flag: bool) -> None:
    for p in model.parameters():
        p.requires_grad_(flag)


def mixed_latents(g: Generator, batch: int, mixing: float, device: str) -> torch.Tensor:
    """Per-layer latents (B, n_latent, style_dim); with probability ``mixing`` two z's mix.

    Each mixed sample takes the first z's w for layers below a random crossover and the
    second's from there on (style-mixing regularisation).
    """
    if mixing <= 0:
        w = g.mapping(torch.randn(batch, g.style_dim, device=device))
        return w[:, None, :].expand(-1, g.n_latent, -1)
    z = torch.randn(2, batch, g.style_dim, device=device)
    w = g.mapping(z.flatten(0, 1)).view(2, batch, 1, -1)
    cut = torch.randint(1, g.n_latent, (batch, 1, 1), device=device)
    mix = torch.rand(batch, 1, 1, device=device) < mixing
    cut = torch.where(mix, cut, torch.full_like(cut, g.n_latent))
    layer = torch.arange(g.n_latent, device=device).view(1, -1, 1)
    return torch.where(layer < cut, w[0], w[1])


class GeneratorForward(torch.nn.Module):
    """A generator's training forward as one module call, the form DistributedDataParallel
    wraps: images of style-mixed prior latents and, with an encoder, reconstructions of real
    images through it (both with random noise)."""

    def __init__(self, g: Generator, mixing: float, encoder: ImageEncoder | None = None):
        super().__init__()
        self.g, self.mixing, self.encoder = g, mixing, encoder

    def forward(self, batch: int, real: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """{'fake' (B, 3, S, S), 'latents' (B, n_latent, style_dim)} when batch > 0, and
        with ``real`` (B', 3, S, S): {'recon' (B', 3, S, S), 'kl' ()}."""
        out = {}
        if batch > 0:
            device = next(self.g.parameters()).device
            latents = mixed_latents(self.g, batch, self.mixing, str(device))
            out.update(fake=self.g.synthesis(latents, noise="random"), latents=latents)
        if real is not None:
            mean, log_variance = self.encoder(real)
            w = self.g.mapping(sample_posterior(mean, log_variance))
            out.update(recon=self.g.synthesis(w, noise="random"),
                       kl=kl_to_standard_normal(mean, log_variance))
        return out


def rank_seed(seed: int, rank: int) -> int:
    """The sampling seed of process ``rank``: distinct per process, reproducible."""
    return seed + 1_000_003 * rank


class Trainer:
    """The training state (networks, optimisers, counters) and one-iteration updates."""

    def __init__(self, cfg: TrainConfig, images: torch.Tensor | None, group: Group = SINGLE):
        """images: (N, 3, size, size) uint8, the whole training set in memory, or None with
        ``cfg.procedural`` (fresh renders). group: the torchrun processes (a process group
        must be joined when there are several)."""
        if cfg.batch % group.world_size:
            raise UserError(f"--batch {cfg.batch} does not split over {group.world_size} "
                            "processes; give a multiple of their number")
        if (images is None) == (cfg.procedural is None):
            raise ValueError("give training images or a procedural family, not both")
        self.cfg, self.images, self.group = cfg, images, group
        self.local_batch = cfg.batch // group.world_size
        self.interrupted = False  # set by train() when a signal stopped it
        torch.manual_seed(cfg.seed)  # the same initial networks in every process
        self.g, self.d = build_networks(cfg)
        self.g_ema = copy.deepcopy(self.g).eval()
        set_requires_grad(self.g_ema, False)
        self.g_optim, self.d_optim = build_optimisers(cfg, self.g, self.d)
        self.encoder = self.e_optim = None
        if cfg.uses_encoder:
            self.encoder = ImageEncoder(cfg.size, cfg.style_dim, cfg.channels).to(cfg.device)
            self.e_optim = torch.optim.Adam(self.encoder.parameters(), lr=cfg.lr,
                                            betas=(0.0, 0.99))
        self.g_train: torch.nn.Module = GeneratorForward(self.g, cfg.mixing, self.encoder)
        self.d_train: torch.nn.Module = self.d
        if group.distributed:
            torch.manual_seed(rank_seed(cfg.seed, group.rank))
            ids = [torch.device(cfg.device).index] if cfg.device.startswith("cuda") else None
            # Buffers (the stored noise maps) never change in training: no per-step sync.
            ddp = {"device_ids": ids, "forward_sync_buffers": False,
                   "gradient_as_bucket_view": True}
            self.g_train = DistributedDataParallel(self.g_train, **ddp)
            self.d_train = DistributedDataParallel(self.d, **ddp)
            # D's (1, C) output weight gets its gradient with strides (1, 1), its bucket view
            # has (C, 1): the same memory layout for a size-1 dimension, but DDP warns.
            warnings.filterwarnings("ignore", message="Grad strides do not match bucket view")
        self.iteration = 0
        self.mean_path_length = torch.zeros((), device=cfg.device)
        fixed = torch.Generator().manual_seed(cfg.seed + 1)
        self.sample_z = torch.randn(cfg.n_samples, cfg.style_dim, generator=fixed)

    # -- one iteration ---------------------------------------------------------------------

    def autocast(self):
        return torch.autocast(
            device_type=torch.device(self.cfg.device).type, dtype=torch.bfloat16,
            enabled=self.cfg.bf16,
        )

    def real_batch(self) -> torch.Tensor:
        """This process's share of the iteration's training images (B, 3, S, S) in [-1, 1]:
        random images of the set, or the next never-seen procedural faces (faces
        ((iteration * processes + rank) * B ...) of the family's seed: exact on resume)."""
        if self.cfg.procedural is not None:
            from ..data.scenes import render_scenes

            first = (self.iteration * self.group.world_size + self.group.rank) * self.local_batch
            faces = range(first, first + self.local_batch)
            images = render_scenes(self.cfg.data_seed, faces, self.cfg.size,
                                   family=self.cfg.procedural)["image"]
            return images.to(self.cfg.device)
        index = torch.randint(0, self.images.shape[0], (self.local_batch,))
        batch = self.images[index].to(self.cfg.device, non_blocking=True)
        return batch.float() / 127.5 - 1.0

    def augment(self, images: torch.Tensor) -> torch.Tensor:
        if not self.cfg.aug:
            return images
        return random_flip_translate(images, self.cfg.aug_shift)

    def step(self) -> dict[str, torch.Tensor]:
        """One StyleGAN2 iteration: D step (+ lazy R1), G step (+ lazy path length), EMA.

        Each network is trained through its (distributed) training module and used as it
        is where it is held fixed, so only the trained network's gradients are averaged.
        Returns the iteration's losses and scores as detached 0-dim tensors on the device:
        reading them (``float``) waits for the device, so the loop does it only to log."""
        if self.iteration < self.cfg.warmup_iters:
            return self.warmup_step()
        cfg, g, d, batch = self.cfg, self.g, self.d, self.local_batch
        i = self.iteration
        stats: dict[str, torch.Tensor] = {}
        real = self.real_batch()

        # Discriminator.
        set_requires_grad(g, False)
        set_requires_grad(d, True)
        with self.autocast():
            with torch.no_grad():
                fake = self.g_train(batch)["fake"]
            fake_logits = self.d_train(self.augment(fake.detach()))
            real_logits = self.d_train(self.augment(real))
        d_loss = d_logistic_loss(real_logits, fake_logits)
        self.d_optim.zero_grad(set_to_none=True)
        d_loss.backward()
        self.d_optim.step()
        stats.update(
            d_loss=d_loss.detach(),
            real_score=real_logits.detach().float().mean(),
            fake_score=fake_logits.detach().float().mean(),
        )
        if cfg.r1 > 0 and i % cfg.r1_every == 0:
            real_req = real.detach().requires_grad_(True)
            with self.autocast():
                logits = self.d_train(self.augment(real_req))
            r1 = r1_penalty(logits, real_req)
            self.d_optim.zero_grad(set_to_none=True)
            # The 0 * logits term keeps every D output in the graph (no unused parameters).
            (cfg.r1 / 2 * r1 * cfg.r1_every + 0 * logits.float()[0, 0]).backward()
            self.d_optim.step()
            stats["r1"] = r1.detach()

        # Generator (and the encoder, whose reconstruction term keeps the range the data's).
        set_requires_grad(g, True)
        set_requires_grad(d, False)
        with self.autocast():
            out = self.g_train(batch, real if self.encoder is not None else None)
            fake_logits = d(self.augment(out["fake"]))
        g_loss = g_nonsaturating_loss(fake_logits)
        stats["g_loss"] = g_loss.detach()
        if self.encoder is not None:
            recon, kl = self.reconstruction_losses(out, real)
            g_loss = g_loss + cfg.recon_weight * (recon + cfg.kl_weight * kl)
            stats.update(recon=recon.detach(), kl=kl.detach())
            self.e_optim.zero_grad(set_to_none=True)
        self.g_optim.zero_grad(set_to_none=True)
        g_loss.backward()
        self.g_optim.step()
        if self.encoder is not None:
            self.e_optim.step()
        if cfg.pl_weight > 0 and i % cfg.pl_every == 0:
            pl_batch = max(1, batch // cfg.pl_batch_shrink)
            with self.autocast():
                out = self.g_train(pl_batch)
                fake, latents = out["fake"], out["latents"]
            penalty, self.mean_path_length, length = path_length_penalty(
                fake, latents, self.mean_path_length
            )
            self.g_optim.zero_grad(set_to_none=True)
            (cfg.pl_weight * cfg.pl_every * penalty + 0 * fake.float()[0, 0, 0, 0]).backward()
            self.g_optim.step()
            stats.update(pl=penalty.detach(), path_length=length.detach())

        self.iteration += 1
        accumulate(self.g_ema, g, ema_beta(cfg, self.iteration * cfg.batch))
        return stats

    @staticmethod
    def reconstruction_losses(out: dict[str, torch.Tensor], real: torch.Tensor
                              ) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean |recon - real|, KL of the encoder's posterior to N(0, I)): 0-dim each."""
        return (out["recon"].float() - real).abs().mean(), out["kl"]

    def warmup_step(self) -> dict[str, torch.Tensor]:
        """One iteration of the autoencoder warm start: the generator and the encoder learn
        to reconstruct real images (L1 + kl_weight * KL); the discriminator waits."""
        cfg = self.cfg
        real = self.real_batch()
        set_requires_grad(self.g, True)
        with self.autocast():
            out = self.g_train(0, real)
        recon, kl = self.reconstruction_losses(out, real)
        self.g_optim.zero_grad(set_to_none=True)
        self.e_optim.zero_grad(set_to_none=True)
        (recon + cfg.kl_weight * kl).backward()
        self.g_optim.step()
        self.e_optim.step()
        self.iteration += 1
        accumulate(self.g_ema, self.g, ema_beta(cfg, self.iteration * cfg.batch))
        return {"recon": recon.detach(), "kl": kl.detach()}

    # -- samples and checkpoints -----------------------------------------------------------

    @torch.no_grad()
    def sample_grid(self) -> np.ndarray:
        """The EMA generator on the fixed latents as one (H, W, 3) uint8 grid; with an
        encoder, two more rows: fixed training images and their reconstructions."""
        w = self.g_ema.mapping(self.sample_z.to(self.cfg.device))
        images = self.g_ema.synthesis(w, noise="stored").float().cpu()
        cols = int(math.ceil(math.sqrt(images.shape[0])))
        if self.encoder is not None:
            real = self.preview_images(cols)
            recon = self.g_ema.synthesis(self.g_ema.mapping(self.encoder(real)[0]),
                                         noise="stored").float().cpu()
            images = torch.cat([images, real.cpu(), recon])
        n = images.shape[0]
        rows = int(math.ceil(n / cols))
        s = self.cfg.size
        grid = torch.ones(3, rows * s, cols * s)
        for k in range(n):
            r, c = divmod(k, cols)
            grid[:, r * s:(r + 1) * s, c * s:(c + 1) * s] = images[k]
        return tensor_to_uint8(grid)

    def preview_images(self, n: int = 8) -> torch.Tensor:
        """n fixed training images (n, 3, S, S) for the reconstruction preview: the first of
        the folder, or procedural faces far beyond any the run will reach."""
        if self.cfg.procedural is None:
            return self.images[:n].to(self.cfg.device).float() / 127.5 - 1.0
        from ..data.scenes import render_scenes

        faces = range(PREVIEW_FIRST_FACE, PREVIEW_FIRST_FACE + n)
        return render_scenes(self.cfg.data_seed, faces, self.cfg.size,
                             family=self.cfg.procedural)["image"].to(self.cfg.device)

    def rng_state(self) -> dict:
        rng = {"cpu": torch.get_rng_state()}
        if torch.device(self.cfg.device).type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(torch.device(self.cfg.device))
        return rng

    def state_extra(self) -> dict:
        """Everything but the networks, for the checkpoint. A collective call when
        distributed: every process's RNG state is gathered (process 0's is 'rng_state')."""
        cfg = self.cfg
        ranks = self.group.gather(self.rng_state())
        extra = {}
        if self.encoder is not None:
            extra = {"encoder": {k: v.detach().cpu().clone()
                                 for k, v in self.encoder.state_dict().items()},
                     "e_optim": self.e_optim.state_dict()}
        return {
            **extra,
            "g_optim": self.g_optim.state_dict(),
            "d_optim": self.d_optim.state_dict(),
            "iteration": self.iteration,
            "mean_path_length": self.mean_path_length.detach().cpu(),
            "args": cfg.to_dict(),
            "rng_state": ranks[0],
            "rng_state_ranks": ranks,
        }

    def save(self, path: Path) -> None:
        """Write the checkpoint from process 0 (a collective call when distributed)."""
        extra = self.state_extra()
        if self.group.is_main:
            save_stylegan2(path, self.g, self.d, generator_ema=self.g_ema, extra=extra)

    def load(self, ckpt: dict) -> None:
        """Restore everything written by :meth:`save` (exact continuation)."""
        self.g.load_state_dict(ckpt["g"])
        self.d.load_state_dict(ckpt["d"])
        self.g_ema.load_state_dict(ckpt["g_ema"])
        self.g_optim.load_state_dict(ckpt["g_optim"])
        self.d_optim.load_state_dict(ckpt["d_optim"])
        if self.encoder is not None:
            self.encoder.load_state_dict(ckpt["encoder"])
            self.e_optim.load_state_dict(ckpt["e_optim"])
        self.iteration = int(ckpt["iteration"])
        self.mean_path_length = ckpt["mean_path_length"].to(self.cfg.device)
        ranks = ckpt.get("rng_state_ranks", [ckpt["rng_state"]])
        if len(ranks) != self.group.world_size:  # another number of processes: fresh streams
            torch.manual_seed(rank_seed(self.cfg.seed, self.group.rank) + self.iteration)
            return
        rng = ranks[self.group.rank]
        torch.set_rng_state(rng["cpu"])
        if "cuda" in rng and torch.device(self.cfg.device).type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], torch.device(self.cfg.device))


class _StopFlag:
    """Turns SIGTERM/SIGINT into a flag checked between iterations (clean checkpoint)."""

    def __init__(self):
        self.stop = False
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. inside a test runner's worker)
                pass
        return self

    def _handle(self, signum, frame):
        self.stop = True

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


def train(
    cfg: TrainConfig, images: torch.Tensor | None, out_dir: str | Path, resume: bool = False,
    progress: bool = True, group: Group = SINGLE, minutes: float | None = None,
) -> Trainer:
    """Train until ``cfg.iters`` iterations, checkpointing into ``out_dir``.

    images: (N, 3, size, size) uint8, or None with ``cfg.procedural``. With ``resume`` the
    run continues from
    ``out_dir/checkpoint.pt`` (networks, optimisers, iteration and RNG state), so a run
    that is stopped and resumed gives the same networks as one that never stopped (with the
    same number of processes). group: the torchrun processes, whose group is joined;
    process 0 writes every file. minutes: stop at the first iteration after this much time
    (a job's time limit), with a checkpoint to resume from.
    """
    from tqdm import tqdm

    out_dir = Path(out_dir)
    ckpt_path = out_dir / CHECKPOINT
    trainer = Trainer(cfg, images, group)
    if resume and ckpt_path.exists():
        trainer.load(load_torch(ckpt_path, "training checkpoint"))
    main = group.is_main
    log_path = out_dir / "losses.jsonl"
    if main:
        save_json(cfg.to_dict(), out_dir / "options.json")
        _truncate_log(log_path, trainer.iteration)

    last_ckpt_time = time.monotonic()
    deadline = None if minutes is None else last_ckpt_time + minutes * 60
    last_ckpt_iter = trainer.iteration
    window_start, window_iters = time.monotonic(), 0
    bar = tqdm(
        total=cfg.iters, initial=trainer.iteration, disable=not (progress and main), unit="it",
        dynamic_ncols=True,
    )
    with _StopFlag() as flag:
        # torchrun signals every process, not necessarily between the same iterations:
        # they agree on stopping (and on checkpointing) before each step.
        while trainer.iteration < cfg.iters:
            out_of_time = deadline is not None and time.monotonic() >= deadline
            if group.any(flag.stop or out_of_time, cfg.device):
                trainer.interrupted = not out_of_time  # a signal, here or elsewhere
                break
            step_stats = trainer.step()
            window_iters += 1
            it = trainer.iteration
            bar.update(1)
            if main and (it % cfg.log_every == 0 or it == cfg.iters):
                stats = {k: float(v) for k, v in step_stats.items()}
                elapsed = time.monotonic() - window_start
                stats.update(
                    iteration=it, kimg=it * cfg.batch / 1000,
                    sec_per_iter=elapsed / window_iters,
                    images_per_min=60 * window_iters * cfg.batch / max(elapsed, 1e-9),
                )
                with open(log_path, "a") as f:
                    f.write(json.dumps(stats) + "\n")
                bar.set_postfix({k: f"{stats[k]:.3f}" for k in ("d_loss", "g_loss", "recon")
                                 if k in stats})
                window_start, window_iters = time.monotonic(), 0
            if main and cfg.sample_every > 0 and it % cfg.sample_every == 0:
                save_image(trainer.sample_grid(), out_dir / "samples" / f"{it:07d}.png")
            due = (
                it - last_ckpt_iter >= cfg.ckpt_every
                or time.monotonic() - last_ckpt_time >= cfg.ckpt_minutes * 60
            )
            if group.any(due, cfg.device):
                trainer.save(ckpt_path)
                last_ckpt_time, last_ckpt_iter = time.monotonic(), it
    bar.close()
    if trainer.iteration != last_ckpt_iter:
        trainer.save(ckpt_path)
    if main:
        save_image(trainer.sample_grid(), out_dir / "samples" / f"{trainer.iteration:07d}.png")
    return trainer


def _truncate_log(path: Path, iteration: int) -> None:
    """Drop log lines beyond ``iteration`` (written after the checkpoint we resume from)."""
    if not path.exists():
        return
    kept = [
        line for line in path.read_text().splitlines()
        if line.strip() and json.loads(line).get("iteration", 0) <= iteration
    ]
    from ..fileio import save_text

    save_text("".join(line + "\n" for line in kept), path)
