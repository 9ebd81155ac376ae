"""The command line every experiment script shares (DESIGN.md Sec. 2).

An experiment script is two lines::

    from memrl.agents import sac
    from memrl.training import cli

    if __name__ == "__main__":
        cli.run(sac, default_env="pendulum")

Flags: ``--env --seed --num_seeds --total_steps --eval_every --eval_episodes
--logdir --resume --max_chunk --progress --obs --image_size --mpc
--eval_only --tensorboard --wandb --wandb_project --wandb_mode
--compilation_cache --compilation_cache_dir`` (``--variant`` for agents with
``VARIANTS``; the multi-process flags below) and
``--config.<field>=value`` overrides applied on top of
``Config.for_env(env)``. Bad input exits with status 2 and one line on
stderr, never a traceback.

``--eval_only`` trains nothing: it evaluates the newest checkpoint in
``--logdir`` (default: the run's default logdir from ``--env``, ``--seed``,
``--variant``) and appends rows to ``<logdir>/eval.csv``
(``runner.evaluate_checkpoint``; ``metrics.csv``, ``config.json`` and the
checkpoints are left as they are). The env, seeds, observation type and agent
config are the saved run's (its ``config.json``); only ``--eval_episodes``
(default: the run's) and the agent's evaluation settings
(``EVALUATION_FIELDS``: MAAC's ``mpc*``) may be given, and
``--total_steps``, ``--eval_every``, ``--max_chunk`` are ignored. One row
per seed, named ``policy`` (``mpc`` if the run's config has ``mpc=True``).
With ``--mpc`` every invocation writes both of MAAC's Table 1
rows per seed: ``policy`` (the deterministic policy) and ``mpc`` (CEM MPC
through the learned model), from the same checkpoint and the same initial
states.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import sys
from types import ModuleType

from absl import flags
from ml_collections import config_flags

from memrl import envs
from memrl.training import compilation_cache, distributed, logging_utils, sinks
from memrl.training.runner import RunConfig, UserError, evaluate_checkpoint, train

FLAGS = flags.FLAGS


def _define_flags(agent: ModuleType, default_env: str, defaults: RunConfig) -> None:
    flags.DEFINE_string("env", default_env, f"Environment: one of {', '.join(envs.NAMES)}.")
    flags.DEFINE_integer("seed", defaults.seed, "First seed.")
    flags.DEFINE_integer("num_seeds", defaults.num_seeds, "Seeds trained in parallel (vmapped).")
    flags.DEFINE_integer(
        "total_steps",
        None,
        "Environment steps per seed (default: the paper's run length, else per env).",
    )
    flags.DEFINE_integer("eval_every", None, "Env steps between evaluations (default: per env).")
    flags.DEFINE_integer("eval_episodes", defaults.eval_episodes, "Evaluation episodes.")
    flags.DEFINE_integer("max_chunk", defaults.max_chunk, "Most env steps per device call.")
    flags.DEFINE_string("logdir", None, "Output directory (default: runs/<algo>/<env>/seed<seed>).")
    flags.DEFINE_bool("resume", False, "Continue the run in --logdir from its last checkpoint.")
    flags.DEFINE_bool("progress", True, "Show a progress bar on stderr.")
    flags.DEFINE_bool(
        "mpc",
        False,
        "Evaluate with CEM model-predictive control (MAAC); with --eval_only, "
        "evaluate both with and without it.",
    )
    flags.DEFINE_bool(
        "eval_only",
        False,
        "Evaluate the newest checkpoint in --logdir (rows appended to eval.csv); no training.",
    )
    flags.DEFINE_enum(
        "obs",
        defaults.obs,
        list(envs.pixels.OBS_TYPES),
        "Observations: the env's state vector, or RGB images rendered in the step (dreamer).",
    )
    flags.DEFINE_integer("image_size", defaults.image_size, "Side of --obs=pixels images.")
    flags.DEFINE_string(
        "coordinator_address",
        None,
        "Multi-process runs: host:port of process 0 (default: detected on SLURM, Open MPI, "
        "TPU pods).",
    )
    flags.DEFINE_integer("num_processes", None, "Multi-process runs: the number of processes.")
    flags.DEFINE_integer("process_id", None, "Multi-process runs: this process's index.")
    flags.DEFINE_integer(
        "peer_timeout",
        60,
        "Multi-process runs: seconds to wait for the other processes to join, and after "
        "which a silent one counts as dead.",
    )
    flags.DEFINE_bool(
        "tensorboard", defaults.tensorboard, "Write TensorBoard event files beside metrics.csv."
    )
    flags.DEFINE_bool("wandb", defaults.wandb, "Log to Weights & Biases too (pip install wandb).")
    flags.DEFINE_string("wandb_project", defaults.wandb_project, "The W&B project.")
    flags.DEFINE_enum(
        "wandb_mode",
        None,
        list(sinks.WANDB_MODES),
        "W&B mode (default: W&B's own, WANDB_MODE); offline needs no network.",
    )
    flags.DEFINE_bool(
        "compilation_cache",
        True,
        "Keep traced and compiled programs on disk (memrl's program cache and JAX's "
        "compilation cache), so a repeated command starts in seconds.",
    )
    flags.DEFINE_string(
        "compilation_cache_dir",
        None,
        "The persistent caches' directory (default: $JAX_COMPILATION_CACHE_DIR, else "
        "$XDG_CACHE_HOME/memrl/xla or ~/.cache/memrl/xla; traced programs in programs/).",
    )
    if hasattr(agent, "VARIANTS"):
        flags.DEFINE_enum(
            "variant", agent.DEFAULT_VARIANT, list(agent.VARIANTS), "Which ablation to run."
        )
    config_flags.DEFINE_config_dataclass("config", agent.Config(), "Agent config overrides.")


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    distributed.exit_now(2)  # sys.exit; os._exit past a multi-process run's shutdown barrier


def resolve_config(
    agent: ModuleType,
    env_name: str,
    overrides: dict,
    obs: str = "state",
    variant: str | None = None,
):
    """``Config.for_env(env_name)`` with the ``--config.*`` overrides applied.

    Agents that learn from images take the observation type too:
    ``Config.for_env(env_name, obs)``; agents with ``VARIANTS`` (ablations,
    ``--variant``) take ``variant`` as well, before the overrides.
    """
    parameters = inspect.signature(agent.Config.for_env).parameters
    kwargs = {}
    if "obs" in parameters:
        kwargs["obs"] = obs
    if variant is not None and "variant" in parameters:
        kwargs["variant"] = variant
    config = agent.Config.for_env(env_name, **kwargs)
    fields = {f.name for f in dataclasses.fields(config)}
    for name, value in overrides.items():
        if name not in fields:
            raise UserError(f"unknown config field {name!r}; valid: {', '.join(sorted(fields))}")
        if isinstance(getattr(config, name), tuple) and isinstance(value, list):
            value = tuple(value)
        config = dataclasses.replace(config, **{name: value})
    return config


def _tuples(value):
    """JSON lists back to the tuples a hashable Config holds."""
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


def saved_config(agent: ModuleType, env_name: str, obs: str, values: dict):
    """The agent config saved in a run's ``config.json`` (its ``config``
    section), rebuilt on ``Config.for_env(env_name)``; fields the saved run
    did not have keep their defaults.

    Raises:
      UserError: a saved field the Config does not have, or a value that does
        not come back as saved.
    """
    base = resolve_config(agent, env_name, {}, obs)
    fields = {f.name for f in dataclasses.fields(base)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise UserError(
            f"the saved config has fields this code does not know: {', '.join(unknown)}"
        )
    config = dataclasses.replace(base, **{k: _tuples(v) for k, v in values.items()})
    again = logging_utils.config_values(config)
    for key, value in values.items():
        if again[key] != value:
            raise UserError(f"cannot rebuild the saved config field {key!r} ({value!r})")
    return config


def evaluate_only(agent: ModuleType, overrides: dict, logdir: str | None, variant: str | None):
    """``--eval_only`` (module docstring): evaluates the newest checkpoint of the
    run in ``logdir`` and appends its rows to ``eval.csv``; returns the rows."""
    name = agent.__name__.rsplit(".", 1)[-1]
    if FLAGS.resume:
        raise UserError("--eval_only trains nothing; drop --resume")
    run_name = name if variant is None else f"{name}_{variant}"
    logdir = logdir or os.path.join("runs", run_name, FLAGS.env, f"seed{FLAGS.seed}")
    saved = logging_utils.read_settings(logdir)
    if saved is None:
        raise UserError(f"no run to evaluate in {logdir} (no readable config.json)")
    if saved.get("algorithm") != name:
        raise UserError(f"{logdir} holds a {saved.get('algorithm')} run, not {name}")
    saved_run = saved["run"]
    for flag in ("env", "seed", "num_seeds", "obs", "image_size"):
        given = getattr(FLAGS, flag)
        if FLAGS[flag].present and given != saved_run.get(flag):
            raise UserError(
                f"--{flag}={given}, but the run in {logdir} has {flag} {saved_run.get(flag)!r}"
            )
    evaluation = tuple(getattr(agent, "EVALUATION_FIELDS", ()))
    changed = sorted(set(overrides) - set(evaluation))
    if changed:
        allowed = f" (evaluation settings: {', '.join(evaluation)})" if evaluation else ""
        raise UserError(
            f"--eval_only evaluates the saved agent of {logdir}; --config.{changed[0]} would "
            f"change it{allowed}"
        )
    obs = saved_run.get("obs", "state")
    config = saved_config(agent, saved_run["env"], obs, saved["config"])
    config = dataclasses.replace(config, **{k: _tuples(v) for k, v in overrides.items()})
    if FLAGS.mpc:  # MAAC Table 1: the same checkpoint with and without MPC
        controllers = {
            "policy": dataclasses.replace(config, mpc=False),
            "mpc": dataclasses.replace(config, mpc=True),
        }
    else:
        controllers = {"mpc" if getattr(config, "mpc", False) else "policy": config}
    known = {f.name for f in dataclasses.fields(RunConfig)}
    run_config = RunConfig(
        **{
            **{k: v for k, v in saved_run.items() if k in known},
            # The run's own number unless --eval_episodes is given.
            "eval_episodes": FLAGS.eval_episodes
            if FLAGS["eval_episodes"].present
            else saved_run.get("eval_episodes", FLAGS.eval_episodes),
            "logdir": logdir,
            "resume": False,
            "progress": False,
        }
    )
    rows = evaluate_checkpoint(agent, controllers, run_config)
    for controller in controllers:
        returns = [r["eval_return"] for r in rows if r["controller"] == controller]
        print(
            f"{name} {run_config.env} step {rows[0]['env_steps']}: {controller} eval_return "
            f"{sum(returns) / len(returns):.1f} over {len(returns)} seed(s)"
        )
    print(f"rows appended to {os.path.join(logdir, 'eval.csv')}")
    return rows


def default_steps(env_name: str) -> tuple[int, int]:
    """``(total_steps, eval_every)`` when the flags are not given and the
    agent's ``Config.run_length()`` (the paper's run length) has none."""
    if env_name in ("pendulum", "double_integrator"):
        return 20_000, 1000
    if env_name == "mountain_car":
        return 50_000, 2500
    return 1_000_000, 5000


def run(agent: ModuleType, default_env: str = "pendulum", argv: list[str] | None = None) -> None:
    """Parses flags, trains ``agent`` and exits non-zero with one line on bad input."""
    argv = list(sys.argv if argv is None else argv)
    name = agent.__name__.rsplit(".", 1)[-1]
    fields = sorted(f.name for f in dataclasses.fields(agent.Config))
    for arg in argv[1:]:
        if arg.startswith("--config."):
            field = arg[len("--config.") :].split("=", 1)[0].split(".", 1)[0]
            if field not in fields:
                _fail(f"unknown config field {field!r} for {name}; valid: {', '.join(fields)}")
    try:
        _define_flags(agent, default_env, RunConfig(env=default_env))
        FLAGS(argv)
        overrides = dict(config_flags.get_override_values(FLAGS["config"]))
        if FLAGS.mpc:
            if "mpc" not in fields:
                raise ValueError(f"--mpc: {name} has no model-predictive control")
            if not FLAGS.eval_only:  # --eval_only --mpc evaluates with and without
                overrides["mpc"] = True
        if FLAGS.peer_timeout <= 0:
            raise ValueError(f"--peer_timeout must be positive, got {FLAGS.peer_timeout}")
        try:
            compilation_cache.setup(FLAGS.compilation_cache, FLAGS.compilation_cache_dir)
        except OSError as e:
            raise ValueError(f"--compilation_cache_dir: {e.strerror}: {e.filename}") from None
        # Before anything touches a device: join the other processes, if any.
        distributed.initialize(
            FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id, FLAGS.peer_timeout
        )
    except (flags.Error, KeyError, ValueError, TypeError, AttributeError) as e:
        text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if isinstance(e, KeyError):
            text = f"unknown config field {text}"
        _fail(text)
    if FLAGS.eval_only:
        try:
            variant = FLAGS.variant if hasattr(agent, "VARIANTS") else None
            evaluate_only(agent, overrides, FLAGS.logdir, variant)
        except UserError as e:
            _fail(str(e))
        except KeyboardInterrupt:
            _fail("interrupted; nothing was written")
        return
    try:
        variant = FLAGS.variant if hasattr(agent, "VARIANTS") else None
        config = resolve_config(agent, FLAGS.env, overrides, FLAGS.obs, variant)
        total, every = default_steps(FLAGS.env) if FLAGS.env in envs.NAMES else (1, 1)
        paper_length = getattr(config, "run_length", lambda: None)()
        if paper_length:  # the paper's run length for this env (MEMR, MBPO, S2VG, MEMB)
            total = paper_length
        total = FLAGS.total_steps if FLAGS.total_steps is not None else total
        every = FLAGS.eval_every if FLAGS.eval_every is not None else min(every, max(total, 1))
        run_name = name if variant is None else f"{name}_{variant}"
        logdir = FLAGS.logdir or os.path.join("runs", run_name, FLAGS.env, f"seed{FLAGS.seed}")
        run_config = RunConfig(
            env=FLAGS.env,
            seed=FLAGS.seed,
            num_seeds=FLAGS.num_seeds,
            total_steps=total,
            eval_every=every,
            eval_episodes=FLAGS.eval_episodes,
            max_chunk=FLAGS.max_chunk,
            logdir=logdir,
            resume=FLAGS.resume,
            progress=FLAGS.progress,
            obs=FLAGS.obs,
            image_size=FLAGS.image_size,
            tensorboard=FLAGS.tensorboard,
            wandb=FLAGS.wandb,
            wandb_project=FLAGS.wandb_project,
            wandb_mode=FLAGS.wandb_mode,
        )
        if hasattr(agent, "fit_to_run"):  # schedules over the whole run (MaxEnt Dreamer's beta)
            config = agent.fit_to_run(config, total, set(overrides))
        rows = train(agent, config, run_config)
        distributed.finish()
    except (UserError, distributed.PeerError) as e:
        _fail(str(e))
    except KeyboardInterrupt:
        _fail("interrupted; the last checkpoint is kept (continue with --resume)")
    if rows and distributed.is_primary():
        final = [r["eval_return"] for r in rows if r["env_steps"] == rows[-1]["env_steps"]]
        mean = sum(final) / len(final)
        print(
            f"{name} {FLAGS.env}: final eval_return {mean:.1f} over {len(final)} seed(s); "
            f"logs in {run_config.logdir}"
        )
    distributed.leave()
