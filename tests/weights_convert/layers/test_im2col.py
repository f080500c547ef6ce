"""Convolutions as im2col + one matrix product (layers/im2col.py, OSLSM's fc6s): the same values
and gradients as torch's convolution, whatever the weights' memory layout."""
import pytest
import torch
import torch.nn.functional as F

from weights_convert.layers.im2col import conv2d_im2col


@pytest.mark.parametrize("stride,padding,dilation", [((1, 1), (0, 0), (1, 1)), ((2, 1), (3, 1), (1, 2))])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_im2col_equals_the_convolution_forward_and_backward(stride, padding, dilation, bias, layout):
    torch.manual_seed(0)
    x = torch.randn(1, 6, 13, 11, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(5, 6, 7, 5, dtype=torch.float64).contiguous(memory_format=layout).requires_grad_()
    b = torch.randn(5, dtype=torch.float64, requires_grad=True) if bias else None
    ours = conv2d_im2col(x, weight, b, stride, padding, dilation)
    ref = F.conv2d(x, weight, b, stride, padding, dilation)
    assert ours.shape == ref.shape and torch.allclose(ours, ref, rtol=0, atol=1e-12)
    g = torch.randn_like(ref)
    inputs = [x, weight] + ([b] if bias else [])
    for got, want in zip(torch.autograd.grad((ours * g).sum(), inputs), torch.autograd.grad((ref * g).sum(), inputs)):
        assert torch.allclose(got, want, rtol=0, atol=1e-10)


def test_im2col_takes_one_image():
    with pytest.raises(ValueError, match="one image"):
        conv2d_im2col(torch.zeros(2, 3, 9, 9), torch.zeros(4, 3, 7, 7), None)
