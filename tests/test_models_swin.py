"""Swin encoders, Swin-Unet and Semantic FPN: counts against the papers (or a hand count),
shapes at odd sizes, the shift mask, and parity with timm's Swin-T through a weights file
(skipped without torch and timm)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.models import pretrained
from jaxseg.models.semantic_fpn import SemanticFPN, nearest_resize
from jaxseg.models.swin import SwinTransformer, shift_mask, window_and_shift
from jaxseg.models.swin_unet import SwinUNet
from jaxseg.state import count_params
from tests.test_models_vit import _perturbed, _save, _timm
from tests.torch_support import assert_close_relative, check_parity, state_dict_numpy, torch


def _count(model, size=(64, 64)):
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, *size, 3))))
    return count_params(variables["params"])


def test_swin_unet_count_matches_paper():
    # Paper (Cao et al., Synapse, 9 classes, 224x224): 27.17 M, quoted from memory; the
    # depths (2, 2, 2, 2) are those of the official configs/swin_tiny_patch4_window7_224_lite.
    n = _count(SwinUNet(9), (224, 224))
    assert n == 27_168_900
    assert abs(n / 1e6 / 27.17 - 1) < 0.03


def test_swin_t_encoder_count_is_timms():
    # timm's swin_tiny_patch4_window7_224 without its classifier: 27,519,354 parameters.
    assert _count(SwinTransformer("swin_t"), (224, 224)) == 27_519_354


def fpn_hand_count(widths, backbone_params, classes):
    """mmseg's FPN (256 channels, 1x1 laterals and 3x3 outputs with biases) and FPNHead
    (128 channels; 1, 1, 2, 3 conv+BN per level; 1x1 classifier with bias)."""
    neck = sum(c * 256 + 256 for c in widths) + 4 * (256 * 256 * 9 + 256)
    convs = [(256, 1), (256, 1), (256, 2), (256, 3)]
    head = sum(256 * 128 * 9 + 256 + (n - 1) * (128 * 128 * 9 + 256) for _, n in convs)
    return backbone_params + neck + head + 128 * classes + classes


@pytest.mark.parametrize(
    "backbone,resnet_params,exact",
    # torchvision's ResNet-50/101 without fc: 23,508,032 / 42,500,160 parameters.
    [("resnet50", 23_508_032, 28_478_675), ("resnet101", 42_500_160, 47_470_803)],
)
def test_semantic_fpn_count_is_the_hand_count(backbone, resnet_params, exact):
    n = _count(SemanticFPN(19, backbone))
    assert n == exact == fpn_hand_count((256, 512, 1024, 2048), resnet_params, 19)


@pytest.mark.parametrize("size", [(36, 44), (61, 97), (224, 224)])
@pytest.mark.parametrize(
    "model",
    [SwinUNet(5), SemanticFPN(5, "resnet18")],
    ids=["swin_unet", "semantic_fpn"],
)
def test_shapes_at_odd_sizes(model, size):
    x = jnp.zeros((2, *size, 3))
    (logits, aux), _ = jax.eval_shape(lambda: model.init_with_output(jax.random.key(0), x))
    assert logits.shape == (2, *size, 5) and logits.dtype == jnp.float32 and aux == {}


def test_encoder_features_and_strides():
    x = jnp.zeros((1, 61, 97, 3))
    feats = jax.eval_shape(
        lambda: SwinTransformer("swin_t").init_with_output(jax.random.key(0), x)[0]
    )
    assert feats["patch_embed"].shape == (1, 16, 25, 96)
    assert feats["merged2"].shape == feats["stage2"].shape == (1, 8, 13, 192)
    assert feats["stage3"].shape == (1, 4, 7, 384)
    assert feats["stage4"].shape == feats["norm"].shape == (1, 2, 4, 768)


def test_window_shift_and_mask_follow_timm():
    assert window_and_shift(56, 56) == ((7, 7), (3, 3))
    assert window_and_shift(7, 14) == ((7, 7), (0, 3))  # a side that fits one window
    assert window_and_shift(4, 9) == ((4, 7), (0, 3))
    mask = shift_mask(14, 14, (7, 7), (3, 3))
    assert mask.shape == (4, 49, 49)
    assert not mask[0].any()  # the top-left window holds one region
    # The bottom-right window joins four regions: 4x4, 4x3, 3x4, 3x3 tokens.
    same = (mask[3] == 0).sum(axis=1)
    assert sorted(set(same.tolist())) == [9, 12, 16]


def test_nearest_resize_uses_torchs_index_rule():
    x = jnp.arange(5.0).reshape(1, 5, 1, 1)
    np.testing.assert_array_equal(
        nearest_resize(x, (9, 1))[0, :, 0, 0], [0, 0, 1, 1, 2, 2, 3, 3, 4]
    )


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_swin_t_matches_timm_through_a_weights_file(tmp_path, suffix):
    """timm's Swin-T state dict, written as a file, loads as Swin-Unet's encoder weights
    (the four stage-3 blocks beyond its depth 2 unused), and the full Swin-T encoder loaded
    from it gives timm's features at 224x224 (shifted windows, masks and merging)."""
    t, timm = torch(), _timm()
    t.manual_seed(0)
    ref = _perturbed(
        timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, num_classes=0)
    )
    path = tmp_path / f"swin{suffix}"
    _save(state_dict_numpy(ref), path)
    model = SwinUNet(4)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3))))
    lines = []
    pretrained.load_pretrained(
        model, jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes), path, lines.append
    )
    assert lines[0].endswith("loaded 119 tensors")
    unused = [line for line in lines if "unused" in line]
    assert len(unused) == 1 and ": 52 unused: layers.2.blocks.2." in unused[0]

    if suffix == ".pth":
        return  # the same arrays: the forward is checked once, from the .safetensors file
    encoder = SwinTransformer("swin_t")
    shapes = jax.eval_shape(lambda: encoder.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3))))
    variables = pretrained.load_pretrained(
        model, jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes), path, lambda _: None
    )
    x = np.random.default_rng(1).normal(size=(2, 224, 224, 3)).astype(np.float32)
    with t.no_grad():
        expected = ref.forward_features(t.from_numpy(x).permute(0, 3, 1, 2)).numpy()
    feats = jax.jit(encoder.apply)(variables, x)
    assert_close_relative(np.asarray(feats["norm"]), expected, 1e-4)


