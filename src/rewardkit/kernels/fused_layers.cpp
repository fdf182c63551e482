// Fused bf16 forward and backward of two Llama-style layers (used by rewardkit.fused):
//
//   RMSNorm:     y = w * bf16(x * rsqrt(mean(x^2) + eps))          (x in fp32, as transformers computes it)
//   SiLU-gated:  y = bf16(silu(g)) * u                              (act_fn(gate_proj(x)) * up_proj(x))
//
// Each is one pass over memory where PyTorch's eager ops make five to ten, and saves only its inputs (and, for
// RMSNorm, one fp32 number per row) for the backward. The bf16 roundings are the ones the eager ops make, so
// results match transformers' modules to bf16 precision.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <vector>

#include "vec.h"

using namespace rewardkit;

namespace {

constexpr int64_t kStep = VecBF16::size();  // 32 bf16 = two float vectors
inline Vec round_bf16(const Vec& v) { return std::get<0>(at::vec::convert_bfloat16_float(at::vec::convert_float_bfloat16(v, v))); }
inline float round_bf16(float v) { return static_cast<float>(static_cast<BFloat16>(v)); }
inline Vec sigmoid(const Vec& x) { return Vec(1.f) / (Vec(1.f) + x.neg().exp_u20()); }
inline float sigmoid(float x) { return 1.f / (1.f + std::exp(-x)); }

void check_bf16(const at::Tensor& t, const char* what) {
  TORCH_CHECK(t.scalar_type() == at::kBFloat16 && t.is_contiguous(), what, ": a contiguous bf16 tensor expected");
}

}  // namespace

// x: (..., n), w: (n). Returns (y like x, rstd (rows,) fp32).
std::vector<at::Tensor> rms_norm_forward(const at::Tensor& x, const at::Tensor& w, double eps) {
  check_bf16(x, "rms_norm_forward x");
  check_bf16(w, "rms_norm_forward weight");
  const int64_t n = w.numel(), rows = n ? x.numel() / n : 0;
  TORCH_CHECK(x.size(-1) == n, "rms_norm_forward: weight does not match the last dimension");
  auto y = at::empty_like(x);
  auto rstd = at::empty({rows}, x.options().dtype(at::kFloat));
  const BFloat16* X = x.data_ptr<BFloat16>();
  const BFloat16* W = w.data_ptr<BFloat16>();
  BFloat16* Y = y.data_ptr<BFloat16>();
  float* R = rstd.data_ptr<float>();
  const int64_t vec_end = n - n % kStep;
  at::parallel_for(0, rows, 8, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const BFloat16* xr = X + r * n;
      BFloat16* yr = Y + r * n;
      Vec acc(0.f);
      for (int64_t j = 0; j < vec_end; j += kStep) {
        auto [a, b] = load_bf16(xr + j);
        acc = acc + a * a + b * b;
      }
      float sq = sum_lanes(acc);
      for (int64_t j = vec_end; j < n; ++j) sq += static_cast<float>(xr[j]) * static_cast<float>(xr[j]);
      const float rs = 1.f / std::sqrt(sq / n + static_cast<float>(eps));
      R[r] = rs;
      const Vec vrs(rs);
      for (int64_t j = 0; j < vec_end; j += kStep) {
        auto [a, b] = load_bf16(xr + j);
        auto [wa, wb] = load_bf16(W + j);
        store_bf16(yr + j, wa * round_bf16(a * vrs), wb * round_bf16(b * vrs));
      }
      for (int64_t j = vec_end; j < n; ++j)
        yr[j] = static_cast<BFloat16>(static_cast<float>(W[j]) * round_bf16(static_cast<float>(xr[j]) * rs));
    }
  });
  return {y, rstd};
}

