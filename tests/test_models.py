import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from vlcl.models import (
    ImagePreprocessor,
    ModelLoadError,
    encode_images,
    encode_texts,
    load_clip,
)


def test_load_and_encode_normalised(tiny_clip_dir):
    bundle = load_clip(str(tiny_clip_dir))
    texts = encode_texts(bundle.model, bundle.tokenizer, ["a red circle", "two blue squares on the left", "zebra"])
    assert texts.shape == (3, bundle.model.config.projection_dim)
    assert torch.allclose(texts.norm(dim=-1), torch.ones(3), atol=1e-5)
    images = np.random.default_rng(0).integers(0, 255, (5, 16, 16, 3), dtype=np.uint8)
    features = encode_images(bundle.model, bundle.preprocess.normalize_uint8(images), batch_size=2)
    assert features.shape == (5, bundle.model.config.projection_dim)
    assert torch.allclose(features.norm(dim=-1), torch.ones(5), atol=1e-5)


def test_text_pooling_reads_the_end_token(tiny_clip_dir):
    """Padding must not change a caption's embedding (pooling at <end>, not at the last position)."""
    bundle = load_clip(str(tiny_clip_dir))
    alone = encode_texts(bundle.model, bundle.tokenizer, ["a red circle"])
    padded = encode_texts(bundle.model, bundle.tokenizer, ["a red circle", "a photo of two blue squares on the left"])[:1]
    assert torch.allclose(alone, padded, atol=1e-5)


def test_embedded_model_ships_and_loads():
    bundle = load_clip("embedded")
    assert bundle.preprocess.image_size == 32
    assert len(bundle.tokenizer) > 50


def test_missing_files_name_the_path(tmp_path, tiny_clip_dir):
    with pytest.raises(ModelLoadError, match="model directory not found"):
        load_clip(str(tmp_path / "nowhere" / "x"))
    for missing, message in [("config.json", "missing config.json"), ("model.safetensors", "no weights"), ("tokenizer.json", "no tokenizer files")]:
        broken = tmp_path / f"without-{missing}"
        shutil.copytree(tiny_clip_dir, broken)
        (broken / missing).unlink()
        with pytest.raises(ModelLoadError, match=message) as err:
            load_clip(str(broken))
        assert str(broken) in str(err.value)


def test_hub_id_offline_is_refused_clearly():
    with pytest.raises(ModelLoadError, match="not a local directory"):
        load_clip("openai/clip-vit-base-patch16")


def test_degenerate_tokenizer_is_refused(tmp_path, tiny_clip_dir):
    broken = tmp_path / "degenerate"
    shutil.copytree(tiny_clip_dir, broken)
    data = json.loads((broken / "tokenizer.json").read_text())
    data["model"]["vocab"] = {k: v for k, v in data["model"]["vocab"].items() if v < 4}
    (broken / "tokenizer.json").write_text(json.dumps(data))
    with pytest.raises(ModelLoadError, match="degenerate"):
        load_clip(str(broken))


def test_mismatched_config_is_refused(tmp_path, tiny_clip_dir):
    broken = tmp_path / "mismatch"
    shutil.copytree(tiny_clip_dir, broken)
    config = json.loads((broken / "config.json").read_text())
    config["text_config"]["eos_token_id"] = 5
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="eos_token_id"):
        load_clip(str(broken))
    config["model_type"] = "siglip"
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match=str(broken)):
        load_clip(str(broken))


def test_preprocess_resizes_crops_and_normalises():
    pre = ImagePreprocessor(image_size=16)
    wide = Image.fromarray(np.full((20, 40, 3), 255, dtype=np.uint8))
    out = pre(wide)
    assert out.shape == (3, 16, 16)
    expected = (1.0 - torch.tensor(pre.mean)) / torch.tensor(pre.std)
    assert torch.allclose(out[:, 8, 8], expected, atol=1e-5)
    with pytest.raises(ValueError, match="expects 16x16"):
        pre.normalize_uint8(np.zeros((1, 8, 8, 3), dtype=np.uint8))


def test_shipped_model_knows_the_base_world():
    """The asset is the pre-trained model the README describes, not a random one."""
    from vlcl.config import EvalConfig
    from vlcl.data.benchmarks.embedded import build_embedded
    from vlcl.engine.evaluate import Evaluator

    bundle = load_clip("embedded")
    bench = build_embedded(tasks=["sketch"], train_scale=0.001, test_images=60, zeroshot_per_class=12)
    evaluator = Evaluator(bench, bundle.tokenizer, bundle.preprocess, bundle.context_length, EvalConfig())
    for z in bench.zeroshot:
        assert evaluator.classification(bundle.model, z)[0]["top1"] >= 85, z.name
    base = evaluator.retrieval(bundle.model, bench.heldout_retrieval[0])["retrieval"]
    assert base["mean_R@1"] >= 80
