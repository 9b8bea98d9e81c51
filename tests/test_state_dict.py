"""The torch-free reader against checkpoints written by torch itself, in both formats."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from model_export.state_dict import StateDictError, load_state_dict


@pytest.fixture(scope="module")
def reference():
    torch = pytest.importorskip("torch")
    g = torch.Generator().manual_seed(0)
    base = torch.randn(4, 6, generator=g)
    return {
        "conv.weight": torch.randn(8, 3, 3, 3, generator=g),
        "transposed": base.t(),  # non-contiguous: strides matter
        "slice": base[1:3, 2:],  # storage offset matters
        "bn.num_batches_tracked": torch.tensor(7),
        "half": torch.randn(5, generator=g).half(),
        "ints": torch.arange(10, dtype=torch.int32),
    }


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_reads_what_torch_wrote(tmp_path, reference, zip_format):
    import torch

    path = tmp_path / "sd.pth"
    torch.save(reference, path, _use_new_zipfile_serialization=zip_format)
    loaded = load_state_dict(path)
    assert list(loaded) == list(reference)
    for name, tensor in reference.items():
        np.testing.assert_array_equal(loaded[name], tensor.numpy(), err_msg=name)
        assert loaded[name].dtype == tensor.numpy().dtype


def test_shipped_lite0_checkpoint():
    from model_export.backbone import default_weights_path

    sd = load_state_dict(default_weights_path())
    assert len(sd) == 296
    assert sd["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert sd["_fc.weight"].shape == (1000, 1280)
    assert np.isfinite(sd["_fc.weight"]).all()


def test_refuses_code_in_the_pickle(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pth"
    with path.open("wb") as f:
        for header in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}):
            pickle.dump(header, f)
        pickle.dump({"x": Evil()}, f)
    with pytest.raises(StateDictError, match="unsupported object"):
        load_state_dict(path)


def test_refuses_non_checkpoints(tmp_path):
    path = tmp_path / "junk.pth"
    pickle.dump("hello", path.open("wb"))
    with pytest.raises(StateDictError, match="magic"):
        load_state_dict(path)
