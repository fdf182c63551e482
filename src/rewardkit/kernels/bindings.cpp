// The Python module of rewardkit's CPU kernels (rewardkit.kernels.load()).

#include <torch/extension.h>

#include <optional>
#include <vector>

std::vector<at::Tensor> attention_backward(const at::Tensor& query, const at::Tensor& key, const at::Tensor& value,
                                           const at::Tensor& out, const at::Tensor& grad_out,
                                           const std::optional<at::Tensor>& mask, bool is_causal, double scale,
                                           int64_t block_elements);
bool amx_ready();
at::Tensor attention_forward(const at::Tensor& query, const at::Tensor& key, const at::Tensor& value,
                             const std::optional<at::Tensor>& mask, bool is_causal, double scale);
std::vector<at::Tensor> rms_norm_forward(const at::Tensor& x, const at::Tensor& w, double eps);
std::vector<at::Tensor> rms_norm_backward(const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& w,
                                          const at::Tensor& rstd);
at::Tensor silu_mul_forward(const at::Tensor& g, const at::Tensor& u);
std::vector<at::Tensor> silu_mul_backward(const at::Tensor& grad_y, const at::Tensor& g, const at::Tensor& u);
at::Tensor linear_weight_grad(const at::Tensor& grad_y, const at::Tensor& x);

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("amx_ready", &amx_ready, "Whether this process may use AMX tiles (attention_forward.cpp)");
  m.def("attention_forward", &attention_forward, "bf16 attention forward in AMX tiles (attention_forward.cpp)");
  m.def("attention_backward", &attention_backward, "Fused bf16 attention backward (attention_backward.cpp)");
  m.def("rms_norm_forward", &rms_norm_forward, "Llama-style RMSNorm, bf16 (fused_layers.cpp)");
  m.def("rms_norm_backward", &rms_norm_backward, "Its backward");
  m.def("silu_mul_forward", &silu_mul_forward, "bf16(silu(gate)) * up (fused_layers.cpp)");
  m.def("silu_mul_backward", &silu_mul_backward, "Its backward");
  m.def("linear_weight_grad", &linear_weight_grad, "fp32 grad_y^T x of bf16 operands (linear.cpp)");
}
