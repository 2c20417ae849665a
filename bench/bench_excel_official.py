"""ExCEL speed, side by side: the training-free pseudo labels (images/s) and one training iteration of
``excel`` in wsss against the official code (github.com/zwyang6/ExCEL at 2cd7f510), same random ViT-B/16
weights, same photos, same crops, same CPU. Issue 41's goal: wsss at most 0.7x the official time.

The official code runs unmodified from a ``git archive`` extraction (``--official``), imported by a worker
process of this script with the CPU patches of the recording harness (tests/golden/README.md#excel_train_step):
stubs for ``numpy.lib.utils.deprecate``, ``mmcv`` (``cnn.ConvModule``), ``pydensecrf``, ``torch.utils.tensorboard`` and
``pkg_resources`` (-> ``packaging``); ``.cuda()`` a no-op and ``.to(cuda)`` -> CPU; ``clip.clip._download``
returns the weight file. Its dependencies that wsss lacks (imageio, texttable, ftfy) come from ``--deps``
(``pip install --target DIR --no-deps imageio texttable ftfy wcwidth``). Its working directory has an empty
``attributes_text/``, so the official ``attr_clustering`` builds the 112-attribute bank from the official VOC
descriptor JSON once (a warm-up run, untimed); the timed runs load it, as wsss's run holds its own bank.

Weights: a ViT-B/16 of random weights (seed 0, built by open_clip: no download), every tensor rounded to
float16, written as a TorchScript archive like OpenAI's ``ViT-B-16.pt`` (``clip.load``'s state-dict branch fails on
torch 2.14, its ``jit.load`` branch reads the archive's state dict: official ``clip/clip.py:138-154``).
Photos: ``tests/assets/voc-real-mini`` (the tests' 6 VOC photos), their labels read off the masks.

- Training-free (docs/methods/excel.md#training-free; ``tools/infer_lam.py build_validation``, ``training_free=True``,
  resize 320): official ``build_validation`` over ``VOC12SegDataset``; wsss ``wsss cam`` + ``wsss pseudo
  --refine excel`` of an ``excel`` run made by ``wsss import``. Each code runs on 2 photos and on all 6
  (separate processes); (time of 6 - time of 2) / 4 removes start-up, model build and text features.
- Training iteration (docs/methods/excel.md#training-step; ``scripts/train_voc.py``'s loop body at n_iter 0 and
  at n_iter 14000, i.e. with LVC): a batch of 4 fixed 320x320 crops (seeded, zero-padded where a photo is smaller),
  forward, online pseudo labels (affinity refinement, PAR), losses, backward, AdamW step. 1 warm-up, then the
  median of ``--iters`` iterations, CPU time (``time.process_time``) of the one worker thread. The official
  model is not wrapped in DistributedDataParallel (world size 1 on a CPU: its only work is the gradient
  all-reduce of the decoder, a copy).

Every process runs on 1 thread (``OMP_NUM_THREADS=1``, ``torch.set_num_threads(1)``, ``run.threads=1``). CPU
time (user + system, ``os.wait4``) is the figure compared; of ``--rounds`` alternating rounds the one with the
least CPU time is kept: on the shared 2-core machine wall time swings with the other developers' jobs; wall
time is printed too. ``--only official`` runs the official half alone. ``--rounds 0`` times the training iteration
alone; ``--profile N`` runs N more LVC iterations of each code under ``torch.profiler`` after the timed ones and
prints its top operators by self time (host, and on a GPU the device's too).

The training-free pseudo labels of both codes are compared (share of equal pixels; the official ones are
recorded by a wrapper of ``refine_cams_with_bkg_weclip`` that returns them unchanged). Each code builds its
own k-means bank from the same descriptors; the text embeddings differ at the ulp level (docs/methods/excel.md#q13),
which can move a k-means assignment (#q12) and so a few labels.

The stored snapshot lacks one blob, ``datasets/coco/cls_labels_onehot.npy`` (docs/methods/excel.md#official-code):

    mkdir /tmp/ExCEL && git -C /work/.mirror/zwyang6+ExCEL/repo archive HEAD -- . \
        ':!datasets/coco/cls_labels_onehot.npy' | tar -x -C /tmp/ExCEL
    pip install --target /tmp/excel-deps --no-deps imageio texttable ftfy wcwidth
    .venv/bin/python bench/bench_excel_official.py --official /tmp/ExCEL --deps /tmp/excel-deps --work /tmp/b

On a GPU (``--device cuda``; ``dev/device_official.sh``): the official code's CUDA calls run as shipped (only the
import stubs stay), its model moved to the GPU as ``tools/infer_lam.py:161`` does (no DistributedDataParallel, as
above), the crops and labels moved as ``scripts/train_voc.py:181-183``; wsss with ``run.device=cuda``, its
method moved before ``build_bank`` as the trainer does. Both float32 (the official ExCEL keeps its CLIP in
float32), both with the machine's default threads; wall time is the figure compared (each timed iteration
ends with ``torch.cuda.synchronize``), beside the peak GPU memory (``torch.cuda.max_memory_allocated`` of the
training worker; of the training-free commands, ``side_by_side.GpuMemoryPeak``). ``--copies 8`` puts the 6 photos
8 times in the split ``all``, so that the difference of the two training-free runs is not lost in the start of a
process.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import types
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from side_by_side import Timing, fastest, timed, write_voc_copies
from wsss.cli_common import script_parser

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "assets" / "voc-real-mini"  # the tests' six VOC photos (its SOURCE.md)
DESCRIPTORS = "attributes_text/descriptors_pascal_voc_gpt4.0_cluster_a_photo_of4.json"  # in the extraction
CROP, BATCH, LVC_ITER = 320, 4, 14000
MEAN, STD = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)  # datasets/transforms.normalize_img (ImageNet)


# -- inputs shared by both codes -------------------------------------------------------------------------------


def write_weights(path: Path) -> None:
    """Random ViT-B/16 (seed 0), float16-rounded, as a traced TorchScript archive (OpenAI's layout)."""
    from wsss.models.clip import ClipArch, build_clip

    torch.manual_seed(0)
    model = build_clip(ClipArch(512, 224, 16, 768, 12, 77, 49408, 512, 8, 12))
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.copy_(t.half().float())
    model.attn_mask = None  # a buffer the official ``build_model`` does not expect (open_clip's causal mask)
    inputs = (torch.zeros(1, 3, 224, 224), torch.zeros(1, 77, dtype=torch.long))
    with warnings.catch_warnings():  # the tracer's notes on shape checks of the attention
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.jit.trace(model, inputs, check_trace=False, strict=False).save(str(path))


def write_dataset(root: Path, copies: int = 1) -> list[str]:
    """The photos in both layouts: wsss's (``side_by_side.write_voc_copies``: splits ``two`` and ``all``) and the
    official one (SegmentationClassAug, lists/<split>.txt, lists/cls_labels_onehot.npy)."""
    made = write_voc_copies(DATA, root, copies)
    for sub in ("SegmentationClassAug", "lists"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for c in made:  # SegmentationClassAug holds class ids as grey levels: imageio reads a palette PNG as RGB
        Image.fromarray(c.mask, mode="L").save(root / "SegmentationClassAug" / f"{c.id}.png")
    np.save(root / "lists" / "cls_labels_onehot.npy", {c.id: c.labels.astype(np.float32) for c in made})
    ids = [c.id for c in made]
    for split, names in (("two", ids[:2]), ("all", ids)):
        (root / "lists" / f"{split}.txt").write_text("\n".join(names) + "\n")
    return ids


def write_batch(path: Path, ids: list[str]) -> None:
    """4 fixed random 320x320 crops (seed 0; zero padding where a side is shorter, as the official
    ``random_crop``), their image-level labels and boxes (y0, y1, x0, x1 of the photo inside the crop)."""
    from wsss.data.classes import VOC_CLASSES
    from wsss.data.voc import labels_from_mask

    rng = np.random.RandomState(0)
    crops, labels, boxes = [], [], []
    for id in rng.choice(ids, BATCH, replace=False):
        img = np.asarray(Image.open(DATA / "JPEGImages" / f"{id}.jpg").convert("RGB"))
        h, w = img.shape[:2]
        y, x = rng.randint(max(h - CROP, 0) + 1), rng.randint(max(w - CROP, 0) + 1)
        patch = img[y : y + CROP, x : x + CROP]
        crop = np.zeros((CROP, CROP, 3), np.uint8)
        crop[: patch.shape[0], : patch.shape[1]] = patch
        crops.append(crop)
        mask = np.asarray(Image.open(DATA / "SegmentationClass" / f"{id}.png"))
        labels.append(labels_from_mask(mask, len(VOC_CLASSES)).astype(np.float32))
        boxes.append([0, patch.shape[0], 0, patch.shape[1]])
    np.savez(path, crops=np.stack(crops), labels=np.stack(labels), img_box=np.array(boxes, np.int64))


def normalised_batch(path: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(inputs (4,3,320,320) as the official dataset normalises them, labels (4,20), img_box (4,4))."""
    z = np.load(path)
    u8 = z["crops"].astype(np.float32)
    x = np.stack([(u8[..., c] - MEAN[c]) / STD[c] for c in range(3)], axis=1).astype(np.float32)
    return torch.from_numpy(x), torch.from_numpy(z["labels"]), torch.from_numpy(z["img_box"])


# -- the official code, in a worker process ---------------------------------------------------------------------


def _module(name: str, **attrs: object) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__dict__.update(attrs)
    sys.modules[name] = mod
    return mod


def _cpu(arg: object) -> object:
    if isinstance(arg, int) and not isinstance(arg, bool):
        return "cpu"  # torch.device(local_rank)
    if isinstance(arg, (str, torch.device)) and str(arg).startswith("cuda"):
        return "cpu"
    return arg


def patch_official(official: Path, weights: Path, device: str) -> None:
    """The recording harness's patches (tests/golden/README.md#excel_train_step): stubs of the unused imports;
    on the CPU, the CUDA calls mapped to the CPU as well (on a GPU they run as shipped)."""
    import numpy.lib
    import packaging.version

    _module("numpy.lib.utils", deprecate=lambda *a, **k: lambda f: f)  # removed in numpy 2, unused
    numpy.lib.utils = sys.modules["numpy.lib.utils"]  # type: ignore[attr-defined]
    # ConvModule: imported by segformer_head.py, unused; mmcv.bgr2hsv: only the colour jitter of aug=True
    _module("mmcv", cnn=_module("mmcv.cnn", ConvModule=type("ConvModule", (), {})))
    _module(
        "pydensecrf",
        densecrf=_module("pydensecrf.densecrf"),
        utils=_module("pydensecrf.utils", unary_from_softmax=None, unary_from_labels=None),
    )
    _module("torch.utils.tensorboard", SummaryWriter=None)
    _module("pkg_resources", packaging=packaging)
    if device == "cpu":
        tensor_to, module_to = torch.Tensor.to, torch.nn.Module.to
        torch.Tensor.to = lambda self, *a, **k: tensor_to(self, *map(_cpu, a), **{n: _cpu(v) for n, v in k.items()})
        torch.nn.Module.to = lambda self, *a, **k: module_to(self, *map(_cpu, a), **{n: _cpu(v) for n, v in k.items()})
        torch.Tensor.cuda = lambda self, *a, **k: self
        torch.nn.Module.cuda = lambda self, *a, **k: self
        torch.cuda.set_device = lambda *a, **k: None
    sys.path.insert(0, str(official))
    import clip.clip

    clip.clip._download = lambda url, root: str(weights)


def official_free(a: argparse.Namespace) -> None:
    """tools/infer_lam.py ``validate`` as far as ``build_validation`` (training_free): no checkpoint, no DDP."""
    patch_official(a.official, a.weights, a.device)
    import tools.infer_lam as infer_lam
    from datasets import voc
    from model.model_excel import ExCEL_model
    from torch.utils.data import DataLoader
    from utils.PAR import PAR

    dataset = voc.VOC12SegDataset(
        root_dir=str(a.data),
        name_list_dir=str(a.data / "lists"),
        split=a.split,
        stage="train",
        aug=False,
        ignore_index=255,
        num_classes=21,
    )
    model = ExCEL_model(
        clip_model="ExCEL_ViT-B/16",
        embedding_dim=256,
        in_channels=768,
        dataset_name="pascal_voc",
        num_classes=21,
        num_atrr_clusters=112,
        json_file=str(a.official / DESCRIPTORS),
        img_size=CROP,
        mode="train",
        device="cuda",
    )
    model.to("cuda").eval()  # infer_lam.py:161 (no DistributedDataParallel)
    loader = DataLoader(dataset, batch_size=1, shuffle=False, num_workers=0, pin_memory=False)
    par = PAR(num_iter=20, dilations=[1, 2, 4, 8, 12, 24]).cuda()
    args = argparse.Namespace(
        resize_size=CROP,
        training_free=True,
        save_cam=False,
        save_cls_specific_cam=True,
        crf_post=False,
        num_classes=21,
        dataset_name="pascal_voc",
    )
    labels, refine = [], infer_lam.refine_cams_with_bkg_weclip

    def recorded(*args: object, **kwargs: object) -> tuple[torch.Tensor, torch.Tensor]:
        out = refine(*args, **kwargs)  # the official value, unchanged; kept to compare with wsss's labels
        labels.append(out[0][0].cpu().numpy())
        return out

    infer_lam.refine_cams_with_bkg_weclip = recorded
    print(infer_lam.build_validation(model=model, par=par, val_loader=loader, device="cuda", args=args))
    np.savez(a.result, **dict(zip(dataset.name_list, labels, strict=True)))


def official_train(a: argparse.Namespace) -> dict[str, list[tuple[float, float]]]:
    """scripts/train_voc.py ``train``: build_network, PAR, build_optimizer, then its loop body per n_iter."""
    patch_official(a.official, a.weights, a.device)
    import torch.nn.functional as F
    from model.losses import get_aff_loss, get_seg_loss
    from scripts.train_voc import setup_seed
    from utils.affutils import refine_cams_with_aff, refine_cams_with_bkg_weclip
    from utils.camutils import cams_to_affinity_label, cure_attr_map, get_mask_by_radius, lam_to_label
    from utils.PAR import PAR

    from engine import build_network, build_optimizer
    from utils import imutils

    args = argparse.Namespace(
        model="ExCEL_ViT-B/16",
        dataset_name="pascal_voc",
        num_classes=21,
        num_attri=112,
        attr_json=str(a.official / DESCRIPTORS),
        embedding_dim=256,
        in_channels=768,
        crop_size=CROP,
        train_set="train_aug",
        optimizer="PolyWarmupAdamW",
        lr=1e-4,
        wt_decay=1e-2,
        betas=(0.9, 0.999),
        warmup_iters=50,
        max_iters=30000,
        warmup_lr=1e-6,
        power=1,
        radius=8,
        w_diver=0.1,
        ignore_index=255,
        bkg_thre=0.5,
        high_thre=0.7,
        low_thre=0.25,
    )
    setup_seed(0)
    model, param_groups = build_network(args)
    model.to("cuda")
    par = PAR(num_iter=20, dilations=[1, 2, 4, 8, 12, 24]).cuda()
    optim = build_optimizer(args, param_groups)
    inputs, cls_labels, _ = (t.to(a.device) for t in normalised_batch(a.batch))  # train_voc.py:181-183

    def body(n_iter: int) -> None:  # train_voc.py lines 180-224, as shipped
        aff_pseudos = []
        inputs_denorm = imutils.denormalize_img2(inputs.clone())
        segs, fts_diver, attr_maps_raw, attn_weights, attn_pred = model(inputs)
        if n_iter >= 14000:
            attr_maps_raw = cure_attr_map(model, inputs, ex_feats=fts_diver)
        for i, attr_map in enumerate(attr_maps_raw):
            seg_attn = attn_pred[i, ...].unsqueeze(0) if n_iter >= 14000 else None
            refined, cls_lst = refine_cams_with_aff(
                attr_map,
                attn_weights[:, i, ...],
                cls_labels[i],
                size=inputs.shape[2:],
                seg_attn=seg_attn,
                caa_thre=0.79,
            )
            labels_i, _ = refine_cams_with_bkg_weclip(refined, inputs_denorm[i], cls_lst, par, size=inputs.shape[2:])
            aff_pseudos.append(labels_i)
        aff_pseudos = torch.cat(aff_pseudos, dim=0)
        segs = F.interpolate(segs, size=aff_pseudos.shape[1:], mode="bilinear", align_corners=False)
        seg_loss = get_seg_loss(segs, aff_pseudos.type(torch.long), ignore_index=args.ignore_index)
        seg_pred = torch.argmax(segs.detach(), dim=1)
        attn_mask = get_mask_by_radius(h=CROP // 16, w=CROP // 16, radius=args.radius)
        src = seg_pred if n_iter >= 24000 else aff_pseudos
        aff_mask = cams_to_affinity_label(src, mask=attn_mask)
        lam_to_label(
            attr_maps_raw.permute(0, 2, 1).reshape(4, 20, 20, 20),
            cls_labels.cuda(),
            img_box=None,
            ignore_mid=False,
            bkg_thre=args.bkg_thre,
            high_thre=args.high_thre,
            low_thre=args.low_thre,
            ignore_index=args.ignore_index,
        )
        diver_loss, _, _ = get_aff_loss(attn_pred, aff_mask)
        loss = 1.0 * seg_loss + args.w_diver * diver_loss
        seg_loss.item(), diver_loss.item()  # the avg_meter
        optim.zero_grad()
        loss.backward()
        optim.step()

    return measured(body, {"before_lvc": 0, "lvc": LVC_ITER}, a)


# -- wsss, in a worker process ----------------------------------------------------------------------------------


def wsss_overrides(data: Path, official: Path, device: str) -> list[str]:
    threads = ["run.threads=1"] if device == "cpu" else []  # a GPU machine: its defaults, as the official code
    return [f"data.root={data}", f"options.descriptors={official / DESCRIPTORS}", f"run.device={device}", *threads]


def wsss_train(a: argparse.Namespace) -> dict[str, list[tuple[float, float]]]:
    """The same iteration through the Python API: ``training_step``, the weighted loss terms, the trainer's
    optimiser step."""
    from wsss.core.config import load_config
    from wsss.data.classes import VOC_CLASSES
    from wsss.engine.trainer import build_optimizer
    from wsss.methods import build_method

    cfg = load_config(
        REPO / "configs/excel/voc.yaml",
        [*wsss_overrides(a.data, a.official, a.device), f"model.pretrained={a.weights}"],
    )
    torch.manual_seed(0)
    method = build_method(cfg, list(VOC_CLASSES)).to(a.device)  # as the trainer: moved, then on_train_start
    method.build_bank()  # on_train_start's work, before the timing as the official bank
    method.train()
    optim = build_optimizer(method, cfg)  # the trainer's PolyWarmupAdamW over the method's groups
    images, labels, img_box = (t.to(a.device) for t in normalised_batch(a.batch))
    batch = {"image": images, "labels": labels, "img_box": img_box}
    weights = dict(cfg.loss.weights)

    def body(step: int) -> None:
        terms = method.training_step(batch, step, set(weights))
        loss = sum(weights[k] * v for k, v in terms.items())
        optim.zero_grad()
        loss.backward()
        optim.step()

    return measured(body, {"before_lvc": 0, "lvc": int(method.options.lvc_start)}, a)


def measured(body, modes: dict[str, int], a: argparse.Namespace) -> dict:  # noqa: ANN001
    """Each mode's timed iterations (:func:`timed_iters`), and with ``--profile N`` the operators of N more LVC
    iterations (:func:`profiled`) under "profile"."""
    res: dict = {name: timed_iters(body, n_iter, a.iters, a.device) for name, n_iter in modes.items()}
    if a.profile:
        res["profile"] = profiled(body, modes["lvc"], a.profile, a.device)
    return res


def profiled(body, n_iter: int, iters: int, device: str) -> str:  # noqa: ANN001
    """``iters`` iterations under ``torch.profiler`` (after the timed ones: warm): the operators with the most self
    time, on the host (CPU) and, on a GPU, on the device, where a goal missed says what the time goes to (issue 60)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if device == "cuda" else [])]
    with profile(activities=activities) as prof:
        for _ in range(iters):
            body(n_iter)
        if device == "cuda":
            torch.cuda.synchronize()
    table = prof.key_averages()
    sorts = ["self_cpu_time_total", *(["self_cuda_time_total"] if device == "cuda" else [])]
    return "\n".join(f"{iters} iterations, by {key}:\n{table.table(sort_by=key, row_limit=15)}" for key in sorts)


def timed_iters(body, n_iter: int, iters: int, device: str) -> list[tuple[float, float]]:  # noqa: ANN001
    """1 warm-up, then ``iters`` iterations: (wall s, CPU s) each; on a GPU each one ends with its kernels."""
    sync = torch.cuda.synchronize if device == "cuda" else lambda: None
    body(n_iter)
    out = []
    for _ in range(iters):
        sync()
        w0, c0 = time.perf_counter(), time.process_time()
        body(n_iter)
        sync()
        out.append((time.perf_counter() - w0, time.process_time() - c0))
    return out


def worker(a: argparse.Namespace) -> None:
    if a.device == "cpu":
        torch.set_num_threads(1)
    if a.worker == "official-free":
        official_free(a)
        return
    times: dict = official_train(a) if a.worker == "official-train" else wsss_train(a)
    if a.device == "cuda":
        times["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30  # the two modes' iterations, warm-ups included
    a.result.write_text(json.dumps(times))


# -- the driver -------------------------------------------------------------------------------------------------


class Driver:
    """Paths, environments and the commands of both codes."""

    def __init__(self, a: argparse.Namespace):
        self.a = a
        a.work.mkdir(parents=True, exist_ok=True)
        self.weights, self.data, self.batch = a.work / "vitb16_random_jit.pt", a.work / "VOC", a.work / "batch.npz"
        if not self.weights.is_file():
            write_weights(self.weights)
        self.ids = write_dataset(self.data, a.copies)
        if not self.batch.is_file():
            write_batch(self.batch, self.ids[: len(self.ids) // a.copies])  # the photos, not their copies
        self.cwd = a.work / "official_cwd"  # its ./attributes_text/ receives the official bank
        (self.cwd / "attributes_text").mkdir(parents=True, exist_ok=True)
        self.gpu = a.device == "cuda"  # on a GPU machine both codes get its default threads
        self.env = dict(os.environ) if self.gpu else {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        self.off_env = {**self.env, "PYTHONPATH": os.pathsep.join(filter(None, [a.deps, os.environ.get("PYTHONPATH")]))}
        self.me = [sys.executable, str(Path(__file__).resolve())]
        self.common = [
            "--official",
            str(a.official.resolve()),
            "--deps",
            str(a.deps),
            "--work",
            str(a.work),
            "--weights",
            str(self.weights),
            "--data",
            str(self.data),
            "--batch",
            str(self.batch),
            "--iters",
            str(a.iters),
            "--device",
            a.device,
            "--profile",
            str(a.profile),
        ]
        self.run = a.work / "run"
        self.wsss = [sys.executable, "-m", "wsss"]

    def official_free(self, split: str) -> Timing:
        labels = ["--result", str(self.a.work / f"official_labels_{split}.npz")]
        cmd = [*self.me, *self.common, "--worker", "official-free", "--split", split, *labels]
        return timed(cmd, self.cwd, self.off_env, self.gpu)

    def wsss_free(self, split: str) -> Timing:
        if not (self.run / "config.yaml").is_file():
            sets = wsss_overrides(self.data, self.a.official.resolve(), self.a.device)
            timed(
                [
                    *self.wsss,
                    "import",
                    "excel",
                    str(self.weights),
                    "--config",
                    str(REPO / "configs/excel/voc.yaml"),
                    "--out",
                    str(self.run),
                    *sets,
                ],
                REPO,
                self.env,
            )
        cam = timed(
            [*self.wsss, "cam", str(self.run), "--split", split, "--overwrite", "--quiet"], REPO, self.env, self.gpu
        )
        pseudo = timed(
            [*self.wsss, "pseudo", str(self.run), "--split", split, "--refine", "excel", "--overwrite", "--quiet"],
            REPO,
            self.env,
            self.gpu,
        )
        peak = max(cam.gpu_gib, pseudo.gpu_gib) if self.gpu else None  # type: ignore[type-var]
        return Timing(cam.wall + pseudo.wall, cam.cpu + pseudo.cpu, peak)

    def train(self, code: str) -> dict:
        """{mode: [(wall s, CPU s) per iteration]}, and on a GPU "peak_gib" (torch.cuda.max_memory_allocated)."""
        result = self.a.work / f"{code}_train.json"
        env, cwd = (self.off_env, self.cwd) if code == "official" else (self.env, REPO)
        timed([*self.me, *self.common, "--worker", f"{code}-train", "--result", str(result)], cwd, env)
        return json.loads(result.read_text())


def report_free(times: dict[str, dict[str, Timing]], n_images: int, gpu: bool) -> dict[str, float]:
    """Per image of each code: the figure compared (wall on a GPU, CPU on the CPU)."""
    n = n_images - 2
    compared = {}
    for code, v in times.items():
        two, six = v["two"], v["all"]
        wall, cpu = (six.wall - two.wall) / n, (six.cpu - two.cpu) / n
        compared[code] = wall if gpu else cpu
        memory = f", peak GPU memory {six.gpu_gib:.2f} GiB" if gpu else ""
        print(
            f"training-free {code}: 2 photos {two.wall:.1f} s wall / {two.cpu:.1f} s CPU, {n_images} photos "
            f"{six.wall:.1f} / {six.cpu:.1f} s -> per image {wall:.3f} s wall, {cpu:.3f} s CPU{memory}"
        )
    return compared


def compare_labels(d: Driver) -> None:
    """The pseudo labels of both codes (6 photos): the share of pixels with the same class."""
    with np.load(d.a.work / "official_labels_all.npz") as z:
        official = {k: z[k] for k in z.files}
    same = total = 0
    for id in d.ids:
        ours = np.asarray(Image.open(d.run / "pseudo" / "all" / f"{id}.png"))
        same, total = same + int((ours == official[id]).sum()), total + ours.size
    print(f"pseudo labels: {same / total:.4%} of the pixels of {len(d.ids)} photos agree (wsss vs official)")


def report_train(times: dict[str, dict], iters: int, gpu: bool) -> None:
    what, pick = ("wall", 0) if gpu else ("CPU", 1)  # the figure compared
    for code, result in times.items():
        modes = {k: v for k, v in result.items() if k not in ("peak_gib", "profile")}
        for mode, its in modes.items():
            wall, cpu = statistics.median(w for w, _ in its), statistics.median(c for _, c in its)
            spread = ", ".join(f"{t[pick]:.3f}" for t in its)
            print(
                f"train iteration {code} {mode}: median of {iters} after 1 warm-up: {wall:.3f} s wall, "
                f"{cpu:.3f} s CPU; {what} of each: {spread}"
            )
        if "peak_gib" in result:
            print(f"train iteration {code}: peak GPU memory (max_memory_allocated) {result['peak_gib']:.2f} GiB")
        if "profile" in result:
            print(f"train iteration {code}, profiled: {result['profile']}")
    if len(times) == 2:
        for mode in (k for k in times["official"] if k not in ("peak_gib", "profile")):
            ratio = [statistics.median(t[pick] for t in times[k][mode]) for k in ("wsss", "official")]
            print(f"wsss / official {what} time per training iteration, {mode}: {ratio[0] / ratio[1]:.2f}")


def main() -> None:
    ap = script_parser(__doc__)
    ap.add_argument("--official", type=Path, required=True, help="git archive of github.com/zwyang6/ExCEL")
    ap.add_argument(
        "--deps",
        type=str,
        required=True,
        help="pip --target folder(s) of the official code's deps (os.pathsep-separated)",
    )
    ap.add_work(required=True, type=Path)
    ap.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="alternating training-free rounds; the least CPU (GPU: wall) time kept (0: the training iteration alone)",
    )
    ap.add_iters(3)  # training iterations per mode, after 1 warm-up
    ap.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="N more LVC training iterations of each code under torch.profiler: the top operators",
    )
    ap.add_argument("--only", choices=("official", "wsss", "both"), default="both")
    ap.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="cuda: both codes on the GPU, wall time compared, the official CUDA calls as shipped",
    )
    ap.add_argument("--copies", type=int, default=1, help="the 6 photos this many times in the split 'all'")
    for hidden in ("--worker", "--weights", "--data", "--batch", "--split", "--result"):
        ap.add_argument(hidden, help=argparse.SUPPRESS, type=str if hidden in ("--worker", "--split") else Path)
    a = ap.parse_args()
    if a.worker:
        worker(a)
        return
    d = Driver(a)
    codes = ["official", "wsss"] if a.only == "both" else [a.only]
    if "official" in codes and a.rounds:
        d.official_free("two")  # warm-up: the official attr_clustering writes the bank to ./attributes_text/
    train = {code: d.train(code) for code in codes}  # first: its figures print before the longer free rounds
    report_train(train, a.iters, d.gpu)
    if not a.rounds:
        return
    free: dict[str, dict[str, Timing]] = {c: {} for c in codes}
    for _ in range(a.rounds):  # alternating, so that a burst of the other developers' load hits both alike
        for split in ("two", "all"):
            for code in codes:
                t = d.official_free(split) if code == "official" else d.wsss_free(split)
                free[code][split] = fastest(t, free[code].get(split), d.gpu)
    where, what = (torch.cuda.get_device_name(), "wall") if d.gpu else ("1 thread", "CPU")
    print(
        f"torch {torch.__version__}, {where}, {len(d.ids)} photos, least {what} time of {a.rounds} rounds, "
        f"load average {os.getloadavg()[0]:.2f} at the end"
    )
    per_image = report_free(free, len(d.ids), d.gpu)
    if len(per_image) == 2:
        print(f"wsss / official {what} time per training-free image: {per_image['wsss'] / per_image['official']:.2f}")
    if len(codes) == 2:
        compare_labels(d)


if __name__ == "__main__":
    main()
