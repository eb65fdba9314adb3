"""Tests for minclip.interpret: attention rollout against a hand loop, PCA against the covariance's eigenvectors, and
the bag-of-words text encoder's blindness to word order (which makes the binding test unpassable for it)."""

import doctest

import pytest
import torch

from minclip.evaluate import binding_accuracy, encode_images, encode_texts
from minclip.interpret import (BagOfWordsText, attention_rollout, class_token_heatmap, pca, token_counts,
                               with_bag_of_words_text)
from minclip.model import CLIP, CLIPConfig
from minclip.vision import patchify


def random_maps(layers=3, batch=2, heads=4, tokens=5, seed=0, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, heads, tokens, tokens, generator=generator, dtype=dtype).softmax(dim=-1)
            for _ in range(layers)]


def rollout_by_hand(maps, add_residual=True):
    """Abnar & Zuidema's recursion, entry by entry: no broadcasting, no batched matmul."""
    B, H, T, _ = maps[0].shape
    out = torch.zeros(B, T, T, dtype=maps[0].dtype)
    for b in range(B):
        rollout = [[float(i == j) for j in range(T)] for i in range(T)]  # before any layer: each token is itself
        for attention in maps:
            layer = [[sum(attention[b, h, i, j].item() for h in range(H)) / H for j in range(T)] for i in range(T)]
            if add_residual:
                layer = [[0.5 * layer[i][j] + 0.5 * (i == j) for j in range(T)] for i in range(T)]
                layer = [[value / sum(row) for value in row] for row in layer]
            rollout = [[sum(layer[i][m] * rollout[m][j] for m in range(T)) for j in range(T)] for i in range(T)]
        out[b] = torch.tensor(rollout, dtype=maps[0].dtype)
    return out


# ------------------------------------------------------------------------------------------------------ rollout
@pytest.mark.parametrize("add_residual", [True, False])
def test_rollout_equals_hand_loop(add_residual):
    maps = random_maps()
    torch.testing.assert_close(attention_rollout(maps, add_residual=add_residual), rollout_by_hand(maps, add_residual))


def test_rollout_rows_sum_to_one():
    maps = random_maps(layers=4, tokens=7, seed=1)
    for fusion in ("mean", "max"):
        for residual in (True, False):
            rollout = attention_rollout(maps, add_residual=residual, head_fusion=fusion)
            torch.testing.assert_close(rollout.sum(dim=-1), torch.ones(2, 7, dtype=torch.float64))
            assert (rollout >= 0).all()


def test_identity_attention_gives_identity_rollout():
    identity = torch.eye(6).expand(3, 2, 6, 6)  # (B, H, T, T): every token attends only to itself
    for residual in (True, False):
        torch.testing.assert_close(attention_rollout([identity] * 3, add_residual=residual),
                                   torch.eye(6).expand(3, 6, 6))


def test_one_layer_without_residual_is_the_head_mean():
    maps = random_maps(layers=1)
    torch.testing.assert_close(attention_rollout(maps, add_residual=False), maps[0].mean(dim=1))


def test_max_head_fusion_by_hand():
    maps = random_maps(layers=2, seed=2)
    layers = []
    for attention in maps:
        fused = attention.max(dim=1).values  # (B, T, T)
        fused = fused / fused.sum(dim=-1, keepdim=True)
        fused = 0.5 * fused + 0.5 * torch.eye(5, dtype=fused.dtype)
        layers.append(fused / fused.sum(dim=-1, keepdim=True))
    torch.testing.assert_close(attention_rollout(maps, head_fusion="max"), layers[1] @ layers[0])


def test_a_fully_masked_row_rolls_out_as_identity_row():
    attention = torch.full((1, 1, 3, 3), 1 / 3)
    attention[0, 0, 2] = 0.0  # query 2 had every key blocked: minclip's attention gives it an all-zero row
    rollout = attention_rollout([attention])
    torch.testing.assert_close(rollout[0, 2], torch.tensor([0.0, 0.0, 1.0]))


