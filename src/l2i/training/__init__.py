"""Training commands on Lightning: classifier, NMF dictionary, interpreter.

:mod:`l2i.training.common` holds the shared plumbing (devices, Trainer, resume, optimisers).
"""
