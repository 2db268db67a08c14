"""Prefix trees of the prompt sentences (``model/sentence_tree.py``), worked out by hand.

That the text tower over these trees equals open_clip's over the full 77-token context is tested in
``tests/unit/model/test_text_encoder.py``.
"""

from __future__ import annotations

import torch

from anomalib_adaclip.model.sentence_tree import build_sentence_tree, pad_sentence_tree


def test_sentence_tree_by_hand() -> None:
    """Two sentences sharing "a b": 3 + 2 distinct prefixes; with one prompted position the prompt and the start
    token are single nodes that everything sees."""
    sot, eot = 49406, 49407
    tokens = torch.tensor([[sot, 5, 7, eot, 0], [sot, 5, 8, 9, eot]])
    tree = build_sentence_tree(tokens)
    # nodes: 0 sot, 1 "5", 2 "7", 3 eot(1), 4 "8", 5 "9", 6 eot(2)
    assert tree.tokens.tolist() == [sot, 5, 7, eot, 8, 9, eot]
    assert tree.positions.tolist() == [0, 1, 2, 3, 2, 3, 4]
    assert tree.ends.tolist() == [3, 6]
    assert tree.mask[6].nonzero().flatten().tolist() == [0, 1, 4, 5, 6]
    assert tree.mask[3].nonzero().flatten().tolist() == [0, 1, 2, 3]
    assert torch.equal(tree.later_mask, tree.mask)
    prompted = build_sentence_tree(tokens, shared=1)
    # later nodes: 0 sot, 1 prompt, then "7", eot(1), "8", "9", eot(2) fed by block-0 nodes 2, 3, 4, 5, 6
    assert prompted.sources.tolist() == [0, 0, 2, 3, 4, 5, 6]
    assert prompted.ends.tolist() == [3, 6]
    assert prompted.later_mask[6].nonzero().flatten().tolist() == [0, 1, 4, 5, 6]
    assert prompted.later_mask[2].nonzero().flatten().tolist() == [0, 1, 2]
    assert prompted.later_mask[1].nonzero().flatten().tolist() == [0, 1]
    short = build_sentence_tree(tokens, shared=3)  # the first sentence ends inside the prompt
    assert short.ends.tolist() == [3, 4] and len(short.sources) == 5  # 4 shared nodes + eot(2)


def test_padding_nodes_are_zeros_that_see_only_themselves_and_that_nothing_sees() -> None:
    sot, eot = 49406, 49407
    tree = build_sentence_tree(torch.tensor([[sot, 5, 7, eot], [sot, 5, 8, eot]]))  # 6 nodes
    states = torch.arange(12.0).view(6, 2)
    padded, mask = pad_sentence_tree(tree, states, 8)
    assert torch.equal(padded[:6], states) and torch.equal(padded[6:], torch.zeros(2, 2))
    assert torch.equal(mask[:6, :6], tree.later_mask)
    assert not mask[:6, 6:].any() and not mask[6:, :6].any()  # no real node sees a pad, no pad sees a real node
    assert torch.equal(mask[6:, 6:], torch.eye(2, dtype=torch.bool))  # each pad sees itself: no empty softmax row
