"""Two-stage training of 3D-LMNet: (1) point auto-encoder, (2) image encoder by latent matching.

A run folder holds::

    run.json           the training options and the model configuration (written first)
    config.json        the model configuration (LMNetConfig), also beside the exported weights
    last.pt            resumable checkpoint: step, model, both optimisers (torch, weights_only-safe)
    model.safetensors  the weights after the last step (exported at the end and at checkpoints)
    train_log.csv      stage, step, loss, val_loss, val_chamfer, lr, seconds
    tb/                TensorBoard event files
    .train.lock        held (flock) by the training writing the folder: one at a time

Every random choice of step ``s`` (the batch, the encoder's point subset, the crop jitter, the
latent noise) is drawn from generators seeded by ``(seed, s)``, so a run resumed from
``last.pt`` reproduces the uninterrupted run bit for bit (same machine, same thread count).
"""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from core.errors import UserError

from . import data as lm_data
from .config import LMNetConfig, shipped_config, tiny_config
from .losses import chamfer_loss, diversity_loss, latent_matching_loss, repulsion_loss
from .modeling import LMNet

log = logging.getLogger(__name__)

CSV_FIELDS = ("stage", "step", "loss", "val_loss", "val_chamfer", "lr", "seconds")


@dataclass
class TrainOptions:
    """Options of one training run (saved to ``run.json``).

    Attributes:
        data: data root (3D-R2N2 layout with ``splits.json``).
        out: run folder.
        variant: ``original`` (PointNet AE) or ``dgcnn``.
        size: ``shipped`` (the configuration trained here), ``published`` or ``tiny``.
        model: LMNetConfig overrides (e.g. ``{"probabilistic": true}``).
        ae_steps / latent_steps: optimisation steps of stage 1 and stage 2.
        stop_after: end this invocation after this global step (resume later); 0 = run to the end.
    """

    data: str
    out: str
    variant: str = "original"
    size: str = "shipped"
    model: dict = field(default_factory=dict)
    ae_steps: int = 1000
    latent_steps: int = 1000
    batch_size: int = 8
    latent_batch_size: int = 16
    ae_lr: float = 5e-4
    latent_lr: float = 5e-4
    seed: int = 0
    log_every: int = 10
    val_every: int = 200
    checkpoint_every: int = 100
    threads: int = 1
    crop_jitter: int = 4
    val_views: tuple = (0, 6, 12, 18)
    stop_after: int = 0

    def model_config(self) -> LMNetConfig:
        if self.size == "shipped":
            base = shipped_config(self.variant)
        elif self.size == "published":
            base = LMNetConfig.for_variant(self.variant)
        elif self.size == "tiny":
            base = tiny_config(self.variant)
        else:
            raise ValueError(f"unknown size {self.size!r} (shipped, published or tiny)")
        return LMNetConfig.from_dict({**base.to_dict(), **self.model})


def _rng(seed: int, step: int, purpose: int) -> np.random.Generator:
    return np.random.default_rng([seed, step, purpose])


