"""The helpers on a CUDA device (Colab's path): exactness there, and agreement with the CPU.

Skipped where no CUDA device is present (CI). Float64 checks are exact; float32 checks allow
for TF32 convolutions and a different summation order on the GPU.
"""

import warnings

import open_clip
import pytest
import torch

import helpers.engine.models  # noqa: F401  (registers world-clip with open_clip)
from helpers.data import world
from helpers.data.segmentation_tasks import load_segmentation_task
from helpers.engine.decompose import Decomposer
from helpers.engine.images import images_to_tensor
from helpers.engine.models import load_model
from helpers.engine.text import zero_shot_classifier
from helpers.methods.ablation import collect_terms
from helpers.methods.segmentation import METHODS, evaluate_methods, layer_maps, segmentation_maps
from helpers.methods.spatial import heatmaps

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

F64_TOL = 1e-10
F32_REL = 2e-3  # relative to the largest entry; TF32 convolutions on recent GPUs


def _close(a: torch.Tensor, b: torch.Tensor, rel: float = F32_REL) -> bool:
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return bool((a - b).abs().max() <= rel * max(1e-12, float(b.abs().max())))


@pytest.fixture(scope="module")
def bundles():
    cpu = load_model()
    gpu = load_model(device="cuda")
    return cpu, gpu


@pytest.fixture(scope="module")
def images():
    return images_to_tensor(world.sample(8, split="test", seed=3).images)


@pytest.mark.parametrize("name", ["ViT-B-16", helpers.engine.models.DEFAULT_MODEL])
def test_decomposition_is_exact_on_cuda_in_float64(name):
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        visual = open_clip.create_model(name).visual.eval().to("cuda", torch.float64)
    x = torch.randn(2, 3, *visual.image_size, generator=torch.Generator().manual_seed(1)).double().cuda()
    d = Decomposer(visual)(x, heads=True, tokens=True)
    ref = visual(x)
    assert d.embedding.is_cuda
    assert (d.reconstruct() - ref).abs().max() < F64_TOL
    assert (d.heads.sum(2) - d.attn).abs().max() < F64_TOL
    last = d.n_layers - 1
    assert (d.tokens(layers=[last]).data.sum(1) - d.attn[:, last]).abs().max() < F64_TOL


def test_decomposition_on_cuda_matches_cpu(bundles, images):
    (cpu, _, _), (gpu, _, _) = bundles
    a = Decomposer(cpu)(images, heads=True)
    b = Decomposer(gpu)(images.cuda(), heads=True)
    assert b.heads.is_cuda
    for name in ("embedding", "embed", "attn", "mlp", "heads"):
        assert _close(getattr(b, name), getattr(a, name)), name


def test_classifier_heatmaps_and_terms_on_cuda(bundles, images):
    (cpu, _, tok), (gpu, _, _) = bundles
    prompts = world.class_prompts("colour")
    e_cpu = zero_shot_classifier(cpu, tok, prompts)
    e_gpu = zero_shot_classifier(gpu, tok, prompts)  # the tokenizer's ids go to the model's device
    assert e_gpu.is_cuda and _close(e_gpu, e_cpu)
    h_cpu = heatmaps(cpu, images[:2], e_cpu)
    h_gpu = heatmaps(gpu, images[:2].cuda(), e_gpu)
    assert h_gpu.patch_maps.is_cuda
    assert _close(h_gpu.patch_maps, h_cpu.patch_maps) and _close(h_gpu.similarity, h_cpu.similarity)
    t_cpu = collect_terms(cpu, images, heads=True)
    t_gpu = collect_terms(gpu, images, heads=True)  # CPU batches, decomposed on the model's device
    assert t_gpu.attn.is_cuda and _close(t_gpu.heads, t_cpu.heads)


@pytest.mark.parametrize("method", METHODS)
def test_every_segmenter_on_cuda_matches_cpu(bundles, images, method):
    (cpu, _, tok), (gpu, _, _) = bundles
    E = zero_shot_classifier(cpu, tok, world.class_prompts("colour"))
    labels = torch.arange(len(images)) % E.shape[0] if method not in ("raw_attention", "rollout") else None
    m_cpu = segmentation_maps(cpu, images, E, method, labels=labels)
    m_gpu = segmentation_maps(gpu, images.cuda(), E.cuda(), method,
                              labels=None if labels is None else labels.cuda())
    assert m_gpu.shape == m_cpu.shape and bool(torch.isfinite(m_gpu).all())
    assert _close(m_gpu, m_cpu, 1e-2), method


def test_layer_maps_and_evaluation_with_a_cuda_model(bundles):
    (cpu, pre, tok), (gpu, _, _) = bundles
    task = load_segmentation_task("world-pairs:colour", pre, 16)
    E = zero_shot_classifier(cpu, tok, task.prompts)
    per = layer_maps(gpu, task.images.cuda(), E.cuda(), labels=task.labels)
    whole = segmentation_maps(gpu, task.images.cuda(), E.cuda(), "decomposition", labels=task.labels)
    assert _close(per.sum(0), whole, 1e-5)
    r_gpu, _ = evaluate_methods(gpu, task, E.cuda(), ("decomposition", "raw_attention"))  # CPU task, CUDA model
    r_cpu, _ = evaluate_methods(cpu, task, E, ("decomposition", "raw_attention"))
    for method in r_cpu:
        assert abs(r_gpu[method]["mIoU"] - r_cpu[method]["mIoU"]) < 0.01, (method, r_gpu, r_cpu)
