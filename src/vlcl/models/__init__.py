"""Loading CLIP checkpoints, preprocessing, and embedding helpers."""

from vlcl.data.preprocess import ImagePreprocessor
from vlcl.models.encode import (
    encode_images,
    encode_texts,
    encode_token_batches,
    image_embeddings,
    text_embeddings,
    tokenize,
)
from vlcl.models.loading import (
    EMBEDDED_MODEL,
    ClipBundle,
    ModelLoadError,
    check_tokenizer,
    embedded_model_dir,
    load_clip,
    save_clip,
)

__all__ = [
    "EMBEDDED_MODEL",
    "ClipBundle",
    "ImagePreprocessor",
    "ModelLoadError",
    "check_tokenizer",
    "embedded_model_dir",
    "encode_images",
    "encode_texts",
    "encode_token_batches",
    "image_embeddings",
    "load_clip",
    "save_clip",
    "text_embeddings",
    "tokenize",
]
