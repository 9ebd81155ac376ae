"""Run outputs: ``config.json``, ``metrics.csv`` rows, and the progress bar."""

from __future__ import annotations

import csv
import dataclasses
import importlib.metadata
import json
import os
import platform
import sys
from types import ModuleType
from typing import Any

import numpy as np
import tqdm

BASE_COLUMNS = ("env_steps", "seed", "eval_return", "wall_time", "sps", "train_return")
# Settings that may change between a run and its resumption.
RESUMABLE = (
    "total_steps",
    "resume",
    "progress",
    "logdir",
    "tensorboard",
    "wandb",
    "wandb_project",
    "wandb_mode",
)
PACKAGES = (
    "memrl",
    "jax",
    "jaxlib",
    "flax",
    "optax",
    "chex",
    "distrax",
    "brax",
    "mujoco",
    "mujoco-mjx",
    "orbax-checkpoint",
    "ml_collections",
    "absl-py",
    "numpy",
)


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def config_values(config: Any) -> dict:
    """An agent config as ``config.json`` stores it (JSON types; tuples as lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config), default=str))


def settings(agent: ModuleType, config: Any, run: Any) -> dict:
    """Every resolved setting of a run, plus the package versions."""
    return {
        "algorithm": agent.__name__.rsplit(".", 1)[-1],
        "run": dataclasses.asdict(run),
        "config": config_values(config),
        "versions": {p: _version(p) for p in PACKAGES},
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }


def write_settings(logdir: str, values: dict) -> None:
    with open(os.path.join(logdir, "config.json"), "w") as f:
        json.dump(values, f, indent=2, sort_keys=True)


def read_settings(logdir: str) -> dict | None:
    """The saved ``config.json`` of the run in ``logdir`` (None if there is none
    or it cannot be parsed)."""
    try:
        with open(os.path.join(logdir, "config.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def check_resumable(logdir: str, values: dict) -> None:
    """Raises ``UserError`` if ``values`` differ from the saved run in a way that
    would make the resumed run differ from an uninterrupted one."""
    from memrl.training.runner import UserError

    path = os.path.join(logdir, "config.json")
    if not os.path.exists(path):
        return
    with open(path) as f:
        saved = json.load(f)
    for section in ("run", "config"):
        old, new = saved.get(section, {}), values[section]
        for key in sorted(set(old) | set(new)):
            if key in RESUMABLE:
                continue
            if old.get(key) != new.get(key):
                raise UserError(
                    f"--resume with a different {section} setting {key!r}: saved "
                    f"{old.get(key)!r}, given {new.get(key)!r}"
                )
    if saved.get("algorithm") != values["algorithm"]:
        raise UserError(f"--resume of a {saved.get('algorithm')} run with {values['algorithm']}")


def rows(
    *,
    step: int,
    seeds: np.ndarray,
    eval_returns: np.ndarray,
    wall_time: float,
    sps: float,
    train_returns: np.ndarray,
    agent_metrics: dict,
    counts: dict | None = None,
    coverage: dict | None = None,
) -> list[dict]:
    """One row per seed; ``eval_returns`` is ``[num_seeds, episodes]``; metrics
    that are ``None`` (no learning in the window) or NaN for a seed (no step of
    the window computed them: ``Window.agent_means``) are left empty.

    ``coverage`` (``coverage/entropy`` float, ``coverage/cells`` int, each
    ``[num_seeds]``) gives the last columns; envs without a coverage grid pass
    ``{}`` and their rows have no such columns."""
    out = []
    for i, seed in enumerate(seeds):
        row = {
            "env_steps": int(step),
            "seed": int(seed),
            "eval_return": float(np.mean(eval_returns[i])),
            "wall_time": round(float(wall_time), 3),
            "sps": round(float(sps), 2),
            "train_return": float(train_returns[i]),
        }
        for key in sorted(counts or {}):
            row[key.split("/", 1)[1]] = int(np.asarray(counts[key])[i])
        for key in sorted(agent_metrics):
            value = agent_metrics[key]
            value = None if value is None else float(np.asarray(value)[i])
            row[key] = "" if value is None or np.isnan(value) else value
        for key in sorted(coverage or {}):
            value = np.asarray(coverage[key])[i]
            row[key] = int(value) if np.issubdtype(value.dtype, np.integer) else float(value)
        out.append(row)
    return out


class Window:
    """Accumulates chunk summaries between two log points (host side)."""

    def __init__(self, num_seeds: int):
        self.periodic: dict[str, np.ndarray] = {}
        # The coverage histogram is cumulative: its latest summary is the value.
        self.coverage: dict[str, np.ndarray] = {}
        self.counts: dict[str, np.ndarray] = {}
        self.sums: dict[str, np.ndarray] = {}
        # Per train_step metric: the steps that computed it (loop.py docstring).
        self.steps: dict[str, np.ndarray] = {}
        self.learned = np.zeros(num_seeds)
        self.return_sum = np.zeros(num_seeds)
        self.episodes = np.zeros(num_seeds)

    def add(self, chunk) -> None:
        n = np.asarray(chunk.learned_steps, np.float64)
        for key, value in chunk.agent.items():
            k = np.asarray(chunk.agent_steps[key], np.float64)
            # A chunk mean with weight 0 is NaN by contract: leave it out.
            with np.errstate(invalid="ignore"):
                weighted = np.where(k > 0, k * np.asarray(value, np.float64), 0.0)
            self.sums[key] = self.sums.get(key, 0.0) + weighted
            self.steps[key] = self.steps.get(key, 0.0) + k
        for key, value in chunk.counts.items():
            self.counts[key] = self.counts.get(key, 0) + np.asarray(value, np.int64)
        self.periodic = {k: np.asarray(v) for k, v in chunk.periodic.items()}
        self.coverage = {k: np.asarray(v) for k, v in chunk.coverage.items()}
        self.learned += n
        self.return_sum += chunk.episode_return_sum
        self.episodes += chunk.episodes

    def agent_means(self) -> dict:
        """Each metric's mean over the window's steps that computed it
        (``[num_seeds]``, NaN for a seed where none did), or ``None`` where no
        step of any seed did (no learning yet, or a rare metric)."""
        out = {}
        for key, s in self.sums.items():
            n = self.steps[key]
            if not np.any(n):
                out[key] = None
                continue
            with np.errstate(invalid="ignore", divide="ignore"):
                out[key] = np.where(n > 0, s / np.maximum(n, 1), np.nan)
        return out

    def computed(self) -> dict:
        """Per ``train_step`` metric, ``[num_seeds]`` bools: some step of the
        window computed it (where not, its mean is NaN by contract)."""
        return {key: n > 0 for key, n in self.steps.items()}

    def train_returns(self) -> np.ndarray:
        """Mean return of the training episodes that ended (NaN where none did)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.episodes > 0, self.return_sum / self.episodes, np.nan)


