"""Load a Hugging Face CLIP checkpoint (local directory or hub id) and check it.

The checks exist because of a real offline trap: ``from_pretrained`` on a hub
id without network can return an almost empty tokenizer that maps every word
to the same id. A model trained or evaluated with it produces meaningless
numbers without any error. vlcl refuses such a tokenizer loudly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from transformers import AutoTokenizer, CLIPConfig, CLIPModel, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from vlcl.data.preprocess import ImagePreprocessor
from vlcl.errors import BadInputError

# transformers draws its own progress bars for every load/save; vlcl shows its own progress.
hf_logging.disable_progress_bar()

EMBEDDED_MODEL = "embedded"
_PROBE_TEXTS = ("a red circle on the left", "two blue squares at the top")


class ModelLoadError(BadInputError, RuntimeError):
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


def _first_line(exc: BaseException) -> str:
    """``Type: first line of the message``, without advice to unpickle (vlcl never loads pickles unsafely)."""
    full = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()  # torch colours its advice
    text = full.splitlines()[0] if full else ""
    if "weights_only" in full.lower() or "weights only" in full.lower() or exc.__class__.__name__ == "UnpicklingError":
        # torch's message goes on to explain how to unpickle anyway; vlcl never does (a pickle runs code).
        return "not a tensor-only checkpoint: it holds Python objects that vlcl will not unpickle; convert it to safetensors"
    return f"{exc.__class__.__name__}: {text}" if text else exc.__class__.__name__


def _weight_files(directory: str) -> str:
    files = sorted(p.name for p in Path(directory).glob("*.safetensors")) + sorted(p.name for p in Path(directory).glob("*.bin"))
    return ", ".join(files) or "the weights"


def _load_weights(resolved: str, local_files_only: bool) -> CLIPModel:
    """``CLIPModel.from_pretrained`` that refuses what transformers would only warn about.

    transformers initialises a tensor that the file lacks at random and drops one
    the model does not have, with a log line; a checkpoint trained by vlcl that
    loses a tensor would then evaluate a partly random model. Every tensor must be
    present, none unknown, every shape right and every value finite.
    """
    where = f"{resolved}/{_weight_files(resolved)}" if Path(resolved).is_dir() else resolved
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # transformers' multi-line load report; the problems are raised below instead
    try:
        model, info = CLIPModel.from_pretrained(resolved, local_files_only=local_files_only, output_loading_info=True)
    except Exception as exc:  # safetensors raises SafetensorError, a plain Exception
        if "mismatched_sizes" in str(exc):
            raise ModelLoadError(f"{where}: a tensor's shape differs from what config.json describes") from None
        raise ModelLoadError(f"{where}: cannot load the weights ({_first_line(exc)})") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    for kind in ("missing_keys", "unexpected_keys", "mismatched_keys"):
        keys = sorted(str(k) for k in info.get(kind) or ())
        if keys:
            what = kind.replace("_keys", "").replace("mismatched", "shape-mismatched")
            more = f" and {len(keys) - 3} more" if len(keys) > 3 else ""
            raise ModelLoadError(
                f"{where}: {len(keys)} {what} tensor(s) for a CLIPModel: {', '.join(keys[:3])}{more}"
            )
    broken = [name for name, tensor in model.state_dict().items() if tensor.is_floating_point() and not bool(tensor.isfinite().all())]
    if broken:
        raise ModelLoadError(
            f"{where}: {len(broken)} tensor(s) hold NaN or inf, first {broken[0]} (a diverged or corrupt checkpoint)"
        )
    return model


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
    except Exception as exc:  # a config.json that is not JSON, or JSON of the wrong shape
        raise ModelLoadError(f"{resolved}: cannot read a CLIP config ({_first_line(exc)})") from None
    if config.model_type != "clip":
        raise ModelLoadError(f"{resolved}: config model_type is '{config.model_type}', expected 'clip'")
    model = _load_weights(resolved, local_files_only)
    try:
        tokenizer = AutoTokenizer.from_pretrained(resolved, local_files_only=local_files_only)
    except Exception as exc:  # tokenizers raise their own exception types on corrupt files
        raise ModelLoadError(f"{resolved}: cannot load the tokenizer ({_first_line(exc)})") from None
    check_tokenizer(tokenizer, config, resolved)
    image_size = int(config.vision_config.image_size)
    config_dir = resolved if is_local else _hub_config_dir(resolved, local_files_only)
    try:
        preprocess = ImagePreprocessor.from_pretrained(config_dir, image_size) if config_dir else ImagePreprocessor(image_size)
    except Exception as exc:  # not JSON, or JSON of another shape
        raise ModelLoadError(f"{Path(config_dir) / 'preprocessor_config.json'}: unreadable ({_first_line(exc)})") from None
    if preprocess.image_size != image_size:
        raise ModelLoadError(
            f"{resolved}: preprocessor crop size {preprocess.image_size} differs from the model's image_size {image_size}"
        )
    model.eval()
    return ClipBundle(model=model, tokenizer=tokenizer, preprocess=preprocess, source=resolved)


def save_clip(bundle: ClipBundle, directory: str | Path) -> None:
    """Save as a plain Hugging Face directory that ``CLIPModel.from_pretrained`` reads without vlcl. A model with
    bottleneck adapters (:mod:`vlcl.models.adapters`) is saved without them: the CLIP weights they sit on."""
    import json

    from vlcl.models.adapters import has_adapters, plain_state_dict

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    plain = plain_state_dict(bundle.model) if has_adapters(bundle.model) else None
    bundle.model.save_pretrained(directory, safe_serialization=True, state_dict=plain)
    bundle.tokenizer.save_pretrained(directory)
    (directory / "preprocessor_config.json").write_text(
        json.dumps(bundle.preprocess.to_config(), indent=2), encoding="utf-8"
    )
