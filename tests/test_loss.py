"""Tests for minclip/loss.py: InfoNCE and SigLIP against open_clip and naive loops, their properties, the distributed
version against a single process, and every input error."""

import math
import os
import socket
import sys
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from minclip.loss import (
    SIGLIP_INIT_BIAS,
    SIGLIP_INIT_LOG_SCALE,
    ClipLoss,
    SigLipLoss,
    clip_loss,
    distributed_clip_loss,
    distributed_siglip_loss,
    gather_features,
    siglip_loss,
)
from tests.references import open_clip_loss


def unit_features(batch, dim, seed, dtype=torch.float64, requires_grad=False):
    generator = torch.Generator().manual_seed(seed)
    features = F.normalize(torch.randn(batch, dim, generator=generator, dtype=dtype), dim=-1)
    return features.requires_grad_(requires_grad)


def naive_clip_loss(image_features, text_features, scale):
    """The InfoNCE definition written with Python floats, one softmax at a time."""
    image_rows, text_rows = image_features.tolist(), text_features.tolist()
    batch = len(image_rows)
    logits = [[scale * sum(a * b for a, b in zip(image, text)) for text in text_rows] for image in image_rows]
    image_to_text = [math.log(sum(math.exp(logits[i][j]) for j in range(batch))) - logits[i][i] for i in range(batch)]
    text_to_image = [math.log(sum(math.exp(logits[i][j]) for i in range(batch))) - logits[j][j] for j in range(batch)]
    return (sum(image_to_text) / batch + sum(text_to_image) / batch) / 2


def naive_siglip_loss(image_features, text_features, scale, bias):
    """SigLIP's definition: one binary log-loss per (image, text) pair, summed and divided by the batch size."""
    image_rows, text_rows = image_features.tolist(), text_features.tolist()
    batch = len(image_rows)
    total = 0.0
    for i in range(batch):
        for j in range(batch):
            logit = scale * sum(a * b for a, b in zip(image_rows[i], text_rows[j])) + bias
            label = 1.0 if i == j else -1.0
            total += math.log1p(math.exp(-label * logit))  # -log sigmoid(label * logit)
    return total / batch


def grads(loss, *inputs):
    return torch.autograd.grad(loss, inputs)


# ----------------------------------------------------------------------------------------------------------------------
# InfoNCE


