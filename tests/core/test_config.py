import pytest

from conftest import REPO
from dev.preset_expansions import preset_names
from wsss.core.config import Config, from_dict, load_config, save_config
from wsss.core.errors import ConfigError
from wsss.methods import get_method_class


def test_defaults_and_dotted_overrides():
    cfg = load_config(None, ["train.max_iters=7", "cam.scales=[1.0, 0.5]", "model.pretrained=null", "run.dir=x/y"])
    assert cfg.train.max_iters == 7
    assert cfg.cam.scales == (1.0, 0.5)
    assert cfg.model.pretrained is None
    assert cfg.run.dir == "x/y"
    assert cfg.train.lr == pytest.approx(0.01)  # untouched default


def test_unknown_key_suggests_closest():
    with pytest.raises(ConfigError, match=r"unknown config key 'train.max_iter'.*did you mean 'train.max_iters'"):
        load_config(None, ["train.max_iter=5"])
    with pytest.raises(ConfigError, match="unknown config key 'tarin'"):
        load_config(None, ["tarin.lr=1"])


def test_type_errors_are_named():
    with pytest.raises(ConfigError, match="train.max_iters: expected an integer"):
        load_config(None, ["train.max_iters=abc"])
    with pytest.raises(ConfigError, match="data.scale_range: expected 2 values"):
        load_config(None, ["data.scale_range=[1, 2, 3]"])
    with pytest.raises(ConfigError, match="not of the form key=value"):
        load_config(None, ["train.max_iters"])


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(bad)


