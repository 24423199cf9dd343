{
  "targets": [
    {
      "target_name": "capybara",
      "sources": [
        "<!@(ls -1 native/addon/*.cc native/*.c native/wire/*.c native/tcp/*.c native/dev/*.c native/apps/*.c | grep -v 'native/dev/xsk.c' )",
        "<!@(pkg-config --exists libxdp libbpf && echo native/dev/xsk.c || true)"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")", "native"],
      "defines": ["NAPI_VERSION=8", "NAPI_DISABLE_CPP_EXCEPTIONS", "_GNU_SOURCE",
                  "<!@(pkg-config --exists libxdp libbpf && echo CPB_HAVE_XDP || echo CPB_NO_XDP)"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Werror", "-fvisibility=hidden"],
      "cflags_c": ["-std=c11"],
      "cflags_cc": ["-std=c++17"],
      "libraries": ["<!@(pkg-config --exists libxdp libbpf && pkg-config --libs libxdp libbpf || true)", "-lpthread"]
    }
  ]
}