def _atomic_torch_save(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def save_weights(model: LMNet, folder: Path) -> Path:
    """Write ``model.safetensors`` + ``config.json`` into ``folder`` (atomically)."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    tmp = folder / "model.safetensors.tmp"
    save_file(state, str(tmp), metadata={"format": "pt", "config": json.dumps(model.config.to_dict())})
    os.replace(tmp, folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps(model.config.to_dict(), indent=1))
    return folder / "model.safetensors"


class ProgressBar:
    """One-line progress bar with ETA on stderr (updates at most every 0.5 s)."""

    def __init__(self, total: int, start: int = 0, stream=None) -> None:
        self.total, self.start, self.stream = total, start, stream or sys.stderr
        self.t0 = time.perf_counter()
        self.last = 0.0

    def update(self, step: int, text: str, force: bool = False) -> None:
        now = time.perf_counter()
        if not force and now - self.last < 0.5:
            return
        self.last = now
        done = step - self.start
        rate = done / max(now - self.t0, 1e-9)
        eta = (self.total - step) / rate if rate > 0 else float("nan")
        frac = step / max(self.total, 1)
        bar = "#" * int(30 * frac) + "." * (30 - int(30 * frac))
        eta_text = "--:--" if not np.isfinite(eta) else f"{int(eta // 60):02d}:{int(eta % 60):02d}"
        self.stream.write(f"\r[{bar}] {step}/{self.total} {text} ETA {eta_text}   ")
        self.stream.flush()

    def close(self) -> None:
        self.stream.write("\n")
        self.stream.flush()


def _encoder_subset(points: np.ndarray, count: int, rng: np.random.Generator | None) -> np.ndarray:
    """``[B,P,3] -> [B,count,3]``: random (rng) or evenly strided (None) subsets of the points."""
    b, p, _ = points.shape
    if count >= p:
        return points
    if rng is None:
        return points[:, np.linspace(0, p - 1, count).round().astype(int)]
    idx = np.stack([rng.permutation(p)[:count] for _ in range(b)])
    return np.take_along_axis(points, idx[..., None], axis=1)


def _images(images: np.ndarray, config: LMNetConfig, rng: np.random.Generator | None, jitter: int) -> torch.Tensor:
    """``uint8 [B,H,W,3] -> float [B,3,S,S]``: 128 crop (centre, +-jitter px with rng), resized to S."""
    out = []
    for image in images:
        h, w = image.shape[:2]
        crop = min(128, h, w)
        top, left = (h - crop) // 2, (w - crop) // 2
        if rng is not None and jitter > 0:
            top = int(np.clip(top + rng.integers(-jitter, jitter + 1), 0, h - crop))
            left = int(np.clip(left + rng.integers(-jitter, jitter + 1), 0, w - crop))
        out.append(lm_data.crop_to_tensor_array(image, crop, (top, left), config.image_size))
    return torch.from_numpy(np.stack(out))


@torch.no_grad()
def shape_codes(model: LMNet, points: np.ndarray, encoder_points: int, batch: int = 32) -> torch.Tensor:
    """``[S,latent_dim]`` codes of clouds ``[S,P,3]`` (eval mode, evenly strided subsets)."""
    model.eval()
    subset = _encoder_subset(points, encoder_points, None)
    return torch.cat([model.encode_points(torch.from_numpy(subset[i:i + batch]))
                      for i in range(0, len(subset), batch)])


class Trainer:
    """Runs (or resumes) a two-stage training described by :class:`TrainOptions`."""

    def __init__(self, options: TrainOptions, progress=None) -> None:
        self.options = options
        self.out = Path(options.out)
        self.config = options.model_config()
        self.progress = progress
        torch.set_num_threads(max(1, int(options.threads)))
        train = lm_data.list_models(options.data, "train")
        val = lm_data.list_models(options.data, "val")
        self.train = lm_data.ShapeImageSet(train)
        available = len(val[0].metadata())
        val_views = sorted({int(v) % available for v in options.val_views})  # fewer views: wrap round
        self.val = lm_data.ShapeImageSet(val, views=val_views)
        torch.manual_seed(options.seed)
        self.model = LMNet(self.config)
        self.ae_params = [p for n, p in self.model.named_parameters() if not n.startswith("image_encoder.")]
        self.image_params = [p for p in self.model.image_encoder.parameters() if p.requires_grad]
        self.opt_ae = torch.optim.Adam(self.ae_params, lr=options.ae_lr)
        self.opt_latent = torch.optim.Adam(self.image_params, lr=options.latent_lr)
        self.step = 0
        self.codes: torch.Tensor | None = None

    @property
    def total_steps(self) -> int:
        return self.options.ae_steps + self.options.latent_steps

    # ------------------------------------------------------------- checkpointing
    def save(self) -> None:
        _atomic_torch_save({"step": torch.tensor(self.step), "model": self.model.state_dict(),
                            "opt_ae": self.opt_ae.state_dict(), "opt_latent": self.opt_latent.state_dict()},
                           self.out / "last.pt")
        save_weights(self.model, self.out)

    def resume(self) -> bool:
        path = self.out / "last.pt"
        if not path.is_file():
            return False
        state = torch.load(path, map_location="cpu", weights_only=True)
        self.model.load_state_dict(state["model"])
        self.opt_ae.load_state_dict(state["opt_ae"])
        self.opt_latent.load_state_dict(state["opt_latent"])
        self.step = int(state["step"])
        self._truncate_log(self.step)
        log.info("resumed %s at step %d", self.out, self.step)
        return True

    def _truncate_log(self, step: int) -> None:
        path = self.out / "train_log.csv"
        if not path.is_file():
            return
        with open(path, newline="") as handle:
            rows = [r for r in csv.DictReader(handle) if int(r["step"]) <= step]
        with open(path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, CSV_FIELDS)
            writer.writeheader()
            writer.writerows(rows)

    def _log_row(self, row: dict) -> None:
        path = self.out / "train_log.csv"
        new = not path.is_file()
        with open(path, "a", newline="") as handle:
            writer = csv.DictWriter(handle, CSV_FIELDS)
            if new:
                writer.writeheader()
            writer.writerow({k: row.get(k, "") for k in CSV_FIELDS})

    # ------------------------------------------------------------- steps
    def ae_step(self, step: int) -> float:
        o, c = self.options, self.config
        rng = _rng(o.seed, step, 1)
        pick = rng.choice(len(self.train), size=min(o.batch_size, len(self.train)), replace=False)
        target = self.train.points[pick]
        inputs = _encoder_subset(target, c.encoder_points, rng)
        self.model.point_encoder.train()
        self.model.decoder.train()
        pred = self.model.autoencode(torch.from_numpy(inputs))
        loss = chamfer_loss(pred, torch.from_numpy(target))
        if c.repulsion_weight > 0:
            loss = loss + c.repulsion_weight * repulsion_loss(pred, c.repulsion_k, c.repulsion_h)
        self.opt_ae.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_ae.step()
        return loss.item()

    def latent_step(self, step: int) -> float:
        o, c = self.options, self.config
        if self.codes is None:
            self.codes = shape_codes(self.model, self.train.points, c.encoder_points)
        for p in self.ae_params:
            p.requires_grad_(False)
        self.model.point_encoder.eval()
        self.model.decoder.eval()
        self.model.image_encoder.train()
        rng = _rng(o.seed, step, 2)
        n_views = self.train.images.shape[1]
        flat = rng.choice(len(self.train) * n_views, size=o.latent_batch_size, replace=False)
        shapes, views = flat // n_views, flat % n_views
        images = _images(self.train.images[shapes, views], c, rng, o.crop_jitter)
        mean, sigma = self.model.encode_image(images)
        generator = torch.Generator().manual_seed(int(o.seed) * 1_000_003 + step)
        code = self.model.sample_code(mean, sigma, generator)
        loss = latent_matching_loss(code, self.codes[shapes], c.matching_loss)
        if sigma is not None and c.diversity_weight > 0:
            azimuth = torch.from_numpy(self.train.azimuths[shapes, views])
            loss = loss + c.diversity_weight * diversity_loss(sigma, azimuth, c.diversity_alpha)
        self.opt_latent.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_latent.step()
        return loss.item()

    @torch.no_grad()
    def validate(self, stage: str) -> dict:
        self.model.eval()
        points = torch.from_numpy(self.val.points)
        if stage == "ae":
            inputs = torch.from_numpy(_encoder_subset(self.val.points, self.config.encoder_points, None))
            return {"val_chamfer": float(chamfer_loss(self.model.autoencode(inputs), points))}
        codes = shape_codes(self.model, self.val.points, self.config.encoder_points)
        s, v = self.val.images.shape[:2]
        images = _images(self.val.images.reshape(s * v, *self.val.images.shape[2:]), self.config, None, 0)
        mean, _ = self.model.encode_image(images)
        target = codes.repeat_interleave(v, dim=0)
        pred = self.model.decode(mean)
        return {"val_loss": float(latent_matching_loss(mean, target, self.config.matching_loss)),
                "val_chamfer": float(chamfer_loss(pred, points.repeat_interleave(v, dim=0)))}

    # ------------------------------------------------------------- the loop
    def run(self, resume: bool = True) -> dict:
        from torch.utils.tensorboard import SummaryWriter

        o = self.options
        self.out.mkdir(parents=True, exist_ok=True)
        if not (resume and self.resume()):
            self.step = 0
            for stale in ("train_log.csv",):
                (self.out / stale).unlink(missing_ok=True)
        (self.out / "run.json").write_text(json.dumps(
            {"train": dataclasses.asdict(o), "model": self.config.to_dict()}, indent=1, default=list))
        (self.out / "config.json").write_text(json.dumps(self.config.to_dict(), indent=1))
        writer = SummaryWriter(str(self.out / "tb"), purge_step=self.step)
        end = self.total_steps if not o.stop_after else min(self.total_steps, o.stop_after)
        bar = ProgressBar(self.total_steps, self.step)
        t0 = time.perf_counter()
        last_loss = float("nan")
        try:
            while self.step < end:
                stage = "ae" if self.step < o.ae_steps else "latent"
                loss = self.ae_step(self.step) if stage == "ae" else self.latent_step(self.step)
                self.step += 1
                last_loss = loss
                writer.add_scalar(f"{stage}/loss", loss, self.step)
                row = None
                if self.step % o.log_every == 0 or self.step == end:
                    row = {"stage": stage, "step": self.step, "loss": f"{loss:.6g}",
                           "lr": o.ae_lr if stage == "ae" else o.latent_lr,
                           "seconds": f"{time.perf_counter() - t0:.1f}"}
                boundary = self.step == o.ae_steps or self.step == self.total_steps
                if self.step % o.val_every == 0 or boundary:
                    val = self.validate(stage)
                    for key, value in val.items():
                        writer.add_scalar(f"{stage}/{key}", value, self.step)
                    row = row or {"stage": stage, "step": self.step, "loss": f"{loss:.6g}",
                                  "lr": o.ae_lr if stage == "ae" else o.latent_lr,
                                  "seconds": f"{time.perf_counter() - t0:.1f}"}
                    row.update({k: f"{v:.6g}" for k, v in val.items()})
                if row is not None:
                    self._log_row(row)
                if self.step % o.checkpoint_every == 0 or self.step == end or boundary:
                    self.save()
                bar.update(self.step, f"{stage} loss {loss:.4g}", force=self.step == end)
                if self.progress is not None:
                    self.progress(self.step / self.total_steps, f"{stage} step {self.step} loss {loss:.4g}")
        finally:
            writer.close()
            bar.close()
        return {"step": self.step, "total_steps": self.total_steps, "loss": last_loss,
                "seconds": time.perf_counter() - t0, "out": str(self.out)}


class RunFolderBusy(UserError):
    """Another training (a job or a process) is writing the same run folder."""


LOCK_NAME = ".train.lock"


@contextlib.contextmanager
def exclusive(out: Path):
    """Hold the run folder ``out`` (created if missing) for one training at a time: an exclusive
    ``flock`` on ``out/.train.lock``, released when the block ends or the process dies. Raises
    :class:`RunFolderBusy` when another holds it (two trainings into one folder would mix their
    checkpoints)."""
    import fcntl

    out.mkdir(parents=True, exist_ok=True)
    with open(out / LOCK_NAME, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunFolderBusy(f"another training is writing {out}; wait for it (python -m core jobs list) "
                                "or choose another --out") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def train(options: TrainOptions, resume: bool = True, progress=None) -> dict:
    """Train (or resume) a run, holding its folder (:func:`exclusive`); returns ``{step,
    total_steps, loss, seconds, out}``."""
    with exclusive(Path(options.out)):
        return Trainer(options, progress).run(resume=resume)
