"""Readers of the data formats users already have; each returns :class:`Sample` records.

| format | reader | captions from | labels from |
|---|---|---|---|
| CSV / TSV (open_clip) | :func:`read_csv` | column ``title`` (configurable) | - |
| JSON Lines | :func:`read_jsonl` | key ``caption`` (string or list) | key given as ``label_key`` |
| COCO captions JSON | :func:`read_coco` | ``annotations[].caption`` | - |
| Karpathy split JSON | :func:`read_karpathy` | ``images[].sentences[].raw`` | - |
| WebDataset tar shards | :func:`read_webdataset` | ``.txt`` (one caption a line) or ``.json`` | ``.cls`` |
| image folders (CLIP_benchmark) | :func:`read_image_folder` | - | class folder |
| Hugging Face datasets on disk | :func:`read_hf` | a caption column | a label column |

Images are never decoded here: a sample holds an :class:`~vlcl.data.images.ImageSource`
and :class:`~vlcl.data.images.ImageStore` decodes it when a batch needs it.
A bad sample (missing or corrupt image, malformed JSON line, empty caption)
goes to :class:`Problems`, which raises or counts it.

Each format's module also registers the format (:func:`~vlcl.data.formats.registry.register_format`: its
name, where it is found in a data set folder, how it is read), and :mod:`vlcl.data.formats.detect` finds and
reads a data set folder's sources by asking the registry. A new format is one new module here that calls
``register_format``; every module of this package is imported before the registry is first asked.
"""

from vlcl.data.formats.base import DataError, Problems, Sample, clean_captions, group_by_image
from vlcl.data.formats.coco import read_coco, read_karpathy
from vlcl.data.formats.folder import read_classnames, read_image_folder, read_templates
from vlcl.data.formats.hf import read_hf
from vlcl.data.formats.text import read_csv, read_jsonl
from vlcl.data.formats.wds import read_webdataset

__all__ = [
    "DataError",
    "Problems",
    "Sample",
    "clean_captions",
    "group_by_image",
    "read_classnames",
    "read_coco",
    "read_csv",
    "read_hf",
    "read_image_folder",
    "read_jsonl",
    "read_karpathy",
    "read_templates",
    "read_webdataset",
]
