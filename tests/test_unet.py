import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.models import MODELS, build_model
from jaxseg.state import count_params
from tests.torch_support import check_parity, torch


@pytest.mark.parametrize("size", [(32, 32), (33, 47), (17, 64)])
def test_unet_output_shape_any_size(size):
    model = build_model("unet", 5, base_width=4, depth=4)
    x = jnp.zeros((2, *size, 3))
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
    (logits, aux), _ = jax.eval_shape(
        lambda v: model.apply(v, x, train=True, mutable=["batch_stats"]), variables
    )
    assert logits.shape == (2, *size, 5) and logits.dtype == jnp.float32
    assert aux == {}


def test_unet_param_count_matches_reference():
    # The classic U-Net (base 64, depth 4, 3 -> 2 channels, bias-free convs + BN,
    # transposed-conv up path with bias, 1x1 head with bias), summed layer by layer by
    # hand: 38,848 + 221,696 + 885,760 + 3,540,992 + 14,159,872 (down)
    # + 9,177,600 + 2,295,040 + 574,080 + 143,680 (up) + 130 (head) = 31,037,698.
    model = build_model("unet", 2, base_width=64, depth=4)
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3))))
    assert count_params(variables["params"]) == 31_037_698


def test_unknown_model_lists_valid():
    with pytest.raises(
        KeyError, match="unknown model 'unte'; valid: bisenetv1, .*, deeplabv3, .*, unet"
    ):
        build_model("unte", 2)
    assert "unet" in MODELS


def test_unet_bilinear_up_path_shapes_and_count():
    # Each 2x2 transposed conv (4*c_in*c_out + c_out params) becomes a 1x1 conv
    # (c_in*c_out + c_out): 3*(1024*512 + 512*256 + 256*128 + 128*64) fewer = 2,088,960.
    model = build_model("unet", 2, base_width=64, depth=4, up_mode="bilinear")
    x = jnp.zeros((1, 37, 45, 3))
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x))
    assert count_params(variables["params"]) == 31_037_698 - 2_088_960
    logits, _ = jax.eval_shape(lambda v: model.apply(v, x), variables)
    assert logits.shape == (1, 37, 45, 2)
    with pytest.raises(ValueError, match="up_mode='nearest'; valid: transpose, bilinear"):
        build_model("unet", 2, up_mode="nearest").init(jax.random.key(0), x)


def test_unet_depth_to_space_up_path_computes_the_same_logits():
    x = jax.random.normal(jax.random.key(1), (2, 33, 40, 3))
    plain = build_model("unet", 3, base_width=4, depth=3)
    variables = plain.init(jax.random.key(0), x)
    fast = build_model("unet", 3, base_width=4, depth=3, transpose_impl="depth_to_space")
    a, b = plain.apply(variables, x)[0], fast.apply(variables, x)[0]
    assert float(jnp.abs(a - b).max()) <= 1e-5 * float(jnp.abs(a).max())


def _torch_unet(num_classes, base):
    """milesial/Pytorch-UNet, unet/unet_parts.py and unet/unet_model.py @ 07debeb9 (the
    release's module names; bilinear=False: 2x2 stride-2 ConvTranspose2d up path, convs
    with bias before each BatchNorm), widths base..16*base instead of 64..1024. One change,
    ours: the input is zero-padded bottom/right to a multiple of 16 and the logits cropped
    back (the release pads each upsampled map to its skip instead; at multiples of 16 the
    two agree)."""
    t = torch()
    nn, F = t.nn, t.nn.functional

    class DoubleConv(nn.Module):
        def __init__(self, cin, cout):
            super().__init__()
            self.double_conv = nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
                nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
            )  # fmt: skip

        def forward(self, x):
            return self.double_conv(x)

    class Down(nn.Module):
        def __init__(self, cin, cout):
            super().__init__()
            self.maxpool_conv = nn.Sequential(nn.MaxPool2d(2), DoubleConv(cin, cout))

        def forward(self, x):
            return self.maxpool_conv(x)

    class Up(nn.Module):
        def __init__(self, cin, cout):
            super().__init__()
            self.up = nn.ConvTranspose2d(cin, cin // 2, 2, stride=2)
            self.conv = DoubleConv(cin, cout)

        def forward(self, x, skip):
            return self.conv(t.cat([skip, self.up(x)], 1))

    class OutConv(nn.Module):
        def __init__(self, cin):
            super().__init__()
            self.conv = nn.Conv2d(cin, num_classes, 1)

    class UNet(nn.Module):
        def __init__(self):
            super().__init__()
            w = [base * 2**i for i in range(5)]
            self.inc = DoubleConv(3, w[0])
            for i in range(1, 5):
                setattr(self, f"down{i}", Down(w[i - 1], w[i]))
                setattr(self, f"up{i}", Up(w[5 - i], w[4 - i]))
            self.outc = OutConv(w[0])

        def forward(self, x):
            h, w = x.shape[2:]
            xs = [self.inc(F.pad(x, (0, -w % 16, 0, -h % 16)))]
            for i in range(1, 5):
                xs.append(getattr(self, f"down{i}")(xs[-1]))
            y = xs.pop()
            for i in range(1, 5):
                y = getattr(self, f"up{i}")(y, xs.pop())
            return self.outc.conv(y)[..., :h, :w]

    return UNet()


def test_unet_matches_milesial_pytorch_unet(tmp_path):
    """The release's keys load through UNet.adapt_state_dict (its conv biases folded into the
    BatchNorm means); forward and input gradient agree at an odd size."""
    torch().manual_seed(0)
    x = np.random.default_rng(0).standard_normal((1, 37, 45, 3)).astype(np.float32)
    check_parity(
        build_model("unet", 3, base_width=4),
        _torch_unet(3, 4),
        x,
        tmp_path,
        record="U-Net: twin of milesial/Pytorch-UNet unet/unet_parts.py @ 07debeb9",
    )