@pytest.mark.parametrize("batch", [1, 2, 7, 32])
def test_clip_loss_equals_open_clip_value_and_gradients(batch):
    image = unit_features(batch, 24, seed=1, requires_grad=True)
    text = unit_features(batch, 24, seed=2, requires_grad=True)
    scale = torch.tensor(1 / 0.07, dtype=torch.float64, requires_grad=True)
    ours = clip_loss(image, text, scale)
    theirs = open_clip_loss().ClipLoss()(image, text, scale)
    torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-10)
    for mine, reference in zip(grads(ours, image, text, scale), grads(theirs, image, text, scale)):
        torch.testing.assert_close(mine, reference, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("scale", [1.0, 14.3, 100.0])
def test_clip_loss_equals_naive_loop(scale):
    image, text = unit_features(6, 8, seed=3), unit_features(6, 8, seed=4)
    expected = torch.tensor(naive_clip_loss(image, text, scale), dtype=torch.float64)
    torch.testing.assert_close(clip_loss(image, text, scale), expected, rtol=1e-12, atol=1e-12)


def test_random_features_at_scale_one_give_ln_batch():
    # Independent random unit vectors in D dims have cosines with mean 0 and variance 1/D, so at scale 1 the softmax is
    # nearly uniform and the loss is ln(B) plus two small terms: a bias of about +1/(2D) (log-mean-exp of the cosines,
    # since E[exp(c)] ~ exp(1/(2D))) and noise dominated by the mean of the B diagonal cosines, std 1/sqrt(B*D) per
    # draw. Averaging R draws shrinks the noise to 1/sqrt(R*B*D); the tolerance is that bias plus 5 standard deviations.
    batch, dim, draws = 32, 256, 50
    pairs = [(unit_features(batch, dim, 2 * r), unit_features(batch, dim, 2 * r + 1)) for r in range(draws)]
    losses = [clip_loss(image, text, 1.0) for image, text in pairs]
    tolerance = 1 / (2 * dim) + 5 / math.sqrt(draws * batch * dim)  # 0.002 + 0.008
    assert abs(torch.stack(losses).mean().item() - math.log(batch)) < tolerance


def test_aligned_features_at_high_scale_give_zero():
    features = unit_features(16, 64, seed=5)
    assert clip_loss(features, features, 100.0).item() < 1e-8
    assert clip_loss(features, features, 1.0).item() > 1.0  # the same features without a temperature: far from 0


def test_clip_loss_is_symmetric_in_images_and_texts():
    image, text = unit_features(9, 16, seed=6), unit_features(9, 16, seed=7)
    torch.testing.assert_close(clip_loss(image, text, 14.3), clip_loss(text, image, 14.3), rtol=1e-12, atol=1e-12)


def test_without_a_temperature_the_loss_cannot_go_below_the_floor_notebook_05_derives():
    """Without a temperature (scale 1) the loss bottoms out at log(1 + (B-1) exp(-B/(B-1))), the regular simplex."""
    batch = 8
    floor = math.log(1 + (batch - 1) * math.exp(-batch / (batch - 1)))
    weak_bound = math.log(1 + (batch - 1) * math.exp(-2))  # every negative at cosine -1: a bound, not reachable
    simplex = F.normalize(torch.eye(batch, dtype=torch.float64) - 1 / batch, dim=-1)  # pairwise cosine -1/(B-1)
    assert clip_loss(simplex, simplex, 1.0).item() == pytest.approx(floor, abs=1e-12)

    # Gradient descent on free features finds that floor and never goes below it.
    torch.manual_seed(0)
    image = torch.randn(batch, 16, dtype=torch.float64, requires_grad=True)
    text = torch.randn(batch, 16, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.Adam([image, text], lr=0.1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 8x16 tensors: thread hand-offs would cost more than the arithmetic
    try:
        for _ in range(100):
            loss = clip_loss(F.normalize(image, dim=-1), F.normalize(text, dim=-1), 1.0)
            assert loss.item() >= floor - 1e-9 > weak_bound
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    finally:
        torch.set_num_threads(threads)
    assert loss.item() == pytest.approx(floor, abs=1e-3)


def test_clip_loss_module_and_float32():
    image = unit_features(5, 8, seed=8, dtype=torch.float32)
    text = unit_features(5, 8, seed=9, dtype=torch.float32)
    scale = torch.tensor(10.0)
    torch.testing.assert_close(ClipLoss()(image, text, scale), clip_loss(image, text, scale))
    expected = torch.tensor(naive_clip_loss(image, text, 10.0), dtype=torch.float32)
    torch.testing.assert_close(clip_loss(image, text, scale), expected)  # float32 tolerances


# ----------------------------------------------------------------------------------------------------------------------
# Hard negatives (NegCLIP): foils as extra wrong captions


def naive_clip_loss_with_foils(image_features, text_features, foil_features, scale):
    """NegCLIP's InfoNCE by hand: each image picks its caption among the B captions and the B' foils; each caption
    picks its image among the B images (foils are never queries)."""
    images, texts, foils = image_features.tolist(), text_features.tolist(), foil_features.tolist()
    batch = len(images)

    def logit(a, b):
        return scale * sum(x * y for x, y in zip(a, b))

    image_to_text = [math.log(sum(math.exp(logit(images[i], t)) for t in texts + foils)) - logit(images[i], texts[i])
                     for i in range(batch)]
    text_to_image = [math.log(sum(math.exp(logit(image, texts[j])) for image in images)) - logit(images[j], texts[j])
                     for j in range(batch)]
    return (sum(image_to_text) / batch + sum(text_to_image) / batch) / 2


@pytest.mark.parametrize("batch, foils, scale", [(1, 1, 14.3), (6, 6, 1.0), (6, 2, 14.3), (5, 9, 100.0)])
def test_clip_loss_with_foils_equals_hand_computation(batch, foils, scale):
    image, text = unit_features(batch, 8, seed=30), unit_features(batch, 8, seed=31)
    foil = unit_features(foils, 8, seed=32)
    expected = torch.tensor(naive_clip_loss_with_foils(image, text, foil, scale), dtype=torch.float64)
    torch.testing.assert_close(clip_loss(image, text, scale, foil), expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ClipLoss()(image, text, scale, foil), expected, rtol=1e-12, atol=1e-12)


def test_clip_loss_without_foils_is_plain_infonce_exactly():
    image, text = unit_features(7, 16, seed=33), unit_features(7, 16, seed=34)
    plain = clip_loss(image, text, 14.3)
    assert torch.equal(clip_loss(image, text, 14.3, None), plain)
    assert torch.equal(clip_loss(image, text, 14.3, torch.zeros(0, 16, dtype=torch.float64)), plain)
    assert torch.equal(siglip_loss(image, text, 10.0, -10.0, torch.zeros(0, 16, dtype=torch.float64)),
                       siglip_loss(image, text, 10.0, -10.0))


def test_foils_only_raise_the_image_to_text_loss_and_get_gradient_from_it():
    image = unit_features(6, 16, seed=35, requires_grad=True)
    text = unit_features(6, 16, seed=36)
    foil = unit_features(3, 16, seed=37, requires_grad=True)
    with_foils = clip_loss(image, text, 14.3, foil)
    assert with_foils > clip_loss(image, text, 14.3)  # more wrong answers to beat: never easier
    # the text -> image half is the plain one: foils are not queries
    labels = torch.arange(6)
    text_to_image = F.cross_entropy((14.3 * image @ text.T).T, labels)
    image_to_text = F.cross_entropy(14.3 * image @ torch.cat([text, foil]).T, labels)
    torch.testing.assert_close(with_foils, (image_to_text + text_to_image) / 2, rtol=1e-12, atol=1e-12)
    # a foil's gradient: s / (2B) * sum_i p(image i picks foil f) * image_i, so descent pushes it away from the
    # images in proportion to how much they are fooled by it
    (foil_grad,) = torch.autograd.grad(with_foils, foil)
    probabilities = torch.softmax(14.3 * image @ torch.cat([text, foil]).T, dim=1)[:, 6:]  # (6, 3)
    expected = 14.3 / (2 * 6) * probabilities.T @ image  # (3, 16)
    torch.testing.assert_close(foil_grad, expected.detach(), rtol=1e-10, atol=1e-12)


def test_a_foil_that_copies_the_true_caption_caps_the_loss_at_ln2():
    """Why foils must never equal a true caption: image i then has two equally good answers, one of them "wrong"."""
    features = unit_features(4, 32, seed=38)
    image_to_text = 2 * clip_loss(features, features, 100.0, features[:1]) - clip_loss(features, features, 100.0)
    assert image_to_text.item() == pytest.approx(math.log(2) / 4, rel=1e-6)  # image 0 at log 2, the others at 0


def test_siglip_loss_with_foils_adds_one_negative_pair_per_image_and_foil():
    image, text = unit_features(5, 8, seed=39), unit_features(5, 8, seed=40)
    foil = unit_features(3, 8, seed=41)
    scale, bias = 10.0, -2.0
    extra = sum(math.log1p(math.exp(scale * float(i @ f) + bias)) for i in image for f in foil) / 5  # label -1
    expected = naive_siglip_loss(image, text, scale, bias) + extra
    torch.testing.assert_close(siglip_loss(image, text, scale, bias, foil), torch.tensor(expected, dtype=torch.float64),
                               rtol=1e-12, atol=1e-12)
    module = SigLipLoss()(image, text, scale, bias, foil)
    torch.testing.assert_close(module, siglip_loss(image, text, scale, bias, foil))


def test_foil_errors():
    features = torch.zeros(4, 8)
    with pytest.raises(ValueError, match=r"foil_features must be 2-D \(B', D\) with D = 8.*\(3, 6\)"):
        clip_loss(features, features, 1.0, torch.zeros(3, 6))
    with pytest.raises(ValueError, match=r"foil_features must be 2-D.*\(6,\)"):
        siglip_loss(features, features, 1.0, 0.0, torch.zeros(6))
    with pytest.raises(TypeError, match="foil_features must have the dtype of text_features"):
        clip_loss(features, features, 1.0, torch.zeros(2, 8, dtype=torch.float64))
    with pytest.raises(TypeError, match="foil_features must be a torch.Tensor.*list"):
        clip_loss(features, features, 1.0, [[0.0] * 8])


# ----------------------------------------------------------------------------------------------------------------------
# SigLIP


@pytest.mark.parametrize("scale, bias", [(10.0, -10.0), (3.0, 0.5)])
def test_siglip_loss_equals_naive_double_loop(scale, bias):
    image, text = unit_features(6, 8, seed=10), unit_features(6, 8, seed=11)
    expected = torch.tensor(naive_siglip_loss(image, text, scale, bias), dtype=torch.float64)
    torch.testing.assert_close(siglip_loss(image, text, scale, bias), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("batch", [1, 5, 16])
def test_siglip_loss_equals_open_clip_value_and_gradients(batch):
    # open_clip's SigLipLoss takes the scale already exponentiated and the bias as is, labels 2*I - 1, sum / B.
    image = unit_features(batch, 12, seed=12, requires_grad=True)
    text = unit_features(batch, 12, seed=13, requires_grad=True)
    scale = torch.tensor(math.exp(SIGLIP_INIT_LOG_SCALE), dtype=torch.float64, requires_grad=True)
    bias = torch.tensor(SIGLIP_INIT_BIAS, dtype=torch.float64, requires_grad=True)
    ours = siglip_loss(image, text, scale, bias)
    theirs = open_clip_loss().SigLipLoss()(image, text, scale, bias)
    torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-10)
    for mine, reference in zip(grads(ours, image, text, scale, bias), grads(theirs, image, text, scale, bias)):
        torch.testing.assert_close(mine, reference, rtol=1e-10, atol=1e-10)


def test_siglip_init_and_symmetry():
    assert math.exp(SIGLIP_INIT_LOG_SCALE) == pytest.approx(10.0) and SIGLIP_INIT_BIAS == -10.0  # Zhai et al. 3.2
    image, text = unit_features(7, 16, seed=14), unit_features(7, 16, seed=15)
    torch.testing.assert_close(siglip_loss(image, text, 10.0, -10.0), siglip_loss(text, image, 10.0, -10.0))
    torch.testing.assert_close(SigLipLoss()(image, text, 10.0, -10.0), siglip_loss(image, text, 10.0, -10.0))


# ----------------------------------------------------------------------------------------------------------------------
# Input errors


@pytest.mark.parametrize(
    "image, text, scale, error, match",
    [
        (torch.zeros(4, 8), torch.zeros(3, 8), 1.0, ValueError, "same batch size.*4 images and 3 captions"),
        (torch.zeros(4, 8), torch.zeros(4, 6), 1.0, ValueError, "same embedding dim.*8 and 6"),
        (torch.zeros(8), torch.zeros(4, 8), 1.0, ValueError, r"image_features must be 2-D \(B, D\).*\(8,\)"),
        (torch.zeros(4, 8), torch.zeros(2, 4, 8), 1.0, ValueError, r"text_features must be 2-D.*\(2, 4, 8\)"),
        (torch.zeros(0, 8), torch.zeros(0, 8), 1.0, ValueError, "empty"),
        (torch.zeros(4, 8, dtype=torch.long), torch.zeros(4, 8), 1.0, TypeError, "floating-point.*int64"),
        (torch.zeros(4, 8), torch.zeros(4, 8, dtype=torch.float64), 1.0, TypeError, "same dtype"),
        ([[0.0] * 8] * 4, torch.zeros(4, 8), 1.0, TypeError, "image_features must be a torch.Tensor.*list"),
        (torch.zeros(4, 8), torch.zeros(4, 8), torch.ones(4), ValueError, r"logit_scale must be a scalar.*\(4,\)"),
        (torch.zeros(4, 8), torch.zeros(4, 8), "14.3", TypeError, "logit_scale must be a float"),
        (torch.zeros(4, 8), torch.zeros(4, 8), torch.tensor(-0.5), ValueError, r"exponentiated.*logit_scale.exp\(\)"),
    ],
)
def test_clip_loss_errors(image, text, scale, error, match):
    with pytest.raises(error, match=match):
        clip_loss(image, text, scale)


def test_siglip_loss_errors():
    features = torch.zeros(4, 8)
    with pytest.raises(ValueError, match=r"logit_bias must be a scalar.*\(2,\)"):
        siglip_loss(features, features, 10.0, torch.zeros(2))
    with pytest.raises(ValueError, match="same batch size"):
        siglip_loss(features, torch.zeros(5, 8), 10.0, -10.0)
    with pytest.raises(ValueError, match="exponentiated"):
        siglip_loss(features, features, -1.0, -10.0)


# ----------------------------------------------------------------------------------------------------------------------
# Several processes


def test_distributed_losses_without_process_group_are_the_plain_losses():
    image, text = unit_features(6, 8, seed=16), unit_features(6, 8, seed=17)
    assert not dist.is_initialized()
    gathered = gather_features(image, text)
    assert gathered.image_features is image and gathered.text_features is text and gathered.offset == 0
    torch.testing.assert_close(distributed_clip_loss(image, text, 14.3), clip_loss(image, text, 14.3))
    torch.testing.assert_close(distributed_siglip_loss(image, text, 10.0, -1.0), siglip_loss(image, text, 10.0, -1.0))
    torch.testing.assert_close(ClipLoss(distributed=True)(image, text, 14.3), clip_loss(image, text, 14.3))


WORLD_SIZE = 2
GLOBAL_BATCH = 8


def _problem():
    """The same tiny two-tower model and global batch in every process: raw inputs, linear encoders, scale, bias."""
    torch.manual_seed(0)
    images = torch.randn(GLOBAL_BATCH, 12, dtype=torch.float64)
    texts = torch.randn(GLOBAL_BATCH, 10, dtype=torch.float64)
    towers = torch.nn.ModuleDict({"image": torch.nn.Linear(12, 6), "text": torch.nn.Linear(10, 6)}).double()
    towers.log_scale = torch.nn.Parameter(torch.tensor(math.log(1 / 0.07), dtype=torch.float64))
    towers.bias = torch.nn.Parameter(torch.tensor(-2.0, dtype=torch.float64))
    return images, texts, towers


def _encode(towers, images, texts):
    return F.normalize(towers["image"](images), dim=-1), F.normalize(towers["text"](texts), dim=-1)


def _gradients(towers):
    return {name: parameter.grad.clone() for name, parameter in towers.named_parameters() if parameter.grad is not None}


def _single_process_reference(loss_name):
    images, texts, towers = _problem()
    image_features, text_features = _encode(towers, images, texts)
    if loss_name == "clip":
        loss = clip_loss(image_features, text_features, towers.log_scale.exp())
    else:
        loss = siglip_loss(image_features, text_features, towers.log_scale.exp(), towers.bias)
    loss.backward()
    return loss.detach(), _gradients(towers)


def _worker(rank, rendezvous, results):
    torch.set_num_threads(1)  # a forked child must not reuse the parent's OpenMP pool
    loopback = [name for _, name in socket.if_nameindex() if name.startswith("lo")]
    if loopback:  # keep gloo's own connections on 127.0.0.1
        os.environ["GLOO_SOCKET_IFNAME"] = loopback[0]
    dist.init_process_group(
        "gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=WORLD_SIZE, timeout=timedelta(seconds=60)
    )
    out = {}
    shard = slice(rank * GLOBAL_BATCH // WORLD_SIZE, (rank + 1) * GLOBAL_BATCH // WORLD_SIZE)

    def ddp_step(loss_fn):
        # What DistributedDataParallel does: each process backpropagates its own loss, then gradients are averaged.
        images, texts, towers = _problem()
        loss = loss_fn(towers, *_encode(towers, images[shard], texts[shard]))
        loss.backward()
        for parameter in towers.parameters():
            if parameter.grad is None:  # the bias, under InfoNCE
                continue
            dist.all_reduce(parameter.grad)
            parameter.grad /= WORLD_SIZE
        mean_loss = loss.detach().clone()
        dist.all_reduce(mean_loss)
        return loss.detach(), mean_loss / WORLD_SIZE, _gradients(towers)

    out["clip"] = ddp_step(lambda t, i, x: distributed_clip_loss(i, x, t.log_scale.exp()))
    out["clip_module"] = ddp_step(lambda t, i, x: ClipLoss(distributed=True)(i, x, t.log_scale.exp()))
    out["siglip"] = ddp_step(lambda t, i, x: distributed_siglip_loss(i, x, t.log_scale.exp(), t.bias))
    out["siglip_module"] = ddp_step(lambda t, i, x: SigLipLoss(distributed=True)(i, x, t.log_scale.exp(), t.bias))
    # The other way to use the gathered features: the full (N, N) loss in every process (more compute, same result).
    out["clip_full"] = ddp_step(lambda t, i, x: clip_loss(*gather_features(i, x)[:2], t.log_scale.exp()))

    # Unequal shards (5 + 3 rows): order, offsets and the summed gradient of the gather itself.
    sizes = (5, 3)
    start = sum(sizes[:rank])
    generator = torch.Generator().manual_seed(1)
    every_image = torch.randn(GLOBAL_BATCH, 4, generator=generator, dtype=torch.float64)
    every_text = torch.randn(GLOBAL_BATCH, 4, generator=generator, dtype=torch.float64)
    weights = torch.randn(GLOBAL_BATCH, 8, generator=generator, dtype=torch.float64)
    local_image = every_image[start : start + sizes[rank]].clone().requires_grad_(True)
    local_text = every_text[start : start + sizes[rank]].clone().requires_grad_(True)
    gathered = gather_features(local_image, local_text)
    (torch.cat([gathered.image_features, gathered.text_features], dim=1) * weights).sum().backward()
    out["unequal"] = {
        "offset": gathered.offset,
        "image_features": gathered.image_features.detach(),
        "text_features": gathered.text_features.detach(),
        "image_grad": local_image.grad,
        "text_grad": local_text.grad,
        "rows": slice(start, start + sizes[rank]),
        "clip_loss": distributed_clip_loss(
            F.normalize(local_image, dim=-1), F.normalize(local_text, dim=-1), 5.0
        ).detach(),
        "global_inputs": (every_image, every_text, weights),
    }
    dist.destroy_process_group()
    torch.save(out, results / f"rank{rank}.pt")


@pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()), reason="needs torch.distributed with gloo")
def test_two_processes_equal_one_process_with_the_global_batch(tmp_path):
    # Fork (Linux) starts the two workers in a fraction of a second; spawn (macOS, Windows) re-imports torch in each.
    # Rendezvous through a file in tmp_path: no port to choose, nothing reachable from outside.
    start_method = "fork" if sys.platform.startswith("linux") else "spawn"
    mp.start_processes(_worker, args=(tmp_path / "rendezvous", tmp_path), nprocs=WORLD_SIZE, start_method=start_method)
    ranks = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=False) for rank in range(WORLD_SIZE)]

    for name in ("clip", "clip_module", "siglip", "siglip_module", "clip_full"):
        expected_loss, expected_grads = _single_process_reference("siglip" if "siglip" in name else "clip")
        for local_loss, mean_loss, averaged_grads in (rank[name] for rank in ranks):
            torch.testing.assert_close(mean_loss, expected_loss, rtol=1e-10, atol=1e-10, msg=name)
            assert averaged_grads.keys() == expected_grads.keys()
            for key, grad in averaged_grads.items():
                torch.testing.assert_close(grad, expected_grads[key], rtol=1e-10, atol=1e-10, msg=f"{name}: {key}")
    # Each process's own loss covers only its rows (not the global value), except when it computes the full matrix.
    assert not torch.allclose(ranks[0]["clip"][0], ranks[1]["clip"][0])
    torch.testing.assert_close(ranks[0]["clip_full"][0], ranks[1]["clip_full"][0])

    every_image, every_text, weights = ranks[0]["unequal"]["global_inputs"]
    for rank, expected_offset in zip(ranks, (0, 5)):
        unequal = rank["unequal"]
        assert unequal["offset"] == expected_offset
        torch.testing.assert_close(unequal["image_features"], every_image, rtol=0, atol=0)
        torch.testing.assert_close(unequal["text_features"], every_text, rtol=0, atol=0)
        # Both processes' losses used this shard, so its gradient is the sum of both: WORLD_SIZE times the weights.
        torch.testing.assert_close(unequal["image_grad"], WORLD_SIZE * weights[unequal["rows"], :4])
        torch.testing.assert_close(unequal["text_grad"], WORLD_SIZE * weights[unequal["rows"], 4:])
    # With unequal shards, weighting each process's mean by its rows gives the global loss: the labels are offset right.
    global_loss = clip_loss(F.normalize(every_image, dim=-1), F.normalize(every_text, dim=-1), 5.0)
    weighted = (5 * ranks[0]["unequal"]["clip_loss"] + 3 * ranks[1]["unequal"]["clip_loss"]) / GLOBAL_BATCH
    torch.testing.assert_close(weighted, global_loss, rtol=1e-12, atol=1e-12)


