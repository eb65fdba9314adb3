"""benchmarks/bench.py: the wider reference shapes, the OpenAI twin against minclip's logits, the data pipeline
against training's, the time breakdown, and the command line (no timing is asserted)."""

import doctest
import re

import pytest
import torch

from benchmarks import bench
from benchmarks.bench import EmojiBatches, PeakMemory, main, openai_twin
from minclip.flops import matmul_flops
from minclip.model import CLIP, CLIPConfig
from tests import helpers
from minclip.text import trim_padding
from minclip.train import train_step


batch = helpers.random_batch


@pytest.mark.parametrize("width", [256, 512])
def test_wider_reference_shapes_are_ref128_with_only_the_width_changed(width):
    base, wide = bench.REFERENCE_SHAPES["ref128"], bench.REFERENCE_SHAPES[f"ref{width}"]
    changed = {key for key in base if base[key] != wide[key]}
    assert changed == {"embed_dim", "vision_width", "text_width", "vision_heads", "text_heads"}
    config = CLIPConfig(**wide)
    assert config.vision_width == config.text_width == config.embed_dim == width
    assert config.vision_width // config.vision_heads == config.text_width // config.text_heads == 64
    # the linear layers' products grow as the width squared, attention's (T, T) products only with the width
    growth = matmul_flops(config, 8) / matmul_flops(CLIPConfig(**base), 8)
    assert (width // 128) ** 2 * 0.8 < growth < (width // 128) ** 2


def test_openai_twin_holds_the_same_model():
    """Tiny has 4 heads of 32 channels where OpenAI's constructor would give width // 64 = 2: the twin must not."""
    reference = bench.openai_reference()
    assert reference is not None, "clip-anytorch is installed for the tests (make setup)"
    config = CLIPConfig.preset("tiny", vocab_size=300)
    torch.manual_seed(0)
    ours = CLIP(config).eval()
    twin = openai_twin(ours, reference).eval()
    assert sum(p.numel() for p in twin.parameters()) == ours.num_params()
    images, tokens = batch(config, 4, config.context_length)
    with torch.no_grad():
        torch.testing.assert_close(ours(images, tokens)[0], twin(images, tokens)[0], rtol=1e-5, atol=1e-5)
    # the adapter lets minclip's train_step drive it: one step moves both models alike
    ours.train(), twin.train()
    loss_ours = train_step(ours, images, tokens, torch.optim.SGD(ours.parameters(), lr=0.1), grad_clip=1.0)
    loss_twin = train_step(bench.OpenAIAdapter(twin), images, tokens, torch.optim.SGD(twin.parameters(), lr=0.1),
                           grad_clip=1.0)
    assert loss_ours == pytest.approx(loss_twin, rel=1e-5)
    torch.testing.assert_close(ours.visual.proj, twin.visual.proj, rtol=1e-5, atol=1e-6)


def test_openai_twin_refuses_what_openai_cannot_build():
    reference = bench.openai_reference()
    with pytest.raises(ValueError, match=r"vision_width=32 \(OpenAI's CLIP gives width // 64 heads"):
        openai_twin(CLIP(CLIPConfig.preset("nano")), reference)
    with pytest.raises(ValueError, match="activation='gelu'"):
        openai_twin(CLIP(CLIPConfig.preset("tiny", activation="gelu")), reference)


def test_emoji_batches_are_prepared_as_training_prepares_them():
    tokenizer = bench.emoji_tokenizer()
    data = EmojiBatches(image_size=16, context_length=32, batch_size=8, tokenizer=tokenizer,
                        device=torch.device("cpu"))
    first, again = data.get(0), EmojiBatches(16, 32, 8, tokenizer, torch.device("cpu")).get(0)
    assert first.images.shape == (8, 3, 16, 16) and first.images.dtype == torch.float32
    assert first.full_tokens.shape == (8, 32)
    torch.testing.assert_close(first.tokens, trim_padding(first.full_tokens, tokenizer.eot_token_id))
    assert first.tokens.shape[1] < 32  # emoji captions are short: trimming removes work
    torch.testing.assert_close(first.images, again.images)  # seeded per step, as training is
    assert first.seconds > 0
    steps_per_epoch = len(data.sampler.batches(0))
    assert data.get(steps_per_epoch).full_tokens.shape == (8, 32) and data.epoch == 1  # runs on into epoch 2


def test_peak_range_shows_a_spread_only_when_the_peak_moved():
    assert bench.peak_range([300.0, 310.0, 305.0]) == "310"  # within 5 %: one figure
    assert bench.peak_range([318.4, 163.2, 250.0]) == "163–318"


def test_peak_memory_sees_a_large_allocation():
    memory = PeakMemory(torch.device("cpu"))
    memory.reset()
    before = memory.read()
    block = torch.ones(64 * 2**20 // 4)  # 64 MiB, written, so resident
    assert memory.read() - before >= 60 * 2**20
    del block


def test_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "python benchmarks/bench.py" in out and "--compare-openai" in out and "ref128" in out


def table_rows(out: str) -> dict[str, list[str]]:
    rows = [line.strip("|").split("|") for line in out.splitlines() if line.startswith("| ") and "---" not in line]
    header, *body = [[cell.strip() for cell in row] for row in rows]
    return {row[0]: dict(zip(header, row)) for row in body}


def test_one_step_on_nano_prints_a_table(capsys):
    assert main(["--preset", "nano", "--steps", "1", "--warmup", "0", "--batch-size", "8", "--peak-size", "64",
                 "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^machine: .+torch .+", out, re.M)
    row = table_rows(out)["nano"]
    assert float(row["train pairs/s"].replace(",", "")) > 0 and row["OpenAI pairs/s"] == "–"
    assert re.fullmatch(r"\d+%", row["share of peak"]) and row["peak memory"].endswith("MiB")
    assert re.fullmatch(r"[\d,]+(–[\d,]+)?", row["matmul peak"])
    assert "width 32/32, 2+2 blocks" in row["model"] and "vocab 2048" in row["model"]


def test_openai_comparison_on_ref64(capsys):
    assert main(["--preset", "ref64", "--steps", "1", "--warmup", "0", "--batch-size", "4", "--peak-size", "64",
                 "--threads", "1", "--compare-openai"]) == 0
    out = capsys.readouterr().out
    difference = float(re.search(r"same weights: max \|logit difference\| (\S+);", out).group(1))
    assert difference < 1e-4
    row = table_rows(out)["ref64"]
    assert "vocab 49408" in row["model"]
    for column in ("OpenAI pairs/s", "× OpenAI, same tokens", "× OpenAI, trimmed",
                   "× OpenAI + unfused AdamW, trimmed"):
        assert float(row[column].replace(",", "")) > 0


def test_comparison_without_the_reference_says_how_to_install_it(capsys, monkeypatch):
    monkeypatch.setattr(bench, "openai_reference", lambda: None)
    assert main(["--preset", "nano", "--steps", "1", "--warmup", "0", "--batch-size", "4", "--peak-size", "64",
                 "--threads", "1", "--compare-openai"]) == 0
    assert "pip install --no-deps clip-anytorch==2.6.0" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--preset", "huge"], "invalid choice: 'huge'"),
    (["--batch-size", "1"], "--batch-size must be at least 2, got 1: a contrastive loss needs negatives"),
    (["--steps", "0"], "--steps must be at least 1, got 0"),
    (["--clock", "cpu", "--device", "meta"], "--clock cpu measures CPU time"),
])
def test_bad_options_are_clear_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_docstring_examples():
    assert doctest.testmod(bench).failed == 0


def test_several_attention_implementations_give_one_row_each(capsys):
    assert main(["--preset", "nano", "--steps", "1", "--warmup", "0", "--batch-size", "4", "--peak-size", "64",
                 "--threads", "1", "--attn-impl", "manual", "sdpa"]) == 0
    models = [line.split("|")[2] for line in capsys.readouterr().out.splitlines() if line.startswith("| nano ")]
    assert len(models) == 2 and models[0].strip().endswith("manual") and models[1].strip().endswith("sdpa")


def test_compile_flag_compiles_both_towers_and_says_so(capsys, monkeypatch):
    compiled = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: compiled.append((type(self).__name__, kw)))
    assert main(["--preset", "nano", "--steps", "1", "--warmup", "0", "--batch-size", "4", "--peak-size", "64",
                 "--threads", "1", "--compile"]) == 0
    assert compiled == [("FastVisionTransformer", {"dynamic": True}), ("FastTextTransformer", {"dynamic": True})]
    assert table_rows(capsys.readouterr().out)["nano"]["model"].endswith("manual, compiled")


