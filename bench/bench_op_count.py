"""Operators dispatched per iteration, wsss beside the official codes (issue 81, item 1).

A GPU runs one kernel (or more) per dispatched operator, and launching a kernel costs a few microseconds of the
host's time whatever its size: an iteration made of many small operators is bound by the host, not by the GPU.
This script counts the ATen operators one unit of work dispatches, with a ``TorchDispatchMode`` that sees every
operator below autograd (forward, backward and optimiser alike; composite operators arrive decomposed, as the
device's kernels run them). It prints two figures per unit: every operator, and the "kernels": the operators
that are not views (``OpOverload.is_view``: a view launches nothing).

Units (the same inputs as ``bench_excel_official.py`` and ``bench_clip_es_official.py``, whose set-up it reuses):
- ExCEL's training iteration (batch of 4 320-px crops, before LVC and with LVC): one iteration after one warm-up,
  both codes;
- ExCEL's training-free labels and CLIP-ES's CAMs, per photo: a whole command on 2 photos and on 6 (separate
  processes), (count of 6 - count of 2) / 4, so the model's build and the text features drop out. wsss: ``wsss cam``
  (and ``wsss pseudo --refine excel``) run in the worker's process with ``data.num_workers=0``; the official
  ``build_validation`` and ``generate_cams_voc12.py`` likewise (their loaders have no workers);
- SeCo's training iteration (configs/seco/voc.yaml: 448-px crops, batch 4, every loss active, step 2500), both
  codes with ``--seco`` (a ``git archive`` of github.com/zwyang6/SeCo at 202357f1; without it, wsss's alone). The
  official one (:func:`worker_seco_official`): the objects ``scripts/train_voc.py`` builds, then its loop body's
  calls in their order, on our batch and our random weights (copied through the checkpoint layout). Its
  regularisation loss imports rloss's compiled ``bilateralfilter``, which this repository never builds
  (docs/speed.md): where it does not import, a stand-in module of that name (:func:`bilateralfilter_stand_in`)
  writes zeros. The extension is host C++ over NumPy arrays, called between ``.cpu().numpy()`` and
  ``torch.from_numpy``, and no branch of the official code reads its output, so the ATen operators counted are the
  official code's own either way. Left out of the official count, which they could only raise: DDP (the official
  model is wrapped; at world size 1 a buffer broadcast and the gradient all-reduce) and, on the CPU, the copies
  between host and GPU that a GPU adds (each ``.cuda()``, ``.cpu()`` or ``.to(device)`` of a tensor on the other
  side: the energy loss's five, the pseudo label's and the losses' host-made tensors, DDP's moves of the 22
  views). The other way: on a GPU the official code cuts its patches out of the loader's host tensors, so a few
  hundred of its operators run on the host, which a count on the CPU cannot tell from kernels.

On the CPU, wsss's PAR takes the branch a GPU takes (``wsss.cam.par.gathered``) so that the count is the
GPU's; everything else has no device branch on these paths. ``--device cuda`` counts on the GPU itself, and with
``--time N`` also times N iterations of SeCo (wall, each ending on ``torch.cuda.synchronize``).

    .venv/bin/python bench/bench_op_count.py --work /tmp/b_ops --excel .official/ExCEL --clip-es .official/CLIP-ES \
        --seco .official/SeCo --deps /tmp/i81deps
"""

from __future__ import annotations

import argparse
import json
import os
import runpy
import subprocess
import sys
import time
import types
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
SECO_NOTE = "not run (no --seco)"  # the official SeCo's row without its tree


class OpCount(TorchDispatchMode):
    """Counts every ATen operator dispatched while it is active, by name (``aten.mm.default``)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter[str] = Counter()
        self.views = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        self.ops[str(func)] += 1
        self.views += bool(func.is_view)
        return func(*args, **(kwargs or {}))

    def summary(self) -> dict[str, Any]:
        total = sum(self.ops.values())
        return {"ops": total, "kernels": total - self.views, "top": self.ops.most_common(12)}


def counted(fn, device: str) -> dict[str, Any]:  # noqa: ANN001
    """``fn()`` once under :class:`OpCount` (after its warm-up by the caller)."""
    if device == "cuda":
        torch.cuda.synchronize()
    with OpCount() as c:
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
    return c.summary()


def gpu_branch() -> None:
    """On the CPU, PAR as a GPU runs it (the neighbours gathered: ``wsss.cam.par.gathered``), so that the count is
    the GPU's."""
    from wsss.cam import par

    par.gathered = lambda device: True


