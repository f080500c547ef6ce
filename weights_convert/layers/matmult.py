"""MatMult, the OSLSM fork's batched matrix product: C[i] = op(A[i]) @ op(B[i]) for every
leading index i. A bottom marked in `diagonal_input` is a diagonal matrix given by its diagonal
(last axis), so it scales the rows (A diagonal) or the columns (B diagonal) of the other one."""
from __future__ import annotations

import torch

from weights_convert.formats.schema import pb
from weights_convert.layers.base import CaffeLayer, count


class MatMult(CaffeLayer):
    bottoms_range = (2, 2)

    def __init__(self, lp: pb.LayerParameter):
        super().__init__(lp)
        p = lp.matmult_param
        diag = [bool(v) for v in p.diagonal_input]
        if len(diag) not in (0, 2):
            raise self.fail(f"diagonal_input has {len(diag)} values; expected none or one per bottom (2)")
        self.diag = diag or [False, False]
        if all(self.diag):
            raise self.fail("at most one bottom may be diagonal")
        self.transpose = [bool(p.transpose_a), bool(p.transpose_b)]

    def _split(self, x: torch.Tensor, which: int) -> tuple[tuple[int, ...], int]:
        """Leading (batch) shape and number of matrix axes of one bottom."""
        k = 1 if self.diag[which] else 2
        if x.dim() < k:
            raise self.fail(f"bottom {which} of shape {tuple(x.shape)} has too few axes for a "
                            f"{'diagonal' if k == 1 else 'matrix'}")
        return tuple(int(d) for d in x.shape[:x.dim() - k]), k

    def forward(self, bottoms):
        a, b = bottoms
        lead_a, _ = self._split(a, 0)
        lead_b, _ = self._split(b, 1)
        if count(lead_a) != count(lead_b):
            raise self.fail(f"bottoms {tuple(a.shape)} and {tuple(b.shape)} hold different numbers of matrices "
                            f"({count(lead_a)} and {count(lead_b)})")
        n = count(lead_a)
        if self.diag[0]:
            mb = b.reshape(n, *b.shape[-2:])
            mb = mb.transpose(1, 2) if self.transpose[1] else mb
            if a.shape[-1] != mb.shape[1]:
                raise self.fail(f"diagonal A of size {a.shape[-1]} does not match B's {mb.shape[1]} rows")
            y = a.reshape(n, -1, 1) * mb
        elif self.diag[1]:
            ma = a.reshape(n, *a.shape[-2:])
            ma = ma.transpose(1, 2) if self.transpose[0] else ma
            if b.shape[-1] != ma.shape[2]:
                raise self.fail(f"diagonal B of size {b.shape[-1]} does not match A's {ma.shape[2]} columns")
            y = ma * b.reshape(n, 1, -1)
        else:
            ma = a.reshape(n, *a.shape[-2:])
            mb = b.reshape(n, *b.shape[-2:])
            ma = ma.transpose(1, 2) if self.transpose[0] else ma
            mb = mb.transpose(1, 2) if self.transpose[1] else mb
            if ma.shape[2] != mb.shape[1]:
                raise self.fail(f"op(A) {tuple(ma.shape[1:])} and op(B) {tuple(mb.shape[1:])} do not multiply "
                                f"(bottoms {tuple(a.shape)}, {tuple(b.shape)})")
            y = torch.bmm(ma, mb)
        return [y.reshape(*lead_a, *y.shape[1:])]
