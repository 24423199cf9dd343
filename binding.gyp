{
  "targets": [
    {
      "target_name": "capybara",
      "sources": [
        "<!@(ls -1 native/addon/*.cc native/*.c native/wire/*.c native/tcp/*.c native/tls/*.c native/dev/*.c native/apps/*.c native/mig/*.c | grep -v -e 'native/dev/xsk.c' -e 'native/dev/dpdk.c' )",
        "<!@(pkg-config --exists libdpdk && echo native/dev/dpdk.c || true)",
        "<!@(pkg-config --exists libxdp libbpf && echo native/dev/xsk.c || true)"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")", "native",
                       "<!@(pkg-config --exists libdpdk && pkg-config --cflags-only-I libdpdk | sed 's/-I//g' || true)"],
      "defines": ["NAPI_VERSION=8", "NAPI_DISABLE_CPP_EXCEPTIONS", "_GNU_SOURCE",
                  "<!@(pkg-config --exists libxdp libbpf && echo CPB_HAVE_XDP || echo CPB_NO_XDP)",
                  "<!@(pkg-config --exists libdpdk && echo CPB_HAVE_DPDK || echo CPB_NO_DPDK)"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Werror", "-fvisibility=hidden"],
      "cflags_c": ["-std=c11"],
      "cflags_cc": ["-std=c++17"],
      "libraries": ["<!@(pkg-config --exists libxdp libbpf && pkg-config --libs libxdp libbpf || true)",
                    "<!@(pkg-config --exists libdpdk && pkg-config --libs libdpdk || true)", "-lpthread"]
    }
  ]
}