# -- workers, each in its own process ---------------------------------------------------------------------------


def _excel_ns(a: argparse.Namespace) -> argparse.Namespace:
    w = a.work / "excel"
    return argparse.Namespace(
        official=a.excel.resolve(),
        weights=w / "vitb16_random_jit.pt",
        data=w / "VOC",
        batch=w / "batch.npz",
        iters=1,
        device=a.device,
        profile=0,
        split=a.split,
        result=a.result.with_suffix(".npz"),
        work=w,
    )


def worker_excel_train(a: argparse.Namespace, code: str) -> dict:
    import bench_excel_official as bx

    def measured(body, modes: dict[str, int], _a: argparse.Namespace) -> dict:  # noqa: ANN001
        out = {}
        for name, n_iter in modes.items():
            body(n_iter)  # warm-up: lazy builds (the official bank's first use, the optimiser's state)
            out[name] = counted(lambda n=n_iter: body(n), a.device)
        return out

    bx.measured = measured
    ns = _excel_ns(a)
    return bx.official_train(ns) if code == "official" else bx.wsss_train(ns)


def worker_excel_free(a: argparse.Namespace, code: str) -> dict:
    import bench_excel_official as bx

    ns = _excel_ns(a)
    if code == "official":
        return {"free": counted(lambda: bx.official_free(ns), a.device)}
    from wsss.cli import main

    run = str(a.work / "excel" / "run")

    def both() -> None:
        for cmd in (["cam", run], ["pseudo", run, "--refine", "excel"]):
            assert main([*cmd, "--split", a.split, "--overwrite", "--quiet"]) == 0, cmd

    return {"free": counted(both, a.device)}


def _pkg_resources() -> None:
    """The official ``clip/clip.py`` reads ``pkg_resources.packaging``; recent setuptools lack the module."""
    try:
        import pkg_resources  # noqa: F401
    except ImportError:
        import packaging.version

        sys.modules["pkg_resources"] = types.SimpleNamespace(packaging=packaging)  # type: ignore[assignment]


def worker_clip_es(a: argparse.Namespace, code: str) -> dict:
    data = a.work / "clip_es" / "VOC"
    if code == "official":
        script = a.clip_es / ("generate_cams_voc12.py" if a.device == "cuda" else "generate_cams_voc12_cpu.py")
        _pkg_resources()
        os.chdir(a.clip_es)
        sys.path[:0] = [str(a.clip_es), *a.deps.split(os.pathsep)]
        sys.argv = [
            script.name,
            "--img_root",
            str(data / "JPEGImages"),
            "--split_file",
            str(data / "ImageSets/Segmentation" / f"{a.split}.txt"),
            "--cam_out_dir",
            str(a.work / "clip_es" / f"official_{a.split}"),
            "--model",
            str(a.work / "clip_es" / "vitb16_random.pt"),
        ]
        return {"cams": counted(lambda: runpy.run_path(str(script), run_name="__main__"), a.device)}
    from wsss.cli import main

    run = str(a.work / "clip_es" / "run")
    return {"cams": counted(lambda: main(["cam", run, "--split", a.split, "--overwrite", "--quiet"]), a.device)}


SECO_STEP = 2500  # a step past every start_iters of configs/seco/voc.yaml: all seven losses weighted


def _seco_inputs(a: argparse.Namespace) -> tuple[Any, dict[str, torch.Tensor], Any]:
    """configs/seco/voc.yaml at ``--seco-crop`` and batch 4 (bench_seco_iter.py's batch: random photos, every
    image labelled person, the first aeroplane too, no single-class ``label_idx``): (config, batch on ``--device``,
    our method built with the random weights of seed 0, in training mode)."""
    from bench_seco_iter import _batch
    from wsss.core.config import load_config
    from wsss.methods import build_method, placeholder_classes

    torch.manual_seed(0)
    crop, batch = a.seco_crop, 4
    cfg = load_config(
        REPO / "configs/seco/voc.yaml",
        [
            "model.pretrained=null",
            f"data.crop_size={crop}",
            f"train.batch_size={batch}",
            f"options.queue_size={batch * 12 * 96}",
        ],
    )
    data = {k: v.to(a.device) for k, v in _batch(batch, crop, 20).items()}
    method = build_method(cfg, placeholder_classes(21)).to(a.device)
    method.train()
    return cfg, data, method


