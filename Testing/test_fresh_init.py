"""Fine-tuning from a checkpoint draws random values only for what the checkpoint does not fill
(`models.fresh_init`): every tensor ends up initialised (loaded, or filled by its family's own init), loaded
tensors equal those of a full build, and a build whose calls differ on the meta device is fully initialised."""
from __future__ import annotations

import pytest
import torch
from helpers_backbones import FINGERPRINT_IDS, fake_checkpoint

from medssl.hub.backbone_source import resolve_backbone
from medssl.hub.package import save_package
from medssl.hub.pretrained import resolve_pretrained
from medssl.hub.ssl_export import save_export
from medssl.models import build_network, resolve_arch
from medssl.models.fresh_init import build_fresh_only
from medssl.plan import ChannelSpec, NormSpec, Plan, default_labels

# every family's released layout; VoCo-L/H run VoCo-B's code, and 3DINO's ViT-L is a ViT of the test preset here
CASES = sorted(n for n in FINGERPRINT_IDS if n not in ("voco_h_ssl_head", "voco_l_ssl_head", "3dino_vit_large"))


def _small_3dino_file(path):
    """A 3DINO-layout checkpoint (``teacher`` / ``backbone.*``) of a test-preset ViT."""
    net = build_network(resolve_arch("vit3d", "unetr", {"preset": "test"}), 1, 2)
    torch.save({"teacher": {"backbone." + k[len("encoder."):]: v for k, v in net.state_dict().items()
                            if k.startswith("encoder.")}}, path)
    return path


@pytest.fixture
def nan_for_unfilled_memory():
    """torch.empty gives NaN (deterministic mode's fill), so a tensor nobody filled cannot pass for one."""
    import torch.utils.deterministic as deterministic

    before, fill = torch.are_deterministic_algorithms_enabled(), deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True)
    deterministic.fill_uninitialized_memory = True
    yield
    torch.use_deterministic_algorithms(before)
    deterministic.fill_uninitialized_memory = fill


@pytest.mark.parametrize("name", CASES + ["small_3dino"])
def test_fresh_tensors_get_their_init_and_loaded_ones_the_file(name, nan_for_unfilled_memory, tmp_path):
    if name == "small_3dino":
        source = resolve_pretrained(str(_small_3dino_file(tmp_path / "dino.pth")), catalog_id="vit3d",
                                    accept_licence=True)
    else:
        source = resolve_pretrained(str(fake_checkpoint(name)), catalog_id=FINGERPRINT_IDS[name])
    _check_fresh_only(source)


ARCHS = {"resenc": ("unet", {"preset": "test"}),  # decoder.encoder.* aliases, stored once in a package
         "swin_unetr": ("swin_unetr", {"feature_size": 12})}  # VoCo's rule: a fresh input layer


def _plan(family: str) -> Plan:
    arch = resolve_arch(family, *ARCHS[family])
    return Plan(channels=[ChannelSpec("t1", "MR")], normalization=[NormSpec("zscore", {"per_image": True})],
                patch_size=(32, 32, 32), labels=default_labels(["a"]), architecture=arch)


@pytest.mark.parametrize("family", sorted(ARCHS))
@pytest.mark.parametrize("kind", ["package", "medssl pretrain export"])
def test_packages_and_exports_fill_what_they_promise(kind, family, nan_for_unfilled_memory, tmp_path):
    """The bootstrap loop (fine-tuning a package again) and fine-tuning a `medssl pretrain` export: the header's
    shapes say what loads (`hub.matching.keys_matching`), fine-tuned at 2 channels and 3 classes (input layer
    adapted or fresh, output layer fresh)."""
    plan = _plan(family)
    torch.manual_seed(1)
    state = build_network(plan.architecture, 1, 2).state_dict()
    if kind == "package":
        folder = save_package(tmp_path / "pkg", plan, state, {"licence": "CC0-1.0"})
    else:
        folder = save_export(tmp_path / "run" / "export", plan, {k: v for k, v in state.items()
                                                                 if k.startswith("encoder.")}, "mae3d", 1, {})
    _check_fresh_only(resolve_backbone(str(folder)))


def _check_fresh_only(source) -> None:
    """Built by `build_fresh_only`, then loaded, ``source``'s network equals a full build's in every loaded
    tensor, has its init's constants and statistics in the others, and no tensor was left unfilled."""
    build = lambda: build_network(source.arch, 2, 3)  # noqa: E731 - 2 channels: a fresh input layer for VoCo
    torch.manual_seed(0)
    full = build()
    full_report = source.init_weights(full)
    torch.manual_seed(0)
    net, skipped = build_fresh_only(build, source.loaded_keys)
    report = source.init_weights(net)
    assert skipped and skipped <= set(report.loaded) and report.loaded == full_report.loaded
    ours, theirs = net.state_dict(), full.state_dict()
    assert all(torch.isfinite(t).all() for t in ours.values() if t.is_floating_point())  # NaN: never filled
    loaded = set(report.loaded)
    assert all(torch.equal(ours[k], theirs[k]) for k in loaded)
    for key in (k for k in ours if k not in loaded and ours[k].is_floating_point()):
        a, b = ours[key].double(), theirs[key].double()
        if b.numel() and torch.all(b == b.flatten()[0]):  # a constant init (norm weights, biases): the same
            assert torch.equal(a, b), key
        elif b.numel() >= 1000:  # other random values of the same init (sample statistics within 0.2 std)
            assert abs(a.mean() - b.mean()) <= 0.2 * b.std() and abs(a.std() - b.std()) <= 0.2 * b.std(), key


class DeviceDependent(torch.nn.Module):
    """A constructor that initialises one more tensor off the meta device (the builds' calls differ)."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)
        if self.a.weight.device.type != "meta":
            torch.nn.init.zeros_(self.b.bias)


def test_a_build_whose_calls_differ_on_meta_is_fully_initialised(nan_for_unfilled_memory):
    net, skipped = build_fresh_only(DeviceDependent, lambda structure: {"a.weight", "a.bias"})
    assert skipped == set()
    assert torch.isfinite(net.a.weight).all() and torch.equal(net.b.bias, torch.zeros(4))
    net, skipped = build_fresh_only(lambda: torch.nn.Sequential(torch.nn.Linear(4, 4)), lambda s: {"0.weight"})
    assert skipped == {"0.weight"} and torch.isnan(net[0].weight).all() and torch.isfinite(net[0].bias).all()