def test_step_breakdown_splits_a_step_into_parts_that_add_up():
    tokenizer = bench.emoji_tokenizer()
    model = bench.bench_model("nano", tokenizer).train()
    optimizer = torch.optim.AdamW(model.parameters())
    data = EmojiBatches(model.config.image_size, model.config.context_length, 8, tokenizer, torch.device("cpu"))
    parts = bench.step_breakdown(model, optimizer, [data.get(0), data.get(1)], model.config)
    assert parts["matmul_ms"] > 0 and parts["optimizer_ms"] > 0 and parts["other_ms"] > 0
    assert parts["matmul_ms"] + parts["optimizer_ms"] + parts["other_ms"] == pytest.approx(parts["step_ms"])
    assert parts["matmul_share"] + parts["optimizer_share"] + parts["other_share"] == pytest.approx(1.0)
    assert parts["matmul_gflops"] > 0
    assert parts["replay_ms"] > 0 and parts["replay_gflops"] > 0 and parts["replay_share"] is None  # no probe given


def test_step_breakdown_replays_the_products_of_one_step_and_sets_them_against_the_probe():
    """The replayed products are the step's own: their FLOPs are matmul_flops' count less the patch embedding's
    convolution (forward and weight gradient), which the replay leaves out. The share divides by the probe's peak."""
    tokenizer = bench.emoji_tokenizer()
    model = bench.bench_model("nano", tokenizer).train()
    optimizer = torch.optim.AdamW(model.parameters())
    config = model.config
    data = EmojiBatches(config.image_size, config.context_length, 8, tokenizer, torch.device("cpu"))
    batch = data.get(0)
    calls = []
    real = bench.replay_products
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(bench, "replay_products", lambda shapes, dtype: calls.append(shapes) or real(shapes, dtype))
        parts = bench.step_breakdown(model, optimizer, [batch], config, probe=lambda: 1e-3, repeats=3)
    (shapes,) = calls
    _, flops = real(shapes)
    patches = (config.image_size // config.patch_size) ** 2
    convolution = 2 * 8 * patches * 3 * config.patch_size**2 * config.vision_width
    assert flops == matmul_flops(config, 8, text_length=batch.tokens.shape[1]) - 2 * convolution
    assert parts["replay_share"] == pytest.approx(parts["replay_gflops"] / 1e-3)  # 3 repeats: median of ratios exact


def test_replay_products_runs_each_recorded_product_into_its_own_output():
    seen = []
    with pytest.MonkeyPatch.context() as patch:
        for name in ("mm", "addmm", "bmm", "baddbmm"):
            original = getattr(torch, name)
            patch.setattr(torch, name, lambda *a, _n=name, _f=original, **k: seen.append((_n, tuple(k["out"].shape)))
                          or _f(*a, **k))
        run, flops = bench.replay_products([
            ("aten::addmm", [[6], [4, 3], [3, 6], [], []]), ("aten::mm", [[4, 3], [3, 2]]),
            ("aten::bmm", [[5, 4, 3], [5, 3, 2]]), ("aten::baddbmm", [[5, 4, 2], [5, 4, 3], [5, 3, 2], [], []]),
            ("aten::mkldnn_convolution", [[2, 3, 8, 8], [4, 3, 4, 4], [], [], [], [], []])])
        run()
    assert seen == [("addmm", (4, 6)), ("mm", (4, 2)), ("bmm", (5, 4, 2)), ("baddbmm", (5, 4, 2))]
    assert flops == 2 * (4 * 3 * 6 + 4 * 3 * 2 + 2 * 5 * 4 * 3 * 2)
    with pytest.raises(ValueError, match="inner sizes 3 and 5 differ"):
        bench.replay_products([("aten::mm", [[4, 3], [5, 2]])])


def test_breakdown_flag_prints_the_split_and_refuses_other_devices(capsys):
    assert main(["--preset", "nano", "--steps", "1", "--warmup", "0", "--batch-size", "4", "--peak-size", "64",
                 "--threads", "1", "--breakdown"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"where a step's time goes .*: matrix products \d+ ms \(\d+%; \d+ GFLOP/s inside them", out)
    assert re.search(r"the same products replayed alone, nothing between them: \d+ ms, \d+ GFLOP/s, \d+% of the peak",
                     out)
    with pytest.raises(SystemExit):
        main(["--preset", "nano", "--device", "meta", "--breakdown"])
    assert "--breakdown profiles CPU time" in capsys.readouterr().err


def test_precision_bf16_runs_under_autocast_and_probes_a_bf16_peak(capsys):
    assert main(["--preset", "nano", "--steps", "1", "--warmup", "0", "--batch-size", "4", "--peak-size", "64",
                 "--threads", "1", "--precision", "bf16"]) == 0
    out = capsys.readouterr().out
    assert "1 torch threads, bf16 autocast" in out and "64² bfloat16 product timed before every step" in out
