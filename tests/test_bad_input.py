"""Bad input gets a clear error before anything runs, and nothing is lost: images with NaN or
infinite pixels are named (which images, how many pixels); a checkpoint path that does not exist
says so; a damaged or mismatched checkpoint names its file and what was expected."""

import hashlib
import warnings

import numpy as np
import pytest
import torch

from helpers.engine.decompose import Decomposer
from helpers.engine.images import NonFinitePixelsError, check_finite, model_batch, to_batch
from helpers.engine.models import DEFAULT_MODEL, CheckpointError, default_weights_path, load_model

# ---------------------------------------------------------------------------------------------
# non-finite pixels
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def visual():
    import open_clip

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return open_clip.create_model(DEFAULT_MODEL).visual.eval()


def _batch(visual, n=5):
    return torch.randn(n, 3, *visual.image_size, generator=torch.Generator().manual_seed(0))


def _count_forward_passes(visual):
    calls = []
    handle = visual.conv1.register_forward_pre_hook(lambda *_: calls.append(1))
    return calls, handle


def test_nan_and_inf_pixels_are_named_before_the_model_runs(visual):
    x = _batch(visual)
    x[1, 0, 3, 4] = float("nan")  # one pixel, one channel
    x[1, :, 5, 5] = float("nan")  # one pixel, all three channels: still one pixel
    x[3, 2, 0, :7] = float("inf")
    x[3, 1, 9, 9] = -float("inf")
    before = x.clone()
    calls, handle = _count_forward_passes(visual)
    try:
        with pytest.raises(NonFinitePixelsError) as info:
            Decomposer(visual)(x)
    finally:
        handle.remove()
    msg = str(info.value)
    assert "2 images" in msg and "10 pixels in all" in msg, msg
    assert "image 1 (2 pixels: NaN)" in msg and "image 3 (8 pixels: infinite)" in msg, msg
    assert "image 0" not in msg and "image 2" not in msg and "image 4" not in msg
    assert not calls, "the model ran on a batch with NaN pixels"
    assert torch.equal(x.isnan(), before.isnan()) and torch.equal(x.nan_to_num(), before.nan_to_num())
    # the same batch, repaired, decomposes
    d = Decomposer(visual)(x.nan_to_num(0.0, 0.0, 0.0))
    assert torch.isfinite(d.embedding).all()


