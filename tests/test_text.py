"""minclip.text: EOT pooling at an explicit id, the [CLS]-style variant, causality, padding invariance, input checks."""

import doctest

import pytest
import torch

from minclip import text
from minclip.text import TextTransformer, first_eot_index, trim_padding

VOCAB, CONTEXT, WIDTH, EMBED = 50, 12, 32, 16
SOT, EOT = 48, 49


def make_tower(pooling="eot", eot_token_id=EOT, seed=0, **kwargs):
    torch.manual_seed(seed)
    tower = TextTransformer(VOCAB, CONTEXT, WIDTH, layers=2, heads=4, embed_dim=EMBED, eot_token_id=eot_token_id,
                            pooling=pooling, **kwargs)
    with torch.no_grad():  # random LayerNorm gains/biases too, so nothing is the identity by accident
        tower.ln_final.weight.normal_(1, 0.2)
        tower.ln_final.bias.normal_(0, 0.2)
    return tower


def make_tokens(lengths, eot=EOT, seed=1):
    """Rows like clip.tokenize: [sot, ids..., eot, 0, ...] with `length` ids."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.zeros(len(lengths), CONTEXT, dtype=torch.long)
    for row, n in enumerate(lengths):
        tokens[row, 0] = SOT
        tokens[row, 1:n + 1] = torch.randint(1, 40, (n,), generator=g)
        tokens[row, n + 1] = eot
    return tokens


def test_first_eot_index_equals_a_loop():
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 5, (20, 9), generator=g)
    expected = [next((t for t in range(9) if row[t] == 4), 9) for row in tokens.tolist()]
    assert first_eot_index(tokens, 4).tolist() == expected


@pytest.mark.parametrize("impl", ["manual", "sdpa"])
def test_eot_pooling_reads_the_first_eot_position(impl):
    tower = make_tower(attn_impl=impl)
    tokens = make_tokens([3, 6, 0, 10])
    tokens[1, 9] = EOT  # a second EOT later in the row must not matter
    hidden = tower.token_features(tokens)  # (B, T, width)
    positions = [4, 7, 1, 11]
    expected = torch.stack([hidden[b, t] for b, t in enumerate(positions)]) @ tower.text_projection
    torch.testing.assert_close(tower(tokens), expected)


def test_eot_need_not_be_the_largest_id():
    """OpenAI pools at tokens.argmax(); with EOT = 7 that would pick another token. We use the explicit id."""
    tower = make_tower(eot_token_id=7)
    tokens = make_tokens([4, 4], eot=7)
    tokens[:, 1:5] = torch.tensor([30, 31, 32, 33])  # every id larger than EOT
    hidden = tower.token_features(tokens)
    torch.testing.assert_close(tower(tokens), hidden[:, 5] @ tower.text_projection)
    assert not torch.allclose(tower(tokens), hidden[torch.arange(2), tokens.argmax(-1)] @ tower.text_projection)


def test_first_pooling_reads_position_zero_and_is_bidirectional():
    tower = make_tower(pooling="first")
    tokens = make_tokens([5, 2])
    torch.testing.assert_close(tower(tokens), tower.token_features(tokens)[:, 0] @ tower.text_projection)
    changed = tokens.clone()
    changed[:, 2] = 39  # a later word changes the first position's state: attention looks both ways
    assert not torch.allclose(tower.token_features(changed)[:, 0], tower.token_features(tokens)[:, 0])


def test_causality():
    tower = make_tower()
    tokens = make_tokens([9, 9])
    changed = tokens.clone()
    changed[:, 6] = 3
    before, after = tower.token_features(tokens), tower.token_features(changed)
    torch.testing.assert_close(before[:, :6], after[:, :6])  # positions before the change are untouched
    assert not torch.allclose(before[:, 6:], after[:, 6:])


@pytest.mark.parametrize("pooling", ["eot", "first"])
def test_padding_after_eot_leaves_features_unchanged(pooling):
    tower = make_tower(pooling=pooling)
    tokens = make_tokens([2, 5, 8])
    noisy = tokens.clone()
    for row, n in enumerate([2, 5, 8]):  # overwrite the padding with arbitrary ids
        noisy[row, n + 2:] = torch.randint(0, VOCAB, (CONTEXT - n - 2,), generator=torch.Generator().manual_seed(row))
    torch.testing.assert_close(tower(noisy), tower(tokens))
    torch.testing.assert_close(tower(tokens[:, :10]), tower(tokens))  # shorter rows: the same texts, same features


@pytest.mark.parametrize("pooling", ["eot", "first"])
def test_trim_padding_keeps_the_longest_text_and_the_features(pooling):
    tower = make_tower(pooling=pooling)
    tokens = make_tokens([2, 5, 3])
    trimmed = trim_padding(tokens, EOT)
    assert trimmed.shape == (3, 7)  # sot + 5 ids + eot of the longest row
    assert torch.equal(trimmed, tokens[:, :7])
    torch.testing.assert_close(tower(trimmed), tower(tokens))
    no_eot = tokens.clone()
    no_eot[1, 6] = 7  # a row that lost its eot keeps every column rather than being cut blindly
    assert trim_padding(no_eot, EOT).shape == tokens.shape


def test_attention_maps():
    tower = make_tower()
    features, maps = tower(make_tokens([3]), return_attention=True)
    torch.testing.assert_close(features, tower(make_tokens([3])))
    assert len(maps) == 2 and maps[0].shape == (1, 4, CONTEXT, CONTEXT)
    assert (maps[1].triu(1) == 0).all()


def test_openai_init_standard_deviations():
    torch.manual_seed(0)
    tower = TextTransformer(4000, 77, 256, layers=1, heads=4, embed_dim=128, eot_token_id=3999)
    for weight, std in [(tower.token_embedding.weight, 0.02), (tower.positional_embedding, 0.01),
                        (tower.text_projection, 256**-0.5)]:
        assert abs(weight.std().item() / std - 1) < 0.03


def test_errors():
    tower = make_tower()
    tokens = make_tokens([3, 4])
    with pytest.raises(TypeError, match="tokens must be a torch.LongTensor"):
        tower([[SOT, EOT]])
    with pytest.raises(TypeError, match="integer token ids.*got dtype torch.float32"):
        tower(tokens.float())
    with pytest.raises(ValueError, match=r"tokens must be \(B, T\).*got shape \(12,\).*tokens\[None\]"):
        tower(tokens[0])
    with pytest.raises(ValueError, match="T=13 positions but context_length is 12"):
        tower(torch.cat([tokens, tokens[:, :1]], dim=1))
    with pytest.raises(ValueError, match=r"in \[0, vocab_size=50\), got values from 0 to 50"):
        tower(tokens.index_put((torch.tensor([0]), torch.tensor([1])), torch.tensor(50)))
    with pytest.raises(ValueError, match="got values from -1"):
        tower(tokens.index_put((torch.tensor([0]), torch.tensor([1])), torch.tensor(-1)))
    with pytest.raises(ValueError, match=r"rows \[1\] of tokens have no end-of-text token \(eot_token_id=49\)"):
        tower(tokens.index_put((torch.tensor([1]), torch.tensor([5])), torch.tensor(7)))
    with pytest.raises(ValueError, match="pooling must be one of"):
        make_tower(pooling="mean")
    with pytest.raises(ValueError, match=r"eot_token_id must be in \[0, vocab_size=50\)"):
        make_tower(eot_token_id=50)


def test_docstring_examples_run():
    assert doctest.testmod(text).failed == 0
