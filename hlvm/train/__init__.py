"""Training MAEs: :class:`TrainConfig`, :func:`train`, :func:`load_run`.

The recipe is MAE's pre-training recipe (He et al. 2022, ``main_pretrain.py``
and ``engine_pretrain.py``), made reproducible and resumable:

- AdamW with betas (0.9, 0.95) and weight decay 0.05, none on the 1-D
  parameters (norms) and biases; the cls and mask tokens are decayed, as
  mae's ``add_weight_decay`` (timm 0.3.2, no skip list) decays them, and the
  fixed position embeddings are not parameters;
- ``lr = blr * effective_batch / 256``, the effective batch counting gradient
  accumulation and every process; linear warmup per optimizer step, then a
  cosine decay to ``min_lr``;
- bf16 autocast on CUDA only (no loss scaling is needed for bf16; the CPU path
  stays in fp32 so that a resumed run is bit-for-bit the uninterrupted one);
- optional ``torch.compile``; DDP under ``torchrun`` (process group from the
  environment, gloo on CPU, nccl on CUDA; a ``DistributedSampler`` shards
  folder data; every rank draws its own online samples; only rank 0 writes).

Data (``TrainConfig.data``), one of:

- a ``hlvm simulate`` output folder, memory-mapped through
  :func:`hlvm.simulate.load_dataset` (its ``.images`` is ``(N, C, H, W)``);
- ``online`` or ``online:path/to/simulate_config.json``: fresh samples from a
  :class:`hlvm.simulate.Simulator` at every step (default graph ``GridSpec()``);
- ``imagefolder:PATH``: real images through :func:`hlvm.data.pretrain_dataset`.

A run folder holds ``config.json`` (the resolved :class:`TrainConfig`, the
model's ``MAEConfig`` and provenance), ``checkpoint.pt`` (model, optimizer,
step, config, every RNG state and the data position; written atomically every
``ckpt_every`` steps, at the end, and on Ctrl-C) and ``metrics.jsonl`` (one row
per logged step).

The package, one concern per module (``from hlvm.train import ...`` gives every public name):

- :mod:`~hlvm.train.config`: :class:`TrainConfig` and the names of a run folder's files;
- :mod:`~hlvm.train.data`: the data sources (:func:`open_data`) and the batch stream (:class:`DataStream`);
- :mod:`~hlvm.train.model`: the model config resolved against the data, and :func:`init_model`;
- :mod:`~hlvm.train.masker`: how a step masks its batch;
- :mod:`~hlvm.train.optim`: the learning-rate schedule and the weight-decay groups;
- :mod:`~hlvm.train.distributed`: device choice, the process group, each rank's mask generator;
- :mod:`~hlvm.train.state`: checkpoints, RNG state, :func:`load_run`;
- :mod:`~hlvm.train.heldout`: the held-out loss of the convergence protocol;
- :mod:`~hlvm.train.logs`: metrics rows, the loss plot, TensorBoard;
- :mod:`~hlvm.train.loop`: :func:`train` and :func:`resume`.
"""

from __future__ import annotations

from .config import CHECKPOINT, CONFIG, LOSS_PLOT, METRICS, PRE_MAE_NO_DECAY, TRAIN_MASK_KINDS, TrainConfig
from .data import DataStream, _Source, absolute_data, fixed_training_mask, open_data  # noqa: F401 - _Source for bench/tests
from .distributed import mask_generator, pick_device
from .heldout import HELDOUT_TAG
from .logs import plot_run
from .loop import StepCallback, TrainingDiverged, TrainingInterrupted, resume, train
from .masker import _masker  # noqa: F401 - for bench/objectives.py
from .model import init_model, resolve_model_config
from .optim import lr_at, param_groups
from .state import load_run

__all__ = [
    "TrainConfig",
    "train",
    "load_run",
    "resume",
    "TrainingInterrupted",
    "lr_at",
    "param_groups",
    "resolve_model_config",
    "fixed_training_mask",
    "mask_generator",
    "init_model",
    "TRAIN_MASK_KINDS",
    "TrainingDiverged",
    "pick_device",
    "LOSS_PLOT",
    "open_data",
    "DataStream",
    "CHECKPOINT",
    "CONFIG",
    "METRICS",
    "absolute_data",
    "plot_run",
    "StepCallback",
    "HELDOUT_TAG",
    "PRE_MAE_NO_DECAY",
]
