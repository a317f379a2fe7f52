"""search: the measured accuracy table, the accuracy predictor, and Optuna's NSGA-II per device budget.

``from search.run import SearchConfig, search`` runs the whole step (what ``ofa search`` wraps); the parts are
``search.config`` (``SearchConfig``), ``search.table`` (measurements on an Optuna storage), ``search.genes`` (genes
and encoding), ``search.predictor`` (one class per family), ``search.evolution`` with ``search.objectives`` (what it
optimises in each mode), ``search.modes`` (how each budget is searched) and ``search.budgets``. Submodules are
imported on use, so the ``ofa`` command line stays fast.
"""
