"""Every registered method and its tiny training settings (``Method.tiny_overrides``): the contract test over
every method (tests/methods/test_contract.py) and the CUDA checks (tests/cuda/) train them."""

from __future__ import annotations

from importlib.metadata import entry_points

from conftest import REPO
from wsss.core.config import Config, load_config
from wsss.methods import available_methods, get_method_class, import_custom_modules
from wsss.methods.contract import ENTRY_POINT_GROUP

# every registered method, plugins included (tests/plugins: the toy method of a package outside src/)
import_custom_modules(["wsss_toy_method"])

# The package's methods and the installed plugins' (not what another test module happened to register
# before collection, e.g. experiments/' research subclasses: the set of tests must not depend on the order)
PLUGINS = {ep.value.split(":")[0] for ep in entry_points(group=ENTRY_POINT_GROUP)} | {"wsss_toy_method"}
OURS = {n for n in available_methods() if get_method_class(n).__module__.split(".")[0] in {"wsss", *PLUGINS}}
NAMES = sorted(n for n in OURS if get_method_class(n).tiny_overrides() is not None)


def tiny_config(name: str, root, run_dir, **extra: object) -> Config:
    """The method's own tiny settings (``Method.tiny_overrides``) on top of two-step loop settings; ``extra``: more
    dotted overrides (``run.device``...), applied last."""
    preset, method_extra = get_method_class(name).tiny_overrides()
    over = {
        "method": name,
        "data.root": root,
        "run.dir": run_dir,
        "data.crop_size": 64,
        "data.num_workers": 0,
        "data.val_split": "''",
        "data.val_max_images": 2,
        "train.batch_size": 4,
        "train.max_iters": 2,
        "train.warmup_iters": 0,
        "train.log_iters": 1,
        "train.eval_iters": 100,
        "train.ckpt_iters": 1,
        "cam.scales": "[1.0]",
        "infer.scales": "[1.0]",
        "infer.cam_scales": "[1.0]",
    }
    over.update({k: str(v).replace("{root}", str(root)) for k, v in method_extra.items()})
    over.update({k: str(v) for k, v in extra.items()})
    return load_config(REPO / preset, [f"{k}={v}" for k, v in over.items()])
