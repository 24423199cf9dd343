/* Runner shared by every C test binary: runs all registered cases (or those whose name contains argv[1]). */
#include "t.h"

struct t_case t_cases[T_MAX_CASES];
int t_ncases;
int t_failures_in_case;

int main(int argc, char **argv) {
  int passed = 0, failed = 0;
  for (int i = 0; i < t_ncases; i++) {
    if (argc > 1 && !strstr(t_cases[i].name, argv[1])) continue;
    t_failures_in_case = 0;
    t_cases[i].fn();
    if (t_failures_in_case) {
      failed++;
      fprintf(stderr, "not ok %s\n", t_cases[i].name);
    } else {
      passed++;
      printf("ok %s\n", t_cases[i].name);
    }
  }
  printf("%d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
