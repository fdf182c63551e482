// What rewardkit's attention kernels share (attention_forward.cpp, attention_backward.cpp): the mask as they read
// it, the key range a block of queries can see, and the row passes of the softmax (scale and mask, exp and sum).
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <optional>

#include <immintrin.h>

#include "vec.h"

namespace rewardkit {

// The mask as the kernels read it: element (b, h, i, j) at b*sb + h*sh + i*si + j (strides 0 where broadcast).
struct Mask {
  const float* additive = nullptr;  // added to the scaled scores
  const bool* keep = nullptr;       // true = attend
  int64_t sb = 0, sh = 0, si = 0;
  bool causal = false;              // upper-left aligned: key j visible to query i iff j <= i

  bool visible(int64_t off, int64_t i, int64_t j) const {
    if (keep) return keep[off + i * si + j];
    if (additive) return additive[off + i * si + j] != kNegInf;
    return !causal || j <= i;
  }
};

// Keys [lo, hi) that at least one query of rows [m0, m1) can see (lo == hi == 0: none).
inline void visible_keys(const Mask& mask, int64_t off, int64_t m0, int64_t m1, int64_t n_keys, int64_t& lo,
                  int64_t& hi) {
  if (!mask.keep && !mask.additive) {
    lo = 0;
    hi = mask.causal ? std::min(m1, n_keys) : n_keys;
    return;
  }
  lo = n_keys;
  hi = 0;
  for (int64_t i = m0; i < m1; ++i) {
    int64_t j = 0;
    while (j < lo && !mask.visible(off, i, j)) ++j;
    lo = std::min(lo, j);
    int64_t k = n_keys;
    while (k > hi && !mask.visible(off, i, k - 1)) --k;
    hi = std::max(hi, k);
  }
  if (hi <= lo) lo = hi = 0;
}

// Row `q` of the scores over keys [lo, lo + width): scaled, masked (-inf where the mask hides a key), in place.
// Returns the row's maximum (-inf: every key hidden).
inline float scale_and_mask_row(float* row, int64_t width, int64_t q, int64_t lo, float scale, const Mask& mask,
                                int64_t off) {
  const Vec vscale(scale);
  const int64_t vec_end = width - width % Vec::size();
  Vec vmx(kNegInf);
  float mx = kNegInf;
  if (mask.additive) {
    const float* add = mask.additive + off + q * mask.si + lo;
    for (int64_t j = 0; j < vec_end; j += Vec::size()) {
      Vec x = Vec::loadu(row + j) * vscale + Vec::loadu(add + j);
      x.store(row + j);
      vmx = at::vec::maximum(vmx, x);
    }
    for (int64_t j = vec_end; j < width; ++j) mx = std::max(mx, row[j] = row[j] * scale + add[j]);
  } else if (mask.keep) {
    const bool* keep = mask.keep + off + q * mask.si + lo;
    const __m512 neg_inf = _mm512_set1_ps(kNegInf);
    for (int64_t j = 0; j < vec_end; j += Vec::size()) {  // 16 keys: their bytes become a lane mask
      const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(keep + j));
      const Vec x(_mm512_mask_blend_ps(_mm_test_epi8_mask(bytes, bytes), neg_inf,
                                       _mm512_mul_ps(Vec::loadu(row + j), vscale)));
      x.store(row + j);
      vmx = at::vec::maximum(vmx, x);
    }
    for (int64_t j = vec_end; j < width; ++j) {
      row[j] = keep[j] ? row[j] * scale : kNegInf;
      mx = std::max(mx, row[j]);
    }
  } else {
    const int64_t end = mask.causal ? std::clamp<int64_t>(q - lo + 1, 0, width) : width;
    const int64_t vend = end - end % Vec::size();
    for (int64_t j = 0; j < vend; j += Vec::size()) {
      Vec x = Vec::loadu(row + j) * vscale;
      x.store(row + j);
      vmx = at::vec::maximum(vmx, x);
    }
    for (int64_t j = vend; j < end; ++j) mx = std::max(mx, row[j] *= scale);
    std::fill(row + end, row + width, kNegInf);
  }
  return std::max(mx, max_lanes(vmx));
}

// exp(row - mx) in place over `width` scores; returns their sum.
inline float exp_and_sum_row(float* row, int64_t width, float mx) {
  const int64_t vec_end = width - width % Vec::size();
  const Vec vmax(mx);
  Vec vsum(0.f);
  for (int64_t j = 0; j < vec_end; j += Vec::size()) {
    Vec e = (Vec::loadu(row + j) - vmax).exp_u20();
    e.store(row + j);
    vsum = vsum + e;
  }
  float sum = 0.f;
  for (int64_t j = vec_end; j < width; ++j) sum += row[j] = std::exp(row[j] - mx);
  return sum + sum_lanes(vsum);
}

// A kernel's mask argument: undefined, or (B, H, Lq, Lk)-expanded float32 additive or bool keep-mask with unit
// last stride (strides 0 where broadcast).
inline Mask read_mask(const std::optional<at::Tensor>& mask_tensor, bool is_causal, int64_t B, int64_t H,
                      int64_t Lq, int64_t Lk, const char* who) {
  Mask mask;
  mask.causal = is_causal;
  if (!mask_tensor.has_value() || !mask_tensor->defined()) return mask;
  const at::Tensor& m = *mask_tensor;
  TORCH_CHECK(m.dim() == 4 && m.size(0) == B && m.size(1) == H && m.size(2) == Lq && m.size(3) == Lk &&
                  m.stride(3) == 1,
              who, ": mask must be expanded to (B, H, Lq, Lk) with unit last stride");
  if (m.scalar_type() == at::kBool) {
    mask.keep = m.data_ptr<bool>();
  } else {
    TORCH_CHECK(m.scalar_type() == at::kFloat, who, ": float32 or bool mask expected");
    mask.additive = m.data_ptr<float>();
  }
  mask.sb = m.stride(0);
  mask.sh = m.stride(1);
  mask.si = m.stride(2);
  return mask;
}

}  // namespace rewardkit
