"""WeCLIP+ speed, side by side: one training iteration of ``weclip_plus`` in wsss against the official code
(github.com/zbf1991/WeCLIP at 0f47db46, folder ``WeCLIP+/``), same weights, same crops, same CPU, as
``bench_excel_official.py`` does for ExCEL.

The official code runs unmodified from a ``git archive`` extraction (``--official``, the ``WeCLIP+`` folder), imported
by a worker process of this script with the CPU patches of the recording harness (tests/golden/README.md#weclip_plus):
stubs for the imports it does not use on this path (``mmcv.cnn.ConvModule``, ``omegaconf``, ``ttach``, ``imageio.v2``,
``torch.utils.tensorboard``, ``pkg_resources`` -> ``packaging``; ``lxml.etree`` -> the standard library's ElementTree,
which has what ``parse_xml_to_dict`` reads), ``.cuda()`` a no-op, ``clip.load(device='cpu')`` (so the official CLIP is
float32, as in the recordings), and ``torch.hub.load('facebookresearch/dinov2', ...)`` replaced by the hub's
``DinoVisionTransformer`` of a local dinov2 extraction (``--dinov2``, commit b8931f7b) with the same weights as
wsss's. The official image-level labels come from VOC XML files this script writes.

Weights: ``--size tiny`` (default) the recordings' tiny CLIP and DINOv2 (width 128 / 64; crops of 160, heads of width
32, radius 4, as recorded); ``--size full`` a random ViT-B/16 (open_clip's init, seed 0) and a random ViT-S/14 (seed 0)
with the official sizes (crops 320, heads 256, radius 8). The batch: 4 synthetic crops, seeded.

The iteration (``scripts/dist_clip_voc.py:254-292``'s loop body; docs/methods/weclip_plus.md#training-step):
forward with the online pseudo labels, the four losses, backward, PolyWarmupAdamW step. 1 warm-up, then the median
CPU time (``time.process_time``) of ``--iters`` iterations of the one worker thread (``OMP_NUM_THREADS=1``).

    mkdir /tmp/WeCLIP && git -C <mirror of zbf1991/WeCLIP> archive HEAD -- 'WeCLIP+' | tar -x -C /tmp/WeCLIP
    mkdir /tmp/dinov2 && git -C <mirror of facebookresearch/dinov2> archive b8931f7b -- dinov2 | tar -x -C /tmp/dinov2
    .venv/bin/python bench/bench_weclip_plus_official.py --official /tmp/WeCLIP/WeCLIP+ --dinov2 /tmp/dinov2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import torch

from wsss.cli_common import script_parser
from wsss.data.classes import VOC_CLASSES

REPO = Path(__file__).resolve().parents[1]
VOC = VOC_CLASSES[1:]
BATCH_CLASSES = [[0, 14], [7], [11, 14], [6]]  # the recorded training batch's classes


def sizes(size: str) -> dict:
    if size == "tiny":
        return {"crop": 160, "embedding_dim": 32, "radius": 4, "dino": dict(embed_dim=64, depth=4, num_heads=2)}
    return {"crop": 320, "embedding_dim": 256, "radius": 8, "dino": dict(embed_dim=384, depth=12, num_heads=6)}


def write_weights(work: Path, size: str) -> tuple[Path, Path, int, int]:
    """(CLIP file in OpenAI's names, DINOv2 file in the hub's names, CLIP width, DINOv2 width)."""
    sys.path.insert(0, str(REPO / "tests"))
    if size == "tiny":
        import weclip_plus_golden as golden

        clip, dino = golden.write_weight_files(work)
        return clip, dino, 128, 64
    from wsss.models.clip import ClipArch, build_clip
    from wsss.models.dinov2 import Dinov2, Dinov2Arch

    torch.manual_seed(0)
    arch = ClipArch(512, 224, 16, 768, 12, 77, 49408, 512, 8, 12)
    clip = build_clip(arch, quick_gelu=True)
    state = {k: v for k, v in clip.state_dict().items() if k != "attn_mask"}
    dino = Dinov2(Dinov2Arch(embed_dim=384, depth=12, num_heads=6))
    with torch.no_grad():
        for p in dino.parameters():
            p.normal_(0, 0.02)
    torch.save(state, work / "clip.pt")
    torch.save(dino.state_dict(), work / "dino.pth")
    return work / "clip.pt", work / "dino.pth", 768, 384


def batch(crop: int) -> tuple[torch.Tensor, torch.Tensor]:
    """4 seeded synthetic crops (ImageNet-normalised) and their labels."""
    rng = np.random.RandomState(7)
    u8 = rng.randint(0, 256, (4, crop, crop, 3)).astype(np.float32)
    for i in range(4):  # blocks of colour, so the CAMs have structure
        y, x = rng.randint(0, crop // 2, 2)
        u8[i, y : y + crop // 2, x : x + crop // 2] = rng.randint(0, 256, 3)
    mean, std = np.float32([123.675, 116.28, 103.53]), np.float32([58.395, 57.12, 57.375])
    x = torch.from_numpy(((u8 - mean) / std).transpose(0, 3, 1, 2).copy())
    labels = torch.zeros(4, 20)
    for i, cs in enumerate(BATCH_CLASSES):
        labels[i, cs] = 1
    return x, labels


# ---- the official worker ---------------------------------------------------------------------------------------


def _stub(name: str, **attrs: object) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    sys.modules[name] = module
    return module


def official_worker(a: argparse.Namespace) -> dict:
    import xml.etree.ElementTree as ET

    import packaging

    sys.path.insert(0, a.official)
    sys.path.insert(1, a.dinov2)
    _stub("lxml").etree = _stub("lxml.etree", fromstring=ET.fromstring)
    _stub("ttach"), _stub("omegaconf", OmegaConf=object)
    _stub("imageio").v2 = _stub("imageio.v2")
    _stub("mmcv").cnn = _stub("mmcv.cnn", ConvModule=object)
    _stub("torch.utils.tensorboard", SummaryWriter=object)
    _stub("pkg_resources", packaging=packaging)
    torch.Tensor.cuda = lambda self, *args, **kw: self
    torch.nn.Module.cuda = lambda self, *args, **kw: self
    s = sizes(a.size)
    clip_file, dino_file = Path(a.work) / a.clip, Path(a.work) / a.dino

    def hub_load(repo: str, name: str, *args: object, **kw: object) -> torch.nn.Module:
        from functools import partial

        from dinov2.layers import MemEffAttention
        from dinov2.models.vision_transformer import Block, DinoVisionTransformer

        model = DinoVisionTransformer(
            img_size=518,
            patch_size=14,
            mlp_ratio=4,
            init_values=1.0,
            ffn_layer="mlp",
            block_chunks=0,
            num_register_tokens=0,
            interpolate_antialias=False,
            interpolate_offset=0.1,
            block_fn=partial(Block, attn_class=MemEffAttention),
            **s["dino"],
        )
        model.load_state_dict(torch.load(dino_file, map_location="cpu"))
        return model

    torch.hub.load = hub_load
    import importlib

    from utils.camutils import cams_to_affinity_label
    from utils.losses import get_aff_loss
    from utils.optimizer import PolyWarmupAdamW
    from WeCLIP_Plus.dice_loss import DiceLoss

    model_mod = importlib.import_module("WeCLIP_Plus.model_attn_aff_voc")
    sys.argv = ["dist_clip_voc.py"]
    script = importlib.import_module("scripts.dist_clip_voc")
    root = Path(a.work) / "voc"
    (root / "Annotations").mkdir(parents=True, exist_ok=True)
    names = [f"img{i}" for i in range(4)]
    for name, cs in zip(names, BATCH_CLASSES):
        objects = "".join(f"<object><name>{VOC[c]}</name></object>" for c in cs)
        xml = f"<annotation><size><width>{s['crop']}</width><height>{s['crop']}</height></size>{objects}</annotation>"
        (root / "Annotations" / f"{name}.xml").write_text(xml)
    torch.manual_seed(0)
    clip_width = torch.load(clip_file)["visual.conv1.weight"].shape[0]
    model = model_mod.WeCLIP_Plus(
        num_classes=21,
        clip_model=str(clip_file),
        dino_model="dinov2_vits14",
        dino_fts_dim=s["dino"]["embed_dim"],
        decoder_layers=3,
        embedding_dim=s["embedding_dim"],
        in_channels=[clip_width] * 4,
        dataset_root_path=str(root),
        clip_flag=16,
        device="cpu",
    )
    groups = model.get_param_groups()
    opt = PolyWarmupAdamW(
        params=[
            {"params": groups[0], "lr": 2e-5, "weight_decay": 0.01},
            {"params": groups[1], "lr": 0.0, "weight_decay": 0.0},
            {"params": groups[2], "lr": 2e-4, "weight_decay": 0.01},
            {"params": groups[3], "lr": 2e-4, "weight_decay": 0.01},
        ],
        lr=2e-5,
        weight_decay=0.01,
        betas=[0.9, 0.999],
        warmup_iter=50,
        max_iter=30000,
        warmup_ratio=1e-6,
        power=1.0,
    )
    mask = script.get_mask_by_radius(h=s["crop"] // 16, w=s["crop"] // 16, radius=s["radius"])
    dice = DiceLoss()
    x, _ = batch(s["crop"])
    F = torch.nn.functional

    def iteration() -> None:
        segs_clip, segs_dino, cam, attn_pred = model(x, names)
        pseudo = cam
        segs = F.interpolate(
            0.5 * segs_clip + 0.5 * segs_dino, size=pseudo.shape[1:], mode="bilinear", align_corners=False
        )
        segs_clip = F.interpolate(segs_clip, size=pseudo.shape[1:], mode="bilinear", align_corners=False)
        segs_dino = F.interpolate(segs_dino, size=pseudo.shape[1:], mode="bilinear", align_corners=False)
        _, label_clip = torch.max(F.softmax(segs_clip, dim=1), dim=1)
        _, label_dino = torch.max(F.softmax(segs_dino, dim=1), dim=1)
        aff_label = cams_to_affinity_label(cam.clone(), mask=mask, ignore_index=255, clip_flag=16)
        attn_loss, _, _ = get_aff_loss(attn_pred, aff_label)
        seg_loss = script.get_seg_loss(segs, pseudo.long(), ignore_index=255)
        seg_loss2 = dice(segs, pseudo.long())
        clip2 = script.get_seg_loss(segs_clip, label_dino.long(), ignore_index=255)
        dino2 = script.get_seg_loss(segs_dino, label_clip.long(), ignore_index=255)
        loss = seg_loss + 0.1 * attn_loss + 0.1 * (clip2 + dino2) + seg_loss2
        opt.zero_grad()
        loss.backward()
        opt.step()

    return timed(iteration, a.iters)


# ---- the wsss worker -------------------------------------------------------------------------------------------


def wsss_worker(a: argparse.Namespace) -> dict:
    from wsss.core.config import load_config
    from wsss.data.classes import VOC_CLASSES
    from wsss.engine.trainer import build_optimizer
    from wsss.methods import build_method

    s = sizes(a.size)
    heads = 2 if a.size == "tiny" else 6
    over = [
        f"model.pretrained={Path(a.work) / a.clip}",
        f"options.dino_weights={Path(a.work) / a.dino}",
        "options.quick_gelu=true",
        f"options.dino_heads={heads}",
        f"options.embedding_dim={s['embedding_dim']}",
        f"options.radius={s['radius']}",
        "run.device=cpu",
        f"data.root={a.work}",
    ]
    if a.size == "tiny":
        over.append("options.text_heads=2")
    cfg = load_config(REPO / "configs/weclip_plus/voc.yaml", over)
    torch.manual_seed(0)
    method = build_method(cfg, list(VOC_CLASSES))
    method.train()
    opt = build_optimizer(method, cfg)
    x, labels = batch(s["crop"])
    data = {"image": x, "labels": labels, "img_box": torch.tensor([[0, s["crop"], 0, s["crop"]]] * 4)}
    weights = cfg.loss.weights

    def iteration() -> None:
        terms = method.training_step(data, 0, set(weights))
        loss = sum(weights[k] * v for k, v in terms.items())
        opt.zero_grad()
        loss.backward()
        opt.step()

    return timed(iteration, a.iters)


def timed(iteration, iters: int) -> dict:
    torch.set_num_threads(1)
    iteration()  # warm-up
    cpu, wall = [], []
    for _ in range(iters):
        t0, w0 = time.process_time(), time.perf_counter()
        iteration()
        cpu.append(time.process_time() - t0)
        wall.append(time.perf_counter() - w0)
    return {"cpu_s": statistics.median(cpu), "wall_s": statistics.median(wall), "iters": iters}


def main() -> None:
    ap = script_parser(__doc__)
    ap.add_argument("--official", help="the WeCLIP+ folder of a git archive extraction")
    ap.add_argument("--dinov2", help="a dinov2 extraction (its dinov2/ package)")
    ap.add_argument("--size", choices=("tiny", "full"), default="tiny")
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--work", help="working folder (default: a temporary one)")
    ap.add_argument("--worker", choices=("official", "wsss"), help=argparse.SUPPRESS)
    ap.add_argument("--clip", help=argparse.SUPPRESS)
    ap.add_argument("--dino", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        out = official_worker(a) if a.worker == "official" else wsss_worker(a)
        print("RESULT " + json.dumps(out), flush=True)
        return
    if not a.official or not a.dinov2:
        ap.error("--official and --dinov2 are required")
    work = Path(a.work or tempfile.mkdtemp(prefix="weclip_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    clip, dino, _, _ = write_weights(work, a.size)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    results = {}
    for worker in ("official", "wsss"):
        cmd = [
            sys.executable,
            __file__,
            "--worker",
            worker,
            "--official",
            a.official,
            "--dinov2",
            a.dinov2,
            "--size",
            a.size,
            "--iters",
            str(a.iters),
            "--work",
            str(work),
            "--clip",
            clip.name,
            "--dino",
            dino.name,
        ]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=work)
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode or not line:
            sys.exit(f"{worker} worker failed:\n{proc.stderr[-3000:]}")
        results[worker] = json.loads(line[-1][7:])
        print(f"{worker:9s} cpu {results[worker]['cpu_s']:.3f} s/iter  wall {results[worker]['wall_s']:.3f} s/iter")
    print(f"wsss / official (CPU time): {results['wsss']['cpu_s'] / results['official']['cpu_s']:.2f}x")


if __name__ == "__main__":
    main()
