// Fused attention backward for bf16 on CPU (used by rewardkit.attention).
//
// Per (row, key/value head) it recomputes the attention probabilities block by block of queries and runs the
// five matrix products of the backward with bf16 inputs and fp32 results (oneDNN, AMX where present), so the
// (queries x keys) score tiles stay in cache instead of making a dozen passes through memory. Key columns no
// query of a block can see (a causal or packed block mask) are skipped.
//
//   P = softmax(Q K^T * scale + mask)          fp32, recomputed
//   dV = P^T dO,  dP = dO V^T,  dS = P * (dP - rowsum(dO * O)),  dQ = dS K * scale,  dK = dS^T Q * scale
//
// P and dS meet the matrix products in bf16, as in the Python backward this replaces.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "attention_mask.h"
#include "vec.h"

#include <immintrin.h>

#include <algorithm>
#include <limits>
#include <memory>
#include <vector>

using namespace rewardkit;

// MKL's mixed-precision GEMM (linked into PyTorch's x86 CPU builds): C = alpha op(A) op(B) + beta C,
// bf16 inputs, fp32 accumulation and output; AMX where the CPU has it.
extern "C" void cblas_gemm_bf16bf16f32(int layout, int trans_a, int trans_b, int m, int n, int k, float alpha,
                                       const uint16_t* a, int lda, const uint16_t* b, int ldb, float beta,
                                       float* c, int ldc);

namespace {

constexpr int kRowMajor = 101, kNoTrans = 111, kTrans = 112;

// C (M x N, row stride ldc) = alpha op(A) op(B) + beta C, row-major; op(X) = X or X^T.
inline void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const BFloat16* A,
                 int64_t lda, const BFloat16* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  cblas_gemm_bf16bf16f32(kRowMajor, trans_a ? kTrans : kNoTrans, trans_b ? kTrans : kNoTrans, M, N, K, alpha,
                         reinterpret_cast<const uint16_t*>(A), lda, reinterpret_cast<const uint16_t*>(B), ldb, beta,
                         C, ldc);
}

inline float dot_bf16(const BFloat16* a, const BFloat16* b, int64_t n) {
  float sum = 0.f;
  for (int64_t j = 0; j < n; ++j) sum += static_cast<float>(a[j]) * static_cast<float>(b[j]);
  return sum;
}

// Row i of the scores (query m0 + i over keys [lo, lo + width), fp32, row stride width) becomes its softmax
// probabilities, in place and as bf16 in probs_bf16; a row with every key masked becomes zeros.
void softmax_rows(float* s, BFloat16* probs_bf16, int64_t rows, int64_t width, int64_t m0, int64_t lo, float scale,
                  const Mask& mask, int64_t off) {
  const int64_t vec_end = width - width % Vec::size();
  for (int64_t i = 0; i < rows; ++i) {
    float* row = s + i * width;
    const int64_t q = m0 + i;
    const float mx = scale_and_mask_row(row, width, q, lo, scale, mask, off);
    if (mx == kNegInf) {
      std::fill(row, row + width, 0.f);
      std::fill(probs_bf16 + i * width, probs_bf16 + (i + 1) * width, BFloat16(0.f));
      continue;
    }
    const float sum = exp_and_sum_row(row, width, mx);
    // normalize
    const Vec vinv(1.f / sum);
    for (int64_t j = 0; j < vec_end; j += Vec::size()) (Vec::loadu(row + j) * vinv).store(row + j);
    for (int64_t j = vec_end; j < width; ++j) row[j] /= sum;
    to_bf16(row, probs_bf16 + i * width, width);
  }
}

}  // namespace

