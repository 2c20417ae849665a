"""What the CLIP methods (CLIP-ES, ExCEL, WeCLIP+) share about their runs: the VOC background names, the class
prompts, a run made from a CLIP weight file (``wsss import clip_es|excel``). Their CAMs per decoded image are the
contract's default ``Method.image_cams`` of ``cams.source == "per_image"`` (their ``labelled_cam_of_image``)."""

from __future__ import annotations

from pathlib import Path

from wsss.core.config import Config
from wsss.methods.contract import Method, build_method

#: ``clip_text.BACKGROUND_CATEGORY`` of CLIP-ES and ExCEL (VOC, 25 names)
VOC_BACKGROUND = [
    "ground", "land", "grass", "tree", "building", "wall", "sky", "lake", "water", "river", "sea", "railway",
    "railroad", "keyboard", "helmet", "cloud", "house", "mountain", "ocean", "road", "rock", "street", "valley",
    "bridge", "sign",
]  # fmt: skip


def prompts_for(class_names: list[str], synonyms: dict[str, str]) -> list[str]:
    """The foreground prompts of a dataset's class names (background first, skipped): the synonym
    string of a name if given, else the name."""
    return [synonyms.get(name, name) for name in class_names[1:]]


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
    print(f"{path}: {found}", flush=True)  # what was found, before anything is built from it (issue 59)
    cfg.options.update(arch=arch.as_dict(), weights=str(path), quick_gelu=quick_gelu)
    cfg.model.pretrained = None
    model = build_method(cfg, class_names)
    cfg.options["prompts"] = list(model.options.prompts)
    check_prompts_fit([*model.options.prompts, *model.options.background], list(model.options.templates))
    model.clip.load_state_dict(clip.state_dict())
    return model