def _count_and_time(step, a: argparse.Namespace) -> dict[str, Any]:  # noqa: ANN001
    """One warm-up, one counted iteration, and with ``--time N`` the median wall time of N more."""
    step()
    res: dict[str, Any] = {"iteration": counted(step, a.device)}
    if a.time:
        sync = torch.cuda.synchronize if a.device == "cuda" else lambda: None
        times = []
        for _ in range(a.time):
            sync()
            t = time.perf_counter()
            step()
            sync()
            times.append(time.perf_counter() - t)
        res["seconds"] = sorted(times)[len(times) // 2]
        res["seconds_all"] = times
        if a.device == "cuda":
            res["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return res


def worker_seco(a: argparse.Namespace) -> dict:
    """configs/seco/voc.yaml's iteration (bench_seco_iter.py's inputs), on ``--device``: count, and ``--time``."""
    from wsss.engine.trainer import build_optimizer

    cfg, data, method = _seco_inputs(a)
    opt = build_optimizer(method, cfg)
    weights = dict(cfg.loss.weights)

    def step() -> None:
        terms = method.training_step(data, SECO_STEP, set(weights))
        loss = sum(weights[k] * v for k, v in terms.items())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        method.after_step(SECO_STEP)

    return _count_and_time(step, a)


# -- the official SeCo (github.com/zwyang6/SeCo at 202357f1) -----------------------------------------------------


def bilateralfilter_stand_in() -> types.ModuleType:
    """A module named as rloss's compiled ``bilateralfilter`` extension, for counting the official SeCo on a machine
    where the extension is not built (this repository never builds fetched code).

    The extension (rloss ``pytorch/wrapper/bilateralfilter``: ``bilateralfilter.cpp`` and its SWIG interface
    ``bilateralfilter.i``) is C++ over host float arrays: the interface maps each ``(float*, int)`` pair to one
    1-D float32 NumPy array, the output one filled in place, and the C++ runs a permutohedral lattice per image with
    OpenMP, no torch in it. The official ``DenseEnergyLossFunction`` (SeCo ``model/losses.py``) moves the
    downscaled image, the masked probabilities and the gate to the host (``.cpu().numpy().flatten()``), calls
    ``bilateralfilter_batch(images, segmentations, AS, N, K, H, W, sigma_rgb, sigma_xy)`` and continues in NumPy
    (``np.multiply``, ``np.dot``); its backward reads ``AS`` back with ``torch.from_numpy``. So the extension
    dispatches no ATen operator, and nothing in the official forward, backward or training loop branches on the
    filter's values (``AS`` is only multiplied, dotted and returned as the loss and its gradient; the loop only
    weights the reg loss into the total): with this stand-in, which checks the arguments as the interface receives
    them and writes zeros (the filter of an image with no pixel weight), the ATen operators counted are the official
    code's own. The loss and gradient values are not the official ones (zero); only counts are taken from them."""
    import numpy as np

    def bilateralfilter_batch(images, ins, outs, n, k, h, w, sigma_rgb, sigma_xy) -> None:  # noqa: ANN001
        for name, arr, size in (
            ("images", images, n * 3 * h * w),
            ("ins", ins, n * k * h * w),
            ("outs", outs, n * k * h * w),
        ):
            if not (isinstance(arr, np.ndarray) and arr.ndim == 1 and arr.size == size):
                raise ValueError(f"bilateralfilter_batch: {name} must be a 1-D array of {size} values")
        if outs.dtype != np.float32:  # INPLACE_ARRAY1 of float: SWIG refuses another dtype
            raise TypeError(f"bilateralfilter_batch: outs must be float32, got {outs.dtype}")
        if sigma_rgb <= 0 or sigma_xy <= 0:
            raise ValueError("bilateralfilter_batch: sigmas must be positive")
        outs[:] = 0.0

    def bilateralfilter(image, in_, out, h, w, sigma_rgb, sigma_xy) -> None:  # noqa: ANN001
        bilateralfilter_batch(image, in_, out, 1, in_.size // (h * w), h, w, sigma_rgb, sigma_xy)

    mod = types.ModuleType("bilateralfilter")
    mod.__doc__ = "stand-in of rloss's extension (bench/bench_op_count.py): zeros"
    mod.bilateralfilter_batch, mod.bilateralfilter = bilateralfilter_batch, bilateralfilter  # type: ignore[attr-defined]
    return mod


def _official_seco_env(a: argparse.Namespace) -> str:
    """The official SeCo importable on ``--device``: rloss's extension if it imports, else the stand-in
    (:func:`bilateralfilter_stand_in`); on the CPU its CUDA calls mapped to the CPU as bench_excel_official.py maps
    ExCEL's; a one-process process group for its ``all_gather`` / ``broadcast``. Returns which filter runs."""
    import torch.distributed as dist

    try:
        import bilateralfilter  # noqa: F401  (a built extension on the path: the real filter)

        which = "extension"
    except ImportError:
        sys.modules["bilateralfilter"] = bilateralfilter_stand_in()
        which = "stand-in (zeros)"
    if a.device == "cpu":
        from bench_excel_official import _cpu

        tensor_to, module_to = torch.Tensor.to, torch.nn.Module.to
        torch.Tensor.to = lambda self, *p, **k: tensor_to(self, *map(_cpu, p), **{n: _cpu(v) for n, v in k.items()})
        torch.nn.Module.to = lambda self, *p, **k: module_to(self, *map(_cpu, p), **{n: _cpu(v) for n, v in k.items()})
        torch.Tensor.cuda = lambda self, *p, **k: self
        torch.nn.Module.cuda = lambda self, *p, **k: self
    backend = "cpu:gloo,cuda:nccl" if a.device == "cuda" else "gloo"
    dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
    sys.path.insert(0, str(a.seco.resolve()))
    return which


def official_seco_weights(official: dict[str, torch.Tensor], ours: dict[str, torch.Tensor]) -> list[str]:
    """Our method's state (``ours``) copied into the official network's (``official``, its ``state_dict()``: tensors
    that share the network's storage) through the checkpoint layout (``wsss.methods.seco.official_keys``: official
    key -> ours), so that both codes start from the same random weights, queue and prototypes. Returns the official
    keys left at their own initialisation: those the layout drops (the 1000-class heads, the DINO heads' unused
    ``last_layer``)."""
    from wsss.methods.seco.official_keys import SECO_RULES
    from wsss.models.official_keys import apply_rules

    kept = []
    with torch.no_grad():
        for key, value in official.items():
            mapped, _ = apply_rules({key: value}, SECO_RULES, "SeCo")
            if not mapped:
                kept.append(key)
                continue
            ((name, shaped),) = mapped.items()
            if ours[name].shape != shaped.shape:
                raise ValueError(f"{key} -> {name}: shapes {tuple(shaped.shape)} and {tuple(ours[name].shape)}")
            value.copy_(ours[name].reshape(value.shape))
    return kept


def worker_seco_official(a: argparse.Namespace) -> dict:
    """The official SeCo's iteration on the same inputs, weights and step as :func:`worker_seco`: the objects
    ``scripts/train_voc.py train`` builds (``build_network``, ``build_optimizer``, ``DenseEnergyLoss``, ``LIG_Loss``,
    ``LIL_Loss``, ``PAR``), then its loop body's calls in their order, at ``n_iter`` 2500 (every loss weighted;
    the aux-CAM decomposes, before ``cam2mask``; the prototypes update, past ``update_prototype``). The network is
    not wrapped in DistributedDataParallel (as bench_excel_official.py: at world size 1 its work is a buffer
    broadcast, the gradient all-reduce and the inputs' moves to the GPU), which can only lower the official count;
    the crops and ``label_idx`` are moved to the device where DDP would move them."""
    _, data, ours = _seco_inputs(a)  # first: the official vit.py re-registers timm's vit_base_patch16_224
    which = _official_seco_env(a)
    import numpy as np
    import torch.nn.functional as F
    from model.losses import DenseEnergyLoss, LIG_Loss, LIL_Loss, get_energy_loss, get_masked_ptc_loss, get_seg_loss
    from model.PAR import PAR
    from utils.camutils import (
        assign_csc_tags,
        cam_to_label,
        cam_to_roi_mask,
        label_to_aff_mask,
        multi_scale_cam2,
        refine_cams_with_bkg_v2,
    )

    from engine import build_network, build_optimizer
    from utils import evaluate, imutils

    # scripts/train_voc.py's argparse defaults (docs/methods/seco.md#defaults), no ImageNet download
    args = argparse.Namespace(
        backbone="vit_base_patch16_224",
        num_classes=21,
        pretrained=False,
        momentum=0.999,
        aux_layer=-3,
        ctc_dim=768,
        moco_queue=4608,
        ncrops=12,
        proto_m=0.9,
        update_prototype=600,
        optimizer="PolyWarmupAdamW",
        lr=6e-5,
        wt_decay=1e-2,
        betas=(0.9, 0.999),
        warmup_iters=1500,
        max_iters=20000,
        warmup_lr=1e-6,
        power=0.9,
        cam_scales=(1.0, 0.5, 0.75, 1.5),
        cam2mask=10000,
        bkg_thre=0.5,
        high_thre=0.7,
        low_thre=0.25,
        ignore_index=255,
        local_crop_size=64,
        tag_threshold=0.2,
        temp_lil=0.08,
        base_temp_lil=0.08,
        temp_lig=0.1,
        base_temp_lig=0.1,
        w_ptc=0.3,
        w_lil=0.5,
        w_lig=0.5,
        w_seg=0.12,
        w_reg=0.05,
    )
    model, param_groups = build_network(args)
    kept = official_seco_weights(model.state_dict(), ours.state_dict())
    del ours
    model.to(a.device)
    model.train()
    optim = build_optimizer(args, param_groups)
    loss_layer = DenseEnergyLoss(weight=1e-7, sigma_rgb=15, sigma_xy=100, scale_factor=0.5)
    get_lig_loss = LIG_Loss(temperature=args.temp_lig, base_temperature=args.base_temp_lig).cuda()
    get_lil_loss = LIL_Loss(temperature=args.temp_lil, base_temperature=args.base_temp_lil).cuda()
    par = PAR(num_iter=10, dilations=[1, 2, 4, 8, 12, 24]).cuda()
    # the loader's batch: inputs and cls_label moved by the loop; the views, label_idx and img_box stay on the host
    inputs, cls_label = data["image"], data["labels"]
    raw_image, w_image, s_image = (data[k].cpu() for k in ("image", "w_image", "s_image"))
    label_idx, img_box = data["label_idx"].cpu(), data["img_box"].cpu()
    n_iter, th = SECO_STEP, {"bkg_thre": args.bkg_thre, "high_thre": args.high_thre, "low_thre": args.low_thre}

    def step() -> None:  # scripts/train_voc.py, the body of ``for n_iter``, from ``crops = [...]`` to optim.step()
        crops = [raw_image, w_image, s_image]
        inputs_denorm = imutils.denormalize_img2(inputs.clone())
        cams, cams_aux = multi_scale_cam2(model, inputs=inputs, scales=args.cam_scales)
        valid_cam, _ = cam_to_label(
            cams.detach(), cls_label=cls_label, img_box=img_box, ignore_mid=True, **th, ignore_index=args.ignore_index
        )
        refined_pseudo_label = refine_cams_with_bkg_v2(
            par,
            inputs_denorm,
            cams=valid_cam,
            cls_labels=cls_label,
            high_thre=args.high_thre,
            low_thre=args.low_thre,
            ignore_index=args.ignore_index,
            img_box=img_box,
        )
        roi_mask_source = cams if n_iter >= args.cam2mask else cams_aux
        roi_mask = cam_to_roi_mask(
            roi_mask_source.detach(),
            cls_label=cls_label,
            img_box=img_box,
            ignore_mid=True,
            **th,
            ignore_index=args.ignore_index,
        )
        local_crops_k, _ = assign_csc_tags(
            images=crops[2],
            roi_mask=roi_mask,
            crop_num=args.ncrops - 2,
            crop_size=args.local_crop_size,
            threshold=args.tag_threshold,
        )
        local_crops_q, cls_flags_local = assign_csc_tags(
            images=crops[0],
            roi_mask=roi_mask,
            crop_num=args.ncrops - 2,
            crop_size=args.local_crop_size,
            threshold=args.tag_threshold,
        )
        roi_crops = crops[:2] + local_crops_q + local_crops_k
        cls_flags_local = cls_flags_local.reshape(-1, 1).cuda()
        roi_crops = [c.to(inputs.device) for c in roi_crops]  # DDP's move of the forward's inputs (none on a CPU)
        cls, segs, fmap, cls_aux, out_q, queue_feats_all, queue_flags_all, prototype = model(
            inputs,
            label_idx=label_idx.to(inputs.device),
            crops=roi_crops,
            cls_flags_local=cls_flags_local,
            n_iter=n_iter,
        )
        cls_loss = F.multilabel_soft_margin_loss(cls, cls_label)
        cls_loss_aux = F.multilabel_soft_margin_loss(cls_aux, cls_label)
        lil_loss, cls_flags_local_revised = get_lil_loss(
            out_q, queue_feats_all, cls_flags_local, queue_flags_all, n_iter
        )
        lig_loss = get_lig_loss(out_q, prototype, cls_flags_local_revised)
        segs = F.interpolate(segs, size=refined_pseudo_label.shape[1:], mode="bilinear", align_corners=False)
        seg_loss = get_seg_loss(segs, refined_pseudo_label.type(torch.long), ignore_index=args.ignore_index)
        reg_loss = get_energy_loss(
            img=inputs, logit=segs, label=refined_pseudo_label, img_box=img_box, loss_layer=loss_layer
        )
        resized_cams_aux = F.interpolate(cams_aux, size=fmap.shape[2:], mode="bilinear", align_corners=False)
        _, pseudo_label_aux = cam_to_label(
            resized_cams_aux.detach(),
            cls_label=cls_label,
            img_box=img_box,
            ignore_mid=True,
            **th,
            ignore_index=args.ignore_index,
        )
        aff_mask = label_to_aff_mask(pseudo_label_aux)
        ptc_loss = get_masked_ptc_loss(fmap, aff_mask)
        loss = (
            1.0 * cls_loss
            + 1.0 * cls_loss_aux
            + args.w_ptc * ptc_loss
            + args.w_lig * lig_loss
            + args.w_lil * lil_loss
            + args.w_seg * seg_loss
            + args.w_reg * reg_loss
        )  # n_iter > 2000
        cls_pred = (cls > 0).type(torch.int16)
        cls_score = evaluate.multilabel_score(cls_label.cpu().numpy()[0], cls_pred.cpu().numpy()[0])
        for v in (cls_loss, ptc_loss, cls_loss_aux, seg_loss, lig_loss, lil_loss):
            v.item()  # the avg_meter's (and cls_score's, a NumPy float: no operator)
        del cls_score
        optim.zero_grad()
        loss.backward()
        optim.step()

    np.random.seed(0)
    res = _count_and_time(step, a)
    res["filter"], res["own_init"] = which, kept
    return res


def worker(a: argparse.Namespace) -> None:
    if a.device == "cpu":
        torch.set_num_threads(1)
        gpu_branch()
    unit, code = a.worker.split(":")
    if unit == "seco":
        res = worker_seco_official(a) if code == "official" else worker_seco(a)
    else:
        res = {"excel_train": worker_excel_train, "excel_free": worker_excel_free, "clip_es": worker_clip_es}[unit](
            a, code
        )
    a.result.write_text(json.dumps(res))


# -- the driver -------------------------------------------------------------------------------------------------


class Driver:
    def __init__(self, a: argparse.Namespace) -> None:
        self.a = a
        self.env = dict(os.environ) if a.device == "cuda" else {**os.environ, "OMP_NUM_THREADS": "1"}
        self.common = [
            "--work",
            str(a.work),
            "--device",
            a.device,
            "--deps",
            a.deps,
            "--seco-crop",
            str(a.seco_crop),
            "--time",
            str(a.time),
        ]
        if a.excel:
            self.common += ["--excel", str(a.excel.resolve())]
        if a.clip_es:
            self.common += ["--clip-es", str(a.clip_es.resolve())]
        if a.seco:
            self.common += ["--seco", str(a.seco.resolve())]

    def run(self, unit: str, code: str, split: str = "all") -> dict:
        result = self.a.work / f"ops_{unit}_{code}_{split}.json"
        env = self.env
        if code == "official":
            env = {**env, "PYTHONPATH": os.pathsep.join(filter(None, [self.a.deps, env.get("PYTHONPATH")]))}
        cwd = self.a.work / "excel" / "official_cwd" if unit.startswith("excel") else REPO
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            *self.common,
            "--worker",
            f"{unit}:{code}",
            "--split",
            split,
            "--result",
            str(result),
        ]
        subprocess.run(cmd, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL if self.a.quiet else None)
        return json.loads(result.read_text())


def prepare_excel(a: argparse.Namespace) -> None:
    """bench_excel_official.py's weights, photos and batch, the official bank (a warm-up run of its own
    training-free labels on 2 photos) and the ``excel`` run of wsss."""
    import bench_excel_official as bx

    ns = argparse.Namespace(
        official=a.excel, deps=a.deps, work=a.work / "excel", copies=1, iters=1, device=a.device, profile=0
    )
    d = bx.Driver(ns)
    if not any((d.cwd / "attributes_text").iterdir()):
        d.official_free("two")
    if not (d.run / "config.yaml").is_file():
        sets = [*bx.wsss_overrides(d.data, a.excel.resolve(), a.device), "data.num_workers=0"]
        bx.timed(
            [
                *d.wsss,
                "import",
                "excel",
                str(d.weights),
                "--config",
                str(REPO / "configs/excel/voc.yaml"),
                "--out",
                str(d.run),
                "--set",
                *sets,
            ],
            REPO,
            d.env,
        )


def prepare_clip_es(a: argparse.Namespace) -> None:
    import bench_clip_es_official as bc

    w = a.work / "clip_es"
    w.mkdir(parents=True, exist_ok=True)
    weights, data, run = w / "vitb16_random.pt", w / "VOC", w / "run"
    if not weights.is_file():
        bc.write_weights(weights)
    bc.write_dataset(data, 1)
    if a.device == "cpu":
        script = a.clip_es / "generate_cams_voc12_cpu.py"
        script.write_text((a.clip_es / "generate_cams_voc12.py").read_text().replace(*bc.CPU_LINE))
    if not (run / "config.yaml").is_file():
        device = ["run.device=cuda"] if a.device == "cuda" else ["run.device=cpu", "run.threads=1"]
        subprocess.run(
            [
                sys.executable,
                "-m",
                "wsss",
                "import",
                "clip_es",
                str(weights),
                "--config",
                str(REPO / "configs/clip_es/voc.yaml"),
                "--out",
                str(run),
                "--set",
                f"data.root={data}",
                "options.quick_gelu=true",
                "data.num_workers=0",
                *device,
            ],
            cwd=REPO,
            check=True,
        )


def per_photo(two: dict, six: dict, n: int = 4) -> dict[str, Any]:
    key = next(iter(two))
    return {k: (six[key][k] - two[key][k]) / n for k in ("ops", "kernels")} | {"top": six[key]["top"]}


def show(rows: list[tuple[str, dict | None, dict | str | None]]) -> None:
    print(f"{'unit':44s} {'wsss ops / kernels':>22s} {'official ops / kernels':>24s} {'kernels wsss/official':>22s}")
    for name, ours, theirs in rows:
        o = f"{ours['ops']:,.0f} / {ours['kernels']:,.0f}" if ours else "-"
        if isinstance(theirs, dict):
            t = f"{theirs['ops']:,.0f} / {theirs['kernels']:,.0f}"
            r = f"{ours['kernels'] / theirs['kernels']:.2f}" if ours else "-"
        else:
            t, r = (theirs or "-"), "-"
        print(f"{name:44s} {o:>22s} {t:>24s} {r:>22s}", flush=True)


def main() -> None:
    from wsss.cli_common import script_parser

    ap = script_parser(__doc__)
    ap.add_work(required=True, type=Path)
    ap.add_argument("--excel", type=Path, help="git archive of github.com/zwyang6/ExCEL (omitted: no ExCEL rows)")
    ap.add_argument("--clip-es", type=Path, help="checkout of github.com/linyq2117/CLIP-ES (omitted: no CLIP-ES)")
    ap.add_argument("--seco", type=Path, help="git archive of github.com/zwyang6/SeCo (omitted: wsss's SeCo alone)")
    ap.add_argument("--deps", default="", help="pip --target folder(s) of the official codes' deps (os.pathsep)")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--units", default="seco,excel_train,excel_free,clip_es", help="comma-separated, in order")
    ap.add_argument("--only", choices=("wsss", "both"), default="both", help="wsss: our counts alone")
    ap.add_argument("--seco-crop", type=int, default=448, help="SeCo's crop (the VOC preset's 448)")
    ap.add_argument("--time", type=int, default=0, metavar="N", help="also time N SeCo iterations (median)")
    ap.add_argument("--json", type=Path, help="write every count here")
    ap.add_argument("--quiet", action="store_true", help="the workers' own output hidden")
    for hidden in ("--worker", "--split", "--result"):
        ap.add_argument(hidden, help=argparse.SUPPRESS, type=Path if hidden == "--result" else str)
    a = ap.parse_args()
    if a.worker:
        worker(a)
        return
    a.work.mkdir(parents=True, exist_ok=True)
    d, codes = Driver(a), (["wsss", "official"] if a.only == "both" else ["wsss"])
    rows: list = []
    results: dict[str, Any] = {"device": torch.cuda.get_device_name() if a.device == "cuda" else "cpu"}
    for unit in a.units.split(","):
        if unit == "seco":
            r = {c: d.run("seco", c) for c in codes if c == "wsss" or a.seco}
            results["seco"] = r
            theirs = r["official"]["iteration"] if "official" in r else SECO_NOTE
            rows.append((f"SeCo iteration ({a.seco_crop} px, batch 4)", r["wsss"]["iteration"], theirs))
            if "official" in r:
                print(
                    f"official SeCo: rloss's bilateralfilter {r['official']['filter']}; left at the official "
                    f"initialisation: {', '.join(r['official']['own_init'])}",
                    flush=True,
                )
            for c, rc in r.items():
                if "seconds" in rc:
                    print(
                        f"SeCo iteration, {c}: median {rc['seconds']:.3f} s of {a.time} on {results['device']}"
                        + (f", peak {rc['peak_gib']:.2f} GiB" if "peak_gib" in rc else ""),
                        flush=True,
                    )
        elif unit == "excel_train" and a.excel:
            prepare_excel(a)
            r = {c: d.run("excel_train", c) for c in codes}
            results["excel_train"] = r
            for mode in ("before_lvc", "lvc"):
                rows.append((f"ExCEL iteration ({mode})", r["wsss"][mode], r.get("official", {}).get(mode)))
        elif unit == "excel_free" and a.excel:
            prepare_excel(a)
            r = {c: per_photo(d.run("excel_free", c, "two"), d.run("excel_free", c, "all")) for c in codes}
            results["excel_free"] = r
            rows.append(("ExCEL training-free labels, per photo", r["wsss"], r.get("official")))
        elif unit == "clip_es" and a.clip_es:
            prepare_clip_es(a)
            r = {c: per_photo(d.run("clip_es", c, "two"), d.run("clip_es", c, "all")) for c in codes}
            results["clip_es"] = r
            rows.append(("CLIP-ES CAMs, per photo", r["wsss"], r.get("official")))
        show(rows[-2:] if unit == "excel_train" else rows[-1:])
    print(f"\nop counts on {results['device']}, torch {torch.__version__}")
    show(rows)
    for name, ours, theirs in rows:  # per photo: the most dispatched of the whole 6-photo command
        whole = " (the whole command on 6 photos)" if "per photo" in name else ""
        for code, r in (("wsss's", ours), ("the official code's", theirs)):
            if isinstance(r, dict):
                print(f"{name}, {code} most dispatched{whole}: " + ", ".join(f"{k} {v:g}" for k, v in r["top"][:8]))
    if a.json:
        a.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