// query, out, grad_out: (B, H, Lq, D); key, value: (B, G, Lk, D) with H = G * n_rep (query head h reads key
// head h / n_rep); all bf16 with unit stride in the last dimension. mask: undefined, or (B, H, Lq, Lk)-expanded
// float32 additive or bool keep-mask. Returns (dQ (B, H, Lq, D), dK, dV (B, G, Lk, D)), bf16, contiguous.
std::vector<at::Tensor> attention_backward(const at::Tensor& query, const at::Tensor& key, const at::Tensor& value,
                                           const at::Tensor& out, const at::Tensor& grad_out,
                                           const std::optional<at::Tensor>& mask_tensor, bool is_causal,
                                           double scale_arg, int64_t block_elements) {
  for (const auto* t : {&query, &key, &value, &out, &grad_out}) {
    TORCH_CHECK(t->scalar_type() == at::kBFloat16 && t->dim() == 4 && t->stride(3) == 1,
                "attention_backward: bf16 (B, H, L, D) tensors with unit last stride expected");
  }
  const int64_t B = query.size(0), H = query.size(1), Lq = query.size(2), D = query.size(3);
  const int64_t G = key.size(1), Lk = key.size(2);
  TORCH_CHECK(H % G == 0 && key.size(0) == B && value.sizes() == key.sizes() && value.size(3) == D &&
                  out.sizes() == query.sizes() && grad_out.sizes() == query.sizes(),
              "attention_backward: shapes do not match");
  const int64_t n_rep = H / G;
  const float scale = static_cast<float>(scale_arg);

  const Mask mask = read_mask(mask_tensor, is_causal, B, H, Lq, Lk, "attention_backward");

  auto grad_q = at::empty({B, H, Lq, D}, query.options());
  auto grad_k = at::empty({B, G, Lk, D}, key.options());
  auto grad_v = at::empty({B, G, Lk, D}, value.options());

  // Query rows per block: the block's (rows x keys) fp32 tiles stay cache-sized.
  const int64_t block_rows = std::max<int64_t>(1, std::min<int64_t>(Lq, block_elements / std::max<int64_t>(1, Lk)));

  const auto* q_ptr = query.data_ptr<BFloat16>();
  const auto* k_ptr = key.data_ptr<BFloat16>();
  const auto* v_ptr = value.data_ptr<BFloat16>();
  const auto* o_ptr = out.data_ptr<BFloat16>();
  const auto* do_ptr = grad_out.data_ptr<BFloat16>();
  auto* dq_ptr = grad_q.data_ptr<BFloat16>();
  auto* dk_ptr = grad_k.data_ptr<BFloat16>();
  auto* dv_ptr = grad_v.data_ptr<BFloat16>();
  const int64_t q_sb = query.stride(0), q_sh = query.stride(1), q_si = query.stride(2);
  const int64_t k_sb = key.stride(0), k_sh = key.stride(1), k_si = key.stride(2);
  const int64_t v_sb = value.stride(0), v_sh = value.stride(1), v_si = value.stride(2);
  const int64_t o_sb = out.stride(0), o_sh = out.stride(1), o_si = out.stride(2);
  const int64_t g_sb = grad_out.stride(0), g_sh = grad_out.stride(1), g_si = grad_out.stride(2);

  at::parallel_for(0, B * G, 1, [&](int64_t begin, int64_t end) {
    const int64_t tile = block_rows * Lk;
    auto probs = std::make_unique<float[]>(tile);         // S, then P
    auto grad_scores = std::make_unique<float[]>(tile);   // dP
    auto tile_bf16 = std::make_unique<BFloat16[]>(tile);  // P, then dS, in bf16
    auto dq_acc = std::make_unique<float[]>(block_rows * D);
    auto dk_acc = std::make_unique<float[]>(Lk * D);
    auto dv_acc = std::make_unique<float[]>(Lk * D);

    // Visible key ranges per query block, found once per batch row where every head shares the mask.
    const int64_t n_blocks = (Lq + block_rows - 1) / block_rows;
    std::vector<int64_t> block_lo(n_blocks), block_hi(n_blocks);
    int64_t ranges_for = -1;  // the batch row whose ranges block_lo / block_hi hold

    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item / G, g = item % G;
      const BFloat16* K = k_ptr + b * k_sb + g * k_sh;
      const BFloat16* V = v_ptr + b * v_sb + g * v_sh;
      std::fill(dk_acc.get(), dk_acc.get() + Lk * D, 0.f);
      std::fill(dv_acc.get(), dv_acc.get() + Lk * D, 0.f);

      for (int64_t r = 0; r < n_rep; ++r) {
        const int64_t h = g * n_rep + r;
        const BFloat16* Q = q_ptr + b * q_sb + h * q_sh;
        const BFloat16* O = o_ptr + b * o_sb + h * o_sh;
        const BFloat16* dO = do_ptr + b * g_sb + h * g_sh;
        BFloat16* dQ = dq_ptr + (b * H + h) * Lq * D;
        const int64_t mask_off = b * mask.sb + h * mask.sh;

        for (int64_t m0 = 0; m0 < Lq; m0 += block_rows) {
          const int64_t rows = std::min(block_rows, Lq - m0);
          int64_t lo, hi;
          const int64_t blk = m0 / block_rows;
          if (mask.sh != 0 || ranges_for != b) {
            visible_keys(mask, mask_off, m0, m0 + rows, Lk, block_lo[blk], block_hi[blk]);
            if (m0 + rows == Lq) ranges_for = mask.sh == 0 ? b : -1;
          }
          lo = block_lo[blk];
          hi = block_hi[blk];
          const int64_t width = hi - lo;
          if (width == 0) {  // no query of the block sees any key: zero gradients, as SDPA gives
            std::fill(dQ + m0 * D, dQ + (m0 + rows) * D, BFloat16(0.f));
            continue;
          }
          const BFloat16* Qb = Q + m0 * q_si;
          const BFloat16* dOb = dO + m0 * g_si;
          const BFloat16* Kb = K + lo * k_si;
          const BFloat16* Vb = V + lo * v_si;

          // P = softmax(scale * Q K^T + mask) over the visible keys
          gemm(false, true, rows, width, D, 1.f, Qb, q_si, Kb, k_si, 0.f, probs.get(), width);
          softmax_rows(probs.get(), tile_bf16.get(), rows, width, m0, lo, scale, mask, mask_off);
          // dV += P^T dO
          gemm(true, false, width, D, rows, 1.f, tile_bf16.get(), width, dOb, g_si, 1.f, dv_acc.get() + lo * D, D);
          // dP = dO V^T, then dS = P * (dP - rowsum(dO * O)) in bf16
          gemm(false, true, rows, width, D, 1.f, dOb, g_si, Vb, v_si, 0.f, grad_scores.get(), width);
          const int64_t vec_end = width - width % Vec::size();
          for (int64_t i = 0; i < rows; ++i) {
            const float dot = dot_bf16(O + (m0 + i) * o_si, dOb + i * g_si, D);
            const Vec vdot(dot);
            const float* p = probs.get() + i * width;
            float* dp = grad_scores.get() + i * width;
            for (int64_t j = 0; j < vec_end; j += Vec::size())
              (Vec::loadu(p + j) * (Vec::loadu(dp + j) - vdot)).store(dp + j);
            for (int64_t j = vec_end; j < width; ++j) dp[j] = p[j] * (dp[j] - dot);
          }
          to_bf16(grad_scores.get(), tile_bf16.get(), rows * width);
          // dQ = scale * dS K
          gemm(false, false, rows, D, width, scale, tile_bf16.get(), width, Kb, k_si, 0.f, dq_acc.get(), D);
          to_bf16(dq_acc.get(), dQ + m0 * D, rows * D);
          // dK += scale * dS^T Q
          gemm(true, false, width, D, rows, scale, tile_bf16.get(), width, Qb, q_si, 1.f, dk_acc.get() + lo * D, D);
        }
      }
      to_bf16(dk_acc.get(), dk_ptr + (b * G + g) * Lk * D, Lk * D);
      to_bf16(dv_acc.get(), dv_ptr + (b * G + g) * Lk * D, Lk * D);
    }
  });
  return {grad_q, grad_k, grad_v};
}
