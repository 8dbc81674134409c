// ai.hubmoe::MoE — a mixture of experts with softmax or sigmoid top-k routing (see ../README.md).
#pragma once

#include <cmath>

#include "common.h"

namespace hubmoe {

// none: a dense MLP as one expert (X = 1, k = 1, no router_logits): every token goes to expert 0 with weight 1.
enum class Routing { softmax, sigmoid, none };
enum class Activation { silu, gelu_erf, gelu_tanh, relu };
// How the expert weights are stored. output_major: fc1 [X, F1, H], fc2 [X, H, I] (a weight row per output).
// input_major: fc1 [X, H, F1], fc2 [X, I, H] (a weight row per input element, so that a zeroed input skips a
// contiguous row). The op computes the same function in either layout.
enum class MoeLayout { output_major, input_major };

Routing parse_routing(const std::string& s);
Activation parse_activation(const std::string& s);
MoeLayout parse_layout(const std::string& s);
inline const char* layout_name(MoeLayout l) { return l == MoeLayout::input_major ? "input_major" : "output_major"; }

struct MoeArgs {
  int64_t S = 0, H = 0, X = 0, I = 0, F1 = 0;  // tokens, hidden, experts, expert width, fc1 rows (2I with glu)
  int k = 1;
  Routing routing = Routing::softmax;
  bool renormalize = false;
  Activation act = Activation::silu;
  bool glu = false;
  MoeLayout layout = MoeLayout::output_major;  // set before moe_check: it decides the expected weight shapes
  DType dtype = DType::f32;         // T: x, fc1, fc1_bias, fc2, fc2_bias, y
  DType logits_dtype = DType::f32;  // float32 or T
  const void* x = nullptr;          // [S, H]
  const void* logits = nullptr;     // [S, X]; absent with routing none
  const void* fc1 = nullptr;        // [X, F1, H] (input_major: [X, H, F1]); with glu [0, I) gate, [I, 2I) up
  const void* fc1_bias = nullptr;   // [X, F1], optional
  const void* fc2 = nullptr;        // [X, H, I] (input_major: [X, I, H])
  const void* fc2_bias = nullptr;   // [X, H], optional
  // SCAP activation masks, optional: per expert e, (mode m[e], threshold t[e]) as [X, 2] float32. An element v of
  // fc1's input x (fc1_scap) or of fc2's input h (fc2_scap) becomes round_T(v − m) when |v − m| > t, else 0.
  const float* fc1_scap = nullptr;  // [X, 2], optional
  const float* fc2_scap = nullptr;  // [X, 2], optional
  void* y = nullptr;                // [S, H]
};

struct ShapeRef;
// Validates shapes and attributes, fills S, H, X, I, F1. Shapes: (dims, rank), rank < 0 = absent (b1, b2 and the
// SCAP masks s1, s2). The weight shapes expected are those of args.layout.
void moe_check(const int64_t* x, int xr, const int64_t* logits, int lr, const int64_t* fc1, int f1r, const int64_t* b1,
               int b1r, const int64_t* fc2, int f2r, const int64_t* b2, int b2r, MoeArgs& args,
               const int64_t* s1 = nullptr, int s1r = -1, const int64_t* s2 = nullptr, int s2r = -1);

void moe_cpu(const MoeArgs& args, const Parallel& par);

inline float activate(Activation act, float v) {
  switch (act) {
    case Activation::silu:
      return v / (1.f + std::exp(-v));
    case Activation::gelu_erf:
      return 0.5f * v * (1.f + std::erf(v * 0.70710678118654752440f));
    case Activation::gelu_tanh: {
      const float c = 0.79788456080286535588f;  // sqrt(2/pi)
      return 0.5f * v * (1.f + std::tanh(c * (v + 0.044715f * v * v * v)));
    }
    case Activation::relu:
      return v > 0.f ? v : 0.f;
  }
  return v;
}

// Routing of one token: scores over all X experts in fp32, then the top k (ties → lower index). Selection is made
// on the logits, which orders experts exactly as the scores do (softmax and sigmoid are monotone) but without
// rounding, so every device picks the same experts. idx/w receive k entries. Routing none reads no logits (may be
// null): experts 0..k-1 with weight 1.
void route_token(const float* logits, int64_t X, int k, Routing routing, bool renormalize, int* idx, float* w);

}  // namespace hubmoe
