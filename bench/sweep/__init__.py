"""Hyperparameter sweeps: a ``[sweep]`` table turns a matrix into a search.

The sweep sits above the runner and only proposes cells: ``space`` parses the search space,
``plan`` holds the Hyperband bracket arithmetic, ``strategies`` turns outcomes into the next
proposals, ``spec`` reads the ``[sweep]`` table and ``driver`` runs proposals as ordinary cells.
"""
