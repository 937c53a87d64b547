"""DDP communication hooks for the tally backend: 16-bit gradient exchange with error feedback.

With ``TALLY_COMPRESS=bf16`` (or ``fp16``) in the environment, DDP on a tally group already sends
its float32 gradients across hosts as 16-bit values, reduced in fp32 (README, "Compression"), with
no code change. This module adds error feedback on top:

    from tally_torch.hooks import ErrorFeedbackState, error_feedback_hook
    state = ErrorFeedbackState(format="bf16")          # collective: every rank calls it
    ddp_model.register_comm_hook(state, error_feedback_hook)

The design. Each rank divides its bucket by the world size (as DDP's own averaging does), adds the
residual it kept for that bucket from the previous step, rounds the sum to the 16-bit format
(round to nearest even; fp16 saturating at +-65504 like Tally's wire), keeps the new residual (what
the rounding lost) and allreduces the rounded values as float32 on a tally group of its own whose
communicator compresses (made with TALLY_COMPRESS set to the format, so the default group is left
as it is). The values a rank puts on the wire are exact in 16 bits, so its own rounding is the only
loss on its first hop, and that loss comes back in the next step's gradient: over the steps nothing
of a rank's gradient is dropped, only delayed (error feedback, as in 1-bit SGD and EF-SGD). The
later hops of the collective round partial sums of several ranks; those roundings belong to no one
rank and are not fed back (their size is Tally's stated bound). Allreducing a BFLOAT16 tensor
instead would round the sum after every addition in 16 bits; this keeps every addition in fp32.
Buckets that are not float32 are allreduced as they are, averaged.
"""
import contextlib
import os

import torch
import torch.distributed as dist
import torch.distributed.distributed_c10d as _c10d

__all__ = ["ErrorFeedbackState", "error_feedback_hook"]

_FORMATS = {"bf16": torch.bfloat16, "fp16": torch.float16}
_FP16_LARGEST = 65504.0


@contextlib.contextmanager
def _environment(**values):
    """Sets the environment variables `values` around the block, then restores them."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class ErrorFeedbackState:
    """The hook's state: the compressing group and each bucket's residual.

    format: "bf16" or "fp16". process_group: the group DDP runs on (None: the default group); the
    hook runs on a tally communicator of its own over the same ranks, made through the group's
    store (a split of a tally group would keep the parent's settings, and TALLY_COMPRESS is read
    when a communicator is made). min_bytes: buckets smaller than this cross hosts uncompressed
    (TALLY_COMPRESS_MIN_BYTES; default 0, every bucket). timeout: the communicator's, seconds.
    Creating it is collective over the group, like new_group."""

    _made = 0  # states made in this process: each one's store key

    def __init__(self, format="bf16", process_group=None, min_bytes=0, timeout=300.0):
        if format not in _FORMATS:
            raise ValueError("tally_torch.hooks: format %r is not one of %s" % (format, ", ".join(_FORMATS)))
        if min_bytes < 0:
            raise ValueError("tally_torch.hooks: min_bytes %r is not a number of bytes" % (min_bytes,))
        from . import _C  # the built extension: only needed to make the communicator
        self.format = format
        self.dtype = _FORMATS[format]
        group = process_group if process_group is not None else _c10d._get_default_group()
        rank, size = group.rank(), group.size()
        ErrorFeedbackState._made += 1
        store = dist.PrefixStore("tally_torch.hooks/%d" % ErrorFeedbackState._made, _c10d._get_default_store())
        if rank == 0:
            store.set("unique_id", _C.unique_id())
        unique_id = store.get("unique_id")
        with _environment(TALLY_COMPRESS=format, TALLY_COMPRESS_MIN_BYTES=str(int(min_bytes))):
            self.group = _C.create(rank, size, unique_id, float(timeout))
        self.world_size = size
        self.residuals = {}  # bucket index -> float32 tensor, what the last rounding lost

    def round_with_feedback(self, index, gradient):
        """gradient (float32, already averaged) plus the bucket's residual, rounded to the format;
        keeps the new residual. Returns the rounded values as float32."""
        residual = self.residuals.get(index)
        if residual is not None and residual.shape == gradient.shape:
            gradient = gradient + residual
        source = gradient
        if self.dtype == torch.float16:  # finite values saturate, as on Tally's wire; infinities stay
            source = torch.where(torch.isfinite(gradient), gradient.clamp(-_FP16_LARGEST, _FP16_LARGEST), gradient)
        rounded = source.to(self.dtype).to(torch.float32)
        lost = gradient - rounded  # NaN or infinity where the gradient was: not carried into later steps
        self.residuals[index] = torch.where(torch.isfinite(lost), lost, torch.zeros_like(lost))
        return rounded


def error_feedback_hook(state, bucket):
    """register_comm_hook(state, error_feedback_hook): the bucket's average over the ranks, its
    float32 values exchanged as `state.format` with this rank's rounding loss fed into the next step."""
    buffer = bucket.buffer()
    if buffer.dtype == torch.float32:
        payload = state.round_with_feedback(bucket.index(), buffer / state.world_size)
    else:  # exchanged as it is
        payload = buffer.div_(state.world_size)
    work = dist.all_reduce(payload, group=state.group, async_op=True)
    return work.get_future().then(lambda fut: fut.value()[0])
