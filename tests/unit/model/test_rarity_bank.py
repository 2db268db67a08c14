"""The rarity scoring's bank: an exact, immutable state that round-trips through torch.save and refuses misfits."""

from __future__ import annotations

import dataclasses
import io

import pytest
import torch

from anomalib_adaclip.model import RarityBank


def _bank() -> RarityBank:
    """A hand-made bank of 2 rarity layers and 2 neighbourhood sizes, 3 images seen (1 of them normal)."""
    g = torch.Generator().manual_seed(0)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g)

    return RarityBank(
        features=tuple(tuple(rand(6, 4) for _ in range(2)) for _ in range(2)),
        measures=tuple(tuple(rand(3, 6) for _ in range(2)) for _ in range(2)),
        normal_counts=((2, 2), (2, 1)),
        aaif=(rand(3, 4), rand(3, 4)),
        scores=rand(2),
        embeddings=rand(2, 5),
        foreground=rand(9),
        seen=3,
    )


def test_an_empty_bank_holds_nothing() -> None:
    bank = RarityBank.empty(n_layers=3, n_r=2)
    assert bank.seen == 0 and bank.prototypes == 0 and bank.nbytes() == 0
    assert len(bank.features) == 2 and len(bank.features[0]) == 3 and len(bank.aaif) == 3


def test_state_dict_round_trips_bit_for_bit_through_torch_save() -> None:
    bank = _bank()
    buffer = io.BytesIO()
    torch.save(bank.state_dict(), buffer)
    state = torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)
    restored = RarityBank.from_state_dict(state, n_layers=2, n_r=2)
    for field in dataclasses.fields(RarityBank):
        a, b = getattr(bank, field.name), getattr(restored, field.name)
        flat_a = [t for row in a for t in row] if field.name in ("features", "measures") else a
        flat_b = [t for row in b for t in row] if field.name in ("features", "measures") else b
        if isinstance(a, torch.Tensor):
            assert a.numpy().tobytes() == b.numpy().tobytes(), field.name
        elif field.name in ("features", "measures", "aaif"):
            assert all(torch.equal(x, y) for x, y in zip(flat_a, flat_b, strict=True)), field.name
        else:
            assert a == b, field.name
    assert restored.nbytes() == bank.nbytes() == 4 * (4 * 24 + 4 * 18 + 2 * 12 + 2 + 10 + 9)
    # The restored bank owns its tensors: changing the loaded state changes nothing in it.
    state["aaif.0"].zero_()
    assert not torch.equal(restored.aaif[0], state["aaif.0"])


def test_a_state_of_another_layer_count_is_refused_with_the_keys() -> None:
    state = _bank().state_dict()
    with pytest.raises(ValueError, match=r"3 rarity layers: missing \['aaif.2'"):
        RarityBank.from_state_dict(state, n_layers=3, n_r=2)
    del state["seen"]
    with pytest.raises(ValueError, match="'seen'"):
        RarityBank.from_state_dict(state, n_layers=2, n_r=2)


def test_to_moves_every_tensor_and_keeps_the_counts() -> None:
    bank = _bank()
    moved = bank.to("cpu")
    assert moved.normal_counts == bank.normal_counts and moved.seen == 3 and moved.prototypes == 6
    assert torch.equal(moved.measures[1][0], bank.measures[1][0])
