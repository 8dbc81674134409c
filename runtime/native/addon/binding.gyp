{
  # hubmoe's N-API addon over the ONNX Runtime C/C++ API. ONNX Runtime is not linked: the addon
  # dlopen()s onnxruntime-node's own libonnxruntime.so.1 at run time (init(path)), so only the
  # headers are needed here. They come from Debian's libonnxruntime-dev (scripts/fetch-ort-headers.sh
  # unpacks them under ../build/ort and prints the include dir, which scripts/build-addon.sh passes
  # here as HUBMOE_ORT_INCLUDE_DIR); ORT's C ABI is append-only, so the 1.21 headers drive 1.30.
  "variables": {
    "ort_include%": "<!(node -p \"process.env.HUBMOE_ORT_INCLUDE_DIR || require('path').resolve('../build/ort/usr/include/onnxruntime')\")"
  },
  "targets": [
    {
      "target_name": "hubmoe_native",
      "sources": [
        "src/addon.cc",
        "src/ort.cc",
        "src/tensor.cc",
        "src/session.cc",
        "src/greedy.cc",
        "src/device_value.cc"
      ],
      "include_dirs": ["<(ort_include)"],
      "dependencies": ["<!(node -p \"require('node-addon-api').targets\"):node_addon_api_except"],
      "defines": ["ORT_API_MANUAL_INIT", "NAPI_VERSION=8"],
      "cflags_cc": ["-fexceptions", "-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "cflags_cc!": ["-fno-exceptions"],
      "libraries": ["-ldl"]
    }
  ]
}
