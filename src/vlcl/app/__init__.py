"""The application: the ``vlcl`` command (:mod:`vlcl.app.entry`, :mod:`vlcl.app.cli`), ``vlcl pretrain``
(:mod:`vlcl.app.pretrain`) and ``vlcl compare`` (:mod:`vlcl.app.compare`).

The command line goes through the public Python API, :mod:`vlcl.api`. The library (every other module of vlcl)
never imports this package.
"""