// Returns (dx like x, dw like w). dw sums the bf16-rounded products dy * bf16(x * rstd) in fp32.
std::vector<at::Tensor> rms_norm_backward(const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& w,
                                          const at::Tensor& rstd) {
  check_bf16(grad_y, "rms_norm_backward grad");
  check_bf16(x, "rms_norm_backward x");
  check_bf16(w, "rms_norm_backward weight");
  const int64_t n = w.numel(), rows = n ? x.numel() / n : 0;
  TORCH_CHECK(grad_y.sizes() == x.sizes() && rstd.numel() == rows && rstd.scalar_type() == at::kFloat,
              "rms_norm_backward: shapes do not match");
  auto dx = at::empty_like(x);
  const int64_t threads = at::get_num_threads();
  auto dw_parts = at::zeros({threads, n}, x.options().dtype(at::kFloat));
  const BFloat16* X = x.data_ptr<BFloat16>();
  const BFloat16* W = w.data_ptr<BFloat16>();
  const BFloat16* DY = grad_y.data_ptr<BFloat16>();
  const float* R = rstd.data_ptr<float>();
  BFloat16* DX = dx.data_ptr<BFloat16>();
  float* DWP = dw_parts.data_ptr<float>();
  const int64_t vec_end = n - n % kStep;
  at::parallel_for(0, rows, 8, [&](int64_t begin, int64_t end) {
    float* dw = DWP + at::get_thread_num() * n;
    for (int64_t r = begin; r < end; ++r) {
      const BFloat16* xr = X + r * n;
      const BFloat16* dyr = DY + r * n;
      BFloat16* dxr = DX + r * n;
      const float rs = R[r];
      const Vec vrs(rs);
      // dh = bf16(dy * w); dot = sum(dh * x) ; dw += bf16(dy * bf16(x * rs))
      Vec vdot(0.f);
      for (int64_t j = 0; j < vec_end; j += kStep) {
        auto [xa, xb] = load_bf16(xr + j);
        auto [ga, gb] = load_bf16(dyr + j);
        auto [wa, wb] = load_bf16(W + j);
        vdot = vdot + round_bf16(ga * wa) * xa + round_bf16(gb * wb) * xb;
        (Vec::loadu(dw + j) + round_bf16(ga * round_bf16(xa * vrs))).store(dw + j);
        (Vec::loadu(dw + j + Vec::size()) + round_bf16(gb * round_bf16(xb * vrs))).store(dw + j + Vec::size());
      }
      float dot = sum_lanes(vdot);
      for (int64_t j = vec_end; j < n; ++j) {
        const float xj = static_cast<float>(xr[j]), gj = static_cast<float>(dyr[j]);
        dot += round_bf16(gj * static_cast<float>(W[j])) * xj;
        dw[j] += round_bf16(gj * round_bf16(xj * rs));
      }
      // dx = rs * dh - x * rs^3 * dot / n
      const float coef = rs * rs * rs * dot / n;
      const Vec vcoef(coef);
      for (int64_t j = 0; j < vec_end; j += kStep) {
        auto [xa, xb] = load_bf16(xr + j);
        auto [ga, gb] = load_bf16(dyr + j);
        auto [wa, wb] = load_bf16(W + j);
        store_bf16(dxr + j, vrs * round_bf16(ga * wa) - xa * vcoef, vrs * round_bf16(gb * wb) - xb * vcoef);
      }
      for (int64_t j = vec_end; j < n; ++j) {
        const float xj = static_cast<float>(xr[j]), gj = static_cast<float>(dyr[j]);
        dxr[j] = static_cast<BFloat16>(rs * round_bf16(gj * static_cast<float>(W[j])) - xj * coef);
      }
    }
  });
  return {dx, dw_parts.sum(0).to(at::kBFloat16)};
}

// y = bf16(silu(g)) * u, for g, u of one shape.
at::Tensor silu_mul_forward(const at::Tensor& g, const at::Tensor& u) {
  check_bf16(g, "silu_mul_forward gate");
  check_bf16(u, "silu_mul_forward up");
  TORCH_CHECK(g.sizes() == u.sizes(), "silu_mul_forward: gate and up differ in shape");
  auto y = at::empty_like(g);
  const BFloat16* G = g.data_ptr<BFloat16>();
  const BFloat16* U = u.data_ptr<BFloat16>();
  BFloat16* Y = y.data_ptr<BFloat16>();
  at::parallel_for(0, g.numel(), 4096, [&](int64_t begin, int64_t end) {
    int64_t j = begin;
    for (; j + kStep <= end; j += kStep) {
      auto [ga, gb] = load_bf16(G + j);
      auto [ua, ub] = load_bf16(U + j);
      store_bf16(Y + j, round_bf16(ga * sigmoid(ga)) * ua, round_bf16(gb * sigmoid(gb)) * ub);
    }
    for (; j < end; ++j) {
      const float gj = static_cast<float>(G[j]);
      Y[j] = static_cast<BFloat16>(round_bf16(gj * sigmoid(gj)) * static_cast<float>(U[j]));
    }
  });
  return y;
}

// Returns (dg, du): du = dy * bf16(silu(g)); dg = bf16(dy * u) * silu'(g), with the eager ops' roundings.
std::vector<at::Tensor> silu_mul_backward(const at::Tensor& grad_y, const at::Tensor& g, const at::Tensor& u) {
  check_bf16(grad_y, "silu_mul_backward grad");
  check_bf16(g, "silu_mul_backward gate");
  check_bf16(u, "silu_mul_backward up");
  TORCH_CHECK(g.sizes() == u.sizes() && grad_y.sizes() == g.sizes(), "silu_mul_backward: shapes differ");
  auto dg = at::empty_like(g);
  auto du = at::empty_like(u);
  const BFloat16* G = g.data_ptr<BFloat16>();
  const BFloat16* U = u.data_ptr<BFloat16>();
  const BFloat16* DY = grad_y.data_ptr<BFloat16>();
  BFloat16* DG = dg.data_ptr<BFloat16>();
  BFloat16* DU = du.data_ptr<BFloat16>();
  const Vec one(1.f);
  at::parallel_for(0, g.numel(), 4096, [&](int64_t begin, int64_t end) {
    int64_t j = begin;
    for (; j + kStep <= end; j += kStep) {
      auto [ga, gb] = load_bf16(G + j);
      auto [ua, ub] = load_bf16(U + j);
      auto [da, db] = load_bf16(DY + j);
      const Vec sa = sigmoid(ga), sb = sigmoid(gb);
      store_bf16(DU + j, da * round_bf16(ga * sa), db * round_bf16(gb * sb));
      store_bf16(DG + j, round_bf16(da * ua) * sa * (one + ga * (one - sa)),
            round_bf16(db * ub) * sb * (one + gb * (one - sb)));
    }
    for (; j < end; ++j) {
      const float gj = static_cast<float>(G[j]), uj = static_cast<float>(U[j]), dj = static_cast<float>(DY[j]);
      const float s = sigmoid(gj);
      DU[j] = static_cast<BFloat16>(dj * round_bf16(gj * s));
      DG[j] = static_cast<BFloat16>(round_bf16(dj * uj) * s * (1.f + gj * (1.f - s)));
    }
  });
  return {dg, du};
}
