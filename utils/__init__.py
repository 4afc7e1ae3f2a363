"""Helpers with no trick of their own, shared by callbacks, layers and the package: ensemble arithmetic
(`ensembling`), matplotlib figures (`plots`), and probing a model on one batch with forward hooks (`probe`).

Nothing here imports `callbacks/` or `layers/`, so any folder may use it.
"""