def test_rollout_of_a_causal_text_tower_stays_causal():
    torch.manual_seed(0)
    model = CLIP(CLIPConfig.preset("nano"))
    tokens = torch.tensor([[62, 5, 7, 9, 63, 0], [62, 11, 63, 0, 0, 0]])  # (B, T) [sot, ids..., eot, pad]
    _, maps = model.text(tokens, return_attention=True)
    rollout = attention_rollout(maps)  # (B, T, T)
    assert torch.equal(rollout, rollout.tril())  # no token's state comes from a later token
    torch.testing.assert_close(rollout.sum(dim=-1), torch.ones(2, 6))


def test_class_token_heatmap_follows_the_patch_order():
    torch.manual_seed(0)
    model = CLIP(CLIPConfig.preset("nano"))  # 16x16 images in 4x4 patches: a 4x4 grid, 17 tokens
    _, maps = model.visual(torch.randn(2, 3, 16, 16), return_attention=True)
    rollout = attention_rollout(maps)
    heat = class_token_heatmap(rollout)
    assert heat.shape == (2, 4, 4)
    torch.testing.assert_close(heat.sum(dim=(1, 2)), torch.ones(2))
    # token 1 + r * 4 + c is the patch at grid row r, column c, as patchify lists them
    grid = torch.arange(256.0).view(1, 1, 16, 16)  # pixel value = 16 * row + column
    first_pixel = patchify(grid, 4)[0, :, 0]  # (16,): top-left pixel of each patch, in token order
    rows, cols = first_pixel // 16 // 4, first_pixel % 16 // 4
    for token in range(16):
        expected = rollout[:, 0, 1 + token] / rollout[:, 0, 1:].sum(dim=-1)
        torch.testing.assert_close(heat[:, int(rows[token]), int(cols[token])], expected)


def test_rollout_errors():
    maps = random_maps()
    with pytest.raises(ValueError, match="non-empty list"):
        attention_rollout([])
    with pytest.raises(TypeError, match="single tensor"):
        attention_rollout(maps[0])
    with pytest.raises(TypeError, match=r"maps\[1\] is NoneType.*return_attention=True"):
        attention_rollout([maps[0], None])
    with pytest.raises(ValueError, match=r"\(B, H, T, T\).*got \(2, 5, 5\) at layer 0"):
        attention_rollout([maps[0].mean(dim=1)])
    with pytest.raises(ValueError, match=r"\(B, H, T, T\).*got \(2, 4, 5, 3\)"):
        attention_rollout([maps[0][..., :3]])
    with pytest.raises(ValueError, match="same shape.*at layer 1"):
        attention_rollout([maps[0], maps[1][:1]])
    with pytest.raises(TypeError, match="floating point"):
        attention_rollout([torch.ones(1, 1, 2, 2, dtype=torch.long)])
    with pytest.raises(ValueError, match="head_fusion must be one of"):
        attention_rollout(maps, head_fusion="min")
    with pytest.raises(ValueError, match=r"1 \+ g\*g tokens.*got 6 tokens"):
        class_token_heatmap(attention_rollout(random_maps(tokens=6)))
    with pytest.raises(ValueError, match=r"rollout must be \(B, 1 \+ N, 1 \+ N\)"):
        class_token_heatmap(torch.ones(5, 5))


# ------------------------------------------------------------------------------------------------------ PCA
def reference_pca(x, k):
    """PCA the textbook way: eigenvectors of the covariance matrix, largest eigenvalues first."""
    centred = x - x.mean(dim=0)
    covariance = centred.T @ centred / (len(x) - 1)  # (D, D)
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance)  # ascending
    order = eigenvalues.argsort(descending=True)
    eigenvalues, eigenvectors = eigenvalues[order], eigenvectors[:, order]
    components = eigenvectors[:, :k].T  # (k, D)
    for row in components:  # the same sign rule as pca: largest-magnitude entry positive
        row *= row[row.abs().argmax()].sign()
    return centred @ components.T, eigenvalues[:k] / eigenvalues.sum(), components


