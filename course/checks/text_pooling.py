"""Checks for course/exercises/text_pooling.py against minclip/attention.py (causal_mask) and minclip/text.py."""

import torch

from minclip.attention import causal_mask
from minclip.text import TextTransformer, first_eot_index

from .base import Exercise, Wrong, call, expect_close, expect_gradients_flow, function, generator

EXERCISE = Exercise(
    name="text_pooling",
    title="The text tower's two rules: a causal mask, and pooling at the first end-of-text token",
    lesson="03_text_transformer",
    reference="minclip/text.py",
    functions=("causal_mask", "first_eot_index", "pool_text_features"),
)

EOT = 5  # deliberately not the largest id: a trained vocabulary need not put EOT last


@EXERCISE.check("torch.full((T, T), float('-inf')).triu(diagonal=1) keeps -inf strictly above the diagonal and 0 on "
                "and below it: query i may look at keys 0..i")
def causal_mask_matches_minclip(learner):
    """causal_mask(T) equals minclip's for T = 1, 4 and 7: 0 on and below the diagonal, -inf above"""
    for length in (1, 4, 7):
        answer = call(function(learner, "causal_mask"), length)
        expected = causal_mask(length)
        if isinstance(answer, torch.Tensor) and answer.shape == expected.shape and length > 1:
            if torch.equal(answer, expected.T):
                raise Wrong(f"causal_mask({length}) is transposed: row i (the query) must block the keys after i, "
                            "so -inf goes above the diagonal")
        expect_close(answer, expected, f"causal_mask({length})")


def _tokens(rows: list[list[int]], length: int = 8) -> torch.Tensor:
    tokens = torch.zeros(len(rows), length, dtype=torch.long)
    for i, row in enumerate(rows):
        tokens[i, : len(row)] = torch.tensor(row)
    return tokens  # (B, length), padded with 0


def _expect_eot(learner, tokens, case: str):
    expected = first_eot_index(tokens, EOT)
    answer = call(function(learner, "first_eot_index"), tokens, EOT)
    if isinstance(answer, torch.Tensor) and answer.shape == expected.shape and torch.equal(answer,
                                                                                            tokens.argmax(dim=1)):
        raise Wrong(f"your positions are tokens.argmax(dim=1), the position of the largest id ({case})",
                    "OpenAI's code pools at argmax because its EOT happens to be the largest id; ours pools at an "
                    "explicit eot_token_id: compare tokens == eot_token_id")
    expect_close(answer, expected, f"first_eot_index ({case})")


FIRST_EOT_HINT = ("positions = torch.arange(T).expand_as(tokens); keep them where tokens == eot_token_id and put T "
                  "elsewhere (torch.where), then take the min of each row")


@EXERCISE.check(FIRST_EOT_HINT)
def first_eot_when_eot_is_not_the_largest_id(learner):
    """first_eot_index finds EOT (id 5) among larger ids in texts of different lengths"""
    tokens = _tokens([[62, 40, 17, EOT], [62, 33, EOT], [62, EOT], [62, 9, 10, 11, 12, 13, 14, EOT]])
    _expect_eot(learner, tokens, "EOT = 5, larger ids around it")


@EXERCISE.check(FIRST_EOT_HINT + ". argmax of a boolean row is not guaranteed to return the first True on every "
                "device and version; min over positions is")
def first_eot_when_eot_occurs_twice(learner):
    """a text containing the EOT id twice is pooled at the first one"""
    tokens = _tokens([[62, 40, EOT, 17, EOT], [62, EOT, EOT, EOT]])
    _expect_eot(learner, tokens, "EOT twice")


@EXERCISE.check(FIRST_EOT_HINT + ". A row with no EOT at all gets T (the row length), an index one past the end "
                "that nobody can mistake for a real position")
def first_eot_missing(learner):
    """a row without any EOT gets T, one past the last position"""
    tokens = _tokens([[62, 40, EOT], [62, 40, 41, 42, 43, 44, 45, 46]])
    _expect_eot(learner, tokens, "second row without EOT")


def _text_tower(seed: int, dtype=torch.float32) -> TextTransformer:
    torch.manual_seed(seed)  # inside the grader's fork_rng: the learner's global seed is untouched
    return TextTransformer(vocab_size=64, context_length=8, width=12, layers=1, heads=2, embed_dim=6,
                           eot_token_id=EOT).to(dtype)


POOL_HINT = ("pick one position per row with advanced indexing: hidden[torch.arange(B), positions] is (B, D); then "
             "@ text_projection (D, E)")


@EXERCISE.check(POOL_HINT)
def pooling_matches_text_tower(learner):
    """pool_text_features on a text tower's hidden states equals minclip's TextTransformer output"""
    tower = _text_tower(0)
    tokens = _tokens([[62, 40, 17, EOT], [62, EOT, 33, EOT], [62, 9, 10, 11, 12, 13, 14, EOT]])
    with torch.no_grad():
        hidden, expected = tower.token_features(tokens), tower(tokens)  # (B, T, D), (B, E)
    projection = tower.text_projection.detach()
    answer = call(function(learner, "pool_text_features"), hidden, tokens, EOT, projection)
    if isinstance(answer, torch.Tensor) and answer.shape == expected.shape:
        if torch.allclose(answer, hidden[:, -1] @ projection, atol=1e-5):
            raise Wrong("you pooled at the last position, which is padding (or a later EOT) in most rows")
        if torch.allclose(answer, hidden[:, 0] @ projection, atol=1e-5):
            raise Wrong("you pooled at position 0 (BERT's [CLS] style). With a causal mask the start token has seen "
                        "nothing but itself: the end-of-text token is the first position that has read the whole text")
    expect_close(answer, expected, "the pooled features", rtol=1e-4, atol=1e-5)


@EXERCISE.check(POOL_HINT + ". Indexing is differentiable; building the result from Python numbers is not")
def pooling_gradients_float64(learner):
    """in float64, the gradient reaches exactly the pooled positions of the hidden states and the projection"""
    tower = _text_tower(1, torch.float64)
    tokens = _tokens([[62, 40, EOT], [62, 9, 10, EOT, 0, EOT]])
    hidden = torch.randn(2, 8, 12, generator=generator(2), dtype=torch.float64, requires_grad=True)
    projection = tower.text_projection.detach().clone().requires_grad_()
    upstream = torch.randn(2, 6, generator=generator(3), dtype=torch.float64)
    expected_hidden, expected_projection = hidden.detach().clone().requires_grad_(), projection.detach().clone()
    expected_projection.requires_grad_()
    pooled = expected_hidden[torch.arange(2), first_eot_index(tokens, EOT)] @ expected_projection  # the tower's rule
    (pooled * upstream).sum().backward()
    answer = call(function(learner, "pool_text_features"), hidden, tokens, EOT, projection)
    expect_close(answer, pooled.detach(), "the pooled features (float64)")
    (answer * upstream).sum().backward()
    expect_gradients_flow({"hidden": hidden, "text_projection": projection}, "pool_text_features")
    expect_close(hidden.grad, expected_hidden.grad, "the gradient with respect to the hidden states")
    expect_close(projection.grad, expected_projection.grad, "the gradient with respect to text_projection")