# --- PyTorch twin (issue 22) ---------------------------------------------------------------


def _torch_swin_unet(num_classes):
    """Swin-Unet as released: HuCaoFighting/Swin-Unet
    networks/swin_transformer_unet_skip_expand_decoder_sys.py @ 1c8b3e86 (WindowAttention,
    SwinTransformerBlock, PatchMerging at the end of a stage, PatchExpand,
    FinalPatchExpand_X4, BasicLayer(_up), SwinTransformerSys with final_upsample
    "expand_first") under networks/vision_transformer.py's wrapper (`swin_unet.`), at
    configs/swin_tiny_patch4_window7_224_lite.yaml (embed 96, depths 2, 2, 2, 2, heads 3, 6,
    12, 24, window 7) and 224x224, the one size that window allows. Names are the
    release's: its state dict (buffers included) loads through SwinUNet.adapt_state_dict."""
    t = torch()
    nn, F = t.nn, t.nn.functional
    heads, depths, embed, window, res0 = (3, 6, 12, 24), (2, 2, 2, 2), 96, 7, 56

    def d2s(x, r):  # einops 'b h w (p1 p2 c) -> b (h p1) (w p2) c'
        b, h, w, c = x.shape
        x = x.reshape(b, h, w, r, r, c // (r * r)).permute(0, 1, 3, 2, 4, 5)
        return x.reshape(b, h * r, w * r, c // (r * r))

    def windows(x, ws):  # window_partition: [B,H,W,C] -> [B*nW, ws*ws, C]
        b, h, w, c = x.shape
        x = x.view(b, h // ws, ws, w // ws, ws, c).permute(0, 1, 3, 2, 4, 5)
        return x.reshape(-1, ws * ws, c)

    class WindowAttention(nn.Module):
        def __init__(self, dim, ws, nh):
            super().__init__()
            self.nh, self.scale = nh, (dim // nh) ** -0.5
            self.relative_position_bias_table = nn.Parameter(t.zeros((2 * ws - 1) ** 2, nh))
            coords = t.stack(t.meshgrid(t.arange(ws), t.arange(ws), indexing="ij")).flatten(1)
            rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + ws - 1
            self.register_buffer(
                "relative_position_index", rel[..., 0] * (2 * ws - 1) + rel[..., 1]
            )
            self.qkv = nn.Linear(dim, 3 * dim)
            self.proj = nn.Linear(dim, dim)

        def forward(self, x, mask):
            b, n, c = x.shape
            q, k, v = self.qkv(x).reshape(b, n, 3, self.nh, c // self.nh).permute(2, 0, 3, 1, 4)
            attn = (q * self.scale) @ k.transpose(-2, -1)
            bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
            attn = attn + bias.view(n, n, -1).permute(2, 0, 1)[None]
            if mask is not None:
                nw = mask.shape[0]
                attn = (attn.view(b // nw, nw, self.nh, n, n) + mask[None, :, None]).view(
                    -1, self.nh, n, n
                )
            return self.proj((attn.softmax(-1) @ v).transpose(1, 2).reshape(b, n, c))

    class Mlp(nn.Module):
        def __init__(self, dim):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)

        def forward(self, x):
            return self.fc2(F.gelu(self.fc1(x)))

    class SwinTransformerBlock(nn.Module):
        def __init__(self, dim, res, nh, shift):
            super().__init__()
            self.res, self.ws, self.shift = res, window, shift
            if res <= window:  # the map is one window, unshifted
                self.ws, self.shift = res, 0
            self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
            self.attn = WindowAttention(dim, self.ws, nh)
            self.mlp = Mlp(dim)
            mask = None
            if self.shift:
                img = t.zeros(1, res, res, 1)
                cuts = (slice(0, -self.ws), slice(-self.ws, -self.shift), slice(-self.shift, None))
                for i, (hs, wsl) in enumerate((a, b) for a in cuts for b in cuts):
                    img[:, hs, wsl] = i
                ids = windows(img, self.ws)[..., 0]
                diff = ids[:, None, :] - ids[:, :, None]
                mask = diff.masked_fill(diff != 0, -100.0).masked_fill(diff == 0, 0.0)
            self.register_buffer("attn_mask", mask)

        def forward(self, x):
            b, n, c = x.shape
            y = self.norm1(x).view(b, self.res, self.res, c)
            if self.shift:
                y = t.roll(y, (-self.shift, -self.shift), (1, 2))
            y = self.attn(windows(y, self.ws), self.attn_mask)
            g = self.res // self.ws
            y = y.view(b, g, g, self.ws, self.ws, c).permute(0, 1, 3, 2, 4, 5)
            y = y.reshape(b, self.res, self.res, c)
            if self.shift:
                y = t.roll(y, (self.shift, self.shift), (1, 2))
            x = x + y.reshape(b, n, c)
            return x + self.mlp(self.norm2(x))

    class PatchMerging(nn.Module):
        def __init__(self, res, dim):
            super().__init__()
            self.res = res
            self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
            self.norm = nn.LayerNorm(4 * dim)

        def forward(self, x):
            b, _, c = x.shape
            x = x.view(b, self.res, self.res, c)
            parts = [x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]]
            return self.reduction(self.norm(t.cat(parts, -1).view(b, -1, 4 * c)))

    class PatchExpand(nn.Module):
        def __init__(self, res, dim, scale=2):
            super().__init__()
            self.res, self.scale = res, scale
            self.expand = nn.Linear(dim, (2 if scale == 2 else 16) * dim, bias=False)
            self.norm = nn.LayerNorm(dim // 2 if scale == 2 else dim)

        def forward(self, x):
            x = self.expand(x)
            b, _, c = x.shape
            x = d2s(x.view(b, self.res, self.res, c), self.scale)
            return self.norm(x.reshape(b, -1, x.shape[-1]))

    class BasicLayer(nn.Module):  # blocks, then (encoder) merging or (decoder) expanding
        def __init__(self, i, down=None, up=None):
            super().__init__()
            dim, res = embed * 2**i, res0 // 2**i
            self.blocks = nn.ModuleList(
                SwinTransformerBlock(dim, res, heads[i], 0 if j % 2 == 0 else window // 2)
                for j in range(depths[i])
            )
            if down:
                self.downsample = PatchMerging(res, dim)
            if up:
                self.upsample = PatchExpand(res, dim)

        def forward(self, x):
            for block in self.blocks:
                x = block(x)
            for name in ("downsample", "upsample"):
                if hasattr(self, name):
                    x = getattr(self, name)(x)
            return x

    class SwinTransformerSys(nn.Module):
        def __init__(self):
            super().__init__()
            self.patch_embed = nn.Module()
            self.patch_embed.proj = nn.Conv2d(3, embed, 4, 4)
            self.patch_embed.norm = nn.LayerNorm(embed)
            self.layers = nn.ModuleList(BasicLayer(i, down=i < 3) for i in range(4))
            self.layers_up = nn.ModuleList(
                [PatchExpand(res0 // 8, embed * 8)]
                + [BasicLayer(3 - i, up=i < 3) for i in range(1, 4)]
            )
            self.concat_back_dim = nn.ModuleList(
                [nn.Identity()]
                + [nn.Linear(2 * embed * 2 ** (3 - i), embed * 2 ** (3 - i)) for i in range(1, 4)]
            )
            self.norm, self.norm_up = nn.LayerNorm(embed * 8), nn.LayerNorm(embed)
            self.up = PatchExpand(res0, embed, scale=4)
            self.output = nn.Conv2d(embed, num_classes, 1, bias=False)

        def forward(self, x):
            x = self.patch_embed.proj(x).flatten(2).transpose(1, 2)
            x = self.patch_embed.norm(x)
            skips = []
            for layer in self.layers:
                skips.append(x)
                x = layer(x)
            x = self.layers_up[0](self.norm(x))
            for i in range(1, 4):
                x = self.concat_back_dim[i](t.cat([x, skips[3 - i]], -1))
                x = self.layers_up[i](x)
            x = self.up(self.norm_up(x))
            b = x.shape[0]
            return self.output(x.view(b, 4 * res0, 4 * res0, -1).permute(0, 3, 1, 2))

    class SwinUnet(nn.Module):
        def __init__(self):
            super().__init__()
            self.swin_unet = SwinTransformerSys()

        def forward(self, x):
            return self.swin_unet(x)

    return SwinUnet()


def test_swin_unet_matches_the_official_twin(tmp_path):
    """The whole Swin-Unet against the release's layout and names (patch merging at the end
    of a stage, the wrapper's prefix, the index and mask buffers), through a saved .pth."""
    torch().manual_seed(0)
    ref = _perturbed(_torch_swin_unet(5))
    x = np.random.default_rng(0).standard_normal((1, 224, 224, 3)).astype(np.float32)
    record = (
        "Swin-Unet: twin of HuCaoFighting/Swin-Unet "
        "swin_transformer_unet_skip_expand_decoder_sys.py @ 1c8b3e86"
    )
    check_parity(SwinUNet(5), ref, x, tmp_path, record=record)