class MetricsWriter:
    """Appends rows to a CSV; on resumption drops rows past the checkpoint.

    Args:
      path: the CSV file.
      keep_until: rows with ``env_steps`` above this are removed first (they
        were logged after the checkpoint a resumed run restarts from).
    """

    def __init__(self, path: str, keep_until: int = 0):
        self.path = path
        self.columns: list[str] | None = None
        if keep_until == 0 or not os.path.exists(path):
            if os.path.exists(path):
                os.remove(path)
            return
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            self.columns = list(reader.fieldnames or [])
            kept = [r for r in reader if int(r["env_steps"]) <= keep_until]
        self._rewrite(kept)

    def _rewrite(self, kept: list[dict]) -> None:
        tmp = self.path + ".tmp"
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.columns)
            writer.writeheader()
            writer.writerows(kept)
        os.replace(tmp, self.path)

    def write(self, new_rows: list[dict]) -> None:
        if not new_rows:
            return
        if self.columns is None:
            self.columns = list(new_rows[0])
            with open(self.path, "w", newline="") as f:
                csv.DictWriter(f, fieldnames=self.columns).writeheader()
        with open(self.path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.columns, extrasaction="ignore")
            writer.writerows(new_rows)


def progress_bar(total: int, initial: int, enabled: bool = True) -> tqdm.tqdm:
    """A progress bar on stderr counting environment steps."""
    return tqdm.tqdm(
        total=total,
        initial=initial,
        disable=not enabled,
        unit="step",
        unit_scale=True,
        dynamic_ncols=True,
        file=sys.stderr,
    )
