"""Seeding, device and profile selection, and the provenance line every chapter prints.

A *profile* is one switch for the scale of every experiment:

- ``smoke``: tiny subsets and one epoch, so a whole notebook runs in about a minute on 2 CPU cores
  (nbval and CI use it);
- ``cpu``: results that teach, each chapter within about 20 minutes on 2 CPU cores;
- ``gpu``: the full, seed-faithful settings for a student's GPU.

``COURSE_PROFILE`` selects it; when unset, ``gpu`` if CUDA is available, else ``cpu``.

``setup`` also decides the one device every training runs on (``current_device``), and
``COURSE_DRY_RUN=<steps>`` turns any profile into a *dry run*: every ``fit`` takes at most that many
steps per epoch (at the real batch size) for at most two epochs, and every evaluation or inference computes
its first batch cut to ``DRY_RUN_ROWS`` rows and repeats them to the real number of rows, so a chapter's full
configuration (models, shapes, data pipelines, loops, figures) is exercised in minutes.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import random
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

PROFILES = ("smoke", "cpu", "gpu")
_ENV_VAR = "COURSE_PROFILE"
_DRY_RUN_VAR = "COURSE_DRY_RUN"
DRY_RUN_ROWS = 8  # rows an evaluation or inference computes under a dry run (then repeats to the real count)
_DEVICE: torch.device | None = None  # what setup chose; None before setup


def _select_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def current_device() -> torch.device:
    """The device ``setup`` chose for every model and training (before ``setup``: CUDA if available, else CPU)."""
    return _DEVICE if _DEVICE is not None else _select_device()


def place_on_device(model: torch.nn.Module) -> torch.device:
    """Put ``model`` on ``current_device()`` (with a warning if it was elsewhere; channels-last on CUDA) and
    return that device. ``fit`` calls it, so a training never runs on a device the provenance line does not name."""
    target = current_device()
    here = next(model.parameters(), torch.empty(0)).device
    if here.type != target.type or (target.index is not None and here.index != target.index):
        warnings.warn(f"the model was on {here}; moving it to {target}, the device course_utils.setup chose.",
                      stacklevel=3)
        model.to(target)
    if target.type == "cuda":
        model.to(memory_format=torch.channels_last)
    return next(model.parameters(), torch.empty(0, device=target)).device


def dry_run_steps() -> int | None:
    """``$COURSE_DRY_RUN`` as a number of steps (``None`` when unset): the cap of a dry run."""
    value = os.environ.get(_DRY_RUN_VAR, "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"{_DRY_RUN_VAR} must be a positive number of steps (e.g. {_DRY_RUN_VAR}=2), got {value!r}; "
                         f"unset it for a real run.")
    return int(value)


def dry_run_rows() -> int | None:
    """Under a dry run, how many rows of its first batch an evaluation or inference computes (else ``None``)."""
    return DRY_RUN_ROWS if dry_run_steps() else None


def get_profile(profile: str | None = None) -> str:
    """Return the active profile: ``profile`` if given, else ``$COURSE_PROFILE``, else a default."""
    name = profile if profile is not None else os.environ.get(_ENV_VAR, "").strip()
    if not name:
        return "gpu" if torch.cuda.is_available() else "cpu"
    name = name.lower()
    if name not in PROFILES:
        raise ValueError(
            f"Unknown profile {name!r}. Valid profiles are {', '.join(PROFILES)}; "
            f"set {_ENV_VAR}=smoke (fast check), cpu (2-core laptop) or gpu (full experiment)."
        )
    return name


class Config(dict):
    """A chapter's configuration: a plain ``dict`` that a notebook shows one key per line (long values wrapped),
    so a reader sees it without scrolling sideways."""

    def _repr_pretty_(self, p, cycle) -> None:
        import pprint

        width = max(len(str(k)) for k in self) if self else 0
        lines = []
        for key, value in self.items():
            text = pprint.pformat(value, width=max(40, 100 - width - 2), sort_dicts=False, compact=True)
            lines.append(f"{str(key):<{width}}  " + text.replace("\n", "\n" + " " * (width + 2)))
        p.text("\n".join(lines))


def by_profile(*, smoke, cpu, gpu, profile: str | None = None):
    """Return the value for the active profile, e.g. ``by_profile(smoke=1, cpu=8, gpu=50)``; a ``dict`` value
    comes back as a ``Config`` (a dict that a notebook displays one key per line)."""
    value = {"smoke": smoke, "cpu": cpu, "gpu": gpu}[get_profile(profile)]
    return Config(value) if type(value) is dict else value


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy and PyTorch (CPU and all GPUs)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def _git_commit() -> str:
    """Short commit of the course repository, or ``unknown`` outside a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown"


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    threads = torch.get_num_threads()
    return f"cpu ({platform.machine()}, {threads} threads)"


@dataclass(frozen=True)
class Runtime:
    """What ``setup`` decided: the profile, the device and the seed."""

    profile: str
    device: torch.device
    seed: int
    provenance: str


def setup(seed: int = 0, profile: str | None = None, data_source: str | None = None, quiet: bool = False) -> Runtime:
    """Seed everything, pick the device and profile, and print one provenance line.

    Args:
        seed: seeds Python, NumPy and PyTorch.
        profile: ``smoke`` | ``cpu`` | ``gpu``; ``None`` reads ``$COURSE_PROFILE``.
        data_source: where the data came from (e.g. the path ``load_fashion_mnist`` used), printed
            in the provenance line; ``None`` looks it up without reading the data.
        quiet: return the line without printing it.
    """
    import course_utils

    global _DEVICE
    profile = get_profile(profile)
    seed_everything(seed)
    torch.set_flush_denormal(True)  # denormals are slow on x86 CPUs and change nothing we measure
    device = _DEVICE = _select_device()
    if device.type == "cuda":  # fastest kernels for fixed shapes; the checked cells run under smoke on a CPU
        torch.backends.cudnn.benchmark = profile != "smoke"
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    if data_source is None:
        from course_utils.data import describe_fashion_mnist_source

        data_source = describe_fashion_mnist_source()
    dry = dry_run_steps()
    line = (
        f"profile={profile}{f' (dry run: {dry} steps)' if dry else ''} | device={_device_name(device)} | "
        f"torch {torch.__version__} | "
        f"course_utils {course_utils.__version__} | commit {_git_commit()} | "
        f"{_dt.date.today().isoformat()} | data: {data_source}"
    )
    if not quiet:
        print(line)
    return Runtime(profile=profile, device=device, seed=seed, provenance=line)


__all__ = ["Config", "DRY_RUN_ROWS", "PROFILES", "Runtime", "by_profile", "current_device", "dry_run_rows",
           "dry_run_steps", "get_profile", "place_on_device", "seed_everything", "setup"]
