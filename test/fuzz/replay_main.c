/* Runs a libFuzzer target's LLVMFuzzerTestOneInput once over each file given (directories: every file in
 * them), without libFuzzer: the C tests replay the seed corpora and every past finding
 * (regressions/<target>/) this way under ASan+UBSan. Prints "replay: N inputs" and exits non-zero on the
 * first input that cannot be read; a crash is the sanitizer's report and exit code. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int one(const char *path, long *count) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    perror(path);
    return -1;
  }
  uint8_t *buf = malloc(1 << 22);
  size_t n = buf ? fread(buf, 1, 1 << 22, f) : 0;
  fclose(f);
  if (!buf) return -1;
  LLVMFuzzerTestOneInput(buf, n);
  free(buf);
  (*count)++;
  return 0;
}

int main(int argc, char **argv) {
  long count = 0;
  for (int i = 1; i < argc; i++) {
    struct stat st;
    if (stat(argv[i], &st) != 0) continue; /* a target without regressions yet */
    if (!S_ISDIR(st.st_mode)) {
      if (one(argv[i], &count) != 0) return 1;
      continue;
    }
    DIR *d = opendir(argv[i]);
    if (!d) return 1;
    struct dirent *e;
    while ((e = readdir(d))) {
      if (e->d_name[0] == '.') continue;
      char p[4096];
      snprintf(p, sizeof(p), "%s/%s", argv[i], e->d_name);
      if (one(p, &count) != 0) return 1;
    }
    closedir(d);
  }
  printf("replay: %ld inputs\n", count);
  return 0;
}
