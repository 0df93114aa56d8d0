"""Checks of the models' inputs and labels; every error names the argument at fault.

Shapes and dtypes are checked on the host, where they cost nothing. Values (finite features, boxes in
[0, 1], ids and labels in range, a real token and a real region in every row) are checked on the tensors'
device with `torch._assert_async`, which needs no host sync: on the CPU a failure raises at once, on CUDA it
is a device-side assertion carrying the same message. `config.check_input_values=False` skips the value
checks (their cost per training step: docs/benchmarks.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

# Label value of a position that is not a target (PyTorch's cross-entropy default).
IGNORE_INDEX = -100


def shape_error(name: str, expected: str, received: torch.Size) -> ValueError:
    return ValueError(f"{name}: expected shape {expected}, received {tuple(received)}")


class Shape(NamedTuple):
    """A tensor's expected sizes and the names of its axes, for the error."""

    sizes: tuple[int, ...]
    axes: tuple[str, ...]

    def then(self, size: int, axis: str) -> Shape:
        return Shape((*self.sizes, size), (*self.axes, axis))


def check_shape(name: str, tensor: torch.Tensor, expected: Shape) -> None:
    if tuple(tensor.shape) != expected.sizes:
        raise shape_error(name, f"{expected.sizes} [{', '.join(expected.axes)}]", tensor.shape)


def check_dtype(name: str, tensor: torch.Tensor, kind: str) -> None:
    """`kind`: "integer" (token ids), "class ids" (int64, what cross-entropy takes) or "floating"."""
    floating = tensor.dtype.is_floating_point
    integer = not floating and not tensor.dtype.is_complex and tensor.dtype != torch.bool
    valid = {"floating": floating, "integer": integer, "class ids": tensor.dtype == torch.int64}[kind]
    if not valid:
        expected = "class ids of dtype torch.int64" if kind == "class ids" else f"{kind} values"
        raise ValueError(f"{name}: expected {expected}, received dtype {tensor.dtype}")


@dataclass(frozen=True)
class ValueChecks:
    """Device-side checks of a batch's values; each does nothing when `enabled` is False. Ranges are read
    from one min/max reduction (NaN propagates into it), several times cheaper than elementwise tests of a
    batch of region features."""

    enabled: bool = True

    def require(self, condition: torch.Tensor, message: str) -> None:
        """Fail with `message` unless the bool tensor `condition` holds everywhere."""
        if self.enabled:
            torch._assert_async(condition.all(), message)

    def ids(self, name: str, tensor: torch.Tensor, size: int, table: str, ignore_index: bool = False) -> None:
        """Ids in [0, size) (or `IGNORE_INDEX` where allowed); `table` names what they index."""
        if not self.enabled:
            return
        if ignore_index:
            tensor = tensor.masked_fill(tensor == IGNORE_INDEX, 0)
        low, high = _bounds(tensor)
        allowed = f"[0, {size})" + (f" or {IGNORE_INDEX}" if ignore_index else "")
        self.require((low >= 0) & (high < size), f"{name}: values must be in {allowed} ({table})")

    def finite(self, name: str, tensor: torch.Tensor) -> None:
        if self.enabled:
            self.require(torch.isfinite(_bounds(tensor)), f"{name}: holds NaN or inf")

    def unit_interval(self, name: str, tensor: torch.Tensor, what: str) -> None:
        """Values in [0, 1] (NaN fails too); `what` says what they are."""
        if self.enabled:
            low, high = _bounds(tensor)
            self.require((low >= 0) & (high <= 1), f"{name}: {what} must be in [0, 1]")

    def flags(self, name: str, tensor: torch.Tensor) -> None:
        if self.enabled and tensor.dtype != torch.bool:
            self.require((tensor == 0) | (tensor == 1), f"{name}: values must be 0 or 1")

    def padding_mask(self, name: str, mask: torch.Tensor, what: str) -> None:
        """A 0/1 padding mask with at least one real (1) position in every row."""
        self.flags(name, mask)
        if self.enabled:
            self.require(mask.flatten(1).bool().any(1), f"{name}: a row has no real {what} (all zeros)")


def _bounds(tensor: torch.Tensor) -> torch.Tensor:
    """(min, max) of a tensor as one tensor of two."""
    return torch.stack(torch.aminmax(tensor))


@dataclass(frozen=True)
class LabelChecks(ValueChecks):
    """What a head checks its labels against: the batch's sizes (`batch` rows, `length` tokens, `regions`
    regions without the visual [CLS]), plus the value checks."""

    batch: int = 0
    length: int = 0
    regions: int = 0

    @property
    def per_row(self) -> Shape:
        return Shape((self.batch,), ("batch",))

    @property
    def per_token(self) -> Shape:
        return self.per_row.then(self.length, "length")

    @property
    def per_region(self) -> Shape:
        return self.per_row.then(self.regions, "regions")

    def class_ids(
        self,
        name: str,
        tensor: torch.Tensor,
        shape: Shape,
        num_classes: int,
        table: str,
        ignore_index: bool = False,
    ) -> None:
        check_shape(name, tensor, shape)
        check_dtype(name, tensor, "class ids")
        self.ids(name, tensor, num_classes, table, ignore_index)

    def features(self, name: str, tensor: torch.Tensor, shape: Shape) -> None:
        check_shape(name, tensor, shape)
        check_dtype(name, tensor, "floating")
        self.finite(name, tensor)

    def scores(self, name: str, tensor: torch.Tensor, shape: Shape, what: str) -> None:
        check_shape(name, tensor, shape)
        self.unit_interval(name, tensor, what)

    def mask(self, name: str, tensor: torch.Tensor, shape: Shape) -> None:
        check_shape(name, tensor, shape)
        self.flags(name, tensor)

    def row_ids(self, name: str, tensor: torch.Tensor) -> None:
        """One integer id per row (an image's identity, say), any value."""
        check_shape(name, tensor, self.per_row)
        check_dtype(name, tensor, "integer")


__all__ = ["IGNORE_INDEX", "LabelChecks", "Shape", "ValueChecks", "check_dtype", "check_shape", "shape_error"]