# Hard negatives across processes: each process holds its own foils, as many as it likes (zero included); the gathered
# loss must equal one process holding the global batch and every foil.
FOILS_PER_RANK = ((3, 1), (2, 0), (0, 0))  # (rank 0, rank 1) per case: unequal, one process without, none at all


def _foil_problem():
    images, texts, towers = _problem()
    foil_inputs = torch.randn(sum(FOILS_PER_RANK[0]), 10, generator=torch.Generator().manual_seed(2),
                              dtype=torch.float64)
    return images, texts, foil_inputs, towers


def _foils_of(case, rank, foil_inputs):
    sizes = FOILS_PER_RANK[case]
    start = sum(sizes[:rank])
    return foil_inputs[start : start + sizes[rank]]


def _foil_loss(name, towers, image_features, text_features, foil_features, distributed):
    scale = towers.log_scale.exp()
    if name == "clip":
        loss = distributed_clip_loss if distributed else clip_loss
        return loss(image_features, text_features, scale, foil_features=foil_features)
    loss = distributed_siglip_loss if distributed else siglip_loss
    return loss(image_features, text_features, scale, towers.bias, foil_features=foil_features)


def _single_process_with_foils(name, case):
    images, texts, foil_inputs, towers = _foil_problem()
    foils = torch.cat([_foils_of(case, rank, foil_inputs) for rank in range(WORLD_SIZE)])  # rank order
    image_features, text_features = _encode(towers, images, texts)
    loss = _foil_loss(name, towers, image_features, text_features, F.normalize(towers["text"](foils), dim=-1), False)
    loss.backward()
    return loss.detach(), _gradients(towers)


