"""``vlcl pretrain``: reproduce the small CLIP shipped with vlcl.

A Hugging Face CLIPModel with two transformer layers of width 128 in each
tower (32x32 images, patches of 4, context 32, projection 128) trained from
random initialisation on the base world with the CLIP loss. Everything is
seeded; on CPU the result is reproducible bit for bit with the same torch
build and thread count.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from rich.console import Console
from transformers import CLIPConfig, CLIPModel

from vlcl.config import TrainConfig
from vlcl.data.benchmarks import world
from vlcl.data.benchmarks.embedded import pretraining_set
from vlcl.data.preprocess import ImagePreprocessor
from vlcl.engine.train import train_on
from vlcl.methods import RunContext, create_method
from vlcl.models.loading import ClipBundle, load_clip, save_clip
from vlcl.models.world_tokenizer import build_world_tokenizer


@dataclass
class PretrainSettings:
    seed: int = 0
    images: int = 40000
    epochs: int = 6
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup_fraction: float = 0.05
    width: int = 128
    layers: int = 2
    heads: int = 4
    image_size: int = 32
    patch_size: int = 4
    context_length: int = 32
    projection_dim: int = 128


def build_random_clip(settings: PretrainSettings) -> ClipBundle:
    tokenizer = build_world_tokenizer(world.world_vocabulary(), settings.context_length)
    tower = dict(hidden_size=settings.width, intermediate_size=4 * settings.width, num_hidden_layers=settings.layers, num_attention_heads=settings.heads)
    config = CLIPConfig(
        text_config=dict(
            tower,
            vocab_size=len(tokenizer),
            max_position_embeddings=settings.context_length,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        ),
        vision_config=dict(tower, image_size=settings.image_size, patch_size=settings.patch_size),
        projection_dim=settings.projection_dim,
    )
    torch.manual_seed(settings.seed)
    model = CLIPModel(config)
    # World statistics are not ImageNet's, but CLIP's are a fine fixed choice and keep the recipe standard.
    return ClipBundle(model, tokenizer, ImagePreprocessor(settings.image_size), source="random")


def pretrain(output_dir: str | Path, settings: PretrainSettings, console: Console | None = None) -> dict:
    console = console or Console(stderr=True)
    torch.manual_seed(settings.seed)
    bundle = build_random_clip(settings)
    data = pretraining_set(settings.images, settings.seed, settings.image_size)
    method = create_method("finetune")
    method.setup(bundle.model, RunContext(task_names=["base"], seed=settings.seed))
    train = TrainConfig(
        epochs=settings.epochs, batch_size=settings.batch_size, lr=settings.lr, weight_decay=settings.weight_decay,
        warmup_fraction=settings.warmup_fraction,
    )
    stats = train_on(method, bundle, data, "pretrain base", train, settings.seed, console)
    output_dir = Path(output_dir)
    tmp = Path(tempfile.mkdtemp(dir=output_dir.parent if output_dir.parent.exists() else None, prefix=".pretrain."))
    save_clip(bundle, tmp)
    (tmp / "vlcl_pretrain.json").write_text(json.dumps({"settings": asdict(settings), "train": stats}, indent=2))
    load_clip(str(tmp))  # refuse to ship a directory that does not load back
    tmp.chmod(0o755)  # mkdtemp makes it private; a shipped model must be readable by everyone
    for path in tmp.iterdir():
        path.chmod(0o644)
    if output_dir.exists():
        shutil.rmtree(output_dir)
    shutil.move(str(tmp), str(output_dir))
    return stats
