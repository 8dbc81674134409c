// Just enough of the ONNX protobuf encoding to write small test models (one or a few nodes) in memory.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace onnxw {

class Msg {
 public:
  std::string bytes;
  Msg& varint_field(int field, uint64_t v) {
    tag(field, 0);
    varint(v);
    return *this;
  }
  Msg& str(int field, const std::string& s) {
    tag(field, 2);
    varint(s.size());
    bytes += s;
    return *this;
  }
  Msg& msg(int field, const Msg& m) { return str(field, m.bytes); }
  Msg& f32(int field, float f) {
    tag(field, 5);
    char b[4];
    std::memcpy(b, &f, 4);
    bytes.append(b, 4);
    return *this;
  }

 private:
  void tag(int field, int wire) { varint((static_cast<uint64_t>(field) << 3) | static_cast<uint64_t>(wire)); }
  void varint(uint64_t v) {
    while (v >= 0x80) {
      bytes.push_back(static_cast<char>((v & 0x7f) | 0x80));
      v >>= 7;
    }
    bytes.push_back(static_cast<char>(v));
  }
};

enum Elem { FLOAT = 1, INT64 = 7, BOOL = 9, FLOAT16 = 10 };

// dims: a value ≥ 0 is fixed, −1 a symbolic dim named "d<i>"; an empty dims vector with rank −1: no shape at all.
inline Msg value_info(const std::string& name, int elem, const std::vector<int64_t>& dims, bool with_shape = true) {
  Msg tensor;
  tensor.varint_field(1, static_cast<uint64_t>(elem));
  if (with_shape) {
    Msg shape;
    for (size_t i = 0; i < dims.size(); ++i) {
      Msg d;
      if (dims[i] >= 0)
        d.varint_field(1, static_cast<uint64_t>(dims[i]));
      else
        d.str(2, "d" + std::to_string(i));
      shape.msg(1, d);
    }
    tensor.msg(2, shape);
  }
  Msg type;
  type.msg(1, tensor);
  Msg vi;
  vi.str(1, name).msg(2, type);
  return vi;
}

struct Attr {
  std::string name;
  int type;  // 1 float, 2 int, 3 string
  float f = 0;
  int64_t i = 0;
  std::string s;
};
inline Attr attr_i(const std::string& n, int64_t v) { return Attr{n, 2, 0, v, ""}; }
inline Attr attr_f(const std::string& n, float v) { return Attr{n, 1, v, 0, ""}; }
inline Attr attr_s(const std::string& n, const std::string& v) { return Attr{n, 3, 0, 0, v}; }

inline Msg node(const std::string& op, const std::string& domain, const std::vector<std::string>& in,
                const std::vector<std::string>& out, const std::vector<Attr>& attrs, const std::string& name) {
  Msg n;
  for (const auto& s : in) n.str(1, s);
  for (const auto& s : out) n.str(2, s);
  n.str(3, name).str(4, op);
  for (const auto& a : attrs) {
    Msg m;
    m.str(1, a.name);
    if (a.type == 1) m.f32(2, a.f);
    if (a.type == 2) m.varint_field(3, static_cast<uint64_t>(a.i));
    if (a.type == 3) m.str(4, a.s);
    m.varint_field(20, static_cast<uint64_t>(a.type));
    n.msg(5, m);
  }
  if (!domain.empty()) n.str(7, domain);
  return n;
}

inline std::string model(const std::vector<Msg>& nodes, const std::vector<Msg>& inputs, const std::vector<Msg>& outputs) {
  Msg g;
  for (const auto& n : nodes) g.msg(1, n);
  g.str(2, "test");
  for (const auto& i : inputs) g.msg(11, i);
  for (const auto& o : outputs) g.msg(12, o);
  Msg opset_onnx, opset_hubmoe;
  opset_onnx.str(1, "").varint_field(2, 17);
  opset_hubmoe.str(1, "ai.hubmoe").varint_field(2, 1);
  Msg m;
  m.varint_field(1, 8).msg(8, opset_onnx).msg(8, opset_hubmoe).str(2, "hubmoe-test").msg(7, g);
  return m.bytes;
}

}  // namespace onnxw