def _foil_worker(rank, rendezvous, results):
    torch.set_num_threads(1)
    loopback = [name for _, name in socket.if_nameindex() if name.startswith("lo")]
    if loopback:
        os.environ["GLOO_SOCKET_IFNAME"] = loopback[0]
    dist.init_process_group(
        "gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=WORLD_SIZE, timeout=timedelta(seconds=60)
    )
    shard = slice(rank * GLOBAL_BATCH // WORLD_SIZE, (rank + 1) * GLOBAL_BATCH // WORLD_SIZE)
    out = {}
    for name in ("clip", "siglip"):
        for case in range(len(FOILS_PER_RANK)):
            images, texts, foil_inputs, towers = _foil_problem()
            image_features, text_features = _encode(towers, images[shard], texts[shard])
            foil_features = F.normalize(towers["text"](_foils_of(case, rank, foil_inputs)), dim=-1)  # (n', 6)
            loss = _foil_loss(name, towers, image_features, text_features, foil_features, True)
            loss.backward()
            for parameter in towers.parameters():  # DDP's averaging
                if parameter.grad is not None:
                    dist.all_reduce(parameter.grad)
                    parameter.grad /= WORLD_SIZE
            mean_loss = loss.detach().clone()
            dist.all_reduce(mean_loss)
            out[name, case] = (mean_loss / WORLD_SIZE, _gradients(towers))
    dist.destroy_process_group()
    torch.save(out, results / f"foils{rank}.pt")


@pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()), reason="needs torch.distributed with gloo")
def test_two_processes_with_foils_equal_one_process_with_every_foil(tmp_path):
    start_method = "fork" if sys.platform.startswith("linux") else "spawn"
    mp.start_processes(_foil_worker, args=(tmp_path / "rendezvous", tmp_path), nprocs=WORLD_SIZE,
                       start_method=start_method)
    ranks = [torch.load(tmp_path / f"foils{rank}.pt", weights_only=False) for rank in range(WORLD_SIZE)]
    for name in ("clip", "siglip"):
        for case in range(len(FOILS_PER_RANK)):
            expected_loss, expected_grads = _single_process_with_foils(name, case)
            for rank in ranks:
                mean_loss, grads = rank[name, case]
                torch.testing.assert_close(mean_loss, expected_loss, rtol=1e-10, atol=1e-10, msg=f"{name} {case}")
                assert grads.keys() == expected_grads.keys()
                for key, grad in grads.items():
                    torch.testing.assert_close(grad, expected_grads[key], rtol=1e-10, atol=1e-10,
                                               msg=f"{name} {case}: {key}")
    # the foils mattered: with them the loss differs from the loss without
    assert not torch.allclose(ranks[0]["clip", 0][0], ranks[0]["clip", 2][0])
