"""A network built without its random initialisation (`models.no_init`, used by `load_package`) computes, after the
strict load of another build's weights, exactly what that build computes; only the calling thread skips."""
from __future__ import annotations

import threading

import pytest
import torch

from medssl.hub.backbone_source import default_decoder
from medssl.models import BACKBONES, build_network, resolve_arch
from medssl.models.no_init import INIT_FUNCTIONS, initialisation_skipped

SHAPES = {"swin_unetr": (64, 32, 32)}


@pytest.mark.parametrize("name", BACKBONES.names())
def test_an_uninitialised_build_loaded_with_weights_equals_the_build_they_came_from(name):
    arch = resolve_arch(name, default_decoder(name), {"preset": "test"})
    torch.manual_seed(0)
    reference = build_network(arch, 2, 3).eval()
    with initialisation_skipped():
        built = build_network(arch, 2, 3)
    built.load_state_dict(reference.state_dict(), strict=True, assign=True)
    built.eval()
    ours, theirs = dict(built.named_buffers()), dict(reference.named_buffers())  # non-persistent ones included
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    x = torch.randn(1, 2, *SHAPES.get(name, (32, 32, 16)))
    with torch.no_grad():
        assert torch.equal(built(x), reference(x))


def test_only_the_calling_thread_skips_and_torch_is_restored_after():
    originals = {n: getattr(torch.nn.init, n) for n in INIT_FUNCTIONS if hasattr(torch.nn.init, n)}
    inside, other = torch.zeros(4), torch.zeros(4)
    entered, filled = threading.Event(), threading.Event()

    def other_thread() -> None:
        entered.wait(10)
        torch.nn.init.constant_(other, 5.0)  # while the main thread is inside the context
        filled.set()

    worker = threading.Thread(target=other_thread)
    worker.start()
    with initialisation_skipped():
        entered.set()
        assert filled.wait(10)
        torch.nn.init.constant_(inside, 5.0)
        with initialisation_skipped():  # nested: still skipped, and still skipping after the inner exit
            torch.nn.init.normal_(inside)
        torch.nn.init.uniform_(inside)
    worker.join()
    assert torch.equal(inside, torch.zeros(4)) and torch.equal(other, torch.full((4,), 5.0))
    assert all(getattr(torch.nn.init, n) is f for n, f in originals.items())
    torch.nn.init.constant_(inside, 2.0)
    assert torch.equal(inside, torch.full((4,), 2.0))
