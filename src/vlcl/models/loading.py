"""Load a Hugging Face CLIP checkpoint (local directory or hub id) and check it.

The checks exist because of a real offline trap: ``from_pretrained`` on a hub
id without network can return an almost empty tokenizer that maps every word
to the same id. A model trained or evaluated with it produces meaningless
numbers without any error. vlcl refuses such a tokenizer loudly.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch
from transformers import AutoTokenizer, CLIPConfig, CLIPModel, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from vlcl.models.preprocess import ImagePreprocessor

# transformers draws its own progress bars for every load/save; vlcl shows its own progress.
hf_logging.disable_progress_bar()

EMBEDDED_MODEL = "embedded"
_PROBE_TEXTS = ("a red circle on the left", "two blue squares at the top")


class ModelLoadError(RuntimeError):
    """A checkpoint could not be loaded or failed a sanity check."""


@dataclass
class ClipBundle:
    """Everything needed to train and evaluate one CLIP checkpoint."""

    model: CLIPModel
    tokenizer: PreTrainedTokenizerBase
    preprocess: ImagePreprocessor
    source: str

    @property
    def context_length(self) -> int:
        return int(self.model.config.text_config.max_position_embeddings)


def embedded_model_dir() -> Path:
    """Directory of the small CLIP shipped inside the package."""
    return Path(str(resources.files("vlcl") / "assets" / "embedded_clip"))


def resolve_model_path(path: str) -> tuple[str, bool]:
    """Return (path or hub id, is_local_directory)."""
    if path == EMBEDDED_MODEL:
        return str(embedded_model_dir()), True
    local = Path(path).expanduser()
    if local.exists():
        if not local.is_dir():
            raise ModelLoadError(f"{local}: expected a Hugging Face model directory, found a file")
        return str(local), True
    looks_like_path = path.startswith((".", "/", "~")) or path.count("/") > 1
    if looks_like_path:
        raise ModelLoadError(f"{path}: model directory not found")
    return path, False


def _check_local_files(directory: Path) -> None:
    if not (directory / "config.json").is_file():
        raise ModelLoadError(f"{directory}: missing config.json (expected a Hugging Face CLIP directory)")
    weights = list(directory.glob("*.safetensors")) + list(directory.glob("pytorch_model*.bin"))
    if not weights:
        raise ModelLoadError(f"{directory}: no weights (*.safetensors or pytorch_model.bin)")
    if not any((directory / name).is_file() for name in ("tokenizer.json", "vocab.json")):
        raise ModelLoadError(f"{directory}: no tokenizer files (tokenizer.json or vocab.json + merges.txt)")


def check_tokenizer(tokenizer: PreTrainedTokenizerBase, config: CLIPConfig, source: str) -> None:
    """Fail loudly on a degenerate tokenizer or one that does not fit the model."""
    vocab_size = len(tokenizer)
    if vocab_size < 16:
        raise ModelLoadError(
            f"{source}: tokenizer has only {vocab_size} tokens (a degenerate tokenizer, "
            "typically a hub id loaded offline); pass a local directory with the tokenizer files"
        )
    model_vocab = config.text_config.vocab_size
    if vocab_size > model_vocab:
        raise ModelLoadError(
            f"{source}: tokenizer has {vocab_size} tokens but the text tower's embedding has {model_vocab}"
        )
    first, second = (tokenizer(text)["input_ids"] for text in _PROBE_TEXTS)
    if first == second or len(set(first)) <= 2:
        raise ModelLoadError(
            f"{source}: tokenizer maps different captions to the same ids {first}; "
            "it is degenerate (missing vocabulary)"
        )
    eos = config.text_config.eos_token_id
    if eos != 2 and tokenizer.eos_token_id is not None and tokenizer.eos_token_id != eos:
        raise ModelLoadError(
            f"{source}: tokenizer's end token id {tokenizer.eos_token_id} differs from the config's "
            f"text_config.eos_token_id {eos}; the text tower would pool the wrong position"
        )


def _hub_config_dir(repo_id: str, local_files_only: bool) -> str:
    """The folder of the hub checkpoint's cached ``preprocessor_config.json`` (its sizes and mean/std), or ``""`` if it has none."""
    from transformers.utils import cached_file

    try:
        path = cached_file(
            repo_id, "preprocessor_config.json", local_files_only=local_files_only, _raise_exceptions_for_missing_entries=False
        )
    except (OSError, ValueError):
        return ""
    return str(Path(path).parent) if path else ""


def load_clip(path: str = EMBEDDED_MODEL, *, local_files_only: bool = True) -> ClipBundle:
    """Load model, tokenizer and preprocessing from a local directory or a hub id."""
    resolved, is_local = resolve_model_path(path)
    if is_local:
        _check_local_files(Path(resolved))
    elif local_files_only:
        raise ModelLoadError(
            f"{path}: not a local directory; set model.local_files_only=false to download it from the hub"
        )
    try:
        config = CLIPConfig.from_pretrained(resolved, local_files_only=local_files_only)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{resolved}: cannot read a CLIP config ({exc.__class__.__name__}: {exc})") from None
    if config.model_type != "clip":
        raise ModelLoadError(f"{resolved}: config model_type is '{config.model_type}', expected 'clip'")
    try:
        model = CLIPModel.from_pretrained(resolved, local_files_only=local_files_only)
        tokenizer = AutoTokenizer.from_pretrained(resolved, local_files_only=local_files_only)
    except (OSError, ValueError, RuntimeError) as exc:
        raise ModelLoadError(f"{resolved}: cannot load the model ({exc.__class__.__name__}: {exc})") from None
    check_tokenizer(tokenizer, config, resolved)
    image_size = int(config.vision_config.image_size)
    config_dir = resolved if is_local else _hub_config_dir(resolved, local_files_only)
    preprocess = ImagePreprocessor.from_pretrained(config_dir, image_size) if config_dir else ImagePreprocessor(image_size)
    if preprocess.image_size != image_size:
        raise ModelLoadError(
            f"{resolved}: preprocessor crop size {preprocess.image_size} differs from the model's image_size {image_size}"
        )
    model.eval()
    return ClipBundle(model=model, tokenizer=tokenizer, preprocess=preprocess, source=resolved)


def save_clip(bundle: ClipBundle, directory: str | Path) -> None:
    """Save as a plain Hugging Face directory that ``CLIPModel.from_pretrained`` reads without vlcl."""
    import json

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    bundle.model.save_pretrained(directory, safe_serialization=True)
    bundle.tokenizer.save_pretrained(directory)
    (directory / "preprocessor_config.json").write_text(
        json.dumps(bundle.preprocess.to_config(), indent=2), encoding="utf-8"
    )


def trainable_parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
