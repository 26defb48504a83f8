"""The benchmarks: every module here registers its builder (:func:`vlcl.data.registry.register_benchmark`) when
:mod:`vlcl.data.registry` imports the package's modules.

| module | benchmarks |
|---|---|
| :mod:`~vlcl.data.benchmarks.embedded` | ``embedded``: the procedural image-caption world, no download |
| :mod:`~vlcl.data.benchmarks.embedded_cls` | ``embedded_cls``: the same world as classification tasks (MTIL's protocol) |
| :mod:`~vlcl.data.benchmarks.embedded_time` | ``embedded_time``: the same world drifting over six time steps (TiC-CLIP) |
| :mod:`~vlcl.data.benchmarks.feature_pairs` | ``features``: CMCL's modality pairs over pre-extracted features |
| :mod:`~vlcl.data.benchmarks.data_root` | ``vlcl8``, ``mtil``, ``mtil_order2``, ``folders``: real data sets read from a data root |
| :mod:`~vlcl.data.benchmarks.catalogue` | what the data-root benchmarks and their data sets are (data only) |
| :mod:`~vlcl.data.benchmarks.folders` | the ``folders`` benchmark's data sets: the sub-folders of the data root |
| :mod:`~vlcl.data.benchmarks.world` | the procedural world the embedded benchmarks draw |
"""