def test_the_error_is_a_value_error_and_finite_batches_pass_untouched(visual):
    x = _batch(visual, 2)
    assert check_finite(x) is x
    x[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        check_finite(x)


def test_many_bad_images_are_counted_and_the_list_is_cut(visual):
    x = _batch(visual, 12)
    x[:, 0, 0, 0] = float("nan")
    with pytest.raises(NonFinitePixelsError, match=r"12 images .* image 7 \(1 pixel: NaN\) and 4 more"):
        check_finite(x)


def test_images_are_named_by_their_place_in_a_stream(visual):
    from helpers.methods.ablation import collect_terms

    x = _batch(visual, 10)
    x[7, 1, 2, 2] = float("nan")
    with pytest.raises(NonFinitePixelsError, match=r"image 7 \(1 pixel: NaN\)"):
        collect_terms(visual, x, batch_size=4)


def test_a_cached_run_names_the_dataset_item_and_keeps_the_batches_before_it(visual, tmp_path):
    from helpers.methods.ablation import cached_terms

    x = _batch(visual, 8)
    x[5, 0, 1, 1] = float("inf")
    calls, handle = _count_forward_passes(visual)
    try:
        with pytest.raises(NonFinitePixelsError, match=r"1 dataset item .*: dataset item 5 \(1 pixel: infinite\)"):
            cached_terms(visual, list(x), dataset_id="bad", cache_dir=tmp_path, batch_size=2, heads=False,
                         progress=False)
        assert len(calls) == 2  # items 0-3 were decomposed, the bad batch never reached the model
        x[5] = x[5].nan_to_num(posinf=0.0)
        calls.clear()
        terms = cached_terms(visual, list(x), dataset_id="bad", cache_dir=tmp_path, batch_size=2, heads=False,
                             progress=False)
    finally:
        handle.remove()
    assert len(calls) == 2  # resumed at item 4: nothing done before the error is done again
    assert terms.attn.shape[0] == 8 and torch.isfinite(terms.attn).all()


def test_float_arrays_and_pil_float_images_are_named_by_their_place_in_the_list(default_bundle):
    from PIL import Image

    model = default_bundle.model
    good = np.zeros((20, 30, 3), np.float32)
    bad = good.copy()
    bad[2:4, 5, :] = np.nan  # 2 pixels
    grey = np.ones((16, 16), np.float32)
    grey[0, 0] = np.inf
    with pytest.raises(NonFinitePixelsError) as info:
        model_batch(model, [good, bad, np.zeros((8, 8, 3), np.uint8), Image.fromarray(grey, mode="F")])
    msg = str(info.value)
    assert "image 1 (2 pixels: NaN)" in msg and "image 3 (1 pixel: infinite)" in msg, msg
    with pytest.raises(NonFinitePixelsError, match=r"image 0 \(2 pixels: NaN\)"):
        to_batch(bad, default_bundle.preprocess)  # one array on its own


# ---------------------------------------------------------------------------------------------
# checkpoint files
# ---------------------------------------------------------------------------------------------


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("name", ["ViT-B-32", DEFAULT_MODEL])
def test_a_checkpoint_path_that_does_not_exist_says_so(name, tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        load_model(name, "/no/such/file.safetensors")
    msg = str(info.value)
    assert "'/no/such/file.safetensors' does not exist" in msg and "Unknown pretrained" not in msg, msg
    assert "/no/such does not exist either" in msg
    with pytest.raises(FileNotFoundError, match=rf"no such file in {tmp_path}"):
        load_model(name, str(tmp_path / "weights.pt"))
    (tmp_path / "a.safetensors").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"is a folder, not a file; checkpoints in it: \['a.safetensors'\]"):
        load_model(name, str(tmp_path))


def test_a_truncated_safetensors_file_is_named_and_left_as_it_is(tmp_path):
    data = default_weights_path().read_bytes()
    path = tmp_path / "half.safetensors"
    path.write_bytes(data[: len(data) // 2])
    digest = _digest(path)
    with pytest.raises(CheckpointError) as info:
        load_model(DEFAULT_MODEL, str(path))
    msg = str(info.value)
    assert str(path) in msg and "cannot be read as safetensors" in msg and "truncated" in msg, msg
    assert f"{len(data) // 2:,} bytes" in msg
    assert f"'{DEFAULT_MODEL}' expects a state dict of " in msg  # what was expected
    assert info.value.path == str(path) and isinstance(info.value, ValueError)
    assert type(info.value.__cause__).__name__ == "SafetensorError"  # the reader's own error stays attached
    assert _digest(path) == digest  # nothing lost: the file is untouched


@pytest.mark.parametrize("content, reason", [
    (b"not a checkpoint at all " * 40, "cannot be read by torch.load"),
    ([1, 2, 3], "holds a list, not a state dict"),
    ({"step": 3}, "holds a dict whose entries are not all tensors ('step')"),
], ids=["garbage", "list", "no-tensors"])
def test_a_file_that_is_not_a_torch_checkpoint_is_named(content, reason, tmp_path):
    path = tmp_path / "weights.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    digest = _digest(path)
    with pytest.raises(CheckpointError) as info:
        load_model(DEFAULT_MODEL, str(path))
    msg = str(info.value)
    assert f"Could not load the checkpoint {path} into '{DEFAULT_MODEL}'" in msg and reason in msg, msg
    assert _digest(path) == digest


def test_a_mismatched_checkpoint_names_the_tensors_and_their_shapes(tmp_path):
    from safetensors.torch import load_file, save_file

    state = load_file(str(default_weights_path()))
    expected = tuple(state["visual.proj"].shape)
    state["visual.proj"] = torch.zeros(3, 5)
    del state["visual.conv1.weight"]
    state["visual.extra"] = torch.zeros(2)
    path = tmp_path / "other.safetensors"
    save_file(state, str(path))
    with pytest.raises(CheckpointError) as info:
        load_model(DEFAULT_MODEL, str(path))
    msg = str(info.value)
    assert f"Could not load the checkpoint {path} into '{DEFAULT_MODEL}'" in msg
    assert (f"visual.proj (the file has [3, 5], '{DEFAULT_MODEL}' expects [{expected[0]}, {expected[1]}])"
            in msg), msg
    assert "1 tensor 'world-clip' needs missing from the file: visual.conv1.weight [" in msg
    assert "1 tensor in the file that 'world-clip' does not have: visual.extra [2]" in msg
