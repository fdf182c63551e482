// Attention forward for bf16 on CPUs with AMX (used by rewardkit.attention), head width 32 or 64.
//
//   O = softmax(Q K^T * scale + mask) V
//
// PyTorch's CPU flash attention runs its products through small GEMM calls; at head width 32 or 64 their
// per-call cost outweighs the arithmetic. Here a block of 16 queries meets its keys in AMX tiles directly:
// one tile instruction per 16 x 16 block of scores and per 16 x 16 block of output, the scores in an fp32 row
// buffer that stays in cache. Per (row, key head) K and V are laid out once in the tiles' pair-interleaved
// ("VNNI") form and serve every query head that reads them. Key blocks no query of a block can see (causal and
// packed masks) are skipped. As in the flash kernel, the scores are fp32, the unnormalised probabilities
// meet V in bf16 and the rows are divided by their sums in fp32 at the end; rows that see no key give zeros.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstring>
#include <vector>

#include "attention_mask.h"
#include "vec.h"

using namespace rewardkit;

namespace {

constexpr int kTileRows = 16;  // queries per block, keys per score tile, output columns per output tile
constexpr int kPairK = 32;     // bf16 elements of the inner dimension per tile instruction

// Tile registers: 0 scores, 1-4 output columns, 5 the A operand, 6-7 B operands.
struct TileConfig {
  uint8_t palette_id;
  uint8_t start_row;
  uint8_t reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};

void configure_tiles() {
  TileConfig cfg;
  std::memset(&cfg, 0, sizeof(cfg));
  cfg.palette_id = 1;
  for (int t = 0; t < 8; ++t) {
    cfg.rows[t] = kTileRows;
    cfg.colsb[t] = 64;
  }
  _tile_loadconfig(&cfg);
}

inline int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

// K^T for the score tiles: block (key block kb, head-width chunk c) holds 16 rows r x 16 keys n of 32-bit
// words, word (r, n) = the bf16 pair (2r, 2r + 1) of chunk c of key 16 kb + n; keys past n_keys are zero.
void pack_keys(const BFloat16* K, int64_t k_si, int64_t n_keys, int64_t n_blocks, int64_t D, uint32_t* out) {
  const int64_t chunks = D / kPairK;
  for (int64_t kb = 0; kb < n_blocks; ++kb)
    for (int64_t c = 0; c < chunks; ++c) {
      uint32_t* block = out + (kb * chunks + c) * 256;
      for (int64_t n = 0; n < kTileRows; ++n) {
        const int64_t key = kb * kTileRows + n;
        const auto* words = reinterpret_cast<const uint32_t*>(K + key * k_si + c * kPairK);
        for (int64_t r = 0; r < 16; ++r) block[r * 16 + n] = key < n_keys ? words[r] : 0u;
      }
    }
}

// V for the output tiles: block (32-key chunk kc, 16-column block cb) holds 16 key pairs r x 16 columns n x 2:
// (V[32 kc + 2r][16 cb + n], V[32 kc + 2r + 1][16 cb + n]); keys past n_keys are zero.
void pack_values(const BFloat16* V, int64_t v_si, int64_t n_keys, int64_t n_chunks, int64_t D, BFloat16* out) {
  const int64_t col_blocks = D / kTileRows;
  const BFloat16 zero(0.f);
  for (int64_t kc = 0; kc < n_chunks; ++kc)
    for (int64_t cb = 0; cb < col_blocks; ++cb) {
      BFloat16* block = out + (kc * col_blocks + cb) * 512;
      for (int64_t r = 0; r < 16; ++r) {
        const int64_t k0 = kc * kPairK + 2 * r;
        const BFloat16* even = k0 < n_keys ? V + k0 * v_si + cb * kTileRows : nullptr;
        const BFloat16* odd = k0 + 1 < n_keys ? V + (k0 + 1) * v_si + cb * kTileRows : nullptr;
        for (int64_t n = 0; n < kTileRows; ++n) {
          block[r * 32 + 2 * n] = even ? even[n] : zero;
          block[r * 32 + 2 * n + 1] = odd ? odd[n] : zero;
        }
      }
    }
}

// One query block: rows [m0, m0 + rows) of head Q against keys [lo, lo + span) (lo a multiple of 32), O rows out.
template <int kColBlocks>
void query_block(const BFloat16* Qb, int64_t q_stride, const uint32_t* keys_packed, const BFloat16* values_packed,
                 int64_t lo, int64_t span, int64_t m0, int64_t rows, float scale, const Mask& mask, int64_t mask_off,
                 float* scores, BFloat16* probs, float* out_acc, BFloat16* O) {
  constexpr int64_t D = kColBlocks * kTileRows, chunks = D / kPairK;
  const int64_t width = round_up(span, kPairK);  // score row stride; probabilities past span are zero
  // S = Q K^T over the key blocks of [lo, lo + width)
  for (int64_t kb = lo / kTileRows, j = 0; j < width; ++kb, j += kTileRows) {
    _tile_zero(0);
    for (int64_t c = 0; c < chunks; ++c) {
      _tile_loadd(5, Qb + c * kPairK, q_stride * 2);
      _tile_loadd(6, keys_packed + (kb * chunks + c) * 256, 64);
      _tile_dpbf16ps(0, 5, 6);
    }
    _tile_stored(0, scores + j, width * 4);
  }
  float inv_sum[kTileRows];
  for (int64_t i = 0; i < kTileRows; ++i) {
    float* row = scores + i * width;
    BFloat16* prow = probs + i * width;
    const float mx = i < rows ? scale_and_mask_row(row, span, m0 + i, lo, scale, mask, mask_off) : kNegInf;
    if (mx == kNegInf) {  // a padding row of the block, or a query that sees no key: zeros
      std::fill(prow, prow + width, BFloat16(0.f));
      inv_sum[i] = 0.f;
      continue;
    }
    inv_sum[i] = 1.f / exp_and_sum_row(row, span, mx);
    to_bf16(row, prow, span);
    std::fill(prow + span, prow + width, BFloat16(0.f));
  }
  // O = P V, one output tile per 16 columns
  _tile_zero(1);
  _tile_zero(2);
  if constexpr (kColBlocks == 4) {
    _tile_zero(3);
    _tile_zero(4);
  }
  for (int64_t kc = lo / kPairK, j = 0; j < width; ++kc, j += kPairK) {
    const BFloat16* vblock = values_packed + kc * kColBlocks * 512;
    _tile_loadd(5, probs + j, width * 2);
    _tile_loadd(6, vblock, 64);
    _tile_dpbf16ps(1, 5, 6);
    _tile_loadd(7, vblock + 512, 64);
    _tile_dpbf16ps(2, 5, 7);
    if constexpr (kColBlocks == 4) {
      _tile_loadd(6, vblock + 1024, 64);
      _tile_dpbf16ps(3, 5, 6);
      _tile_loadd(7, vblock + 1536, 64);
      _tile_dpbf16ps(4, 5, 7);
    }
  }
  _tile_stored(1, out_acc, D * 4);
  _tile_stored(2, out_acc + 16, D * 4);
  if constexpr (kColBlocks == 4) {
    _tile_stored(3, out_acc + 32, D * 4);
    _tile_stored(4, out_acc + 48, D * 4);
  }
  for (int64_t i = 0; i < rows; ++i) {
    const Vec inv(inv_sum[i]);
    float* acc = out_acc + i * D;
    for (int64_t d = 0; d < D; d += Vec::size()) (Vec::loadu(acc + d) * inv).store(acc + d);
    to_bf16(acc, O + (m0 + i) * D, D);
  }
}

}  // namespace

