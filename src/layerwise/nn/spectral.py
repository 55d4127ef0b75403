"""Spectral convolution: a linear map applied to the lowest Fourier modes of a periodic signal.

The kernel integral operator of the Fourier Neural Operator (Li et al. 2021, "Fourier Neural
Operator for Parametric Partial Differential Equations", ICLR, eq. 4): for v (B, C_in, R) on a
uniform periodic grid,

    (K v)(x) = IFFT( W_k FFT(v)_k  for k < modes,  0 above )(x),   W_k in C^(C_in x C_out)

The weights live in Fourier space and act on wavenumbers, not on grid points, so the same layer
runs at any resolution R with R // 2 + 1 >= modes (``torch.fft.rfft``'s unnormalized forward and
normalized inverse make the output the same function whatever the grid samples it).

Cost (the layerwise convention, see `layerwise.nn.layers`): 8 * C_in * C_out * modes FLOPs per
example (one complex multiply-add is four real ones); the FFTs, O(C R log R), are not counted, as
norms and activations are not.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["SpectralConv1d", "spectral_conv_cost"]


class SpectralConv1d(nn.Module):
    """(B, in_ch, R) -> (B, out_ch, R): the lowest ``modes`` Fourier modes mixed by complex
    weights (in_ch, out_ch, modes), the rest dropped. Weights are stored as a real tensor
    (in_ch, out_ch, modes, 2) (real and imaginary parts: optimizers, weight decay and safetensors
    see a plain float tensor) and initialized uniform in [0, 1 / (in_ch * out_ch)) as Li et al.'s
    reference implementation does."""

    def __init__(self, in_ch: int, out_ch: int, modes: int) -> None:
        super().__init__()
        if in_ch < 1 or out_ch < 1 or modes < 1:
            raise ValueError(f"SpectralConv1d needs in_ch, out_ch and modes >= 1, got {in_ch}, {out_ch}, {modes}")
        self.in_ch, self.out_ch, self.modes = in_ch, out_ch, modes
        scale = 1.0 / (in_ch * out_ch)
        self.weight = nn.Parameter(scale * torch.rand(in_ch, out_ch, modes, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, _, R = x.shape
        if R // 2 + 1 < self.modes:
            raise ValueError(f"a spectral conv keeping {self.modes} Fourier modes needs inputs of at least "
                             f"{2 * (self.modes - 1)} points; got {R}")
        # half precision (autocast) runs its FFTs in float32: there is no bf16 FFT on the CPU and it
        # would lose the small modes; float64 stays float64
        dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        x_ft = torch.fft.rfft(x.to(dtype), dim=-1)  # (B, C_in, R//2+1) complex
        w = torch.view_as_complex(self.weight.to(dtype))  # (C_in, C_out, modes)
        out_ft = x_ft.new_zeros(B, self.out_ch, R // 2 + 1)
        out_ft[..., :self.modes] = torch.einsum("bim,iom->bom", x_ft[..., :self.modes], w)
        return torch.fft.irfft(out_ft, n=R, dim=-1)  # (B, C_out, R)

    def extra_repr(self) -> str:
        return f"{self.in_ch}, {self.out_ch}, modes={self.modes}"


def spectral_conv_cost(in_ch: int, out_ch: int, modes: int) -> tuple[int, int]:
    """(parameters, forward FLOPs per example) of `SpectralConv1d(in_ch, out_ch, modes)`; the
    FLOPs do not depend on the resolution (the FFTs are not counted)."""
    return 2 * in_ch * out_ch * modes, 8 * in_ch * out_ch * modes