def test_resolved_config_round_trip(tmp_path):
    cfg = load_config(REPO / "configs/cam/synthetic_cpu.yaml", ["train.max_iters=3"])
    save_config(cfg, tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert again == cfg
    assert isinstance(again, Config)


@pytest.mark.parametrize("path", [REPO / n for n in preset_names()], ids=lambda p: p.stem)
def test_every_shipped_config_is_valid(path):
    cfg = load_config(path)
    cls = get_method_class(cfg.method)
    from_dict(cls.Options, cfg.options, "options")  # method options validate too


def test_a_folder_that_is_not_a_run_is_named_with_what_to_do(tmp_path, capsys):
    import pytest

    from wsss.cli import main
    from wsss.core.config import load_run_config, save_config
    from wsss.core.errors import MissingFileError

    with pytest.raises(MissingFileError, match=r"config.yaml: not a run directory \(no config.yaml\); pass x"):
        load_run_config(tmp_path, "; pass x")
    for argv in (
        ["cam", str(tmp_path), "--split", "val"],
        ["report", str(tmp_path)],
        ["export", "voc-test", str(tmp_path)],
    ):
        assert main(argv) == 1
        assert capsys.readouterr().err.startswith(f"error: {tmp_path / 'config.yaml'}: not a run directory")
    save_config(load_config(None, ["train.lr=0.5"]), tmp_path / "config.yaml")
    assert load_run_config(tmp_path).train.lr == 0.5


def test_a_run_directory_that_does_not_exist_is_said_so_by_every_command_that_reads_a_run(tmp_path, capsys):
    """``wsss predict runs/nope`` said "runs/nope/config.yaml: not a run directory (no config.yaml)";
    a folder that does not exist is said so (with the run directories beside it of a close name), and a file
    given as a run too, by the one check each command that reads a run goes through (``run_config_path``)."""
    from wsss.cli import main
    from wsss.core.config import save_config

    runs = tmp_path / "runs"
    save_config(load_config(None), runs / "demo" / "config.yaml")
    (runs / "notes.txt").write_text("x")
    split = ["--split", "val"]
    commands = (
        ["predict", "{}", *split],
        ["cam", "{}", *split],
        ["pseudo", "{}", *split],
        ["tag", "{}", *split],
        ["sweep-bkg", "{}", *split],
        ["report", "{}"],
        ["viz", "{}", "--ids", "a"],
        ["export", "voc-test", "{}"],
    )
    for argv in commands:
        for run, said in (
            (runs / "nope", "no such run directory (the folder does not exist)\n"),
            (runs / "dem", f"no such run directory (the folder does not exist); did you mean {runs / 'demo'}?\n"),
            (runs / "notes.txt", "a file, not a run directory (a folder holding config.yaml and checkpoints/)\n"),
        ):
            assert main([str(run) if a == "{}" else a for a in argv]) == 1, argv
            assert capsys.readouterr().err == f"error: {run}: {said}", argv


def test_the_schema_defaults_are_neutral():
    """No paper's settings as defaults: the plain poly SGD without warm-up whose lr goes to 0 past
    the end, and no data set; the presets state theirs through configs/_base_."""
    t, d = Config().train, Config().data
    assert (t.optimizer, t.lr, t.weight_decay, t.momentum, t.power) == ("sgd", 0.01, 5e-4, 0.9, 0.9)
    assert (t.warmup_iters, t.hold_lr_after_max) == (0, False)
    assert d.root is None
    assert not hasattr(Config().cam, "psa_alphas") and not hasattr(Config().cam, "psa_seed_stride")


def test_a_config_without_data_root_is_one_error_line(tmp_path, capsys):
    from wsss.cli import main
    from wsss.data import VOCDataset

    cfg = tmp_path / "mine.yaml"
    cfg.write_text("method: cam\ntrain: {max_iters: 2}\n")
    assert load_config(cfg).data.root is None  # loading and `wsss config show` need no data set
    assert main(["config", "show", str(cfg)]) == 0
    capsys.readouterr()
    assert main(["train", str(cfg), f"run.dir={tmp_path / 'run'}", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: data.root is not set: ") and err.count("\n") == 1 and "data.root=DIR" in err
    with pytest.raises(ConfigError, match="^data.root is not set"):
        VOCDataset(load_config(cfg).data.root, "train")


def test_the_psa_seed_keys_of_an_older_config_move_to_the_options(tmp_path):
    """A run's config.yaml written before PSA's seed settings left ``cam`` (it holds every key) still loads:
    at the old defaults the keys are dropped, another value moves to ``options`` (SC-CAM's stride 8)."""
    old = tmp_path / "config.yaml"
    old.write_text("method: cam\ncam: {bkg_thre: 0.4, psa_alphas: [4.0, 32.0], psa_seed_stride: 1}\n")
    cfg = load_config(old)
    assert cfg.cam.bkg_thre == 0.4 and cfg.options == {}
    old.write_text("method: sccam\ncam: {psa_seed_stride: 8, psa_alphas: [4, 32]}\noptions: {rounds: 1}\n")
    cfg = load_config(old)
    assert cfg.options == {"rounds": 1, "psa_seed_stride": 8}
    options = from_dict(get_method_class("sccam").Options, cfg.options, "options")
    assert (options.psa_seed_stride, options.psa_alphas) == (8, (4.0, 32.0))
    with pytest.raises(ConfigError, match="unknown config key 'cam.psa_alphas'"):  # not in a new config
        load_config(None, ["cam.psa_alphas=[2, 8]"])


def test_the_keys_of_where_and_how_fast_are_declared_once():
    """``EXECUTION_KEYS`` is the one list of the settings that change no result: a resume may change them,
    the settings stamps leave them out (``results_config``), and the route's and the route script's settings drop
    their words (``wsss.pipelines.steps.computed_words``): no other name for them."""
    import experiments.real_route as real_route
    from wsss.core.config import EXECUTION_KEYS, config_changes, is_execution_word, results_config
    from wsss.pipelines import route
    from wsss.pipelines.steps import computed_words

    assert not hasattr(real_route, "EXECUTION_OPTIONS") and not hasattr(route, "ROUTE_EXECUTION_KEYS")
    assert "infer.crf_workers" in EXECUTION_KEYS
    assert computed_words([*(f"{k}=1" for k in sorted(EXECUTION_KEYS)), "train.lr=0.1"]) == ["train.lr=0.1"]
    plain = load_config(None)
    faster = load_config(None, ["infer.crf_workers=4", "run.device=cpu", "run.threads=2", "data.num_workers=0"])
    assert results_config(faster) == results_config(plain) and config_changes(plain, faster) == {}
    assert "crf_workers" not in results_config(plain)["infer"] and "crf" in results_config(plain)["infer"]
    assert results_config(load_config(None, ["cam.bkg_thre=0.3"])) != results_config(plain)
    assert is_execution_word("infer.crf_workers=2") and not is_execution_word("infer.crf.pos_w=2")


def test_true_masks_are_read_once_into_a_typed_value(synth_root, tmp_path, monkeypatch):
    """``data.true_masks`` is read by one function (``true_masks_of``) into a typed value: the data set's own masks,
    a folder (``~`` expanded), or none; the engine's targets, the CLI's checks and the stored path take that."""
    from wsss.core.config import TrueMasks, resolve_paths, true_masks_of
    from wsss.data import VOCDataset
    from wsss.engine.trainer import training_targets
    from wsss.utils.io import save_label_png

    monkeypatch.setenv("HOME", str(tmp_path))
    folder = tmp_path / "masks"
    base = VOCDataset(synth_root, "train")
    for i in base.ids[:2]:
        save_label_png(folder / f"{i}.png", base.load_mask(i))
    preset = REPO / "configs/deeplab/synthetic_cpu.yaml"

    def read(*words: str) -> Config:
        return load_config(preset, [f"data.root={synth_root}", *words])

    assert true_masks_of(read("data.true_masks=auto").data) == TrueMasks(own=True)
    assert not true_masks_of(read().data) and not true_masks_of(read("data.true_masks=").data)
    cfg = read("data.true_masks=~/masks")
    assert true_masks_of(cfg.data) == TrueMasks(folder=folder)
    targets = training_targets(cfg, get_method_class(cfg.method))  # the same folder wherever it is read
    assert targets.source.folder == folder and set(targets.masks) == set(base.ids[:2])
    assert resolve_paths(cfg).data.true_masks == str(folder.resolve())
