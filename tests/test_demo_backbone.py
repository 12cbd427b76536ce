"""The demo's shipped backbone: what its script makes, where it comes from, and when it loads."""

import hashlib
import importlib.util
import json
import os

import torch
import torchvision
from torchvision.ops.misc import FrozenBatchNorm2d

from net.models import DEMO_BACKBONE
from tools.loop.config import parse_with_config
from tools.loop.options import DEMO_DEFAULTS, OPTION_PRESETS
from train_asm_one import get_args_parser

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location(
    "pretrain_demo_backbone", os.path.join(ROOT, "bench", "pretrain_demo_backbone.py")
)
pretrain = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pretrain)


def _structure(path):
    state = torch.load(path, map_location="cpu", weights_only=True)
    return {k: (tuple(v.shape), v.dtype) for k, v in state.items()}


def test_the_shipped_file_is_what_its_provenance_says_and_small():
    with open(os.path.splitext(DEMO_BACKBONE)[0] + ".json", encoding="utf-8") as f:
        provenance = json.load(f)
    with open(DEMO_BACKBONE, "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == provenance["sha256"]
    assert os.path.getsize(DEMO_BACKBONE) <= 5 * 2**20
    assert provenance["image_seed"] == pretrain.PRETRAIN_SEED != get_args_parser().parse_args([]).data_seed
    assert provenance["command"].startswith("python bench/pretrain_demo_backbone.py")
    reference = torchvision.models.mobilenet_v2(weights=None).features.state_dict()
    shipped = _structure(DEMO_BACKBONE)
    assert {k[len("features.") :]: shape for k, (shape, _) in shipped.items()} == {
        k: tuple(v.shape) for k, v in reference.items()
    }
    assert {dtype for k, (_, dtype) in shipped.items() if "num_batches_tracked" not in k} == {torch.float16}


def test_its_script_regenerates_a_file_of_the_same_structure(tmp_path):
    out = str(tmp_path / "backbone.pth")
    assert pretrain.main(["--images", "6", "--val-images", "3", "--epochs", "1", "--out", out]) == 0
    assert _structure(out) == _structure(DEMO_BACKBONE)
    with open(str(tmp_path / "backbone.json"), encoding="utf-8") as f:
        assert json.load(f)["images"] == [0, 6]


def test_background_windows_miss_the_objects_and_object_windows_hold_them():
    x, y = pretrain.windows(pretrain.PRETRAIN_SEED, range(4), __import__("numpy").random.default_rng(0))
    assert x.shape[1:] == (3, pretrain.WINDOW, pretrain.WINDOW) and x.dtype == torch.uint8
    assert set(y.tolist()) <= set(range(5)) and (y == 0).sum() >= 1 and (y > 0).sum() >= 1


def _parse(*argv):
    return parse_with_config(get_args_parser(), list(argv), OPTION_PRESETS)


def test_the_demo_loads_it_by_default_and_nothing_else_does():
    assert _parse().weights_backbone == DEMO_BACKBONE
    assert _parse().epochs == DEMO_DEFAULTS["epochs"]
    assert _parse("--epochs", "2").epochs == 2  # an explicit flag wins
    voc = _parse("--dataset", "voc", "--voc-roots", "x")
    assert voc.weights_backbone is None and voc.epochs == get_args_parser().parse_args([]).epochs


def test_none_turns_it_off():
    from tools.loop.setup import model_from_args

    def frozen(args):
        model = model_from_args(args, 4, torch.device("cpu"))
        return any(isinstance(m, FrozenBatchNorm2d) for m in model.backbone.body.modules())

    assert frozen(_parse("--min-size", "64"))  # a pretrained backbone: frozen BatchNorm
    assert not frozen(_parse("--min-size", "64", "--weights-backbone", "none"))