def test_pca_equals_covariance_eigendecomposition():
    generator = torch.Generator().manual_seed(0)
    mixing = torch.randn(6, 6, generator=generator, dtype=torch.float64) * torch.tensor([5.0, 3, 2, 1, 0.5, 0.1])
    x = torch.randn(200, 6, generator=generator, dtype=torch.float64) @ mixing.T + 3.0  # distinct variances, offset
    result = pca(x, k=3)
    coordinates, ratio, components = reference_pca(x, 3)
    torch.testing.assert_close(result.components, components)
    torch.testing.assert_close(result.explained_variance_ratio, ratio)
    torch.testing.assert_close(result.coordinates, coordinates)
    torch.testing.assert_close(result.mean, x.mean(dim=0))
    torch.testing.assert_close(result.project(x), result.coordinates)
    torch.testing.assert_close(result.components @ result.components.T, torch.eye(3, dtype=torch.float64))
    assert (result.explained_variance_ratio.diff() <= 0).all()
    assert result.explained_variance_ratio.sum() <= 1


def test_pca_ratios_sum_to_one_at_full_rank_and_reconstruct():
    x = torch.randn(30, 4, generator=torch.Generator().manual_seed(1))
    result = pca(x, k=4)
    torch.testing.assert_close(result.explained_variance_ratio.sum(), torch.tensor(1.0))
    torch.testing.assert_close(result.coordinates @ result.components + result.mean, x, atol=1e-5, rtol=1e-5)
    assert result.coordinates.dtype == torch.float32
    points = pca(torch.tensor([[0.0, 0.0, 0.0], [1.0, 2.0, 0.0]]), k=1)  # two points: all variance on one line
    torch.testing.assert_close(points.explained_variance_ratio, torch.tensor([1.0]))


