"""What the CLIP methods (CLIP-ES, ExCEL, WeCLIP+) share about their runs: the VOC background names, the class
prompts, a run made from a CLIP weight file (``wsss import clip_es|excel``). Their CAMs per decoded image are the
contract's default ``Method.image_cams`` of ``cams.source == "per_image"`` (their ``labelled_cam_of_image``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from wsss.core.config import Config
from wsss.core.errors import ConfigError
from wsss.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from wsss.methods.contract import Method, build_method
from wsss.models.clip import CLIP_MEAN, CLIP_STD, ClipArch

#: ``clip_text.BACKGROUND_CATEGORY`` of CLIP-ES and ExCEL (VOC, 25 names)
VOC_BACKGROUND = [
    "ground",
    "land",
    "grass",
    "tree",
    "building",
    "wall",
    "sky",
    "lake",
    "water",
    "river",
    "sea",
    "railway",
    "railroad",
    "keyboard",
    "helmet",
    "cloud",
    "house",
    "mountain",
    "ocean",
    "road",
    "rock",
    "street",
    "valley",
    "bridge",
    "sign",
]


def prompts_for(class_names: list[str], synonyms: dict[str, str]) -> list[str]:
    """The foreground prompts of a dataset's class names (background first, skipped): the synonym
    string of a name if given, else the name."""
    return [synonyms.get(name, name) for name in class_names[1:]]


def read_clip_weights(options: Any, weights: str) -> nn.Module:
    """The CLIP of ``model.pretrained`` for a CLIP method's build (ExCEL, WeCLIP+; read at every build of a trained
    run, as the other methods read their backbone's weights, a checkpoint then replacing them): its architecture
    and activation fill ``options.arch`` / ``options.quick_gelu``, the file ``options.weights``. ConfigError when
    the file's architecture is not the one ``options.arch`` states."""
    from wsss.models.clip import load_clip_file

    model, arch, gelu = load_clip_file(weights, text_heads=options.text_heads, quick_gelu=options.quick_gelu)
    if options.arch and ClipArch(**options.arch) != arch:  # a run written before a field was added has its default
        raise ConfigError(f"{weights}: its CLIP architecture {arch.as_dict()} is not options.arch {dict(options.arch)}")
    options.arch, options.quick_gelu, options.weights = arch.as_dict(), gelu, str(weights)
    return model


def quick_gelu_of(options: Any) -> bool:
    """The activation a CLIP method builds with: QuickGELU (OpenAI's CLIP) unless ``options.quick_gelu`` is false
    (a weight file's activation lands there: ``read_clip_weights``)."""
    return True if options.quick_gelu is None else bool(options.quick_gelu)


def clip_input(images: torch.Tensor, *, imagenet_stats: bool) -> torch.Tensor:
    """Images normalised with ImageNet's statistics (the pipeline's) -> CLIP's input: kept as they are with
    ``imagenet_stats`` (the official ExCEL and WeCLIP+ feed them so: a quirk of each), else with CLIP's own."""
    if imagenet_stats:
        return images
    dev, dt = images.device, images.dtype
    im_m, im_s = (torch.tensor(v, device=dev, dtype=dt).view(1, 3, 1, 1) for v in (IMAGENET_MEAN, IMAGENET_STD))
    cl_m, cl_s = (torch.tensor(v, device=dev, dtype=dt).view(1, 3, 1, 1) for v in (CLIP_MEAN, CLIP_STD))
    return (images * im_s + im_m - cl_m) / cl_s


def method_from_clip_file(path: Path, cfg: Config, class_names: list[str]) -> Method:
    """The method of ``cfg`` with the CLIP of a weight file (OpenAI's TorchScript ``ViT-B-16.pt``, a state dict in
    OpenAI's / open_clip's layout, a Hugging Face CLIP folder; read without running code from it,
    ``models/clip_files.py``): its architecture goes to ``options.arch``, its activation to ``options.quick_gelu``,
    the classes' prompts (``options.synonyms`` applied) to ``options.prompts``; ``model.pretrained`` is cleared
    (the run holds the CLIP). WeightLoadError naming the file if it is not a CLIP ViT, or if it does not say its
    activation and ``options.quick_gelu`` is unset."""
    from wsss.models.clip import check_prompts_fit, load_clip_described

    o = cfg.options
    clip, arch, quick_gelu, found = load_clip_described(
        path, text_heads=o.get("text_heads"), quick_gelu=o.get("quick_gelu")
    )
    print(f"{path}: {found}", flush=True)  # what was found, before anything is built from it
    cfg.options.update(arch=arch.as_dict(), weights=str(path), quick_gelu=quick_gelu)
    cfg.model.pretrained = None
    model = build_method(cfg, class_names)
    cfg.options["prompts"] = list(model.options.prompts)
    check_prompts_fit([*model.options.prompts, *model.options.background], list(model.options.templates))
    model.clip.load_state_dict(clip.state_dict())
    return model
