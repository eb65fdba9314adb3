"""The GPU path, run where a CUDA device exists (skipped elsewhere): the same model on the GPU computes what it
computes on the CPU, and `train` on the GPU (bf16 autocast, fused AdamW) trains and writes a checkpoint the CPU can
load. benchmarks/gpu_check.sh runs these with the GPU benchmark in one go."""

import math

import pytest
import torch

from minclip.checkpoint import load
from minclip.model import CLIP, CLIPConfig
from minclip.train import TrainConfig, make_optimizer, train, train_step

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def batch(config: CLIPConfig, size: int = 8, length: int = 12, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(size, 3, config.image_size, config.image_size, generator=g)
    tokens = torch.randint(1, config.vocab_size - 2, (size, length), generator=g)
    tokens[:, -1] = config.eot_token_id
    return images, tokens


@pytest.mark.parametrize("attn_impl", ["manual", "sdpa"])
def test_the_gpu_computes_what_the_cpu_computes(attn_impl):
    torch.backends.cuda.matmul.allow_tf32 = False  # compare float32 with float32, not TensorFloat-32
    torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    config = CLIPConfig.preset("nano", attn_impl=attn_impl)
    cpu = CLIP(config)
    gpu = CLIP(config).cuda()
    gpu.load_state_dict(cpu.state_dict())
    images, tokens = batch(config)
    expected = cpu(images, tokens)[0]
    torch.testing.assert_close(gpu(images.cuda(), tokens.cuda())[0].cpu(), expected, rtol=1e-4, atol=1e-4)


def test_a_bf16_step_on_the_gpu_follows_the_float32_step_on_the_cpu():
    torch.manual_seed(0)
    config = CLIPConfig.preset("nano")
    cpu = CLIP(config)
    gpu = CLIP(config).cuda()
    gpu.load_state_dict(cpu.state_dict())
    images, tokens = batch(config)
    exact = train_step(cpu, images, tokens, make_optimizer(cpu, TrainConfig()), grad_clip=1.0)
    optimizer = make_optimizer(gpu, TrainConfig())
    assert optimizer.defaults["fused"]  # PyTorch's fused AdamW on CUDA too
    mixed = train_step(gpu, images.cuda(), tokens.cuda(), optimizer, grad_clip=1.0,
                       autocast=torch.autocast("cuda", dtype=torch.bfloat16))
    assert math.isfinite(mixed) and mixed == pytest.approx(exact, rel=2e-2)
    assert all(p.dtype == torch.float32 and p.is_cuda for p in gpu.parameters())


def test_train_on_the_gpu_writes_a_checkpoint_the_cpu_loads(tmp_path):
    result = train(TrainConfig(preset="nano", batch_size=16, epochs=1, eval_every=0, vocab_size=600, max_steps=5),
                   out=tmp_path, progress=False)
    assert next(result.model.parameters()).is_cuda and all(math.isfinite(v) for v in result.history["loss"])
    model, preprocess, tokenizer = load(tmp_path / "checkpoint.pt", device="cpu")
    images, tokens = batch(model.config, size=4)
    assert torch.isfinite(model(images, tokens)[0]).all()
