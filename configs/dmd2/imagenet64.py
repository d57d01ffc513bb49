"""DMD2 on class-conditional ImageNet 64x64 from the EDM ADM teacher (Yin et al. 2024; `tianweiy/DMD2`
`experiments/imagenet/*.sh`, `main/edm/train_edm.py`): one-step FID 1.28 (GAN, resumed from the
no-GAN run), 1.51 (GAN from scratch, 200k iterations), 2.61 (no GAN).

  python -m diffjax.distill.main --config=configs/dmd2/imagenet64.py --workdir=/ckpt/dmd2_imagenet64

Official settings: batch 40 per GPU x 7 GPUs = 280, lr 2e-6 for the generator and the guidance
model, AdamW (0.9, 0.999, weight decay 0.01), 500 warm-up steps, gradient clipping 10, the
generator updated every 5th step (`dfake_gen_update_ratio 5`), GAN head with `cls_loss_weight
1e-2`, `gen_cls_loss_weight 3e-3`, diffusion GAN over the whole 1000-level Karras grid, the
generator called at sigma 80; `no_gan` drops the GAN terms (the 2.61 run, 410k iterations).

Not reproduced, stated: DMD2's GAN head is a conv head on the ADM bottleneck (8x8x768); the
library's head reads vector features (`MLP.features`), and the EDM U-Nets do not expose their
bottleneck yet, so only `no_gan` builds with this teacher. BF16 is not used.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "distillation"))
from _distill_paper import paper_config  # noqa: E402


def get_config(options=""):
  if options not in ("", "no_gan"):
    raise ValueError(f"unknown option {options!r} for dmd2/imagenet64; valid: '' or 'no_gan'")
  gan = options == ""
  return paper_config("dmd2", "imagenet64_adm", "/ckpt/edm_imagenet64", batch_size=280, lr=2e-6, optimizer="adamw",
                      weight_decay=0.01, warmup_steps=500, grad_clip=10.0, num_steps=200_000 if gan else 410_000,
                      generator_every=5, generator_sigma=80.0, gen_cls_loss_weight=3e-3 if gan else 0.0,
                      cls_loss_weight=1e-2 if gan else 0.0, diffusion_gan=True, diffusion_gan_max_index=1000)
