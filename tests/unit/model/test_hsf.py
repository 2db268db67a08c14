"""k-means and Hybrid Semantic Fusion: agreement with scikit-learn, determinism, batch independence."""

from __future__ import annotations

import itertools

import pytest
import torch
from sklearn.cluster import KMeans

from anomalib_adaclip.model import hsf
from anomalib_adaclip.model.hsf import hybrid_semantic_fusion, kmeans, kmeans_inertia
from tests.conftest import load_reference, reference_model


def _same_partition(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal up to a renaming of the cluster labels."""
    pairs = set(zip(a.tolist(), b.tolist(), strict=True))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


def _blobs(n_blobs: int, per_blob: int, dim: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_blobs, dim, generator=generator) * 20
    points = centres.repeat_interleave(per_blob, 0) + torch.randn(n_blobs * per_blob, dim, generator=generator)
    return points[torch.randperm(len(points), generator=generator)]


@pytest.mark.parametrize(("n_blobs", "dim", "seed"), [(5, 8, 0), (20, 64, 1), (3, 2, 2)])
def test_same_partition_as_scikit_learn_on_separated_data(n_blobs: int, dim: int, seed: int) -> None:
    points = _blobs(n_blobs, 5, dim, seed)
    ours = kmeans(points[None], n_blobs)[0]
    theirs = torch.from_numpy(KMeans(n_blobs, n_init="auto", random_state=0).fit(points.numpy()).labels_)
    assert _same_partition(ours, theirs)


def _reference_top_tokens(k: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    """The 5k most abnormal projected tokens of each fixture image, concatenated over layers, and the reference's
    cluster labels for them."""

    data = load_reference()
    model = reference_model(data)
    with torch.no_grad():
        features = model.features(data["images"], data["classes"])
    scores = features.layer_logits.mean(1).flatten(2).softmax(1)[:, 1]
    top = scores.topk(5 * k, dim=-1).indices
    batch, n_layers, _, dim = features.patch_tokens.shape
    selected = features.patch_tokens.gather(2, top[:, None, :, None].expand(-1, n_layers, -1, dim))
    return selected.transpose(1, 2).reshape(batch, 5 * k, n_layers * dim), torch.stack(data["outputs"]["hsf_labels"])


def test_inertia_close_to_scikit_learn_on_reference_tokens() -> None:
    points, reference_labels = _reference_top_tokens()
    ours = kmeans(points, 20)
    for image in range(len(points)):
        sklearn = KMeans(20, n_init="auto", random_state=0).fit(points[image].numpy())
        assert kmeans_inertia(points[image : image + 1], ours[image : image + 1], 20).item() <= sklearn.inertia_ * 1.01
        # The reference's labels come from the same scikit-learn clustering: we find exactly them.
        assert _same_partition(ours[image], reference_labels[image])


def test_deterministic_and_independent_of_the_batch() -> None:
    points = torch.randn(6, 100, 32, generator=torch.Generator().manual_seed(0))
    batched = kmeans(points, 20)
    assert torch.equal(batched, kmeans(points, 20))
    for image in range(6):
        assert torch.equal(kmeans(points[image : image + 1], 20)[0], batched[image])
    assert torch.equal(kmeans(points.flip(0), 20).flip(0), batched)


def test_more_initialisations_never_increase_inertia() -> None:
    points = torch.randn(4, 60, 16, generator=torch.Generator().manual_seed(1))
    one = kmeans_inertia(points, kmeans(points, 8, n_init=1), 8)
    many = kmeans_inertia(points, kmeans(points, 8, n_init=4), 8)
    assert (many <= one + 1e-4).all()


def test_degenerate_points_do_not_break() -> None:
    points = torch.zeros(2, 10, 4)
    points[1, :5] = 1.0
    labels = kmeans(points, 3)
    assert labels.shape == (2, 10) and labels.min() >= 0 and labels.max() < 3


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="k <= number of points"):
        kmeans(torch.randn(1, 5, 2), 6)
    with pytest.raises(ValueError, match=r"\[B, N, D\]"):
        kmeans(torch.randn(5, 2), 2)


def test_fusion_is_mean_of_cluster_centres() -> None:
    """Hand-computed: two clusters of unequal size; the fusion averages the two centres, not the points."""
    tokens = torch.zeros(1, 2, 3, 2)  # one image, 2 layers, 3 patches, dim 2
    tokens[0, :, 0] = torch.tensor([1.0, 0.0])
    tokens[0, :, 1] = torch.tensor([1.0, 0.0])
    tokens[0, :, 2] = torch.tensor([0.0, 1.0])
    scores = torch.tensor([[0.9, 0.8, 0.7]])
    fused = hybrid_semantic_fusion(scores, tokens, k_clusters=2, labels=torch.tensor([[0, 0, 1]]))
    torch.testing.assert_close(fused, torch.tensor([[2**-0.5, 2**-0.5]]))
    fused_by_kmeans = hybrid_semantic_fusion(scores, tokens, k_clusters=2)
    torch.testing.assert_close(fused_by_kmeans, fused)


def test_fusion_uses_the_most_abnormal_patches() -> None:
    tokens = torch.nn.functional.normalize(torch.randn(1, 1, 50, 4), dim=-1)
    scores = torch.rand(1, 50)
    fused = hybrid_semantic_fusion(scores, tokens, k_clusters=1)
    top = scores.topk(5).indices[0]
    torch.testing.assert_close(fused[0], torch.nn.functional.normalize(tokens[0, 0, top].mean(0), dim=0))


def test_fusion_with_fewer_patches_than_five_k() -> None:
    tokens = torch.randn(2, 2, 9, 4)
    fused = hybrid_semantic_fusion(torch.rand(2, 9), tokens, k_clusters=20)
    assert fused.shape == (2, 4) and torch.isfinite(fused).all()


def test_all_label_permutations_give_the_same_fusion() -> None:
    tokens = torch.randn(1, 2, 10, 3)
    scores = torch.rand(1, 10)
    labels = torch.tensor([[0, 1, 2, 0, 1, 2, 0, 1, 2, 0]])
    first = hybrid_semantic_fusion(scores, tokens, 3, labels=labels)
    for permutation in itertools.permutations(range(3)):
        renamed = torch.tensor(permutation)[labels]
        torch.testing.assert_close(hybrid_semantic_fusion(scores, tokens, 3, labels=renamed), first)


def test_stopping_at_convergence_equals_running_every_iteration(monkeypatch: pytest.MonkeyPatch) -> None:
    """On the CPU Lloyd stops when no label changes; the result is bit for bit that of all 50 iterations."""
    points = torch.randn(5, 100, 48, generator=torch.Generator().manual_seed(3))
    stopped = kmeans(points, 20, n_init=2)
    monkeypatch.setattr(hsf, "_can_stop_early", lambda points: False)
    assert torch.equal(kmeans(points, 20, n_init=2), stopped)


def test_lloyd_stops_once_converged(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    original = hsf._squared_distances
    monkeypatch.setattr(hsf, "_squared_distances", lambda *args: calls.append(1) or original(*args))
    kmeans(_blobs(4, 5, 8, seed=0)[None], 4)
    assert len(calls) < 20  # seeding (4) + a few Lloyd iterations + labels, not 50 iterations
