"""Shared parts, not methods: building blocks that several methods use, none of which registers a method.

* :mod:`vlcl.methods.parts.teacher`: :class:`FrozenTeacher`, a frozen copy of a model to distil from, with the
  per-task cache of its embeddings (C-CLIP, LwF, Mod-X, MulKI);
* :mod:`vlcl.methods.parts.ensemble`: :class:`WeightEnsemble`, the running average of a model's weights within a
  task, and :class:`InitialWeightsAndEnsemble` (ZSCL, MulKI);
* :mod:`vlcl.methods.parts.memory`: :class:`StreamMemory`, a reservoir sample of a stream's positions (replay and
  sit on a stream).

A part of one method only lives in that method's package (``vlcl/methods/rail/``, ``vlcl/methods/moe_adapters/``).
Method discovery (:func:`vlcl.plugins.discover`) imports this package, not its modules, and expects no method from
it: only an entry point's module must register one.
"""
