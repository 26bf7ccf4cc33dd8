"""A mask study on real images (Kong et al.'s Table 1 and Figure 5 trends), one concern per module.

- :mod:`~hlvm.realmask.data`: the images in memory: Fashion-MNIST's idx files (installed with apt-get if missing)
  or an image folder.
- :mod:`~hlvm.realmask.pretrain`: one MAE pretraining run on in-memory images, resumable bit for bit.
- :mod:`~hlvm.realmask.measure`: what is measured of an encoder: linear probe, effective rank, Figure 5's
  reconstruction metrics, attention maps.
- :mod:`~hlvm.realmask.rules`: the verdict rules, built on :mod:`hlvm.rules`' decisions.
- :mod:`~hlvm.realmask.report`: ``report.md`` and the figures from ``results.json`` alone.
- :mod:`~hlvm.realmask.grid`: the study config (checked), the items of work it makes, their estimated cost.
- :mod:`~hlvm.realmask.runner`: the output folder, resuming, worker processes, ``results.json``.
- :mod:`~hlvm.realmask.study`: the whole study from its config: checks, data, every item, the report.
- :mod:`~hlvm.realmask.curve`: the learning curve that chooses a study's training length.

``studies/fashion-mnist-mask/`` holds the Fashion-MNIST study's config and the scripts that call this package
(through ``hlvm realmask`` and ``hlvm realmask-report``, cli/realmask.py).
"""
