// Small vector helpers shared by rewardkit's CPU kernels (at::vec, AVX-512 as built by rewardkit.kernels).
#pragma once

#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <limits>
#include <tuple>

namespace rewardkit {

using at::BFloat16;
using Vec = at::vec::Vectorized<float>;
using VecBF16 = at::vec::Vectorized<BFloat16>;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

inline float sum_lanes(const Vec& v) {
  float lanes[Vec::size()];
  v.store(lanes);
  float s = 0.f;
  for (float lane : lanes) s += lane;
  return s;
}

inline float max_lanes(const Vec& v) {
  float lanes[Vec::size()];
  v.store(lanes);
  float m = kNegInf;
  for (float lane : lanes) m = std::max(m, lane);
  return m;
}

// n floats to bf16 (round to nearest even)
inline void to_bf16(const float* src, BFloat16* dst, int64_t n) {
  int64_t j = 0;
  for (; j + VecBF16::size() <= n; j += VecBF16::size())
    at::vec::convert_float_bfloat16(Vec::loadu(src + j), Vec::loadu(src + j + Vec::size())).store(dst + j);
  for (; j < n; ++j) dst[j] = static_cast<BFloat16>(src[j]);
}

// 32 bf16 as two float vectors, and back
inline std::tuple<Vec, Vec> load_bf16(const BFloat16* p) {
  return at::vec::convert_bfloat16_float(VecBF16::loadu(p));
}
inline void store_bf16(BFloat16* p, const Vec& a, const Vec& b) { at::vec::convert_float_bfloat16(a, b).store(p); }

}  // namespace rewardkit
