"""The tumour-present gate: whether a slice seen alone holds tumour at all.

A segmentation model asked about one tumour-free slice marks a few bright pixels as tumour more often than
a reviewer accepts (one slice in eight for the LGG default model before the gate). Where a whole patient is
predicted, keeping the largest 3-D component removes most of those; a slice seen alone (the Review page,
``predict`` without ``--volume``) has no such context. The gate gives it one: smp's classification head
(``aux_params``: the deepest encoder features averaged over the image, then a linear layer) outputs the
probability that the slice holds tumour, and the slice's mask is shown only when that probability reaches
``Preprocessing.tumour_gate``, a threshold chosen on validation patients for a target false-positive rate
(:mod:`brainviewer.training.gate_fit`). Weights without a head or without ``tumour_gate`` are never gated.

A weights folder with a head is a plain smp model with ``aux_params`` in its ``config.json``:
``smp.from_pretrained`` builds it, and its forward returns ``(mask logits, tumour-present logits)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from brainviewer.model.postprocess import postprocess

if TYPE_CHECKING:
    from brainviewer.model.preprocessing import Preprocessing

GATE_FILE = "tumour_gate.json"
"""The gate's report in a weights folder: threshold, how it was chosen, and its validation figures."""
AUX_PARAMS: dict[str, object] = {"classes": 1, "pooling": "avg", "dropout": 0.2, "activation": None}
"""smp ``aux_params`` of the tumour-present head: one logit, average pooling, dropout 0.2 in training."""


def split_output(output: torch.Tensor | tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(mask logits (N, 1, S, S), tumour-present logits (N, 1) or None)`` from a model's forward output,
    which is the mask logits alone for a model without a classification head."""
    if isinstance(output, (tuple, list)):
        return output[0], output[1]
    return output, None


def has_head(model: nn.Module | None) -> bool:
    """Whether ``model`` (an smp model) has a classification head."""
    return getattr(model, "classification_head", None) is not None


def attach_head(model: nn.Module, weight: np.ndarray | None = None, bias: float = 0.0) -> nn.Module:
    """Give an smp model a tumour-present head (in place), as ``aux_params=AUX_PARAMS`` would have built it.

    Args:
        model: an smp segmentation model without a classification head.
        weight: ``(C,)`` float weights of the linear layer over the ``C`` deepest encoder channels (512 for
            resnet18), e.g. from a probe fitted on frozen features; ``None`` keeps smp's initialisation.
        bias: the linear layer's bias.

    Returns:
        ``model``, whose forward now returns ``(mask logits, tumour-present logits)`` and whose saved
        ``config.json`` names the head (``aux_params``).

    Raises:
        ValueError: the model already has a head, or ``weight`` has the wrong length.
    """
    from brainviewer.compat import import_smp

    if has_head(model):
        raise ValueError("The model already has a classification head; load it without one to fit a new head.")
    channels = int(model.encoder.out_channels[-1])
    head = import_smp().base.ClassificationHead(in_channels=channels, **AUX_PARAMS)
    linear = head[3]
    if weight is not None:
        weight = np.asarray(weight, dtype=np.float32).reshape(-1)
        if weight.shape != (channels,):
            raise ValueError(f"weight needs {channels} values (the encoder's deepest channels), got {weight.shape}.")
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(weight)[None])
            linear.bias.fill_(float(bias))
    model.classification_head = head.to(next(model.parameters()).device).train(model.training)
    config = getattr(model, "_hub_mixin_config", None)
    if isinstance(config, dict):
        config["aux_params"] = dict(AUX_PARAMS)
    return model


def tumour_shown(presence: float | None, gate: float | None) -> bool:
    """Whether a slice's mask is shown: always without a gate or without a head's output, else when the
    tumour-present probability ``presence`` (in ``[0, 1]``) reaches the ``gate`` threshold."""
    return gate is None or presence is None or presence >= gate


def slice_mask(
    probs: np.ndarray, prep: Preprocessing, threshold: float | None = None, presence: float | None = None
) -> np.ndarray:
    """A slice's ``(H, W)`` bool mask from its ``probs`` as the weights' ``prep`` reads them: cut at ``threshold``
    (default ``prep.threshold``), post-processed, and empty where the gate calls the slice tumour-free (given its
    tumour-present probability ``presence``)."""
    if not tumour_shown(presence, prep.tumour_gate):
        return np.zeros(probs.shape, dtype=bool)
    cut = prep.threshold if threshold is None else threshold
    return postprocess(probs >= cut, prep.min_component_px, prep.keep_largest)
