"""SETR (Zheng et al., 2021): ViT-L/16 encoder, progressive-upsampling decoder (PUP) and
auxiliary heads on blocks 9, 14 and 19 (loss weight 0.4 each).

    python -m jaxseg.train --config experiments/setr.py --workdir runs/setr_pup
    python -m jaxseg.train --config experiments/setr.py:mla --workdir runs/setr_mla
    python -m jaxseg.train --config experiments/setr.py:quick --workdir runs/setr_quick

The arg picks the decoder, naive, pup (default) or mla; `quick` (or e.g. `mla,quick`) is the
CPU smoke run (naive unless named). The recipe follows the paper and mmseg's ADE20K
configs: 512x512 crops, scale 0.5-2.0, SGD lr 0.001 (momentum 0.9, no weight decay), the
heads at 10x the learning rate (optim.head_lr_mult), poly decay over 160k iterations of
batch 16, bfloat16 on accelerators. A batch of 16 ViT-L crops needs more memory than one GPU
has: split it, e.g. --config.batch_size=8 --config.optim.accumulate_steps=2 (total_steps
counts batches, so double it too: --config.total_steps=320000). ImageNet ViT weights
(timm's vit_large_patch16_224 .safetensors or .pth) load with
--config.model.pretrained=FILE; a 384 file needs --config.model.pretrain_size=384.
"""

from jaxseg.configs import base_config, cpu_quick

DECODERS = ("naive", "pup", "mla")


def get_config(arg=None):
    parts = [p for p in (arg or "").split(",") if p]
    unknown = [p for p in parts if p not in DECODERS + ("quick",)]
    if unknown:
        raise ValueError(
            f"experiments/setr.py: unknown arg {unknown[0]!r}; valid: {', '.join(DECODERS)}, quick"
        )
    # The quick run's default is the naive decoder: PUP's 3x3 convs at full resolution cost
    # the CPU more than the encoder does.
    decoder = next((p for p in parts if p in DECODERS), "naive" if "quick" in parts else "pup")
    c = base_config(model="setr")
    c.model.backbone = "vit_l16"
    c.model.decoder = decoder
    c.model.aux_head = True
    aux = 4 if decoder == "mla" else 3
    c.loss.aux_weights = tuple((f"aux{i}", 0.4) for i in range(aux))
    c.data.image_size = (512, 512)
    c.eval.size = (512, 512)
    c.augment.scale_range = (0.5, 2.0)
    c.batch_size = 16
    c.total_steps = 160_000
    c.eval_every = 16_000
    c.checkpoint_every = 4000
    c.optim.name = "sgd"
    c.optim.lr = 0.001
    c.optim.momentum = 0.9
    c.optim.weight_decay = 0.0
    c.optim.schedule = "poly"
    c.optim.poly_power = 0.9
    c.optim.end_lr = 1e-4 * 0.001 / 0.01  # mmseg's min_lr 1e-4 at lr 0.01, scaled
    c.optim.head_lr_mult = 10.0
    c.dtype = "auto"
    if "quick" in parts:
        # ViT-Ti/16 instead of ViT-L (from scratch), the naive decoder unless one is named,
        # 96x96 crops, 300 AdamW steps of batch 4 accumulated two at a time (150 updates of
        # effective batch 8), the heads still at 10x.
        cpu_quick(c, steps=300, size=96, batch=4)
        c.model.backbone = "vit_ti16"
        c.optim.accumulate_steps = 2
    return c