def test_pca_errors():
    with pytest.raises(ValueError, match=r"2-D tensor \(N, D\).*got \(3,\)"):
        pca(torch.ones(3))
    with pytest.raises(TypeError, match="floating point"):
        pca(torch.ones(3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="at least 2 points"):
        pca(torch.ones(1, 4))
    with pytest.raises(ValueError, match=r"k must be an int in \[1, min\(N, D\) = 2\]"):
        pca(torch.randn(5, 2), k=3)
    with pytest.raises(ValueError, match="NaN"):
        pca(torch.tensor([[0.0, float("nan")], [1.0, 2.0]]), k=1)
    with pytest.raises(ValueError, match=r"points must be \(M, D\) with D = 2"):
        pca(torch.randn(5, 2), k=1).project(torch.randn(3, 4))


# ------------------------------------------------------------------------------------------------------ bag of words
def test_token_counts_by_hand_and_errors():
    tokens = torch.tensor([[8, 1, 2, 1, 9, 0], [8, 9, 9, 3, 3, 3]])
    expected = torch.zeros(2, 10)
    for row, ids in enumerate(([8, 1, 2, 1, 9], [8, 9])):  # up to and including the first end-of-text (9)
        for i in ids:
            expected[row, i] += 1
    torch.testing.assert_close(token_counts(tokens, 10, eot_token_id=9), expected)
    with pytest.raises(ValueError, match=r"rows \[1\] of tokens have no end-of-text token"):
        token_counts(torch.tensor([[8, 9], [8, 1]]), 10, eot_token_id=9)
    with pytest.raises(ValueError, match=r"token ids must be in \[0, vocab_size=10\)"):
        token_counts(torch.tensor([[8, 12, 9]]), 10, eot_token_id=9)
    with pytest.raises(ValueError, match=r"\(B, T\) integer tensor"):
        token_counts(torch.tensor([8.0, 9.0]), 10, eot_token_id=9)


def test_bag_of_words_is_blind_to_word_order_and_padding():
    torch.manual_seed(0)
    encoder = BagOfWordsText(vocab_size=50, width=16, embed_dim=8, eot_token_id=49)
    with torch.no_grad():
        for parameter in encoder.parameters():  # away from the zero-initialised MLP output: every part contributes
            parameter.normal_()
    words = torch.randint(0, 48, (6, 7))  # (B, n_words)
    shuffled = torch.stack([row[torch.randperm(7)] for row in words])
    frame = lambda w, pad: torch.cat([torch.full((6, 1), 48), w, torch.full((6, 1), 49),  # [sot, words, eot, pad]
                                      torch.zeros(6, pad, dtype=torch.long)], dim=1)
    features = encoder(frame(words, 3))
    assert torch.equal(features, encoder(frame(shuffled, 3)))  # bit for bit, not just close
    assert torch.equal(features, encoder(frame(words, 0)))  # padding is not counted
    assert not torch.allclose(features, encoder(frame(words.roll(1, dims=0), 3)))  # different words: different text


def test_bag_of_words_clip_cannot_tell_a_caption_from_its_swapped_foils():
    """The binding test of minclip.shapes: a caption and its colour/shape/role foils have the same tokens, so a
    bag-of-words model gives them equal scores with every image: every comparison is a tie, which binding_accuracy
    settles as a fair coin would, so the model scores exactly the chance level, 1/2."""
    from minclip.data import to_model_input
    from minclip.shapes import ShapesDataset
    from minclip.tokenizer import BPETokenizer

    test = ShapesDataset("test", num_images=24)
    tokenizer = BPETokenizer.train(ShapesDataset("train", num_images=300).captions, vocab_size=560)
    config = CLIPConfig.preset("nano", image_size=32, patch_size=8, vocab_size=tokenizer.vocab_size,
                               sot_token_id=tokenizer.sot_token_id, eot_token_id=tokenizer.eot_token_id)
    torch.manual_seed(0)
    clip_model = CLIP(config)
    bag = with_bag_of_words_text(clip_model)
    assert isinstance(bag.text, BagOfWordsText) and not isinstance(clip_model.text, BagOfWordsText)
    torch.testing.assert_close(bag.visual.conv1.weight, clip_model.visual.conv1.weight)
    images = encode_images(bag, to_model_input(test.images))  # (N, E)
    true_features = encode_texts(bag, tokenizer, test.captions)  # (N, E)
    for kind in ("colour", "shape", "role"):
        foils = [foil[kind] for foil in test.foils]
        assert foils != list(test.captions)
        foil_features = encode_texts(bag, tokenizer, foils)
        assert torch.equal(true_features, foil_features)
        true_scores, foil_scores = (images * true_features).sum(-1), (images * foil_features).sum(-1)
        assert torch.equal(true_scores, foil_scores)
        metrics = binding_accuracy(true_scores, foil_scores[:, None])
        assert metrics["accuracy"] == 0.5 == metrics["accuracy_chance"]  # all ties: exactly chance
    # the transformer text tower reads the order: the same foils get other features
    assert not torch.allclose(encode_texts(clip_model, tokenizer, test.captions),
                              encode_texts(clip_model, tokenizer, [foil["role"] for foil in test.foils]))


def test_bag_of_words_clip_trains_with_train_step_and_keeps_the_original():
    from minclip.train import parameter_groups, train_step

    torch.manual_seed(0)
    model = CLIP(CLIPConfig.preset("nano"))
    before = {name: value.clone() for name, value in model.state_dict().items()}
    bag = with_bag_of_words_text(model)
    optimizer = torch.optim.AdamW(parameter_groups(bag, 0.1), lr=1e-2)
    images, tokens = torch.randn(4, 3, 16, 16), torch.tensor([[62, 1, 2, 63], [62, 3, 63, 0], [62, 4, 5, 63],
                                                               [62, 6, 63, 0]])
    losses = [train_step(bag, images, tokens, optimizer, grad_clip=1.0) for _ in range(8)]
    assert losses[-1] < losses[0]
    for name, value in model.state_dict().items():  # the original model is untouched
        assert torch.equal(value, before[name]), name
    assert {name for name, _ in bag.named_parameters() if name.startswith("text.")} == {
        "text.token_embedding.weight", "text.ln_1.weight", "text.ln_1.bias", "text.mlp.c_fc.weight",
        "text.mlp.c_fc.bias", "text.mlp.c_proj.weight", "text.mlp.c_proj.bias", "text.ln_final.weight",
        "text.ln_final.bias", "text.text_projection"}
    with pytest.raises(TypeError, match="minclip CLIP"):
        with_bag_of_words_text(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="eot_token_id must be in"):
        BagOfWordsText(vocab_size=10, width=4, embed_dim=4, eot_token_id=10)


def test_docstring_examples():
    from minclip import interpret

    assert doctest.testmod(interpret).failed == 0
