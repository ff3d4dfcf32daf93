"""The control image as a model input: size, aspect, channels, batch, bad values."""

import pytest
import torch

from loom.runtime.control.hint import prepare_hint

CPU = torch.device("cpu")


def prep(image, **kw):
    args = dict(batch=1, height=64, width=64, channels=3, device=CPU, dtype=torch.float32)
    args.update(kw)
    return prepare_hint(image, **args)


def test_same_size_is_the_image_itself_channels_first():
    image = torch.rand(1, 64, 64, 3)
    assert torch.equal(prep(image), image.permute(0, 3, 1, 2))


def test_other_aspect_is_centre_cropped_then_resized():
    image = torch.zeros(1, 64, 128, 3)
    image[:, :, 32:96] = 1.0  # the centre square is white, the sides black
    out = prep(image)
    assert out.shape == (1, 3, 64, 64) and bool((out == 1.0).all())
    assert prep(torch.rand(1, 32, 32, 3)).shape == (1, 3, 64, 64)


def test_channels_and_batch_follow_the_model_and_latent():
    grey = torch.rand(1, 64, 64, 1)
    assert torch.equal(prep(grey)[:, 1], grey[..., 0])
    rgb = torch.rand(2, 64, 64, 3)
    assert torch.allclose(prep(rgb, channels=1, batch=2)[:, 0], rgb.mean(-1))
    assert prep(rgb, batch=3).shape[0] == 3  # repeated, then cut to the latent batch
    with pytest.raises(ValueError, match="IMAGE"):
        prep(torch.rand(64, 64, 3))
    with pytest.raises(ValueError, match="channels"):
        prep(torch.rand(1, 64, 64, 2))
