"""dino3d follows 3DINO / DINOv2 where the project departed from it: a trainable prototype gain, and gradients
clipped per module. Oracles: PyTorch's own ``weight_norm`` (what DINOv2's ``dino_head.py`` uses) and
``clip_grad_norm_`` applied by hand to each of 3DINO's modules."""
from __future__ import annotations

import torch

from medssl.ssl.heads import DINOHead


def test_prototype_layer_is_torch_weight_norm_with_a_trainable_gain():
    torch.manual_seed(0)
    head = DINOHead(8, 16, hidden_dim=12, bottleneck_dim=6)
    with torch.no_grad():
        head.weight_g.uniform_(0.5, 2.0)  # a gain that training moved away from 1
    reference = torch.nn.utils.parametrizations.weight_norm(torch.nn.Linear(6, 16, bias=False), dim=0)
    with torch.no_grad():
        reference.parametrizations.weight.original0.copy_(head.weight_g)
        reference.parametrizations.weight.original1.copy_(head.weight_v)
    x = torch.randn(5, 8)
    bottleneck = torch.nn.functional.normalize(head.mlp(x), dim=-1)
    assert torch.allclose(head(x), reference(bottleneck), atol=1e-6)
    head(x).sum().backward()
    assert head.weight_g.grad is not None and head.weight_g.grad.abs().sum() > 0  # trained, as in DINOv2


def test_gain_is_weight_decayed_like_dinov2():
    from medssl.models import resolve_arch
    from medssl.ssl import build_method

    arch = resolve_arch("vit3d", "unetr", {"preset": "test"})
    settings = {"global_size": 32, "local_size": 16, "n_local": 1, "dino_prototypes": 8, "ibot_prototypes": 8,
                "head_hidden": 8, "head_bottleneck": 4}
    method = build_method("dino3d", arch, settings, (32, 32, 32))
    gains = {id(method.student[h].weight_g) for h in ("dino_head", "ibot_head")}
    decay = {id(p): g["weight_decay"] for g in method.param_groups(1e-3, 0.04) for p in g["params"]}
    assert all(decay[g] > 0 for g in gains)  # dinov2 param_groups: only bias / norm / gamma are undecayed
    groups = method.grad_clip_groups()
    flat = [id(p) for g in groups for p in g]
    assert len(groups) == 3 and sorted(flat) == sorted(id(p) for p in method.parameters() if p.requires_grad)


def test_each_module_is_clipped_on_its_own():
    from medssl.train.loop import clip_gradients

    class Parts(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)

        def grad_clip_groups(self):
            return [list(self.a.parameters()), list(self.b.parameters())]

    torch.manual_seed(0)
    model = Parts()
    for p, scale in ((model.a.weight, 100.0), (model.a.bias, 100.0), (model.b.weight, 0.01), (model.b.bias, 0.01)):
        p.grad = torch.randn_like(p) * scale
    b_before = [p.grad.clone() for p in model.b.parameters()]
    expected = [torch.nn.Parameter(p.detach().clone()) for p in model.a.parameters()]
    for e, p in zip(expected, model.a.parameters()):
        e.grad = p.grad.clone()
    torch.nn.utils.clip_grad_norm_(expected, 3.0)  # 3DINO: v.clip_grad_norm_(3.0) per module
    largest = clip_gradients(model, 3.0)
    assert largest > 3.0
    assert all(torch.allclose(p.grad, e.grad) for p, e in zip(model.a.parameters(), expected))
    assert all(torch.equal(p.grad, g) for p, g in zip(model.b.parameters(), b_before))  # small module untouched


def test_stage_two_starts_from_the_stage_one_export_with_a_resampled_position_embedding(tmp_path):
    """3DINO stage 2 (``--preset highres``): the stage-1 backbone, its 2^3 (here) position grid resampled to
    the larger crop's grid, in student and teacher."""
    from medssl.train.pretrain import pretrain
    from medssl.hub.ssl_export import load_export
    from medssl.models import resolve_arch
    from medssl.models.layers.vit import resize_pos_embed
    from medssl.ssl import build_method
    from medssl.train.config import load_config
    from medssl.train.pretrain import PretrainConfig, preset_name
    from medssl_test_utils import MRICRON, require

    stage2 = load_config(PretrainConfig, "pretrain", preset_name("dino3d", "highres"))
    assert stage2.method["global_size"] == 112 and stage2.loop.steps == 12500 and stage2.backbone == "vit3d:L"
    run = pretrain("dino3d", [str(require(MRICRON / "ch2.nii.gz"))], tmp_path / "stage1", backbone="vit3d:test",
                   preset="cpu", overrides={"loop": {"steps": 1, "checkpoint_every": 1}}, device="cpu")
    _, _, exported = load_export(run / "export" if (run / "export").exists() else run)
    arch = resolve_arch("vit3d", "unetr", {"preset": "test", "img_size": 48})  # 3^3 tokens instead of 2^3
    settings = {"global_size": 48, "local_size": 16, "n_local": 1, "dino_prototypes": 8, "ibot_prototypes": 8,
                "head_hidden": 8, "head_bottleneck": 4, "init_backbone": str(run)}
    method = build_method("dino3d", arch, settings, (48, 48, 48))
    for part in (method.student["backbone"], method.teacher["backbone"]):
        own = part.state_dict()
        assert torch.equal(own["pos_embed"], resize_pos_embed(exported["encoder.pos_embed"], (3, 3, 3)))
        assert own["pos_embed"].shape[1] == 28
        assert all(torch.equal(own[k[len("encoder."):]], v) for k, v in exported.items()
                   if k.startswith("encoder.") and k != "encoder.pos_embed")
