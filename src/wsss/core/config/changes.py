"""The settings that say where a run runs (:data:`EXECUTION_KEYS`), and the config diff of a resume (``wsss
train`` on a run directory with a checkpoint)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from wsss.core.config.load import load_config, resolve_paths
from wsss.core.config.schema import Config
from wsss.core.errors import ConfigError

# The one declaration of the settings that say where and how fast a run or a job runs, not what it computes:
# a resume may change them freely (:func:`config_changes`), the settings stamps of the output folders
# leave them out (:func:`results_config`), and a route that compares its steps' settings drops their words
# (:func:`is_execution_word`, experiments/real_route.py). Every other key can change a result.
EXECUTION_KEYS = frozenset(
    {"run.dir", "run.device", "run.threads", "run.tensorboard", "data.num_workers", "infer.crf_workers"}
)


def is_execution_word(word: str) -> bool:
    """Whether the ``KEY=VALUE`` word ``word`` sets a key of :data:`EXECUTION_KEYS` (where / how fast, not what)."""
    return word.split("=", 1)[0] in EXECUTION_KEYS


def results_config(cfg: Config) -> dict[str, Any]:
    """``cfg`` as a plain dict without the keys of :data:`EXECUTION_KEYS`: the settings a result depends on."""
    out = cfg.to_dict()
    for key in EXECUTION_KEYS:
        section, name = key.split(".")
        out.get(section, {}).pop(name, None)
    return out


CONFIG_CHANGES_FILE = "config_changes.jsonl"


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v and k not in ("weights", "start_iters", "backbone_kwargs"):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def config_changes(old: Config, new: Config) -> dict[str, tuple[Any, Any]]:
    """{dotted key: (old value, new value)} for every setting that differs, execution keys excepted."""
    a, b = _flatten(old.to_dict()), _flatten(new.to_dict())
    return {
        k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k) and k not in EXECUTION_KEYS
    }


def check_config_change(
    cfg: Config,
    *,
    allow: bool = False,
    verify: Callable[[dict[str, Any], Path], None] | None = None,
    advice: str | None = None,
) -> dict[str, tuple[Any, Any]]:
    """Before resuming: compare ``cfg`` with the run's saved ``config.yaml``.

    A run with a checkpoint was trained with its saved settings, so other settings are refused (a
    ConfigError naming every differing key) unless ``allow``; an allowed change is appended to
    ``RUN/config_changes.jsonl`` (time, checkpoint step, old and new values). Returns the changes.
    ``verify(state, path)`` is called with ``last.pt`` before the change is recorded: the engine checks
    there that the checkpoint resumes under the new settings, so a change that fails is never recorded.
    ``advice``: what the refusal advises, where the command is not ``wsss train`` (a pipeline's options).
    """
    # imported here: the checkpoint reader imports torch, which a config never needs
    import json
    import time
    from itertools import chain

    from wsss.core.checkpoint import load_checkpoint
    from wsss.core.distributed import is_main_process

    run_dir = Path(cfg.run.dir)
    saved = run_dir / "config.yaml"
    # a checkpoint of the run, or of one of its rounds (SC-CAM); not a walk of the whole run folder
    ckpt = next(chain(run_dir.glob("checkpoints/*.pt"), run_dir.glob("round_*/checkpoints/*.pt")), None)
    if not saved.is_file() or ckpt is None:
        return {}
    old = resolve_paths(load_config(saved))  # an old run's relative paths were read from the current directory
    changes = config_changes(old, cfg)
    if cfg.train.epochs is not None:
        # max_iters follows from train.epochs (compared itself): a saved config holds it resolved (the
        # trainer's) or not (the SC-CAM driver's), and neither is a change of settings
        changes.pop("train.max_iters", None)
    if not changes:
        return {}
    listing = "; ".join(f"{k}: {old_v!r} -> {new_v!r}" for k, (old_v, new_v) in changes.items())
    if not allow:
        advice = advice or (
            "Use another run.dir, or pass --allow-config-change to resume with the new settings "
            f"(recorded in {run_dir / CONFIG_CHANGES_FILE})"
        )
        raise ConfigError(
            f"{saved}: this run was trained with other settings ({listing}); resuming would mix them. {advice}"
        )
    last = run_dir / "checkpoints" / "last.pt"
    step = None
    if last.is_file():
        state = load_checkpoint(last)
        step = state.get("step")
        if verify is not None:
            verify(state, last)
    record = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "step": step,
        "changes": {k: {"old": o, "new": n} for k, (o, n) in changes.items()},
    }
    if is_main_process():
        with open(run_dir / CONFIG_CHANGES_FILE, "a") as f:
            f.write(json.dumps(record) + "\n")
        print(f"{run_dir}: resuming with changed settings ({listing}); recorded in {run_dir / CONFIG_CHANGES_FILE}")
    return changes
