// The weight gradient of a linear layer for bf16 training on CPU with fp32 master weights (rewardkit.fused):
//
//   dW = grad_y^T x          grad_y (n, out), x (n, in): bf16; dW (out, in): fp32
//
// PyTorch computes it as a bf16 product whose first operand is a transposed view (oneDNN runs that at about
// half its usual rate here), rounds it to bf16 and casts it to fp32 for the master weight's gradient. MKL's
// mixed-precision GEMM reads the transposed operand in place and writes the fp32 sums directly: one call, no
// bf16 rounding of the gradient.

#include <ATen/ATen.h>

#include <cstdint>

extern "C" void cblas_gemm_bf16bf16f32(int layout, int trans_a, int trans_b, int m, int n, int k, float alpha,
                                       const uint16_t* a, int lda, const uint16_t* b, int ldb, float beta,
                                       float* c, int ldc);

at::Tensor linear_weight_grad(const at::Tensor& grad_y, const at::Tensor& x) {
  TORCH_CHECK(grad_y.dim() == 2 && x.dim() == 2 && grad_y.size(0) == x.size(0),
              "linear_weight_grad: grad_y (n, out) and x (n, in) expected");
  TORCH_CHECK(grad_y.scalar_type() == at::kBFloat16 && x.scalar_type() == at::kBFloat16 &&
                  grad_y.is_contiguous() && x.is_contiguous(),
              "linear_weight_grad: contiguous bf16 tensors expected");
  const int64_t n = x.size(0), out = grad_y.size(1), in = x.size(1);
  TORCH_CHECK(n < INT32_MAX && out < INT32_MAX && in < INT32_MAX, "linear_weight_grad: too large for MKL");
  auto grad_w = at::empty({out, in}, x.options().dtype(at::kFloat));
  if (out == 0 || in == 0) return grad_w;
  if (n == 0) return grad_w.zero_();
  constexpr int kRowMajor = 101, kNoTrans = 111, kTrans = 112;
  cblas_gemm_bf16bf16f32(kRowMajor, kTrans, kNoTrans, out, in, n, 1.f,
                         reinterpret_cast<const uint16_t*>(grad_y.data_ptr()), out,
                         reinterpret_cast<const uint16_t*>(x.data_ptr()), in, 0.f, grad_w.data_ptr<float>(), in);
  return grad_w;
}