// Whether this thread's process may use AMX tiles (Linux grants them on request; PyTorch's oneDNN asks too).
bool amx_ready() {
  static const bool granted = syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XTILEDATA */) == 0;
  return granted;
}

// query: (B, H, Lq, D); key, value: (B, G, Lk, D) with H = G * n_rep (query head h reads key head h / n_rep);
// bf16, unit last stride, D = 32 or 64. mask as attention_backward takes it. Returns (B, H, Lq, D) bf16.
at::Tensor attention_forward(const at::Tensor& query, const at::Tensor& key, const at::Tensor& value,
                             const std::optional<at::Tensor>& mask_tensor, bool is_causal, double scale_arg) {
  for (const auto* t : {&query, &key, &value}) {
    TORCH_CHECK(t->scalar_type() == at::kBFloat16 && t->dim() == 4 && t->stride(3) == 1,
                "attention_forward: bf16 (B, H, L, D) tensors with unit last stride expected");
  }
  const int64_t B = query.size(0), H = query.size(1), Lq = query.size(2), D = query.size(3);
  const int64_t G = key.size(1), Lk = key.size(2);
  TORCH_CHECK(D == 32 || D == 64, "attention_forward: head width 32 or 64 expected");
  TORCH_CHECK(H % G == 0 && key.size(0) == B && value.sizes() == key.sizes() && key.size(3) == D,
              "attention_forward: shapes do not match");
  TORCH_CHECK(amx_ready(), "attention_forward: AMX tiles are not available to this process");
  const Mask mask = read_mask(mask_tensor, is_causal, B, H, Lq, Lk, "attention_forward");
  const int64_t n_rep = H / G;
  const float scale = static_cast<float>(scale_arg);
  auto out = at::empty({B, H, Lq, D}, query.options());
  if (out.numel() == 0) return out;

  const int64_t key_width = round_up(std::max<int64_t>(Lk, 1), kPairK);
  const auto* q_ptr = query.data_ptr<BFloat16>();
  const auto* k_ptr = key.data_ptr<BFloat16>();
  const auto* v_ptr = value.data_ptr<BFloat16>();
  auto* o_ptr = out.data_ptr<BFloat16>();

  at::parallel_for(0, B * G, 1, [&](int64_t begin, int64_t end) {
    configure_tiles();
    std::vector<uint32_t> keys_packed(key_width / kTileRows * (D / kPairK) * 256);
    std::vector<BFloat16> values_packed(key_width / kPairK * (D / kTileRows) * 512);
    std::vector<float> scores(kTileRows * key_width), out_acc(kTileRows * D);
    std::vector<BFloat16> probs(kTileRows * key_width), q_pad(kTileRows * D);
    const int64_t n_blocks = (Lq + kTileRows - 1) / kTileRows;
    std::vector<int64_t> block_lo(n_blocks), block_hi(n_blocks);
    int64_t ranges_for = -1;  // the batch row whose ranges block_lo / block_hi hold (heads share the mask)

    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item / G, g = item % G;
      pack_keys(k_ptr + b * key.stride(0) + g * key.stride(1), key.stride(2), Lk, key_width / kTileRows, D,
                keys_packed.data());
      pack_values(v_ptr + b * value.stride(0) + g * value.stride(1), value.stride(2), Lk, key_width / kPairK, D,
                  values_packed.data());
      for (int64_t r = 0; r < n_rep; ++r) {
        const int64_t h = g * n_rep + r;
        const BFloat16* Q = q_ptr + b * query.stride(0) + h * query.stride(1);
        BFloat16* O = o_ptr + (b * H + h) * Lq * D;
        const int64_t mask_off = b * mask.sb + h * mask.sh;
        for (int64_t blk = 0; blk < n_blocks; ++blk) {
          const int64_t m0 = blk * kTileRows, rows = std::min<int64_t>(kTileRows, Lq - m0);
          if (mask.sh != 0 || ranges_for != b) {
            visible_keys(mask, mask_off, m0, m0 + rows, Lk, block_lo[blk], block_hi[blk]);
            if (blk == n_blocks - 1) ranges_for = mask.sh == 0 ? b : -1;
          }
          if (block_hi[blk] == 0) {  // no query of the block sees any key: zeros, as SDPA gives
            std::fill(O + m0 * D, O + (m0 + rows) * D, BFloat16(0.f));
            continue;
          }
          const int64_t lo = block_lo[blk] / kPairK * kPairK, span = block_hi[blk] - lo;
          const BFloat16* Qb = Q + m0 * query.stride(2);
          int64_t q_stride = query.stride(2);
          if (rows < kTileRows) {  // the last block: its rows padded with zeros to a whole tile
            std::fill(q_pad.begin(), q_pad.end(), BFloat16(0.f));
            for (int64_t i = 0; i < rows; ++i) std::memcpy(q_pad.data() + i * D, Qb + i * q_stride, D * 2);
            Qb = q_pad.data();
            q_stride = D;
          }
          if (D == 32)
            query_block<2>(Qb, q_stride, keys_packed.data(), values_packed.data(), lo, span, m0, rows, scale, mask,
                           mask_off, scores.data(), probs.data(), out_acc.data(), O);
          else
            query_block<4>(Qb, q_stride, keys_packed.data(), values_packed.data(), lo, span, m0, rows, scale, mask,
                           mask_off, scores.data(), probs.data(), out_acc.data(), O);
        }
      }
    }
    _tile_release();
  });
  return out;
}
