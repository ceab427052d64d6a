"""SAE Circuits: the library every chapter imports, one module per concern.

``backends`` (what a chapter runs on: ``load_backend``, ``Backend``), ``toy`` (the model
organism), ``nodes`` (the vocabulary: dictionary kinds, hook names, node ids), ``metrics``
(correlations, AUROC, precision), ``attribution`` and ``patching`` (gradients and patches),
``circuits`` (node sets, baselines, rankings), ``transcoders``, ``graphs`` (feature circuits
and attribution graphs), ``views``, ``dashboards`` and ``explorer`` (what a notebook shows),
``training``, ``memory``, ``progress``.

The course machinery (build, checks, grading, the one command ``python -m utils.course``)
lives in ``utils.course``; the library never imports it, nor ``tests`` or ``solutions``.
"""
